//! The `roles:` section and a group's `roles:` list load to
//! `endstate_config`'s types, follow `${var.*}` (leaving minijinja's
//! `{{ … }}` alone) and environment overlays, keep `${secret.*}` a
//! reference, change the spec's hash and the group's roles hash but not
//! its launch hash; `load_roles` reads a standalone roles file; and each
//! kind of bad input gives one error at the line and column where it was
//! written, naming the field.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;
use std::path::Path;

use endstate_model::config::{Resource, Role};
use endstate_model::{load_roles, load_roles_str, load_str, roles, SecretRef, Spec};

/// Eight lines; the section under test starts on line 9.
const HEAD: &str = "\
project: shop
provider:
  aws:
    region: us-east-1
variables:
  port: 8080
secrets:
  db_password: env:ENDSTATE_ROLES_SECTION_UNSET
";

/// Lines of HEAD: `{1}` in an expectation is line FIRST + 1.
const FIRST: usize = 8;

/// A group listing no role, after the section under test.
const PLAIN_GROUP: &str = "\
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 2, max: 4 }
    zones: [us-east-1a]
";

fn load_source(source: &str, environment: Option<&str>) -> Result<Spec, String> {
    load_str(
        source,
        Path::new("spec.yaml"),
        Path::new("/nonexistent"),
        environment,
    )
    .map_err(|d| d.to_string())
}

fn spec(source: &str) -> Spec {
    load_source(source, None).unwrap_or_else(|d| panic!("{d}"))
}

fn role(json: serde_json::Value) -> Role {
    serde_json::from_value(json).unwrap()
}

const WEB_ROLES: &str = "\
roles:
  base:
    resources:
      - { kind: group, name: app, system: true }
      - { kind: user, name: app, uid: 900, group: app, groups: [adm], home: /srv/app, shell: /bin/sh, system: true, requires: ['group:app'] }
      - { kind: package, name: nginx, version: '1.24' }
  web:
    resources:
      - kind: directory
        name: conf
        path: /etc/app
        mode: 0755
        owner: app
      - kind: file
        name: conf
        path: /etc/app/app.conf
        content: |
          port=${var.port}
          home=${HOME}
        mode: 0640
        group: app
        requires: ['directory:conf']
        notify: ['service:app']
      - kind: template
        name: motd
        path: /etc/motd
        template: '{{ facts.hostname }} serves on {{ vars.port }}{% if tags.team %} for {{ tags.team }}{% endif %}'
        vars: { port: '${var.port}', extra: [1, true, ~], nested: { a: b } }
      - { kind: service, name: app, service: app.service, ensure: running, enabled: true, requires: ['package:nginx'] }
      - { kind: exec, name: migrate, command: 'app migrate', creates: /srv/app/.migrated, onlyif: 'test -x /usr/bin/app', unless: 'false', timeout: 60 }
";

const WEB_GROUP: &str = "\
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 2, max: 4 }
    zones: [us-east-1a]
    roles: [base, web]
";

