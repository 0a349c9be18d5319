//! The provisioning script a build instance runs from its user data: each
//! step in order, its output printed on the console under markers that
//! carry the bake's nonce, stopping at the first step that fails. The
//! builder reads the markers back ([`crate::console`]); the nonce keeps an
//! older bake's console lines, or a step printing marker-like text, from
//! being taken for this one's (the script never holds a marker literally:
//! they are printed with `printf`).
//!
//! Contents travel base64-encoded inside the script, so no byte of a file
//! or a shell step needs quoting. Not here: how the instance is launched
//! or how its console is read.

use base64::Engine as _;

use crate::{Action, Step};

/// EC2's limit on user data, in bytes, before base64 encoding.
pub const USER_DATA_LIMIT: usize = 16_384;
/// Where a role step finds the endstate binary in the image (the built-in
/// cloud binds it there in every instance; elsewhere the parent image must
/// have it). `ENDSTATE_BAKE_BINARY` overrides it.
pub const BINARY_IN_IMAGE: &str = "/opt/endstate/bin/endstate";
/// The first word of every marker line.
pub const MARKER: &str = "endstate-bake";

/// Why no script could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error(
        "the provisioning script is {size} bytes, over EC2's user data limit of {USER_DATA_LIMIT} bytes; the largest step is {largest} ({largest_size} bytes)"
    )]
    TooLarge {
        size: usize,
        largest: String,
        largest_size: usize,
    },
    #[error("step {step}: path {path} is not absolute")]
    RelativePath { step: String, path: String },
}

/// The script running `steps` for the bake `nonce` (letters and digits).
pub fn provisioning_script(nonce: &str, steps: &[Step]) -> Result<String, ScriptError> {
    let mut script = format!(
        r#"#!/bin/sh
# endstate bake: the provisioning steps of one bake, progress on the console.
set -u
umask 022
N='{nonce}'
ROOT="${{ENDSTATE_BAKE_ROOT:-}}"
export ROOT
BIN="${{ENDSTATE_BAKE_BINARY:-{BINARY_IN_IMAGE}}}"
WORK=$(mktemp -d) || exit 1
trap 'rm -rf "$WORK"' EXIT
mark() {{ printf '%s %s %s\n' '{MARKER}' "$N" "$*"; }}
run_step() {{
  mark begin "$1"
  ( "step_$1" ) > "$WORK/out" 2>&1
  rc=$?
  sed 's/^/  | /' "$WORK/out"
  mark end "$1" exit "$rc"
  [ "$rc" -eq 0 ] || exit "$rc"
}}
"#
    );
    let mut largest = (String::new(), 0);
    for (index, step) in steps.iter().enumerate() {
        let body = step_body(step)?;
        if body.len() > largest.1 {
            largest = (step.name.clone(), body.len());
        }
        script.push_str(&format!("step_{index}() {{\n  set -e\n{body}}}\n"));
    }
    for index in 0..steps.len() {
        script.push_str(&format!("run_step {index}\n"));
    }
    script.push_str("mark done\n");
    if script.len() > USER_DATA_LIMIT {
        return Err(ScriptError::TooLarge {
            size: script.len(),
            largest: largest.0,
            largest_size: largest.1,
        });
    }
    Ok(script)
}

/// The shell lines of one step (inside its function).
fn step_body(step: &Step) -> Result<String, ScriptError> {
    Ok(match &step.action {
        Action::File {
            path,
            mode,
            content,
        } => {
            if !path.starts_with('/') {
                return Err(ScriptError::RelativePath {
                    step: step.name.clone(),
                    path: path.clone(),
                });
            }
            let dir = match path.rsplit_once('/') {
                Some(("", _)) | None => "/".to_string(),
                Some((dir, _)) => dir.to_string(),
            };
            let target = format!("\"$ROOT\"{}", quote(path));
            format!(
                "  mkdir -p \"$ROOT\"{dir}\n{decode}  chmod {mode:o} {target}.bake\n  mv {target}.bake {target}\n",
                dir = quote(&dir),
                decode = decode_into(content, &format!("{target}.bake")),
            )
        }
        Action::Shell { script } => format!(
            "{}  cd / && sh -e \"$WORK/step.sh\"\n",
            decode_into(script.as_bytes(), "\"$WORK/step.sh\"")
        ),
        Action::Role { document, .. } => format!(
            "{}  chmod 600 \"$WORK/role.json\"\n  \"$BIN\" config apply \"$WORK/role.json\" --resolved --root \"${{ROOT:-/}}\"\n",
            decode_into(document, "\"$WORK/role.json\"")
        ),
    })
}

