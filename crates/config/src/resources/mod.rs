//! Converging one resource: each kind compares the root with the
//! declaration and, unless the run is noop, changes what differs. Every
//! kind answers with an [`Outcome`]: the changes made (or that a real run
//! would make), an unknown outcome with its reason, or a failure. The order
//! of resources, skipping and notifications are the engine's.

mod exec;
mod files;
mod package;
mod service;
mod users;

use crate::engine::{Context, Notifications};
use crate::report::Change;
use crate::types::Resource;

/// How converging one resource went.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Converged (noop: would be) with these changes; none means unchanged.
    Done(Vec<Change>),
    /// Noop only: what a real run would do cannot be known beforehand.
    Unknown(String, Vec<Change>),
    /// It could not be converged (noop: a real run would fail).
    Failed(String),
}

/// Converges `resource`; `content` is its rendered content (files and
/// templates), `dirty_requirement` (noop) a resource it requires that
/// would change first.
pub(crate) fn converge(
    context: &Context<'_>,
    resource: &Resource,
    content: Option<&[u8]>,
    notifications: &Notifications,
    dirty_requirement: Option<&str>,
) -> Outcome {
    match resource {
        Resource::File(file) => files::converge_file(
            context,
            &files::FileState {
                path: &file.path,
                content: content.unwrap_or_default(),
                mode: file.mode.as_deref(),
                owner: file.owner.as_deref(),
                group: file.group.as_deref(),
            },
        ),
        Resource::Template(template) => files::converge_file(
            context,
            &files::FileState {
                path: &template.path,
                content: content.unwrap_or_default(),
                mode: template.mode.as_deref(),
                owner: template.owner.as_deref(),
                group: template.group.as_deref(),
            },
        ),
        Resource::Directory(directory) => files::converge_directory(context, directory),
        Resource::Exec(exec) => exec::converge(context, exec, dirty_requirement),
        Resource::Package(package) => package::converge(context, package),
        Resource::User(user) => users::converge_user(context, user),
        Resource::Group(group) => users::converge_group(context, group),
        Resource::Service(service) => service::converge(context, service, notifications),
    }
}