#[test]
fn every_kind_loads_to_the_engine_types() {
    let spec = spec(&format!("{HEAD}{WEB_ROLES}{WEB_GROUP}"));
    let expected_base = role(serde_json::json!({
        "name": "base",
        "resources": [
            { "kind": "group", "name": "app", "system": true },
            { "kind": "user", "name": "app", "uid": 900, "group": "app", "groups": ["adm"],
              "home": "/srv/app", "shell": "/bin/sh", "system": true, "requires": ["group:app"] },
            { "kind": "package", "name": "nginx", "version": "1.24" },
        ]
    }));
    let expected_web = role(serde_json::json!({
        "name": "web",
        "resources": [
            { "kind": "directory", "name": "conf", "path": "/etc/app", "mode": "0755", "owner": "app" },
            { "kind": "file", "name": "conf", "path": "/etc/app/app.conf",
              "content": "port=8080\nhome=${HOME}\n", "mode": "0640", "group": "app",
              "requires": ["directory:conf"], "notify": ["service:app"] },
            { "kind": "template", "name": "motd", "path": "/etc/motd",
              "template": "{{ facts.hostname }} serves on {{ vars.port }}{% if tags.team %} for {{ tags.team }}{% endif %}",
              "vars": { "port": 8080, "extra": [1, true, null], "nested": { "a": "b" } } },
            { "kind": "service", "name": "app", "service": "app.service", "ensure": "running",
              "enabled": true, "requires": ["package:nginx"] },
            { "kind": "exec", "name": "migrate", "command": "app migrate",
              "creates": "/srv/app/.migrated", "onlyif": "test -x /usr/bin/app",
              "unless": "false", "timeout": 60 },
        ]
    }));
    assert_eq!(
        spec.roles,
        BTreeMap::from([
            ("base".to_string(), expected_base.clone()),
            ("web".to_string(), expected_web.clone()),
        ])
    );
    let web = &spec.groups[0];
    assert_eq!(web.roles, ["base", "web"]);
    assert_eq!(spec.group_roles(web), [&expected_base, &expected_web]);
    // The engine accepts what the loader produced, in this order.
    assert!(endstate_model::config::validate(&[expected_base, expected_web]).is_ok());
    // Through JSON (state, events, the API) and back, unchanged.
    let back: Spec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn a_role_change_changes_the_roles_and_spec_hashes_but_not_the_launch_hash() {
    let before = spec(&format!("{HEAD}{WEB_ROLES}{WEB_GROUP}"));
    let after = spec(&format!(
        "{HEAD}{}{WEB_GROUP}",
        WEB_ROLES.replace("app migrate", "app migrate --all")
    ));
    let (old, new) = (&before.groups[0], &after.groups[0]);
    assert_ne!(old.roles_hash(&before.roles), new.roles_hash(&after.roles));
    assert_ne!(before.hash, after.hash);
    assert_eq!(old.launch_hash(), new.launch_hash());
    assert_eq!(old.generation(), new.generation());

    // The order a group lists its roles in is part of its version.
    let reordered = spec(&format!(
        "{HEAD}{WEB_ROLES}{}",
        WEB_GROUP.replace("[base, web]", "[web, base]")
    ));
    assert_ne!(
        reordered.groups[0].roles_hash(&reordered.roles),
        old.roles_hash(&before.roles)
    );
    // A group without roles has a version too, and dropping them changes it.
    let none = spec(&format!("{HEAD}{WEB_ROLES}{PLAIN_GROUP}"));
    assert!(none.groups[0].roles.is_empty());
    assert_ne!(
        none.groups[0].roles_hash(&none.roles),
        old.roles_hash(&before.roles)
    );
}

#[test]
fn secrets_stay_references_until_resolved() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("db.key"), "hunter2\n").unwrap();
    let source = "\
project: shop
provider: { aws: { region: us-east-1 } }
secrets:
  db: file:db.key
roles:
  db:
    resources:
      - kind: file
        name: creds
        path: /etc/db.conf
        content: 'password=${secret.db}'
      - kind: template
        name: dsn
        path: /etc/dsn
        template: 'postgres://app:{{ vars.pw }}@db'
        vars: { pw: '${secret.db}' }
      - { kind: exec, name: login, command: 'db-login --password ${secret.db}', unless: 'db-ping ${secret.db}' }
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    roles: [db]
";
    let spec = load_str(source, Path::new("spec.yaml"), directory.path(), None)
        .unwrap_or_else(|d| panic!("{d}"));
    let json = serde_json::to_string(&spec).unwrap();
    assert!(!json.contains("hunter2"), "{json}");
    let db = &spec.roles["db"];
    let key = std::path::absolute(directory.path().join("db.key")).unwrap();
    let secret = SecretRef::File(key.to_string_lossy().into_owned());
    assert_eq!(
        roles::role_secrets(db),
        std::collections::BTreeSet::from([secret.clone()])
    );
    let Resource::File(file) = &db.resources[0] else {
        panic!("{db:?}");
    };
    assert_eq!(
        file.content.as_deref(),
        Some(format!("password={}", roles::placeholder(&secret)).as_str())
    );

    let (resolved, secrets) = roles::resolve_secrets(db).unwrap();
    let Resource::File(file) = &resolved.resources[0] else {
        panic!("{resolved:?}");
    };
    assert_eq!(file.content.as_deref(), Some("password=hunter2"));
    let Resource::Template(template) = &resolved.resources[1] else {
        panic!("{resolved:?}");
    };
    assert_eq!(template.vars["pw"], "hunter2");
    let Resource::Exec(exec) = &resolved.resources[2] else {
        panic!("{resolved:?}");
    };
    assert_eq!(exec.command, "db-login --password hunter2");
    assert_eq!(exec.unless.as_deref(), Some("db-ping hunter2"));
    assert_eq!(
        secrets.redact(&exec.command),
        "db-login --password <redacted>"
    );
}

