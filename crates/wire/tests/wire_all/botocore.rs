//! Shared by the botocore tests: the test tools' Python (with botocore,
//! the aws CLI's library) and running a script in it. Not a test itself.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::path::PathBuf;
use std::process::Command;

/// `<workspace>/.tools/venv/bin/python`; panics with instructions if absent.
pub fn venv_python() -> PathBuf {
    let start = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = start
        .ancestors()
        .find(|d| d.join(".tools").is_dir() || d.join("Cargo.lock").is_file())
        .unwrap()
        .to_path_buf();
    let python = root.join(".tools/venv/bin/python");
    assert!(
        python.is_file(),
        "{} not found: run `scripts/test` once to install the test tools",
        python.display()
    );
    python
}

/// Runs `script` with `arg` in the tools' Python; its standard output.
pub fn python(script: &str, arg: &str) -> String {
    let output = Command::new(venv_python())
        .args(["-c", script, arg])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "botocore failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