/// Lines writing `bytes` to `target` (a shell word) through `base64 -d`.
fn decode_into(bytes: &[u8], target: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut lines = format!("  base64 -d > {target} <<'ENDSTATE_BAKE_EOF'\n");
    for chunk in encoded.as_bytes().chunks(76) {
        lines.push_str(&String::from_utf8_lossy(chunk));
        lines.push('\n');
    }
    lines.push_str("ENDSTATE_BAKE_EOF\n");
    lines
}

/// `text` as one single-quoted shell word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use std::os::unix::fs::PermissionsExt as _;
    use std::process::Command;

    use super::*;
    use crate::console::{read_progress, Progress};

    fn file(name: &str, path: &str, mode: u32, content: &[u8]) -> Step {
        Step {
            name: name.to_string(),
            action: Action::File {
                path: path.to_string(),
                mode,
                content: content.to_vec(),
            },
        }
    }

    fn shell(name: &str, script: &str) -> Step {
        Step {
            name: name.to_string(),
            action: Action::Shell {
                script: script.to_string(),
            },
        }
    }

    /// Runs the script with `sh` against a throwaway root; its output.
    fn run(root: &std::path::Path, steps: &[Step]) -> (i32, String) {
        let script = provisioning_script("n0nce", steps).unwrap();
        let output = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("ENDSTATE_BAKE_ROOT", root)
            .output()
            .unwrap();
        let mut text = String::from_utf8_lossy(&output.stdout).to_string();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status.code().unwrap_or(-1), text)
    }

    #[test]
    fn files_and_shell_steps_land_in_the_root_in_order() {
        let root = tempfile::tempdir().unwrap();
        let awkward = b"it's \"quoted\" $HOME `x`\n\0binary\xff\nENDSTATE_BAKE_EOF\n";
        let steps = [
            file("motd", "/etc/it's motd", 0o640, awkward),
            shell(
                "list",
                "echo from the shell step\ncat \"$ROOT/etc/it's motd\" > \"$ROOT/copy\"\n",
            ),
        ];
        let (code, console) = run(root.path(), &steps);
        assert_eq!(code, 0, "{console}");
        let written = root.path().join("etc/it's motd");
        assert_eq!(std::fs::read(&written).unwrap(), awkward);
        assert_eq!(
            std::fs::metadata(&written).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(std::fs::read(root.path().join("copy")).unwrap(), awkward);
        assert!(!root.path().join("etc/it's motd.bake").exists());
        assert_eq!(
            read_progress("n0nce", &console),
            Progress::Done,
            "{console}"
        );
        assert!(console.contains("  | from the shell step"), "{console}");
    }

    #[test]
    fn the_first_failing_step_stops_the_script_and_is_named_with_its_output() {
        let root = tempfile::tempdir().unwrap();
        let steps = [
            shell("ok", "touch \"$ROOT/first\""),
            shell(
                "broken",
                "echo about to fail\necho on stderr >&2\nfalse\necho never",
            ),
            shell("after", "touch \"$ROOT/after\""),
        ];
        let (code, console) = run(root.path(), &steps);
        assert_eq!(code, 1, "{console}");
        assert!(root.path().join("first").exists());
        assert!(!root.path().join("after").exists());
        assert_eq!(
            read_progress("n0nce", &console),
            Progress::Failed {
                step: 1,
                code: 1,
                output: "about to fail\non stderr".to_string()
            },
            "{console}"
        );
        // Another bake's nonce sees nothing of this one.
        assert_eq!(
            read_progress("other", &console),
            Progress::Running { finished: 0 }
        );
    }

    #[test]
    fn a_script_over_the_user_data_limit_names_its_largest_step() {
        let steps = [
            file("small", "/etc/a", 0o644, b"a"),
            file("big", "/srv/big", 0o644, &[7u8; 20_000]),
        ];
        let error = provisioning_script("n", &steps).unwrap_err();
        assert!(
            matches!(&error, ScriptError::TooLarge { largest, .. } if largest == "big"),
            "{error}"
        );
        assert!(error.to_string().contains("16384"), "{error}");
    }

    #[test]
    fn a_relative_path_is_refused() {
        let error = provisioning_script("n", &[file("f", "etc/a", 0o644, b"")]).unwrap_err();
        assert_eq!(error.to_string(), "step f: path etc/a is not absolute");
    }
}