#[test]
fn overlays_add_roles_replace_resource_lists_and_change_group_lists() {
    let source = format!(
        "{HEAD}{WEB_ROLES}{WEB_GROUP}\
environments:
  prod:
    variables: {{ port: 9090 }}
    roles:
      web:
        resources:
          - {{ kind: file, name: flag, path: /etc/prod, content: 'port ${{var.port}}' }}
      audit:
        resources:
          - {{ kind: package, name: auditd }}
    groups:
      web:
        roles: [base, web, audit]
"
    );
    let base = spec(&source);
    let prod = load_source(&source, Some("prod")).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(base.roles.len(), 2);
    assert_eq!(
        prod.roles.keys().collect::<Vec<_>>(),
        ["audit", "base", "web"]
    );
    // A list is replaced whole, like every other list in an overlay.
    assert_eq!(
        prod.roles["web"],
        role(serde_json::json!({
            "name": "web",
            "resources": [{ "kind": "file", "name": "flag", "path": "/etc/prod", "content": "port 9090" }]
        }))
    );
    assert_eq!(prod.roles["base"], base.roles["base"]);
    assert_eq!(prod.groups[0].roles, ["base", "web", "audit"]);
}

#[test]
fn a_standalone_roles_file_and_a_spec_both_load_as_roles() {
    let directory = tempfile::tempdir().unwrap();
    let standalone = directory.path().join("roles.yaml");
    std::fs::write(
        &standalone,
        "\
variables:
  greeting: hello
roles:
  motd:
    resources:
      - { kind: file, name: motd, path: /etc/motd, content: '${var.greeting} {{ facts.hostname }}' }
",
    )
    .unwrap();
    let roles = load_roles(&standalone).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        roles["motd"],
        role(serde_json::json!({
            "name": "motd",
            "resources": [{ "kind": "file", "name": "motd", "path": "/etc/motd",
                            "content": "hello {{ facts.hostname }}" }]
        }))
    );

    let spec_file = directory.path().join("spec.yaml");
    std::fs::write(&spec_file, format!("{HEAD}{WEB_ROLES}{WEB_GROUP}")).unwrap();
    let from_spec = load_roles(&spec_file).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        from_spec,
        spec(&format!("{HEAD}{WEB_ROLES}{WEB_GROUP}")).roles
    );

    let errors = |source: &str| {
        load_roles_str(source, Path::new("roles.yaml"), Path::new("/nonexistent"))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        errors("variables: { a: b }\n"),
        "roles.yaml:1:1: error: missing required field `roles`"
    );
    assert_eq!(
        errors("rolez: {}\nroles: {}\n"),
        "roles.yaml:1:1: error: unknown field `rolez` (did you mean `roles`?)\n  \
         expected: one of project, provider, variables, secrets, load_balancers, roles, recipes, groups, environments"
    );
    assert_eq!(
        errors("roles:\n  r:\n    resources:\n      - { kind: file, name: a, path: /a }\n"),
        "roles.yaml:4:11: error: roles.r.resources[0]: file:a: content: give exactly one of `content` and `source`"
    );
    let missing = load_roles(&directory.path().join("absent.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("absent.yaml:1:1: error: cannot read the roles file"),
        "{missing}"
    );
}

