//! A table of malformed specs, each with the exact diagnostics it must
//! produce (file:line:column, message, expected).

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::path::Path;

use endstate_model::load_str;

/// A valid group, indented for `groups:`; cases replace lines of it.
const HEAD: &str = "\
project: shop
provider:
  aws:
    region: us-east-1
";

fn check(name: &str, body: &str, env: Option<&str>, expected: &str, failures: &mut Vec<String>) {
    // A body that starts with `project:` replaces the head.
    let source = if body.starts_with("project:") {
        body.to_string()
    } else {
        format!("{HEAD}{body}")
    };
    let got = match load_str(
        &source,
        Path::new("spec.yaml"),
        Path::new("/nonexistent"),
        env,
    ) {
        Ok(_) => "<loaded without errors>".to_string(),
        Err(d) => d.to_string(),
    };
    if got != expected {
        failures.push(format!(
            "case {name}:\n--- expected\n{expected}\n--- got\n{got}\n"
        ));
    }
}

#[test]
fn malformed_specs() {
    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        (
            "syntax error",
            "\
groups:
  web: [a, b
",
            None,
            r#"spec.yaml:7:1: error: invalid YAML: while parsing a flow sequence, expected ',' or ']'"#,
        ),
        (
            "duplicate key",
            "\
groups: {}
groups: {}
",
            None,
            r#"spec.yaml:6:1: error: duplicate key `groups` (first set on line 5)"#,
        ),
        (
            "unknown top-level field and group field",
            "\
projekt: x
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    colour: blue
",
            None,
            r#"spec.yaml:5:1: error: unknown field `projekt` (did you mean `project`?)
  expected: one of project, provider, variables, secrets, load_balancers, roles, recipes, groups, environments
spec.yaml:12:5: error: unknown field `colour` in group `web`
  expected: one of image, instance_types, instance_type, capacity, zones, security_groups, key_pair, iam_instance_profile, root_volume, metadata, tags, user_data, disruption_budget, health_check, replacement_brake, scaling, load_balancer, rollout, roles"#,
        ),
        (
            "wrong types",
            "\
groups:
  web:
    image: ami-12345678
    instance_types: t3.micro
    capacity: { min: two, desired: 1, max: [3] }
    zones: [us-east-1a]
    metadata: { hop_limit: '2' }
",
            None,
            r#"spec.yaml:8:21: error: instance_types: expected a list, found a string
spec.yaml:9:22: error: capacity.min: expected an integer, found a string
spec.yaml:9:44: error: capacity.max: expected an integer, found a list
spec.yaml:11:28: error: metadata.hop_limit: expected an integer, found a string"#,
        ),
        (
            "missing required fields",
            "\
groups:
  web:
    instance_type: t3.micro
",
            None,
            r#"spec.yaml:6:3: error: missing required field `image`
spec.yaml:6:3: error: missing required field `capacity`
spec.yaml:6:3: error: missing required field `zones`"#,
        ),
        (
            "missing groups",
            "",
            None,
            r#"spec.yaml:1:1: error: missing required field `groups`"#,
        ),
        (
            "min greater than max, max over limit",
            "\
groups:
  a:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 5, desired: 4, max: 3 }
    zones: [us-east-1a]
  b:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 0, desired: 7, max: 6 }
    zones: [us-east-1a]
  c:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 0, desired: 1, max: 20000 }
    zones: [us-east-1a]
",
            None,
            r#"spec.yaml:9:22: error: capacity.min (5) is greater than capacity.max (3)
