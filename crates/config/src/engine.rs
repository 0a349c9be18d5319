//! The engine: validates roles, renders every file and template, and only
//! if all of that succeeded converges the resources one at a time in
//! dependency order, recording each in the [`Report`]. A failed resource
//! makes those that require it skipped; the others go on. `notify`
//! restarts a service only when a resource that notifies it changed in this
//! run. In noop mode nothing is written or started: each resource reports
//! what a real run would change, or `unknown` when that cannot be known
//! beforehand (an exec without a guard, a path an earlier exec creates, a
//! guard that runs after something it depends on would change). The same
//! engine serves the agent, push and bake; it knows nothing of how roles
//! reach it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::facts::Facts;
use crate::render::render_all;
use crate::report::{Change, Outcome as RunOutcome, Report, ResourceReport, Status};
use crate::resources::{self, Outcome};
use crate::secrets::Secrets;
use crate::types::{Resource, Role};
use crate::validate::{declared, validate};

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The root every path is under: `/` in production, an instance's root
    /// for push, a temporary directory in tests. Commands run inside it
    /// (through `chroot` when it is not `/`).
    pub root: PathBuf,
    /// Report what would change instead of changing it.
    pub noop: bool,
    /// Values never to appear in the report.
    pub secrets: Secrets,
    /// Variables every template sees as `vars`.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Where relative `source` paths of files and templates are found.
    pub source_dir: PathBuf,
    /// The instance supervisor's control socket, for services on the
    /// built-in cloud's process backend.
    pub supervisor_socket: Option<PathBuf>,
}

impl Options {
    /// A real run on `root`, no secrets, no variables, sources relative to
    /// the current directory.
    pub fn new(root: impl Into<PathBuf>) -> Options {
        Options {
            root: root.into(),
            noop: false,
            secrets: Secrets::new(),
            vars: BTreeMap::new(),
            source_dir: PathBuf::from("."),
            supervisor_socket: None,
        }
    }
}

/// What a noop run expects earlier resources to have done, so that later
/// ones are predicted against it rather than against the untouched root.
#[derive(Debug, Default)]
pub(crate) struct Expected {
    /// Paths (inside the root) that files and directories would create.
    pub paths: BTreeSet<String>,
    /// Users that would be created.
    pub users: BTreeSet<String>,
    /// Groups that would be created.
    pub groups: BTreeSet<String>,
    /// `creates` paths of execs that would (or might) run, with their ids.
    pub exec_creates: BTreeMap<String, String>,
}

/// What a resource's convergence sees.
pub(crate) struct Context<'a> {
    pub root: &'a Path,
    pub noop: bool,
    pub supervisor_socket: Option<&'a Path>,
    pub expected: &'a Expected,
}

impl Context<'_> {
    /// `path` (absolute, as declared) inside the root.
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

/// The configuration engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Engine;