fn lines(text: &str, first: usize) -> String {
    let mut text = text.to_string();
    for l in 0..30 {
        text = text.replace(&format!("{{{l}}}"), &(first + l).to_string());
    }
    text
}

fn check_cases(cases: &[(&str, &str, &str)], source: impl Fn(&str) -> String) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, body, expected) in cases {
        let expected = lines(expected, FIRST);
        let got = match load_source(&source(body), None) {
            Ok(_) => "<loaded without errors>".to_string(),
            Err(d) => d,
        };
        if got != expected {
            failures.push(format!(
                "case {name}:\n--- expected\n{expected}\n--- got\n{got}\n"
            ));
        }
    }
    failures
}

/// Each case: the `roles:` section (from line FIRST + 1), and the whole
/// diagnostic output, with `{L}` standing for line FIRST + L.
#[test]
fn each_bad_role_is_one_error_where_it_was_written() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown kind",
            "roles:
  web:
    resources:
      - kind: mount
        name: data
",
            "spec.yaml:{4}:15: error: roles.web.resources[0].kind: unknown kind `mount`
  expected: one of file, directory, template, package, service, user, group, exec",
        ),
        (
            "unknown field of the kind",
            "roles:
  web:
    resources:
      - kind: file
        name: conf
        path: /etc/conf
        content: x
        onwer: root
",
            "spec.yaml:{8}:9: error: unknown field `onwer` in roles.web.resources[0] (did you mean `owner`?)
  expected: one of kind, name, path, content, source, mode, owner, group, requires, notify",
        ),
        (
            "a field of another kind",
            "roles:
  web:
    resources:
      - { kind: package, name: curl, command: 'apt-get install curl' }
",
            "spec.yaml:{4}:38: error: unknown field `command` in roles.web.resources[0]
  expected: one of kind, name, package, version, requires, notify",
        ),
        (
            "missing path",
            "roles:
  web:
    resources:
      - kind: directory
        name: data
",
            "spec.yaml:{4}:9: error: missing required field `roles.web.resources[0].path`",
        ),
        (
            "missing kind",
            "roles:
  web:
    resources:
      - name: data
        path: /data
",
            "spec.yaml:{4}:9: error: missing required field `roles.web.resources[0].kind`",
        ),
        (
            "bad mode",
            "roles:
  web:
    resources:
      - kind: file
        name: conf
        path: /etc/conf
        content: x
        mode: 0999
",
            "spec.yaml:{8}:15: error: roles.web.resources[0]: file:conf: mode: '0999' is not an octal mode such as \"0644\"",
        ),
        (
            "relative path",
            "roles:
  web:
    resources:
      - { kind: directory, name: data, path: data }
",
            "spec.yaml:{4}:46: error: roles.web.resources[0]: directory:data: path: 'data' is not absolute",
        ),
        (
            "requires a resource that does not exist",
            "roles:
  web:
    resources:
      - { kind: package, name: nginx }
      - kind: service
        name: nginx
        requires: ['package:nginx', 'package:ngnix']
",
            "spec.yaml:{7}:37: error: roles.web.resources[1]: service:nginx: requires[1]: no resource 'package:ngnix'",
        ),
        (
            "notifies something that is not a service",
            "roles:
  web:
    resources:
      - { kind: package, name: nginx }
      - kind: file
        name: conf
        path: /etc/nginx.conf
        content: x
        notify:
          - package:nginx
",
            "spec.yaml:{10}:13: error: roles.web.resources[1]: file:conf: notify[0]: 'package:nginx' is not a service: only services can be notified",
        ),
        (
            "a cycle, named in full",
            "roles:
  web:
    resources:
      - { kind: exec, name: a, command: 'true', requires: ['exec:b'] }
      - { kind: exec, name: b, command: 'true', requires: ['exec:a'] }
",
            "spec.yaml:{4}:59: error: roles.web.resources[0]: exec:a: requires: dependency cycle: exec:a -> exec:b -> exec:a
  expected: resources without a cycle: drop one `requires` or `notify` of it",
        ),
        (
            "a duplicate id across roles",
            "roles:
  base:
    resources:
      - { kind: package, name: curl }
  web:
    resources:
      - { kind: package, name: curl }
",
            "spec.yaml:{7}:32: error: roles.web.resources[0]: package:curl: name: duplicate id (first declared in role base)",
        ),
        (
            "a secret in a field that is not content",
            "roles:
  web:
    resources:
      - { kind: file, name: conf, path: '/etc/${secret.db_password}', content: x }
",
            "spec.yaml:{4}:47: error: `${secret.db_password}` is only allowed in user data and role contents
  expected: secrets in user_data script, file or cloud_config, or in a role resource's content, template, vars, command, onlyif or unless",
        ),
        (
            "an unknown secret in content",
            "roles:
  web:
    resources:
      - { kind: file, name: conf, path: /etc/conf, content: 'pw=${secret.db_pasword}' }
",
            "spec.yaml:{4}:65: error: unknown secret `db_pasword`
  expected: one of db_password",
        ),
        (
            "an unknown variable in a template's vars",
            "roles:
  web:
    resources:
      - kind: template
        name: t
        path: /t
        template: '{{ vars.a }}'
        vars:
          a: ${var.prot}
",
            "spec.yaml:{9}:14: error: unknown variable `prot`
  expected: one of port",
        ),
        (
            "text that reads as a secret placeholder",
            "roles:
  web:
    resources:
      - { kind: exec, name: e, command: 'echo $${secret:env:HOME}' }
",
            "spec.yaml:{4}:41: error: roles.web.resources[0].command: `${secret:` is reserved for secret placeholders in roles
  expected: ${secret.NAME} for a secret declared under `secrets:`",
        ),
        (
            "a uid that is not a number",
            "roles:
  web:
    resources:
      - { kind: user, name: app, uid: nine }
",
            "spec.yaml:{4}:39: error: roles.web.resources[0].uid: expected an integer, found a string",
        ),
        (
            "a service state that does not exist",
            "roles:
  web:
    resources:
      - { kind: service, name: app, ensure: restarted }
",
            "spec.yaml:{4}:45: error: roles.web.resources[0].ensure: `restarted` is not a service state
  expected: running or stopped",
        ),
        (
            "resources not a list",
            "roles:
  web:
    resources: { kind: file }
",
            "spec.yaml:{3}:18: error: roles.web.resources: expected a list, found a mapping",
        ),
        (
            "an unknown field of a role",
            "roles:
  web:
    resource: []
",
            "spec.yaml:{3}:5: error: unknown field `resource` in roles.web (did you mean `resources`?)
  expected: one of resources",
        ),
        (
            "an invalid role name",
            "roles:
  9web: {}
",
            "spec.yaml:{2}:3: error: invalid role name `9web`
  expected: letters, digits, `_` and `-`, starting with a letter or `_`",
        ),
        (
            "a timeout of 0",
            "roles:
  web:
    resources:
      - { kind: exec, name: e, command: 'true', timeout: 0 }
",
            "spec.yaml:{4}:58: error: roles.web.resources[0]: exec:e: timeout: must be at least 1 second",
        ),
    ];
    let failures = check_cases(cases, |body| format!("{HEAD}{body}{PLAIN_GROUP}"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Each case: a group's `roles:` line (line FIRST + 11, after two roles),
/// and the whole diagnostic output.
#[test]
fn each_bad_group_role_list_is_one_error_where_it_was_written() {
    const ROLES: &str = "\
roles:
  base:
    resources:
      - { kind: user, name: app }
  web:
    resources:
      - { kind: directory, name: home, path: /srv/app, owner: app, requires: ['user:app'] }
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 2, max: 4 }
    zones: [us-east-1a]
";
    let cases: &[(&str, &str, &str)] = &[
        ("both roles, in order", "    roles: [base, web]\n", "<loaded without errors>"),
        (
            "an unknown role",
            "    roles: [base, wbe]\n",
            "spec.yaml:{14}:19: error: roles[1]: unknown role `wbe`
  expected: one of base, web",
        ),
        (
            "a role listed twice",
            "    roles:\n      - base\n      - web\n      - base\n",
            "spec.yaml:{17}:9: error: roles[2]: role `base` is listed twice",
        ),
        (
            "a role whose requires is in a role the group does not list",
            "    roles: [web]\n",
            "spec.yaml:{14}:12: error: group `web`: roles: role web: directory:home: requires[0]: no resource 'user:app'
  expected: the group also lists the role that declares it",
        ),
        (
            "not a list",
            "    roles: web\n",
            "spec.yaml:{14}:12: error: roles: expected a list, found a string",
        ),
    ];
    let failures = check_cases(cases, |body| format!("{HEAD}{ROLES}{body}"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The schema editors read accepts every kind with its fields and refuses
/// unknown kinds, fields of another kind and missing required fields.
#[test]
fn the_json_schema_describes_roles() {
    let valid = format!("{HEAD}{WEB_ROLES}{WEB_GROUP}");
    let cases: &[(&str, String, bool)] = &[
        ("every kind", valid.clone(), true),
        (
            "unknown kind",
            valid.replace("kind: package, name: nginx", "kind: mount, name: nginx"),
            false,
        ),
        (
            "a field of another kind",
            valid.replace(
                "{ kind: group, name: app,",
                "{ kind: group, name: app, uid: 1,",
            ),
            false,
        ),
        (
            "exec without command",
            valid.replace("command: 'app migrate', ", ""),
            false,
        ),
        (
            "bad service state",
            valid.replace("ensure: running", "ensure: restarted"),
            false,
        ),
        (
            "group roles not a list",
            valid.replace("roles: [base, web]", "roles: base"),
            false,
        ),
    ];
    let documents: Vec<String> = cases.iter().map(|(_, text, _)| text.to_string()).collect();
    let verdicts = super::schema_check::schema_verdicts(&documents);
    for ((name, _, valid), verdict) in cases.iter().zip(&verdicts) {
        assert_eq!(verdict.starts_with("valid"), *valid, "{name}: {verdict}");
    }
}

/// The ```yaml block after `marker` in `text`, with `prefix` stripped
/// from each line.
fn yaml_block(text: &str, marker: &str, prefix: &str) -> String {
    let after = &text[text.find(marker).unwrap()..];
    let start = after.find("```yaml\n").unwrap() + "```yaml\n".len();
    let mut out = String::new();
    for line in after[start..].lines() {
        let line = line.strip_prefix(prefix).unwrap_or(line.trim_end());
        if line.starts_with("```") {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The examples of lib.rs's file format and of the README's Roles
/// subsection load, with their secret made a file that exists.
#[test]
fn the_documented_examples_load() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("db"), "pw").unwrap();
    let load = |source: &str| {
        load_str(source, Path::new("doc.yaml"), directory.path(), None)
            .unwrap_or_else(|d| panic!("{d}\n{source}"))
    };

    let lib = yaml_block(
        include_str!("../../src/lib.rs"),
        "# The file format",
        "//! ",
    );
    let spec = load(&lib.replace("env:DB_PASSWORD", "file:db"));
    assert_eq!(spec.roles["web"].resources.len(), 5);
    assert_eq!(spec.groups[0].roles, ["web"]);

    let readme = yaml_block(include_str!("../../../../README.md"), "### Roles", "");
    let source = format!(
        "{}{}",
        HEAD.replace("env:ENDSTATE_ROLES_SECTION_UNSET", "file:db"),
        readme.replace(
            "    # image, capacity, ... as above\n",
            "    image: ami-12345678\n    instance_type: t3.micro\n    \
             capacity: { min: 1, desired: 1, max: 1 }\n    zones: [us-east-1a]\n"
        )
    );
    let spec = load(&source);
    assert_eq!(spec.groups[0].roles, ["base", "web"]);
    assert_eq!(spec.roles["web"].resources.len(), 4);
}
