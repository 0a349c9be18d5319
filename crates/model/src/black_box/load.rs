//! Loader tests: valid specs, overlays, interpolation, and a table of
//! malformed specs with the exact diagnostics they produce.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::path::Path;

use endstate_model::{load, load_str, Diagnostics, Spec, UserDataPart};

fn load_in(source: &str, dir: &Path, env: Option<&str>) -> Result<Spec, Diagnostics> {
    load_str(source, Path::new("spec.yaml"), dir, env)
}

fn ok(source: &str) -> Spec {
    match load_in(source, Path::new("."), None) {
        Ok(spec) => spec,
        Err(d) => panic!("unexpected diagnostics:\n{d}"),
    }
}

fn errors(source: &str) -> String {
    errors_env(source, None)
}

fn errors_env(source: &str, env: Option<&str>) -> String {
    match load_in(source, Path::new("."), env) {
        Ok(_) => panic!("expected diagnostics, the spec loaded"),
        Err(d) => d.to_string(),
    }
}

const VALID: &str = "\
project: shop
provider:
  aws:
    region: us-east-1
    endpoint: http://127.0.0.1:5000
variables:
  ami: ami-0123456789abcdef0
  web_count: 3
groups:
  web:
    image: ${var.ami}
    instance_types: [t3.micro, t3a.micro]
    capacity:
      min: 2
      desired: ${var.web_count}
      max: 6
    zones:
      us-east-1a: [subnet-aaa]
      us-east-1b: [subnet-bbb]
    security_groups: [sg-123]
    key_pair: ops
    iam_instance_profile: web-role
    root_volume: { size_gib: 20, type: gp3 }
    metadata: { tokens: optional, hop_limit: 3 }
    tags: { team: storefront, tier: 1 }
    user_data:
      script: |
        #!/bin/sh
        echo ${var.ami} $${HOME} ${HOME}
    disruption_budget: { min_healthy: 80%, max_surge: 2 }
  worker:
    image: ami-12345678
    instance_type: c5.large
    capacity: { min: 0, desired: 0, max: 1 }
    zones: [us-east-1c]
environments:
  prod:
    variables: { web_count: 10 }
    groups:
      web:
        capacity: { desired: '${var.web_count}', max: 20 }
        tags: { env: prod }
";

#[test]
fn valid_spec_resolves() {
    let spec = ok(VALID);
    assert_eq!(spec.project, "shop");
    assert_eq!(spec.environment, "default");
    assert_eq!(
        spec.provider,
        endstate_model::Provider::Aws {
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:5000".into()),
            profile: None
        }
    );
    let names: Vec<_> = spec.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["web", "worker"]);
    let web = &spec.groups[0];
    assert_eq!(web.image_id, "ami-0123456789abcdef0");
    assert_eq!(web.instance_types, ["t3.micro", "t3a.micro"]);
    assert_eq!(
        web.capacity,
        endstate_model::Capacity {
            min: 2,
            desired: 3,
            max: 6
        }
    );
    assert_eq!(web.zones.len(), 2);
    assert_eq!(web.zones[1].name, "us-east-1b");
    assert_eq!(web.zones[1].subnet_ids, ["subnet-bbb"]);
    assert_eq!(web.security_group_ids, ["sg-123"]);
    assert_eq!(web.key_name.as_deref(), Some("ops"));
    assert_eq!(web.iam_instance_profile.as_deref(), Some("web-role"));
    let volume = web.root_volume.as_ref().unwrap();
    assert_eq!((volume.size_gib, volume.volume_type.as_str()), (20, "gp3"));
    assert!(!web.metadata.tokens_required);
    assert_eq!(web.metadata.hop_limit, 3);
    assert_eq!(web.tags["team"], "storefront");
    assert_eq!(web.tags["tier"], "1");
    assert_eq!(web.budget.min_healthy_share, 0.8);
    assert_eq!(web.budget.max_surge, Some(2));
    let user_data = web.user_data.as_ref().unwrap();
    assert_eq!(
        user_data.parts,
        [UserDataPart::Text(
            "#!/bin/sh\necho ami-0123456789abcdef0 ${HOME} ${HOME}\n".into()
        )]
    );
    assert_eq!(
        String::from_utf8(user_data.render().unwrap())
            .unwrap()
            .len(),
        53
    );

    let worker = &spec.groups[1];
    assert_eq!(worker.instance_types, ["c5.large"]);
    assert_eq!(worker.zones[0].name, "us-east-1c");
    assert!(worker.zones[0].subnet_ids.is_empty());
    assert_eq!(worker.metadata, endstate_model::MetadataOptions::default());
    assert_eq!(worker.budget.min_healthy_share, 0.9);
    assert_eq!(worker.budget.max_surge, None);
    assert!(worker.user_data.is_none());

    // Same input, same hash; the hash is hex sha256.
    assert_eq!(spec.hash, ok(VALID).hash);
    assert_eq!(spec.hash.len(), 64);
}

