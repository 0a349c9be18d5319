//! `endstate-imds`: an EC2-compatible instance metadata service for the
//! built-in cloud's process backend — IMDSv1 and v2 tokens, directory
//! listings, `meta-data/…`, `user-data`, and an identity document signed by
//! the cloud — that answers each calling instance with its own data only.
//!
//! The pieces:
//! - [`InstanceMetadata`], the data, and [`MetadataSource`], the trait the
//!   backend implements to say which instance a [`Caller`] belongs to;
//! - [`Caller`] and [`peer_uid`]: who is calling, from the connection
//!   (listener address, peer address, the uid owning the peer's socket);
//! - [`Signer`], [`verify`] and [`open_envelope`]: the identity document's
//!   Ed25519 signature (not AWS's PKCS#7: see [`signer`]);
//! - [`app`] / [`scoped_app`] (an axum `Router`) and [`serve`] (bind and
//!   run on loopback).
//!
//! Not here: allocating addresses, running instances, storing keys or
//! instances, or putting `AWS_EC2_METADATA_SERVICE_ENDPOINT` into an
//! instance's environment — the process backend does those.

mod caller;
mod metadata;
mod paths;
mod server;
pub mod signer;
mod token;

pub use caller::{find_socket_uid, listening_addresses, listening_on_host, peer_uid, Caller};
pub use metadata::{is_servable_tag_key, InstanceMetadata, MetadataSource};
pub use server::{
    app, scoped_app, serve, ImdsError, ListenerScope, Running, TOKEN_HEADER, TOKEN_PATH, TTL_HEADER,
};
pub use signer::{is_valid_nonce, open_envelope, verify, verify_nonce, SignatureError, Signer};
pub use token::MAX_TTL_SECONDS;
