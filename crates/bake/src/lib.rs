//! `endstate bake`'s engine: a recipe's steps as the builder runs them
//! ([`Step`]), the provisioning script an instance runs from its user data
//! ([`script`]) and its progress read back from the console
//! ([`console`]), the instance-style builder over a few EC2 calls
//! ([`builder`]), what the cloud holds of past bakes, read from image tags
//! ([`catalog`]), and which images retention keeps ([`retention`]).
//!
//! Not here: recipes as the spec declares them and their versions
//! (`endstate_model`), the EC2 calls (`endstate_provider`), the CLI.

// The black-box tests of `tests/` live here as a module of the unit
// tests (one test binary per crate instead of two: each link is the
// whole dependency graph); they name the crate by its name, as users do.
#[cfg(test)]
extern crate self as endstate_bake;
#[cfg(test)]
mod moto_black_box;

pub mod builder;
pub mod catalog;
pub mod console;
pub mod ec2;
#[cfg(test)]
mod fake;
pub mod recipe;
pub mod retention;
pub mod script;

/// One step of a recipe, ready to run: its inputs already read (a file's
/// bytes, a role's resolved document).
#[derive(Clone, PartialEq, Eq)]
pub struct Step {
    /// Unique within its recipe; names the step in progress and errors.
    pub name: String,
    /// What the step does.
    pub action: Action,
}

/// What a step does on the image's root.
#[derive(Clone, PartialEq, Eq)]
pub enum Action {
    /// Writes `content` at `path` (absolute) with `mode`, making its
    /// directory.
    File {
        path: String,
        mode: u32,
        content: Vec<u8>,
    },
    /// Runs `script` with `/bin/sh -e`.
    Shell { script: String },
    /// Runs the configuration engine on `document`, the JSON that
    /// `endstate config apply --resolved` reads (roles without secrets:
    /// an image is no place for one).
    Role { role: String, document: Vec<u8> },
}

/// Steps are printed in progress and errors: by name and kind only, never
/// their content.
impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.action {
            Action::File { path, content, .. } => format!("file {path} ({} bytes)", content.len()),
            Action::Shell { script } => format!("shell ({} bytes)", script.len()),
            Action::Role { role, .. } => format!("role {role}"),
        };
        write!(f, "Step({}: {kind})", self.name)
    }
}
