//! Exec: a shell command run inside the root when its guards allow —
//! `creates` (a path that must not exist), `onlyif` (a command that must
//! succeed), `unless` (one that must fail). Guards run in noop runs too
//! (they are meant to be read-only); the command never does. A noop run
//! reports an exec without guards, or whose command guard runs after
//! something it requires would change, as unknown.

use std::time::Duration;

use super::Outcome;
use crate::command::{self, Place};
use crate::engine::Context;
use crate::report::Change;
use crate::types::ExecResource;

/// How long a command or guard may run when the resource does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) fn converge(
    context: &Context<'_>,
    exec: &ExecResource,
    dirty_requirement: Option<&str>,
) -> Outcome {
    let timeout = exec.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let ran = vec![Change::new("command", None, Some(exec.command.clone()))];
    if let Some(creates) = &exec.creates {
        if context.host_path(creates).exists() || context.expected.paths.contains(creates) {
            return Outcome::Done(Vec::new());
        }
        if let Some(other) = context.expected.exec_creates.get(creates) {
            return Outcome::Unknown(
                format!("{creates} may be created by {other}, which would run first"),
                ran,
            );
        }
    }
    let guarded = exec.onlyif.is_some() || exec.unless.is_some();
    if context.noop && guarded {
        if let Some(required) = dirty_requirement {
            return Outcome::Unknown(
                format!("its guard would run after {required} changes, so its answer cannot be known now"),
                ran,
            );
        }
    }
    let root = Place::InRoot(context.root);
    for (field, guard, runs_when_success) in [
        ("onlyif", exec.onlyif.as_deref(), true),
        ("unless", exec.unless.as_deref(), false),
    ] {
        let Some(guard) = guard else { continue };
        let script = command::exec_script(guard);
        match command::run(root, &command::shell(&script), &[], timeout) {
            Ok(output) if output.success() != runs_when_success => return Outcome::Done(Vec::new()),
            Ok(_) => {}
            Err(message) => return Outcome::Failed(format!("{field}: {message}")),
        }
    }
    if context.noop {
        if exec.creates.is_none() && !guarded {
            return Outcome::Unknown(
                "no guard (creates, onlyif, unless): it runs on every run and what it does cannot be known beforehand"
                    .to_string(),
                ran,
            );
        }
        return Outcome::Done(ran);
    }
    let script = command::exec_script(&exec.command);
    match command::run(root, &command::shell(&script), &[], timeout) {
        Ok(output) if output.success() => Outcome::Done(ran),
        Ok(output) => Outcome::Failed(format!("command: {}", output.describe())),
        Err(message) => Outcome::Failed(format!("command: {message}")),
    }
}