#[test]
fn spec_round_trips_through_json() {
    let spec = ok(VALID);
    let json = serde_json::to_string(&spec).unwrap();
    let back: Spec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn overlay_deep_merges_and_keeps_positions() {
    let spec = load_in(VALID, Path::new("."), Some("prod")).unwrap();
    assert_eq!(spec.environment, "prod");
    let web = &spec.groups[0];
    assert_eq!(web.capacity.min, 2, "min comes from the base");
    assert_eq!(web.capacity.desired, 10, "typed from the overlaid variable");
    assert_eq!(web.capacity.max, 20);
    assert_eq!(web.tags.len(), 3, "maps merge key by key");
    assert_eq!(web.tags["env"], "prod");
    assert_ne!(spec.hash, ok(VALID).hash);

    // An error in a base value still points at the base line after overlay,
    // and one in the overlay at the overlay's line.
    let source = VALID
        .replace("max: 20 }", "max: 20, min: 30 }")
        .replace("    image: ami-12345678\n", "    image: ami-xyz\n");
    assert_eq!(
        errors_env(&source, Some("prod")),
        "spec.yaml:32:12: error: image `ami-xyz` is not an AMI id\n  \
         expected: ami- followed by 8 or 17 hex digits, like ami-0123456789abcdef0, or RECIPE@CHANNEL\n\
         spec.yaml:41:64: error: capacity.min (30) is greater than capacity.max (20)"
    );
}

#[test]
fn overlay_replaces_exclusive_keys() {
    let source = format!(
        "{VALID}  staging:\n    groups:\n      worker:\n        instance_types: [m5.large]\n"
    );
    let spec = load_in(&source, Path::new("."), Some("staging")).unwrap();
    assert_eq!(spec.groups[1].instance_types, ["m5.large"]);
}

#[test]
fn overlay_replaces_user_data_kind_but_not_variables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("boot.sh"), "echo from file\n").unwrap();
    let source = "\
project: p
provider: { aws: { region: us-east-1 } }
variables: { script: a, cloud_config: b }
groups:
  g:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    user_data: { script: echo inline }
environments:
  prod:
    variables: { file: c }
    groups:
      g:
        user_data: { file: boot.sh }
";
    let spec = load_in(source, dir.path(), Some("prod")).unwrap();
    let ud = spec.groups[0].user_data.as_ref().unwrap();
    assert_eq!(ud.template(), "echo from file\n");
    // Variables named like user data keys are merged, not made exclusive.
    let with_vars = source.replace(
        "boot.sh }",
        "boot.sh }\n        tags: { a: '${var.script}${var.file}' }",
    );
    let spec = load_in(&with_vars, dir.path(), Some("prod")).unwrap();
    assert_eq!(spec.groups[0].tags["a"], "ac");
}

#[test]
fn interpolation_is_typed() {
    let spec = ok("\
project: p
provider: { aws: { region: eu-west-1 } }
variables: { n: 4, t: t3.small, on: true, s: '5' }
groups:
  g:
    image: ami-12345678
    instance_type: ${var.t}
    capacity: { min: 1, desired: '${var.n}', max: 8 }
    zones: [eu-west-1a]
    tags: { count: 'x${var.n}', flag: '${var.on}' }
");
    let g = &spec.groups[0];
    assert_eq!(g.capacity.desired, 4);
    assert_eq!(g.instance_types, ["t3.small"]);
    assert_eq!(g.tags["count"], "x4");
    assert_eq!(g.tags["flag"], "true");
    // A quoted '5' stays a string, so it is no integer.
    assert_eq!(
        errors(
            "\
project: p
provider: { aws: { region: eu-west-1 } }
variables: { s: '5' }
groups:
  g:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: '${var.s}', max: 8 }
    zones: [eu-west-1a]
"
        ),
        "spec.yaml:8:34: error: capacity.desired: expected an integer, found a string"
    );
}

#[test]
fn secrets_stay_references() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cr3t\n").unwrap();
    let source = "\
project: p
provider: { aws: { region: us-east-1 } }
secrets:
  token: file:token
