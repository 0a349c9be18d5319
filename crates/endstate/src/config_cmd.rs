//! `endstate config apply FILE`: configures the machine it runs on with
//! the roles of a roles file (or a spec), with no server — what an operator
//! runs by hand, what bake's provisioning steps call and what `endstate
//! push` runs on each host. It loads and checks the file, resolves secrets
//! and gathers facts before anything is touched, runs the engine, prints a
//! summary (or the JSON report) and writes the report atomically where
//! asked. Exit status: 0 when the run ended `ok` (a noop run that found
//! changes included), 1 when it did not (a resource failed, or the roles
//! were invalid or did not render) or nothing could be run.
//!
//! It also defines [`ResolvedRoles`], the document push sends a host, and
//! the summary both commands print. The engine itself is
//! `endstate_config`'s; SSH is `push`'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use endstate_config::facts::{self, FactsOptions};
use endstate_config::{Engine, Options, Outcome, Report, Role, Secrets, Status};
use serde::{Deserialize, Serialize};

use crate::args::{ConfigApplyArgs, ConfigCommand, ConfigurationCommand};

/// Runs `config apply` or `push`.
pub fn run(command: ConfigurationCommand) -> Result<ExitCode> {
    match command {
        ConfigurationCommand::Config {
            command: ConfigCommand::Apply(args),
        } => apply(&args),
        ConfigurationCommand::Push(args) => crate::push::run(&args),
    }
}

/// What `endstate push` sends a host and `config apply --resolved` reads:
/// roles whose secret placeholders are already replaced by their values
/// and whose `source` files are inlined, with those values so that the
/// host's report redacts them. JSON, never written to the pushing
/// machine's disk; on the host a 0600 file removed after the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvedRoles {
    /// The roles, in the order they are given to the engine.
    pub roles: Vec<Role>,
    /// The secret values the roles hold.
    pub secrets: Vec<String>,
}

/// `roles` with their secret placeholders replaced, and the values used.
/// No error carries a value.
pub fn resolve_secrets(roles: &[Role]) -> Result<(Vec<Role>, Vec<String>)> {
    let mut resolved = Vec::with_capacity(roles.len());
    let mut values = Vec::new();
    for role in roles {
        // The engine's report is redacted with the values, which
        // `resolve_secrets` keeps to itself: read them by reference too.
        for secret in endstate_model::roles::role_secrets(role) {
            let value = endstate_model::resolve_secret(&secret)
                .with_context(|| format!("role {}", role.name))?;
            if !values.contains(&value) {
                values.push(value);
            }
        }
        let (role, _) = endstate_model::roles::resolve_secrets(role)
            .with_context(|| format!("role {}", role.name))?;
        resolved.push(role);
    }
    Ok((resolved, values))
}