impl Engine {
    /// Runs `roles` on `options.root`; see the module documentation. The
    /// report is redacted with `options.secrets`.
    pub fn run(roles: &[Role], facts: &Facts, options: &Options) -> Report {
        let started = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let clock = Instant::now();
        let mut report = Report {
            started,
            duration_ms: 0,
            root: options.root.display().to_string(),
            noop: options.noop,
            outcome: RunOutcome::Ok,
            errors: Vec::new(),
            resources: Vec::new(),
        };
        let resources = declared(roles);
        let order = match validate(roles) {
            Ok(order) => order,
            Err(errors) => {
                report.outcome = RunOutcome::Invalid;
                report.errors = errors.iter().map(ToString::to_string).collect();
                return finish(report, clock, &options.secrets);
            }
        };
        let contents = match render_all(&resources, facts, &options.vars, &options.source_dir) {
            Ok(contents) => contents,
            Err(errors) => {
                report.outcome = RunOutcome::RenderFailed;
                let failed: BTreeMap<usize, String> = errors.into_iter().collect();
                for &index in &order {
                    let declared = resources[index];
                    let id = declared.resource.id();
                    let entry = match failed.get(&index) {
                        Some(message) => {
                            report
                                .errors
                                .push(format!("role {}: {id}: {message}", declared.role));
                            resource_report(&id, declared.role, Status::Failed)
                                .with_error(message.clone())
                        }
                        None => resource_report(&id, declared.role, Status::Skipped).with_reason(
                            "not attempted: a render failed, so nothing was changed".to_string(),
                        ),
                    };
                    report.resources.push(entry);
                }
                return finish(report, clock, &options.secrets);
            }
        };

        let ids: Vec<String> = resources.iter().map(|d| d.resource.id()).collect();
        let position: BTreeMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let mut statuses: Vec<Option<Status>> = vec![None; resources.len()];
        // Per service index: the resources that notified it and changed
        // (`Changed` or `WouldChange`), and those whose change is unknown.
        let mut notified: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut notified_maybe: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut expected = Expected::default();

        for &index in &order {
            let declared = resources[index];
            let resource = declared.resource;
            let id = &ids[index];
            let clock = Instant::now();
            let blocked = resource.requires().iter().find_map(|required| {
                let status = position.get(required.as_str()).and_then(|&i| statuses[i]);
                match status {
                    Some(Status::Failed) => Some(format!("requires {required}, which failed")),
                    Some(Status::Skipped) => {
                        Some(format!("requires {required}, which was skipped"))
                    }
                    _ => None,
                }
            });
            let entry = if let Some(reason) = blocked {
                resource_report(id, declared.role, Status::Skipped).with_reason(reason)
            } else {
                let context = Context {
                    root: &options.root,
                    noop: options.noop,
                    supervisor_socket: options.supervisor_socket.as_deref(),
                    expected: &expected,
                };
                let dirty_requirement = if options.noop {
                    changed_requirement(index, &resources, &position, &statuses)
                } else {
                    None
                };
                let outcome = resources::converge(
                    &context,
                    resource,
                    contents[index].as_deref(),
                    &Notifications {
                        changed: notified.get(&index).cloned().unwrap_or_default(),
                        unknown: notified_maybe.get(&index).cloned().unwrap_or_default(),
                    },
                    dirty_requirement.as_deref(),
                );
                let entry = match outcome {
                    Outcome::Done(changes) if changes.is_empty() => {
                        resource_report(id, declared.role, Status::Unchanged)
                    }
                    Outcome::Done(changes) => {
                        let status = if options.noop {
                            Status::WouldChange
                        } else {
                            Status::Changed
                        };
                        resource_report(id, declared.role, status).with_changes(changes)
                    }
                    Outcome::Unknown(reason, changes) => {
                        resource_report(id, declared.role, Status::Unknown)
                            .with_reason(reason)
                            .with_changes(changes)
                    }
                    Outcome::Failed(message) => {
                        resource_report(id, declared.role, Status::Failed).with_error(message)
                    }
                };
                if options.noop {
                    expect(&mut expected, resource, entry.status, id);
                }
                entry
            };
            for target in resource.notify() {
                if let Some(&service) = position.get(target.as_str()) {
                    match entry.status {
                        Status::Changed | Status::WouldChange => {
                            notified.entry(service).or_default().push(id.clone())
                        }
                        Status::Unknown => {
                            notified_maybe.entry(service).or_default().push(id.clone())
                        }
                        _ => {}
                    }
                }
            }
            statuses[index] = Some(entry.status);
            let mut entry = entry;
            entry.duration_ms = millis(clock);
            report.resources.push(entry);
        }
        if statuses.contains(&Some(Status::Failed)) {
            report.outcome = RunOutcome::Failed;
        }
        finish(report, clock, &options.secrets)
    }
}

/// Who notified a service in this run.
#[derive(Debug, Default)]
pub(crate) struct Notifications {
    /// Resources that changed (or would).
    pub changed: Vec<String>,
    /// Resources whose change is unknown (noop).
    pub unknown: Vec<String>,
}

/// In noop: the first resource `index` requires, directly or not, that
/// would change or whose outcome is unknown.
fn changed_requirement(
    index: usize,
    resources: &[crate::validate::Declared<'_>],
    position: &BTreeMap<&str, usize>,
    statuses: &[Option<Status>],
) -> Option<String> {
    let mut stack: Vec<usize> = vec![index];
    let mut seen = BTreeSet::new();
    while let Some(current) = stack.pop() {
        for required in resources[current].resource.requires() {
            let Some(&other) = position.get(required.as_str()) else {
                continue;
            };
            if !seen.insert(other) {
                continue;
            }
            if matches!(statuses[other], Some(Status::WouldChange | Status::Unknown)) {
                return Some(required.clone());
            }
            stack.push(other);
        }
    }
    None
}

/// Records what a noop resource would leave behind.
fn expect(expected: &mut Expected, resource: &Resource, status: Status, id: &str) {
    if !matches!(status, Status::WouldChange | Status::Unknown) {
        return;
    }
    match resource {
        Resource::File(file) => {
            expected.paths.insert(file.path.clone());
        }
        Resource::Template(template) => {
            expected.paths.insert(template.path.clone());
        }
        Resource::Directory(directory) => {
            expected.paths.insert(directory.path.clone());
        }
        Resource::User(user) => {
            expected.users.insert(user.name.clone());
        }
        Resource::Group(group) => {
            expected.groups.insert(group.name.clone());
        }
        Resource::Exec(exec) => {
            if let Some(creates) = &exec.creates {
                expected
                    .exec_creates
                    .insert(creates.clone(), id.to_string());
            }
        }
        Resource::Package(_) | Resource::Service(_) => {}
    }
}

fn resource_report(id: &str, role: &str, status: Status) -> ResourceReport {
    ResourceReport {
        id: id.to_string(),
        role: role.to_string(),
        status,
        changes: Vec::new(),
        reason: None,
        error: None,
        duration_ms: 0,
    }
}

impl ResourceReport {
    fn with_reason(mut self, reason: String) -> ResourceReport {
        self.reason = Some(reason);
        self
    }

    fn with_error(mut self, error: String) -> ResourceReport {
        self.error = Some(error);
        self
    }

    fn with_changes(mut self, changes: Vec<Change>) -> ResourceReport {
        self.changes = changes;
        self
    }
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn finish(mut report: Report, clock: Instant, secrets: &Secrets) -> Report {
    report.duration_ms = millis(clock);
    report.redacted(secrets)
}
