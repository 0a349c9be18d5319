//! The record of one run: per resource its status, what changed (or would),
//! how long it took and why it failed or was skipped; serialized as JSON.
//! Every string in it has passed through [`Secrets::redact`] before
//! [`Report::redacted`] returns it, and the engine returns only redacted
//! reports. It does not decide anything: the engine fills it.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::secrets::Secrets;

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// RFC 3339, UTC: when the run started.
    pub started: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The root it configured.
    pub root: String,
    /// Whether it was a noop run (nothing changed, changes predicted).
    pub noop: bool,
    /// How it ended.
    pub outcome: Outcome,
    /// Problems with the run as a whole: validation and render errors.
    pub errors: Vec<String>,
    /// Every resource, in the order they were converged.
    pub resources: Vec<ResourceReport>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every resource converged (or, in noop, was predicted).
    Ok,
    /// Some resource failed; the others converged or were skipped.
    Failed,
    /// The roles are invalid; nothing was touched.
    Invalid,
    /// A template or content could not be rendered; nothing was touched.
    RenderFailed,
}

/// One resource's part of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceReport {
    /// Its id, `kind:name`.
    pub id: String,
    /// The role declaring it.
    pub role: String,
    /// What happened.
    pub status: Status,
    /// What changed, or would.
    pub changes: Vec<Change>,
    /// Why it was skipped, or why its outcome is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// What happened to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It was changed.
    Changed,
    /// It was already as declared.
    Unchanged,
    /// It could not be converged.
    Failed,
    /// It was not attempted (a dependency failed, or a render did).
    Skipped,
    /// Noop: a real run would change it, as `changes` says.
    WouldChange,
    /// Noop: what a real run would do cannot be known beforehand.
    Unknown,
}

/// One property changed (or to be): content, mode, owner, state…
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The property.
    pub field: String,
    /// Its value before (`None`: absent).
    pub from: Option<String>,
    /// Its value after (`None`: removed).
    pub to: Option<String>,
}

impl Change {
    /// A change of `field` from `from` to `to`.
    pub fn new(field: &str, from: Option<String>, to: Option<String>) -> Change {
        Change {
            field: field.to_string(),
            from,
            to,
        }
    }
}

impl Report {
    /// The report with every string redacted.
    pub fn redacted(mut self, secrets: &Secrets) -> Report {
        if secrets.is_empty() {
            return self;
        }
        let redact = |text: &mut String| *text = secrets.redact(text);
        redact(&mut self.root);
        self.errors.iter_mut().for_each(redact);
        for resource in &mut self.resources {
            redact(&mut resource.id);
            redact(&mut resource.role);
            resource.reason.iter_mut().for_each(redact);
            resource.error.iter_mut().for_each(redact);
            for change in &mut resource.changes {
                redact(&mut change.field);
                change.from.iter_mut().for_each(redact);
                change.to.iter_mut().for_each(redact);
            }
        }
        self
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, numbers and enums cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes the JSON to `path` atomically (a temporary file beside it,
    /// synced, then renamed).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let directory = path.parent().unwrap_or(Path::new("."));
        let mut file = tempfile_in(directory, path)?;
        let result = (|| {
            file.1.write_all(self.to_json().as_bytes())?;
            file.1.write_all(b"\n")?;
            file.1.sync_all()?;
            std::fs::rename(&file.0, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&file.0);
        }
        result
    }

    /// The resource with `id`.
    pub fn resource(&self, id: &str) -> Option<&ResourceReport> {
        self.resources.iter().find(|resource| resource.id == id)
    }

    /// Whether any resource changed (or would).
    pub fn changed(&self) -> bool {
        self.resources
            .iter()
            .any(|resource| matches!(resource.status, Status::Changed | Status::WouldChange))
    }
}

fn tempfile_in(
    directory: &Path,
    target: &Path,
) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_else(|| "report".to_string());
    let temp = directory.join(format!(".{name}.{}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)?;
    Ok((temp, file))
}