groups:
  g:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    user_data:
      script: |
        echo ${secret.token} > /etc/token
";
    let spec = load_in(source, dir.path(), None).unwrap();
    let ud = spec.groups[0].user_data.as_ref().unwrap();
    let path = dir.path().join("token").display().to_string();
    assert_eq!(
        ud.parts,
        [
            UserDataPart::Text("echo ".into()),
            UserDataPart::Secret(endstate_model::SecretRef::File(path.clone())),
            UserDataPart::Text(" > /etc/token\n".into()),
        ]
    );
    // The template names the file, not its absolute path: the same spec in
    // another checkout must hash the same.
    assert_eq!(ud.template(), "echo ${secret:file:token} > /etc/token\n");
    let debug = format!("{spec:?}{}", serde_json::to_string(&spec).unwrap());
    assert!(!debug.contains("s3cr3t"));
    assert_eq!(ud.render().unwrap(), b"echo s3cr3t > /etc/token\n");
}

#[test]
fn load_reads_files_relative_to_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("boot.sh"), "#!/bin/sh\necho ${var.x}\n").unwrap();
    std::fs::write(
        dir.path().join("spec.yaml"),
        "\
project: p
provider: { aws: { region: us-east-1 } }
variables: { x: hi }
groups:
  g:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    user_data: { file: boot.sh }
",
    )
    .unwrap();
    let spec = load(&dir.path().join("spec.yaml"), None).unwrap();
    let ud = spec.groups[0].user_data.as_ref().unwrap();
    assert_eq!(ud.render().unwrap(), b"#!/bin/sh\necho hi\n");
}

#[test]
fn errors_in_a_user_data_file_point_into_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("boot.sh"),
        "#!/bin/sh\n  echo ${var.nope}\n",
    )
    .unwrap();
    let source = "\
project: p
provider: { aws: { region: us-east-1 } }
groups:
  g:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    user_data: { file: boot.sh }
";
    let got = load_in(source, dir.path(), None).unwrap_err().to_string();
    assert_eq!(
        got,
        format!(
            "{}:2:8: error: unknown variable `nope`\n  expected: a name declared under `variables:` (none are)",
            dir.path().join("boot.sh").display()
        )
    );
}

#[test]
fn cloud_config_is_emitted_for_yaml_1_1() {
    let spec = ok("\
project: p
provider: { aws: { region: us-east-1 } }
variables: { port: 8080 }
groups:
  g:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    user_data:
      cloud_config:
        package_update: true
        packages: [nginx, 'yes']
        write_files:
          - path: /etc/app.conf
            permissions: '0644'
            owner: root:root
            content: |
              port=${var.port}
        bootcmd:
          - [sh, -c, 'echo ${var.port}']
        port: ${var.port}
        mode: 0755
");
    let ud = spec.groups[0].user_data.as_ref().unwrap();
    assert_eq!(
        ud.template(),
        "#cloud-config
package_update: true
packages:
  - nginx
  - \"yes\"
write_files:
  - path: /etc/app.conf
    permissions: \"0644\"
    owner: root:root
    content: |
      port=8080
bootcmd:
  -
    - sh
    - \"-c\"
    - echo 8080
port: 8080
mode: \"0755\"
"
    );
}

#[test]
fn local_provider_defaults_and_errors() {
    const GROUPS: &str = "groups:\n  g:\n    image: ami-12345678\n    instance_type: t3.micro\n    capacity: { min: 0, desired: 1, max: 2 }\n    zones: [us-east-1a]\n";
    let spec = ok(&format!("project: p\nprovider:\n  local:\n{GROUPS}"));
    assert_eq!(
        spec.provider,
        endstate_model::Provider::Local {
            region: "us-east-1".into(),
            dir: None
        }
    );
    let spec = ok(&format!(
        "project: p\nprovider: {{ local: {{ region: eu-west-1, dir: /tmp/c }} }}\n{}",
        GROUPS.replace("us-east-1a", "eu-west-1a")
    ));
    assert_eq!(spec.provider.region(), "eu-west-1");
    let both = errors(&format!(
        "project: p\nprovider:\n  local: {{}}\n  aws: {{ region: us-east-1 }}\n{GROUPS}"
    ));
    assert!(
        both.contains("spec.yaml:4:3") && both.contains("both `aws` and `local`"),
        "{both}"
    );
    let unknown = errors(&format!(
        "project: p\nprovider:\n  local: {{ regoin: x }}\n{GROUPS}"
    ));
    assert!(unknown.contains("did you mean `region`"), "{unknown}");
}