/// The roles named in `wanted` (all, in name order, when empty), each once;
/// an unknown name is an error naming `file` and the roles it declares.
pub fn select_roles(
    file: &Path,
    mut declared: BTreeMap<String, Role>,
    wanted: &[String],
) -> Result<Vec<Role>> {
    if wanted.is_empty() {
        return Ok(declared.into_values().collect());
    }
    let known: Vec<String> = declared.keys().cloned().collect();
    let mut selected = Vec::new();
    for name in wanted {
        match declared.remove(name) {
            Some(role) => selected.push(role),
            None if selected.iter().any(|role: &Role| &role.name == name) => {}
            None => bail!(
                "{}: no role `{name}`; the file declares {}",
                file.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        }
    }
    Ok(selected)
}

/// Loads a roles file with positioned diagnostics.
pub fn load_roles(file: &Path) -> Result<BTreeMap<String, Role>> {
    endstate_model::load_roles(file).map_err(|diagnostics| {
        anyhow!(
            "{diagnostics}\n{} error{} in the roles file; nothing was done",
            diagnostics.len(),
            if diagnostics.len() == 1 { "" } else { "s" }
        )
    })
}

fn apply(args: &ConfigApplyArgs) -> Result<ExitCode> {
    let (roles, secrets) = if args.resolved {
        if !args.roles.is_empty() {
            bail!("--role cannot be combined with --resolved: the document holds the roles to run");
        }
        let text = std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
        let document: ResolvedRoles = serde_json::from_str(&text).map_err(|error| {
            anyhow!(
                "{}:{}:{}: error: not a resolved roles document: {error}; nothing was done",
                args.file.display(),
                error.line(),
                error.column()
            )
        })?;
        (document.roles, document.secrets)
    } else {
        let declared = load_roles(&args.file)?;
        let selected = select_roles(&args.file, declared, &args.roles)?;
        resolve_secrets(&selected)?
    };
    let root = &args.root;
    if !root.is_absolute() {
        bail!("--root {}: must be an absolute path", root.display());
    }
    if !root.is_dir() {
        bail!("--root {}: not a directory", root.display());
    }
    let imds_endpoint = args
        .imds_endpoint
        .clone()
        .or_else(facts::imds_endpoint_from_env);
    let facts = facts::gather(&FactsOptions {
        imds_endpoint,
        ..FactsOptions::new(root)
    })
    .context("cannot gather facts; nothing was done")?;
    let options = Options {
        noop: args.noop,
        secrets: secrets.into_iter().collect::<Secrets>(),
        source_dir: source_dir(&args.file),
        ..Options::new(root)
    };
    let report = Engine::run(&roles, &facts, &options);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", summary(&report));
    }
    if let Some(path) = &args.report {
        report
            .write(path)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    Ok(if report.outcome == Outcome::Ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where relative `source` paths are found: the file's directory.
fn source_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The statuses in the order a summary counts them.
const STATUSES: [Status; 6] = [
    Status::Changed,
    Status::WouldChange,
    Status::Unknown,
    Status::Unchanged,
    Status::Failed,
    Status::Skipped,
];

fn label(status: Status) -> &'static str {
    match status {
        Status::Changed => "changed",
        Status::Unchanged => "unchanged",
        Status::Failed => "failed",
        Status::Skipped => "skipped",
        Status::WouldChange => "would change",
        Status::Unknown => "unknown",
    }
}

/// `3 changed, 1 unchanged, 0 failed`: every status that occurred, and
/// `changed`/`failed` always (noop runs: `would change`, not `changed`).
pub fn counts(report: &Report) -> String {
    let mut parts = Vec::new();
    for status in STATUSES {
        let count = report
            .resources
            .iter()
            .filter(|resource| resource.status == status)
            .count();
        let always = match status {
            Status::Changed => !report.noop,
            Status::WouldChange => report.noop,
            Status::Failed => true,
            _ => false,
        };
        if count > 0 || always {
            parts.push(format!("{count} {}", label(status)));
        }
    }
    parts.join(", ")
}

/// A run for people: each resource that changed (or would), failed, was
/// skipped or is unknown, with what and why, then the run's errors and a
/// last line with the counts. Unchanged resources are only counted.
pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    for resource in &report.resources {
        if resource.status == Status::Unchanged {
            continue;
        }
        out.push_str(&format!("  {:<14}{}", label(resource.status), resource.id));
        if let Some(why) = resource.error.as_ref().or(resource.reason.as_ref()) {
            out.push_str(&format!(": {why}"));
        }
        out.push('\n');
        for change in &resource.changes {
            let show = |value: &Option<String>| value.clone().unwrap_or_else(|| "(absent)".into());
            out.push_str(&format!(
                "      {}: {} -> {}\n",
                change.field,
                show(&change.from),
                show(&change.to)
            ));
        }
    }
    for error in &report.errors {
        out.push_str(&format!("  error: {error}\n"));
    }
    let outcome = match report.outcome {
        Outcome::Ok => "ok",
        Outcome::Failed => "failed",
        Outcome::Invalid => "invalid roles, nothing was done",
        Outcome::RenderFailed => "a render failed, nothing was done",
    };
    out.push_str(&format!(
        "{}{outcome}: {} in {:.1} s on {}\n",
        if report.noop { "noop " } else { "" },
        counts(report),
        report.duration_ms as f64 / 1000.0,
        report.root
    ));
    out
}
