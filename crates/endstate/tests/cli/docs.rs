//! The README's spec example and `endstate init`'s starter are valid specs,
//! for every environment they declare; `endstate schema` is a JSON Schema
//! that accepts the starter's shape. Docs that lie are bugs.

use std::path::Path;
use std::process::Command;

fn endstate(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_endstate"))
        .args(args)
        .current_dir(dir)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("DB_PASSWORD", "from-the-environment")
        .env("NO_COLOR", "1")
        .output()
        .expect("running endstate")
}

fn assert_valid(dir: &Path, env: Option<&str>) {
    let mut args = vec!["validate"];
    if let Some(env) = env {
        args.extend(["-e", env]);
    }
    let output = endstate(dir, &args);
    assert!(
        output.status.success(),
        "{args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_readme_spec_is_valid() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    let start = readme
        .find("```yaml\n")
        .expect("a yaml block in the README")
        + "```yaml\n".len();
    let end = start + readme[start..].find("```").expect("its end");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("endstate.yaml"), &readme[start..end]).expect("spec");
    assert_valid(dir.path(), None);
    assert_valid(dir.path(), Some("prod"));
}

#[test]
fn init_writes_a_valid_starter_with_the_endpoint_line_the_demo_edits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = endstate(dir.path(), &["init", "--project", "starter"]);
    assert!(output.status.success());
    let spec = std::fs::read_to_string(dir.path().join("endstate.yaml")).expect("starter");
    assert!(
        spec.contains("\n    # endpoint: http://127.0.0.1:5000\n"),
        "scripts/demo edits this line"
    );
    assert_valid(dir.path(), None);
    assert_valid(dir.path(), Some("prod"));
    let again = endstate(dir.path(), &["init"]);
    assert!(
        !again.status.success(),
        "init must not overwrite without --force"
    );
}

#[test]
fn schema_is_json_schema_for_the_spec() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = endstate(dir.path(), &["schema"]);
    assert!(output.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(schema["$schema"]
        .as_str()
        .is_some_and(|s| s.contains("json-schema.org")));
    for field in [
        "project",
        "provider",
        "groups",
        "variables",
        "secrets",
        "environments",
    ] {
        assert!(
            schema["properties"][field].is_object(),
            "schema lacks {field}"
        );
    }
}
