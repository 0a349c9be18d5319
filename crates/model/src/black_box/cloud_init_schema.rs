//! The `#cloud-config` user data the model emits, checked by the real
//! cloud-init: each spec below is loaded through the public API, its user
//! data rendered (and gunzipped when gzip was needed), written to a file and
//! handed to `cloud-init schema --config-file`, which must call it valid;
//! where the YAML 1.1 traps are, cloud-init's own YAML reader must also read
//! back the values the spec wrote.
//!
//! cloud-init is Debian's package, unpacked under `.tools/cloud-init` and run
//! by `.tools/bin/cloud-init`; `scripts/setup-tools` (which `scripts/test`
//! runs) puts it there. Without it these tests fail: they never skip.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use endstate_model::{load_str, USER_DATA_LIMIT};
use serde_json::{json, Value};

/// Where `scripts/setup-tools` writes the cloud-init wrapper.
fn cloud_init() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/cloud-init");
    assert!(
        path.is_file(),
        "{} not found: run scripts/setup-tools (scripts/test does) to unpack cloud-init into .tools",
        path.display()
    );
    path
}

/// The document as cloud-init itself reads it (its `safeyaml`: PyYAML, YAML
/// 1.1), as JSON. The schema checks types, not values: a block scalar that
/// lost its leading spaces or its last newline would still pass it, so the
/// tests also compare what cloud-init reads with what the spec said.
fn read_by_cloud_init(text: &str) -> Value {
    // Fails with the set-up hint when the tools are missing.
    cloud_init();
    // The interpreter and module path the wrapper uses.
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools");
    let out = Command::new(tools.join("venv/bin/python"))
        .arg("-s")
        .arg("-c")
        .arg(
            "import json, sys\n\
             from cloudinit import safeyaml\n\
             print(json.dumps(safeyaml.load(sys.stdin.read()), default=repr))",
        )
        .env(
            "PYTHONPATH",
            tools.join("cloud-init/usr/lib/python3/dist-packages"),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "cloud-init could not read:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What `cloud-init schema` said about `user_data`.
struct Verdict {
    success: bool,
    output: String,
}

fn schema_check(user_data: &[u8]) -> Verdict {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("user-data");
    std::fs::write(&file, user_data).unwrap();
    let out = Command::new(cloud_init())
        .arg("schema")
        .arg("--config-file")
        .arg(&file)
        .output()
        .unwrap();
    Verdict {
        success: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn assert_valid(user_data: &[u8]) {
    let verdict = schema_check(user_data);
    assert!(
        verdict.success && verdict.output.contains("Valid cloud-config"),
        "cloud-init rejected the user data:\n{}\n--- user data ---\n{}",
        verdict.output,
        String::from_utf8_lossy(user_data)
    );
}

fn assert_rejected(user_data: &[u8]) -> String {
    let verdict = schema_check(user_data);
    assert!(
        !verdict.success && !verdict.output.contains("Valid cloud-config"),
        "cloud-init accepted invalid user data:\n{}",
        verdict.output
    );
    verdict.output
}

/// A one-group spec whose `user_data.cloud_config` is `cloud_config`
/// (written at column 0; indented here), with `variables` and `secrets`.
fn spec(variables: &str, secrets: &str, cloud_config: &str) -> String {
    let body: String = cloud_config
        .lines()
        .map(|line| {
            if line.is_empty() {
                "\n".to_string()
            } else {
                format!("        {line}\n")
            }
        })
        .collect();
    format!(
        "\
project: p
provider: {{ aws: {{ region: us-east-1 }} }}
variables: {{ {variables} }}
secrets: {{ {secrets} }}
groups:
  g:
    image: ami-12345678
    instance_type: t3.micro
    capacity: {{ min: 1, desired: 1, max: 1 }}
    zones: [us-east-1a]
    user_data:
      cloud_config:
{body}"
    )
}

/// The user data bytes of the spec's only group, as EC2 would get them,
/// and whether they were gzipped.
fn render(source: &str) -> (Vec<u8>, bool) {
    let spec = load_str(source, Path::new("spec.yaml"), Path::new("."), None)
        .unwrap_or_else(|d| panic!("{d}\n--- spec ---\n{source}"));
    let bytes = spec.groups[0].user_data.as_ref().unwrap().render().unwrap();
    assert!(bytes.len() <= USER_DATA_LIMIT);
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut text)
            .unwrap();
        (text, true)
    } else {
        (bytes, false)
    }
}

fn rendered_valid(source: &str) -> String {
    let (text, gzipped) = render(source);
    assert!(!gzipped, "small user data should not be gzipped");
    assert!(text.starts_with(b"#cloud-config\n"));
    assert_valid(&text);
    String::from_utf8(text).unwrap()
}

#[test]
fn write_files_with_content_that_needs_quoting() {
    let text = rendered_valid(&spec(
        "",
        "",
        r#"write_files:
  - path: /etc/app/flags.yaml
    permissions: '0755'
    owner: root:root
    content: 'key: value # not a comment'
  - path: /etc/app/quotes
    permissions: '0644'
    content: "\"double\" and 'single' and a trailing space "
  - path: /etc/app/dash
    content: '- looks like a list'
  - path: /etc/app/star
    content: '*not-an-alias'
  - path: /etc/app/tabs
    content: "col1\tcol2\nrow1\trow2\n"
  - path: /etc/app/indented
    content: "    starts indented\nthen not\n\n\n"
  - path: /etc/app/no-final-newline
    content: "line 1\nline 2"
  - path: /etc/app/empty
    content: ''
  - path: /etc/app/yes
    content: 'yes'
    append: true
    defer: false
"#,
    ));
    assert!(text.contains("permissions: \"0755\""), "{text}");
    let read = read_by_cloud_init(&text);
    let contents: Vec<&str> = read["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            "key: value # not a comment",
            "\"double\" and 'single' and a trailing space ",
            "- looks like a list",
            "*not-an-alias",
            "col1\tcol2\nrow1\trow2\n",
            "    starts indented\nthen not\n\n\n",
            "line 1\nline 2",
            "",
            "yes",
        ]
    );
    assert_eq!(read["write_files"][0]["permissions"], "0755");
    assert_eq!(read["write_files"][8]["append"], true);
}

#[test]
fn multi_line_scripts_runcmd_and_bootcmd() {
    rendered_valid(&spec(
        "",
        "",
        r#"bootcmd:
  - echo booting > /dev/console
  - [cloud-init-per, once, mkswap, mkswap, /dev/xvdb]
runcmd:
  - |
    #!/bin/sh
    set -eu
    if [ -f /etc/app/flags.yaml ]; then
      echo "found: $(cat /etc/app/flags.yaml)"   # a comment
    fi
  - systemctl enable --now nginx
  - [sh, -c, 'echo "a: b" >> /tmp/log']
  - [/usr/bin/install, -m, '0755', /dev/null, /usr/local/bin/x]
write_files:
  - path: /usr/local/bin/hello
    permissions: '0755'
    content: |
      #!/bin/bash
      # prints a greeting
      name="${1:-world}"
      echo "hello, $name: welcome"
        indented: line
      - dash line
"#,
    ));
}

#[test]
fn values_yaml_1_1_would_misread_stay_strings() {
    // In an argv list cloud-init's schema wants strings: an unquoted `yes`
    // (a boolean to YAML 1.1), `0755` (octal 493), `1e3` (a float?),
    // `null` or `~` (None) would be rejected, and `*x` is an alias.
    let text = rendered_valid(&spec(
        "",
        "",
        r#"runcmd:
  - [echo, 'yes', 'on', 'off', 'no', 'y', 'n', '0755', '1e3', '1_000', '0x1F', '1:20', '2024-01-31', 'null', '~', '*star', '&anchor', '!tag', '.inf', '-1', '']
  - 'yes'
  - '0755'
packages:
  - 'on'
  - '1e3'
  - nginx
package_update: true
package_upgrade: false
ssh_pwauth: false
"#,
    ));
    for quoted in [
        "\"yes\"",
        "\"on\"",
        "\"0755\"",
        "\"1e3\"",
        "\"null\"",
        "\"~\"",
        "\"*star\"",
    ] {
        assert!(text.contains(quoted), "{quoted} not quoted in\n{text}");
    }
    let read = read_by_cloud_init(&text);
    assert_eq!(
        read["runcmd"],
        json!([
            [
                "echo",
                "yes",
                "on",
                "off",
                "no",
                "y",
                "n",
                "0755",
                "1e3",
                "1_000",
                "0x1F",
                "1:20",
                "2024-01-31",
                "null",
                "~",
                "*star",
                "&anchor",
                "!tag",
                ".inf",
                "-1",
                ""
            ],
            "yes",
            "0755"
        ])
    );
    assert_eq!(read["packages"], json!(["on", "1e3", "nginx"]));
    assert_eq!(read["package_update"], true);
    assert_eq!(read["package_upgrade"], false);
}

#[test]
fn users_and_nested_mappings() {
    rendered_valid(&spec(
        "",
        "",
        r#"users:
  - default
  - name: deploy
    groups: [sudo, docker]
    sudo: 'ALL=(ALL) NOPASSWD:ALL'
    shell: /bin/bash
    lock_passwd: true
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk0bOxzMjUJZx3eh1jx6yTzp8pDkqFPTJeqdXCBUOr6 deploy@example
timezone: Etc/UTC
locale: C.UTF-8
ntp:
  enabled: true
  servers: [169.254.169.123]
final_message: 'done after $UPTIME seconds: ok'
"#,
    ));
}

#[test]
fn interpolated_variables_and_secrets() {
    let name = "ENDSTATE_MODEL_TEST_CLOUD_INIT_TOKEN";
    // A value that would need quoting were it not in a block scalar.
    std::env::set_var(name, "yes: #*0755 'x\" ~");
    let text = rendered_valid(&spec(
        "app: shop, answer: 'yes', mode: '0600', upgrade: true, port: 8080",
        &format!("token: env:{name}"),
        r#"package_upgrade: ${var.upgrade}
write_files:
  - path: /etc/${var.app}/token
    permissions: ${var.mode}
    content: ${secret.token}
  - path: /etc/${var.app}/env
    content: |
      APP=${var.app}
      PORT=${var.port}
      TOKEN=${secret.token}
      SHELL_VAR=${HOME}
runcmd:
  - [echo, '${var.answer}', '${var.mode}']
  - echo ${var.answer} ${secret.token}
  - '${var.answer}'
"#,
    ));
    assert!(text.contains("package_upgrade: true\n"), "{text}");
    assert!(text.contains("\"0600\""), "{text}");
    let read = read_by_cloud_init(&text);
    let token = "yes: #*0755 'x\" ~";
    assert_eq!(read["write_files"][0]["path"], "/etc/shop/token");
    assert_eq!(read["write_files"][0]["permissions"], "0600");
    assert_eq!(read["write_files"][0]["content"], token);
    assert_eq!(
        read["write_files"][1]["content"],
        format!("APP=shop\nPORT=8080\nTOKEN={token}\nSHELL_VAR=${{HOME}}\n")
    );
    assert_eq!(
        read["runcmd"],
        json!([["echo", "yes", "0600"], format!("echo yes {token}"), "yes"])
    );
}

#[test]
fn gzipped_user_data_is_valid_once_decompressed() {
    let line = "echo 'the same line, again and again: yes'\n";
    let content: String = line.repeat(20_000 / line.len() + 1);
    let indented: String = content.lines().map(|l| format!("      {l}\n")).collect();
    let source = spec(
        "",
        "",
        &format!(
            "write_files:\n  - path: /usr/local/bin/long\n    permissions: '0755'\n    content: |\n{indented}runcmd:\n  - /usr/local/bin/long\n"
        ),
    );
    let (text, gzipped) = render(&source);
    assert!(gzipped, "user data over the limit should be gzipped");
    assert!(text.len() > USER_DATA_LIMIT);
    assert_valid(&text);
}

#[test]
fn an_empty_cloud_config_is_valid() {
    let text = rendered_valid(&spec("", "", "{}\n"));
    assert_eq!(text, "#cloud-config\n{}\n");
}

#[test]
fn the_check_can_fail() {
    let output = assert_rejected(b"#cloud-config\nruncmd: 5\n");
    assert!(output.contains("runcmd"), "{output}");
    // What an emitter that did not quote for YAML 1.1 would write.
    let output = assert_rejected(b"#cloud-config\nruncmd:\n  - [echo, yes, 0755]\n");
    assert!(output.contains("runcmd"), "{output}");
}

#[test]
fn secrets_of_several_lines_stay_inside_their_block() {
    // A PEM key from a file (its last newline dropped, as for any file
    // secret) and a value whose lines start with spaces, from the
    // environment: each spliced in at apply time, after the YAML was written.
    let dir = tempfile::tempdir().unwrap();
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n\n-----END PRIVATE KEY-----";
    std::fs::write(dir.path().join("key.pem"), format!("{pem}\n")).unwrap();
    let name = "ENDSTATE_MODEL_TEST_CLOUD_INIT_LINES";
    let lines = "  first: 1\n    second: yes\n- third";
    std::env::set_var(name, lines);
    let source = spec(
        "",
        &format!("key: file:key.pem, lines: env:{name}"),
        r#"write_files:
  - path: /etc/ssl/private/app.pem
    permissions: '0600'
    content: ${secret.key}
  - path: /etc/app/conf
    content: |
      before
        KEY=${secret.key}
      after
  - path: /etc/app/lines
    content: ${secret.lines}
runcmd:
  - ${secret.lines}
  - [echo, '${secret.key}']
"#,
    );
    let spec = load_str(&source, Path::new("spec.yaml"), dir.path(), None)
        .unwrap_or_else(|d| panic!("{d}"));
    let bytes = spec.groups[0].user_data.as_ref().unwrap().render().unwrap();
    assert_valid(&bytes);
    let read = read_by_cloud_init(&String::from_utf8(bytes).unwrap());
    let contents: Vec<&str> = read["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["content"].as_str().unwrap())
        .collect();
    // The value exactly: its lines do not take the indentation of the line
    // it starts on.
    assert_eq!(
        contents,
        [
            pem.to_string(),
            format!("before\n  KEY={pem}\nafter\n"),
            lines.to_string()
        ]
    );
    assert_eq!(read["runcmd"], json!([lines, ["echo", pem]]));
}
