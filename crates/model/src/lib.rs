//! endstate's spec: the YAML file format, and the resolved, validated
//! [`Spec`] it turns into. [`load`] parses (keeping every node's position),
//! overlays an environment, interpolates `${var.*}` / `${secret.*}` and
//! validates, reporting every problem at once as [`Diagnostics`] with
//! file:line:column. [`json_schema`] describes the file for editors,
//! [`starter_spec`] is what `endstate init` writes, and
//! [`UserData::render`] produces user data bytes at apply time.
//!
//! This crate does no network I/O and holds no secret values: secrets stay
//! [`SecretRef`]s until `render` resolves them. Planning, state and talking
//! to EC2 live in other crates.

mod cloud_config;
mod diagnostic;
mod interpolate;
mod load;
mod schema;
mod starter;
mod types;
mod user_data;

pub use cloud_config::needs_quotes as yaml11_needs_quotes;
pub use diagnostic::{Diagnostic, Diagnostics};
pub use load::{load, load_str, MAX_CAPACITY, MAX_USER_TAGS};
pub use schema::json_schema;
pub use starter::starter_spec;
pub use types::*;
pub use user_data::{resolve_secret, SecretError, USER_DATA_LIMIT};
