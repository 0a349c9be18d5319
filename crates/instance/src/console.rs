//! The instance's console: `console.log` in the instance directory, opened for
//! appending before the runtime enters the instance's root. Lines are
//! prefixed like cloud-init's; the runtime's own events start with
//! `[endstate]`. Writing is best effort: a full disk must not stop a boot.
//! It does not rotate or cap the log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

/// The version cloud-init-like lines name.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The console log of one instance.
#[derive(Debug)]
pub struct Console {
    file: File,
    started: Instant,
}

impl Console {
    /// Opens (creates) the log for appending.
    pub fn open(path: &Path) -> std::io::Result<Console> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Console {
            file,
            started: Instant::now(),
        })
    }

    /// Appends one line.
    pub fn line(&self, text: &str) {
        let mut line = String::with_capacity(text.len() + 1);
        line.push_str(text);
        line.push('\n');
        // Best effort, as a serial console is: losing a line must not fail the boot.
        let _ = (&self.file).write_all(line.as_bytes());
    }

    /// Appends a runtime event: `[endstate] <text>`.
    pub fn event(&self, text: &str) {
        self.line(&format!("[endstate] {text}"));
    }

    /// cloud-init's stage banner: `Cloud-init v. … running 'modules:final' at …`.
    pub fn stage(&self, stage: &str) {
        self.line(&format!(
            "Cloud-init v. endstate-{VERSION} running '{stage}' at {}. Up {:.2} seconds.",
            crate::time::now_rfc2822(),
            self.started.elapsed().as_secs_f64()
        ));
    }

    /// cloud-init's closing line.
    pub fn finished(&self) {
        self.line(&format!(
            "Cloud-init v. endstate-{VERSION} finished at {}. Datasource DataSourceEndstate.  Up {:.2} seconds",
            crate::time::now_rfc2822(),
            self.started.elapsed().as_secs_f64()
        ));
    }

    /// A handle for a child's stdout or stderr, appending to the same log.
    pub fn stdio(&self) -> std::io::Result<Stdio> {
        Ok(Stdio::from(self.file.try_clone()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_events_and_banners_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, "earlier\n").unwrap();
        let console = Console::open(&path).unwrap();
        console.line("plain");
        console.event("unsupported: module 'packages'");
        console.stage("modules:final");
        console.finished();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "earlier");
        assert_eq!(lines[1], "plain");
        assert_eq!(lines[2], "[endstate] unsupported: module 'packages'");
        assert!(
            lines[3].starts_with("Cloud-init v. endstate-"),
            "{}",
            lines[3]
        );
        assert!(
            lines[3].contains("running 'modules:final' at "),
            "{}",
            lines[3]
        );
        assert!(lines[4].contains(" finished at "), "{}", lines[4]);
    }
}
