//! User data size, gzip, rendering, and the other generated artifacts:
//! JSON Schema and the starter spec.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::io::Read;
use std::path::Path;

use endstate_model::{
    json_schema, load_str, starter_spec, SecretError, SecretRef, UserData, UserDataPart,
    USER_DATA_LIMIT,
};

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Deterministic, incompressible text (xorshift over the printable ASCII
/// characters but space and `$`, so that it can sit in a YAML block scalar
/// and holds no `${`): about 6.6 bits a byte, which gzip cannot shrink to
/// the limit.
fn random_text(len: usize) -> String {
    let alphabet: Vec<char> = ('!'..='~').filter(|c| *c != '$').collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|i| {
            if i % 64 == 63 {
                return '\n';
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize]
        })
        .collect()
}

fn text(s: &str) -> UserData {
    UserData::from_parts(vec![UserDataPart::Text(s.to_string())])
}

#[test]
fn small_user_data_is_sent_as_is() {
    let ud = text("#!/bin/sh\necho hi\n");
    assert_eq!(ud.render().unwrap(), b"#!/bin/sh\necho hi\n");
}

#[test]
fn compressible_40k_script_fits_after_gzip() {
    let script = "echo 'the same line, again and again'\n".repeat(40_000 / 37);
    assert!(script.len() > 40_000 - 37);
    let rendered = text(&script).render().unwrap();
    assert!(rendered.len() <= USER_DATA_LIMIT);
    assert_eq!(&rendered[..2], &[0x1f, 0x8b], "gzip magic");
    assert_eq!(gunzip(&rendered), script.as_bytes());
}

#[test]
fn random_20k_does_not_fit() {
    let data = random_text(20_000);
    match text(&data).render() {
        Err(SecretError::UserDataTooLarge { bytes, gzip_bytes }) => {
            assert_eq!(bytes, 20_000);
            assert!(gzip_bytes > USER_DATA_LIMIT);
            let message = text(&data).render().unwrap_err().to_string();
            assert!(
                message.starts_with("user data is 20,000 bytes (gzip "),
                "{message}"
            );
            assert!(message.ends_with("), over EC2's limit of 16,384 bytes"));
        }
        other => panic!("expected UserDataTooLarge, got {other:?}"),
    }
}

#[test]
fn oversize_user_data_is_a_load_error_at_user_data() {
    let body = random_text(20_000).replace('\n', "\n        ");
    let source = format!(
        "\
project: p
provider: {{ aws: {{ region: us-east-1 }} }}
groups:
  g:
    image: ami-12345678
    instance_type: t3.micro
    capacity: {{ min: 1, desired: 1, max: 1 }}
    zones: [us-east-1a]
    user_data:
      script: |
        {body}
"
    );
    let got = load_str(&source, Path::new("spec.yaml"), Path::new("."), None)
        .unwrap_err()
        .to_string();
    assert!(
        got.starts_with("spec.yaml:9:5: error: user data is 20,001 bytes (gzip "),
        "{got}"
    );
    assert!(got.contains("), over EC2's limit of 16,384 bytes\n  expected: "));
}

#[test]
fn render_resolves_env_secrets_and_reports_missing_ones() {
    // The variable name is unique to this test, so setting it cannot race
    // with another test reading it.
    let name = "ENDSTATE_MODEL_TEST_RENDER_SECRET";
    let ud = UserData::from_parts(vec![
        UserDataPart::Text("pw=".into()),
        UserDataPart::Secret(SecretRef::Env(name.into())),
    ]);
    let err = ud.render().unwrap_err().to_string();
    assert_eq!(
        err,
        format!("secret env:{name}: environment variable {name} is not set")
    );
    std::env::set_var(name, "hunter2");
    assert_eq!(ud.render().unwrap(), b"pw=hunter2");
    assert!(!format!("{ud:?}").contains("hunter2"));
    assert_eq!(ud.template(), format!("pw=${{secret:env:{name}}}"));
    assert_eq!(ud.template_hash.len(), 64);
}

#[test]
fn json_schema_describes_the_file() {
    let schema = json_schema();
    let text = serde_json::to_string_pretty(&schema).unwrap();
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back, schema);
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert!(schema["properties"]["groups"].is_object());
    let group = &schema["definitions"]["group"];
    assert_eq!(group["additionalProperties"], false);
    for field in [
        "image",
        "instance_types",
        "capacity",
        "zones",
        "user_data",
        "load_balancer",
        "rollout",
    ] {
        assert!(group["properties"][field].is_object(), "{field}");
    }
    assert!(schema["properties"]["load_balancers"].is_object());
    let overlay = &schema["properties"]["environments"]["additionalProperties"];
    assert!(overlay["properties"]["load_balancers"].is_object());
}

#[test]
fn starter_spec_loads_without_errors() {
    let text = starter_spec("demo");
    let spec = load_str(&text, Path::new("endstate.yaml"), Path::new("."), None)
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(spec.project, "demo");
    assert_eq!(spec.groups.len(), 1);
    assert_eq!(spec.groups[0].capacity.desired, 2);
    let prod = load_str(
        &text,
        Path::new("endstate.yaml"),
        Path::new("."),
        Some("prod"),
    )
    .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(prod.groups[0].capacity.desired, 4);
    assert_eq!(prod.groups[0].capacity.max, 8);
}
