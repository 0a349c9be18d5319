//! Shared by the section tests: YAML documents validated against
//! `endstate_model::json_schema()` with Python's jsonschema (draft 7), from
//! the virtual environment `scripts/setup-tools` makes. Not a test itself.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

/// The Python of `.tools/venv` (`scripts/setup-tools`, run by
/// `scripts/test`), with PyYAML and jsonschema. Without it the tests fail:
/// they never skip.
fn tools_python() -> std::path::PathBuf {
    let path =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/python");
    assert!(
        path.is_file(),
        "{} not found: run scripts/setup-tools (scripts/test does)",
        path.display()
    );
    path
}

/// One verdict per document, in order: `valid`, or `invalid: ` and the
/// first error's message.
pub fn schema_verdicts(documents: &[String]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(&schema, endstate_model::json_schema().to_string()).unwrap();
    let mut files = Vec::new();
    for (i, text) in documents.iter().enumerate() {
        let file = dir.path().join(format!("{i}.yaml"));
        std::fs::write(&file, text).unwrap();
        files.push(file);
    }
    const SCRIPT: &str = "
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
validator = jsonschema.Draft7Validator(schema)
for path in sys.argv[2:]:
    errors = list(validator.iter_errors(yaml.safe_load(open(path))))
    print('valid' if not errors else 'invalid: ' + errors[0].message.replace('\\n', ' '))
";
    let out = std::process::Command::new(tools_python())
        .arg("-c")
        .arg(SCRIPT)
        .arg(&schema)
        .args(&files)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<String> = stdout.lines().map(str::to_string).collect();
    assert_eq!(verdicts.len(), documents.len(), "{stdout}");
    verdicts
}