spec.yaml:14:34: error: capacity.desired (7) is not between capacity.min (0) and capacity.max (6)
spec.yaml:19:42: error: capacity.max (20000) is over the limit of 10,000"#,
        ),
        (
            "invalid image and instance types",
            "\
groups:
  web:
    image: ami-XYZ
    instance_types: []
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
  api:
    image: ubuntu
    instance_types: [t3.micro, large]
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
",
            None,
            r#"spec.yaml:7:12: error: image `ami-XYZ` is not an AMI id
  expected: ami- followed by 8 or 17 hex digits, like ami-0123456789abcdef0, or RECIPE@CHANNEL
spec.yaml:8:21: error: instance_types is empty
  expected: at least one instance type, like [t3.micro]
spec.yaml:12:12: error: image `ubuntu` is not an AMI id
  expected: ami- followed by 8 or 17 hex digits, like ami-0123456789abcdef0, or RECIPE@CHANNEL
spec.yaml:13:32: error: invalid instance type `large`
  expected: FAMILY.SIZE, like t3.micro"#,
        ),
        (
            "unknown variable and secret outside user data",
            "\
secrets:
  pw: env:PATH
groups:
  web:
    image: ${var.ami}
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    key_pair: k-${secret.pw}
",
            None,
            r#"spec.yaml:9:12: error: unknown variable `ami`
  expected: a name declared under `variables:` (none are)
spec.yaml:13:17: error: `${secret.pw}` is only allowed in user data and role contents
  expected: secrets in user_data script, file or cloud_config, or in a role resource's content, template, vars, command, onlyif or unless"#,
        ),
        (
            "bad tag keys",
            "\
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    tags:
      aws:cloudformation: x
      endstate:group: y
      ok: fine
",
            None,
            r#"spec.yaml:12:7: error: tag key `aws:cloudformation` uses the prefix `aws:`, reserved by AWS
  expected: a key that does not start with aws: or endstate:
spec.yaml:13:7: error: tag key `endstate:group` uses the prefix `endstate:`, reserved for endstate's own tags
  expected: a key that does not start with aws: or endstate:"#,
        ),
        (
            "unknown environment",
            "\
groups: {}
environments:
  prod: {}
  dev: {}
",
            Some("staging"),
            r#"spec.yaml:6:1: error: unknown environment `staging`
  expected: one of prod, dev"#,
        ),
        (
            "unknown environment without environments",
            "groups: {}\n",
            Some("prod"),
            r#"spec.yaml:1:1: error: unknown environment `prod`
  expected: no environments are defined"#,
        ),
        (
            "bad secret references",
            "\
secrets:
  a: vault:x
  b: env:NOT-A-NAME
  c: 'file:'
  d: env:ENDSTATE_TEST_SURELY_UNSET_VARIABLE
  e: file:missing.txt
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    user_data:
      script: |
        #!/bin/sh
        echo ${secret.d}
        echo ${secret.e} ${secret.zz}
",
            None,
            r#"spec.yaml:6:6: error: invalid secret reference `vault:x`
  expected: env:NAME or file:PATH
spec.yaml:7:6: error: invalid environment variable name in secret reference `env:NOT-A-NAME`
  expected: env:NAME with NAME of letters, digits and `_`
spec.yaml:8:6: error: secret reference `file:` has no path
  expected: env:NAME or file:PATH
spec.yaml:20:14: error: secret `d` (env:ENDSTATE_TEST_SURELY_UNSET_VARIABLE) cannot be resolved: environment variable ENDSTATE_TEST_SURELY_UNSET_VARIABLE is not set
spec.yaml:21:14: error: secret `e` (file:/nonexistent/missing.txt) cannot be resolved: cannot read /nonexistent/missing.txt: No such file or directory (os error 2)
spec.yaml:21:26: error: unknown secret `zz`
  expected: one of d, e"#,
        ),
        (
            "script and file both set, unreadable file",
            "\
groups:
  a:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    user_data:
      script: echo hi
      file: boot.sh
  b:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    user_data: { file: boot.sh }
",
            None,
            r#"spec.yaml:13:7: error: user_data sets both `script` and `file`
  expected: exactly one of script, file, cloud_config
spec.yaml:19:24: error: cannot read user data file `boot.sh`: No such file or directory (os error 2)"#,
        ),
        (
            "invalid project and group names",
            "\
groups:
  Web_1:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
",
            None,
            r#"spec.yaml:6:3: error: invalid group name `Web_1`
  expected: 1 to 40 characters of a-z, 0-9 and -"#,
        ),
        (
            "hop limit, tokens, volume out of range",
            "\
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    metadata: { tokens: maybe, hop_limit: 65 }
    root_volume: { size_gib: 0, type: gp9 }
",
            None,
            r#"spec.yaml:11:25: error: metadata.tokens: unknown value `maybe`
  expected: required or optional
spec.yaml:11:43: error: metadata.hop_limit (65) is out of range 1..=64
spec.yaml:12:30: error: root_volume.size_gib (0) is out of range 1..=16,384
spec.yaml:12:39: error: unknown volume type `gp9`
  expected: one of gp2, gp3, io1, io2, st1, sc1, standard"#,
        ),
        (
            "zones empty, wrong region, bad subnet",
            "\
groups:
  a:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: {}
  b:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones:
      us-west-2a: [subnet-1]
      us-east-1a: [sn-1]
",
            None,
            r#"spec.yaml:10:5: error: zones is empty
  expected: at least one availability zone
spec.yaml:16:7: error: zone `us-west-2a` is not in region us-east-1
spec.yaml:17:20: error: subnet id `sn-1` does not start with `subnet-`
  expected: a subnet id like subnet-0123456789abcdef0"#,
        ),
        (
            "bad reference syntax",
            "\
groups:
  web:
    image: ${vra.ami}
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    tags: { a: \"${var.x\" }
",
            None,
            r#"spec.yaml:7:12: error: unknown reference `${vra.ami}`
  expected: ${var.NAME} or ${secret.NAME} (write $${ for a literal ${)
spec.yaml:11:17: error: unterminated reference: missing `}`
  expected: ${var.NAME} or ${secret.NAME} (write $${ for a literal ${)"#,
        ),
        (
            "bad disruption budget",
            "\
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    disruption_budget: { min_healthy: 150%, max_surge: -1 }
",
            None,
            r#"spec.yaml:11:39: error: disruption_budget.min_healthy (150%) is not a share
  expected: a percentage like 90% or a fraction between 0 and 1 like 0.9
spec.yaml:11:56: error: disruption_budget.max_surge (-1) is out of range 0..=10,000"#,
        ),
        (
            "invalid project name, provider problems, every error at once",
            "\
project: Shop!
provider:
  aws:
    endpoint: ftp://x
    regoin: us-east-1
variables: { n: [1] }
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
",
            None,
            r#"spec.yaml:1:10: error: invalid project name `Shop!`
  expected: 1 to 40 characters of a-z, 0-9 and -
spec.yaml:3:3: error: missing required field `provider.aws.region`
spec.yaml:4:15: error: invalid endpoint `ftp://x`
  expected: an http:// or https:// URL
spec.yaml:5:5: error: unknown field `regoin` in provider.aws (did you mean `region`?)
  expected: one of region, endpoint, profile
spec.yaml:6:17: error: variables.n: expected a string, integer or boolean, found a list"#,
        ),
        (
            "second document",
            "\
groups: {}
---
groups: {}
",
            None,
            "spec.yaml:6:1: error: a second YAML document
  expected: one document per spec file",
        ),
        (
            "reference inside a flow mapping unquoted",
            "\
variables: { n: 1 }
groups:
  web:
    capacity: { min: 1, desired: ${var.n}, max: 1 }
",
            None,
            r#"spec.yaml:8:35: error: invalid YAML: while parsing a flow mapping, did not find expected ',' or '}'
  expected: quotes around references inside { } and [ ], like { desired: '${var.n}' }"#,
        ),
    ];
    let mut failures = Vec::new();
    for (name, body, env, expected) in cases {
        check(name, body, *env, expected, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tag_limits() {
    let mut body = String::from(
        "\
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    tags:
",
    );
    body.push_str(&format!("      {}: x\n", "k".repeat(129)));
    body.push_str(&format!("      long: {}\n", "v".repeat(257)));
    for i in 0..39 {
        body.push_str(&format!("      t{i}: x\n"));
    }
    let mut failures = Vec::new();
    check(
        "tag limits",
        &body,
        None,
        "spec.yaml:11:5: error: tags: 41 tags, over the limit of 40 user tags per group
spec.yaml:12:7: error: tag key is 129 characters, over EC2's limit of 128
spec.yaml:13:13: error: tag value is 257 characters, over EC2's limit of 256",
        &mut failures,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unreadable_spec_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.yaml");
    let got = endstate_model::load(&path, None).unwrap_err().to_string();
    assert_eq!(
        got,
        format!(
            "{}:1:1: error: cannot read the spec: No such file or directory (os error 2)",
            path.display()
        )
    );
}

#[test]
fn unknown_overlay_field_is_reported_for_every_environment() {
    let body = "\
groups: {}
environments:
  prod:
    capacity: { max: 3 }
  dev:
";
    let mut failures = Vec::new();
    check(
        "overlay field",
        body,
        Some("dev"),
        "spec.yaml:8:5: error: unknown field `capacity` in environments.prod
  expected: one of provider, variables, secrets, load_balancers, roles, recipes, groups",
        &mut failures,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
