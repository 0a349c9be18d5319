//! The `recipes:` section and a group's `image: RECIPE@CHANNEL`: a
//! three-level lineage loads to `endstate_model::recipe`'s types (and
//! through JSON and back, and older JSON without recipes still loads);
//! versions are a hash chain that moves exactly where the input moved and
//! never sees a secret's value; a channel reference is part of the group's
//! generation and the spec's hash; each kind of bad input gives one error
//! at the line and column where it was written; and the JSON Schema
//! describes the section.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use endstate_model::recipe::{
    prefix_hashes, Builder, ChannelRef, FileContent, FileStep, LineageError, Parent, Recipe,
    Retention, Step, StepAction, MAX_LINEAGE_DEPTH, SHORT_VERSION_LEN,
};
use endstate_model::{load_str, Spec};
use sha2::Digest;

/// Twelve lines; the section under test starts on line 13.
const HEAD: &str = "\
project: shop
provider:
  aws:
    region: us-east-1
variables:
  greeting: hello
secrets:
  db_password: file:db.key
roles:
  web:
    resources:
      - { kind: file, name: conf, path: /etc/web.conf, content: 'pw=${secret.db_password}' }
";

/// Lines of HEAD: `{1}` in an expectation is line FIRST + 1.
const FIRST: usize = 12;

const LINEAGE: &str = "\
recipes:
  base:
    from: ami-0123456789abcdef0
    steps:
      - { name: motd, file: { path: /etc/motd, content: '${var.greeting}', mode: '0644' } }
      - { name: banner, file: { path: /etc/banner, source: files/banner } }
  runtime:
    from: base
    steps:
      - name: tools
        shell: |
          apt-get install -y curl
    channels: [stable]
  app:
    from: runtime
    steps:
      - { name: web, role: web }
      - { name: flag, shell: 'touch /etc/app-ready' }
    tags: { team: storefront }
    channels: [stable, canary]
    builder: volume
    keep: { versions: 3, younger_than: 14d }
";

const GROUP: &str = "\
groups:
  web:
    image: app@stable
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 2 }
    zones: [us-east-1a]
";

/// A group with an AMI id, after a section under test.
const PLAIN_GROUP: &str = "\
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 2 }
    zones: [us-east-1a]
";

/// A spec's directory: the secret's file and a step's source file.
fn fixture() -> tempfile::TempDir {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join("db.key"), "hunter2\n").unwrap();
    std::fs::create_dir(directory.path().join("files")).unwrap();
    std::fs::write(directory.path().join("files/banner"), "welcome\n").unwrap();
    directory
}

fn load_in(directory: &Path, source: &str) -> Result<Spec, String> {
    load_str(source, Path::new("spec.yaml"), directory, None).map_err(|d| d.to_string())
}

fn spec_in(directory: &Path, source: &str) -> Spec {
    load_in(directory, source).unwrap_or_else(|d| panic!("{d}\n{source}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn a_three_level_lineage_loads() {
    let directory = fixture();
    let spec = spec_in(directory.path(), &format!("{HEAD}{LINEAGE}{GROUP}"));
    let banner = directory.path().join("files/banner");
    let FileContent::Source(source) = &spec.recipes["base"].steps[1].action.file().content else {
        panic!("{:?}", spec.recipes["base"]);
    };
    assert_eq!(source.written, "files/banner");
    assert_eq!(source.path, std::path::absolute(&banner).unwrap());
    assert_eq!(source.sha256, sha256_hex(b"welcome\n"));
    assert_eq!(source.size, 8);
    let expected = BTreeMap::from([
        (
            "base".to_string(),
            Recipe {
                name: "base".into(),
                from: Parent::Image("ami-0123456789abcdef0".into()),
                steps: vec![
                    Step {
                        name: "motd".into(),
                        action: StepAction::File(FileStep {
                            path: "/etc/motd".into(),
                            mode: Some("0644".into()),
                            content: FileContent::Inline("hello".into()),
                        }),
                    },
                    Step {
                        name: "banner".into(),
                        action: StepAction::File(FileStep {
                            path: "/etc/banner".into(),
                            mode: None,
                            content: FileContent::Source(source.clone()),
                        }),
                    },
                ],
                tags: BTreeMap::new(),
                channels: Vec::new(),
                builder: None,
                keep: Retention::default(),
                role_sources: BTreeMap::new(),
            },
        ),
        (
            "runtime".to_string(),
            Recipe {
                name: "runtime".into(),
                from: Parent::Recipe("base".into()),
                steps: vec![Step {
                    name: "tools".into(),
                    action: StepAction::Shell("apt-get install -y curl\n".into()),
                }],
                tags: BTreeMap::new(),
                channels: vec!["stable".into()],
                builder: None,
                keep: Retention::default(),
                role_sources: BTreeMap::new(),
            },
        ),
        (
            "app".to_string(),
            Recipe {
                name: "app".into(),
                from: Parent::Recipe("runtime".into()),
                steps: vec![
                    Step {
                        name: "web".into(),
                        action: StepAction::Role("web".into()),
                    },
                    Step {
                        name: "flag".into(),
                        action: StepAction::Shell("touch /etc/app-ready".into()),
                    },
                ],
                tags: BTreeMap::from([("team".to_string(), "storefront".to_string())]),
                channels: vec!["stable".into(), "canary".into()],
                builder: Some(Builder::Volume),
                keep: Retention {
                    versions: Some(3),
                    younger_than: Some(Duration::from_secs(14 * 86_400)),
                },
                // Role `web` has no `source:`.
                role_sources: BTreeMap::new(),
            },
        ),
    ]);
    assert_eq!(spec.recipes, expected);

    let lineage: Vec<&str> = spec
        .lineage("app")
        .unwrap()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(lineage, ["base", "runtime", "app"]);
    assert_eq!(
        spec.lineage("nope").unwrap_err(),
        LineageError::UnknownRecipe {
            name: "nope".into()
        }
    );

    let web = &spec.groups[0];
    assert_eq!(web.image_id, "app@stable");
    assert_eq!(
        web.image_channel,
        Some(ChannelRef {
            recipe: "app".into(),
            channel: "stable".into()
        })
    );
    assert_eq!(
        web.image_channel.as_ref().unwrap().to_string(),
        "app@stable"
    );

    // Through JSON (state, events, the API) and back, unchanged.
    let json = serde_json::to_value(&spec).unwrap();
    let back: Spec = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, spec);
    // JSON written before recipes existed still loads.
    let mut old = json;
    old.as_object_mut().unwrap().remove("recipes");
    old["groups"][0]
        .as_object_mut()
        .unwrap()
        .remove("image_channel");
    let old: Spec = serde_json::from_value(old).unwrap();
    assert!(old.recipes.is_empty());
    assert_eq!(old.groups[0].image_channel, None);
}

/// The file step of a step known to be one.
trait FileAction {
    fn file(&self) -> &FileStep;
}

impl FileAction for StepAction {
    fn file(&self) -> &FileStep {
        match self {
            StepAction::File(file) => file,
            other => panic!("not a file step: {other:?}"),
        }
    }
}

#[test]
fn versions_chain_through_the_lineage() {
    let directory = fixture();
    let spec = spec_in(directory.path(), &format!("{HEAD}{LINEAGE}{GROUP}"));
    let version = |name: &str| spec.recipes[name].version(&spec).unwrap();
    let (base, runtime, app) = (version("base"), version("runtime"), version("app"));
    assert_eq!(base.parent, "ami-0123456789abcdef0");
    assert_eq!(runtime.parent, base.full());
    assert_eq!(app.parent, runtime.full());
    for v in [&base, &runtime, &app] {
        assert_eq!(v.prefixes, prefix_hashes(&v.parent, &v.step_hashes));
        assert_eq!(v.full().len(), 64);
        assert_eq!(v.short(), &v.full()[..SHORT_VERSION_LEN]);
    }
    assert_eq!(app.step_hashes, spec.recipes["app"].step_hashes(&spec));
    assert_eq!(app.prefixes.len(), 2);

    // Same input, same versions: the source file is hashed, not its path's mtime.
    let again = spec_in(directory.path(), &format!("{HEAD}{LINEAGE}{GROUP}"));
    assert_eq!(again.recipes["app"].version(&again).unwrap(), app);

    // A step's name is a label: renaming it is not a new version.
    let renamed = spec_in(
        directory.path(),
        &format!(
            "{HEAD}{}{GROUP}",
            LINEAGE.replace("name: flag", "name: ready")
        ),
    );
    assert_eq!(renamed.recipes["app"].version(&renamed).unwrap(), app);

    // Inline content and a source file with the same bytes are one step.
    let inline = spec_in(
        directory.path(),
        &format!(
            "{HEAD}{}{GROUP}",
            LINEAGE.replace("source: files/banner", "content: \"welcome\\n\"")
        ),
    );
    assert_eq!(inline.recipes["base"].version(&inline).unwrap(), base);
}

#[test]
fn only_the_last_prefix_moves_when_only_the_last_step_changed() {
    let directory = fixture();
    let before = spec_in(directory.path(), &format!("{HEAD}{LINEAGE}{GROUP}"));
    let after = spec_in(
        directory.path(),
        &format!(
            "{HEAD}{}{GROUP}",
            LINEAGE.replace("touch /etc/app-ready", "touch /etc/app-ready-2")
        ),
    );
    let old = before.recipes["app"].version(&before).unwrap();
    let new = after.recipes["app"].version(&after).unwrap();
    assert_eq!(old.parent, new.parent);
    assert_eq!(old.step_hashes[0], new.step_hashes[0]);
    assert_ne!(old.step_hashes[1], new.step_hashes[1]);
    assert_eq!(old.prefixes[0], new.prefixes[0]);
    assert_ne!(old.prefixes[1], new.prefixes[1]);
    assert_ne!(old.full(), new.full());
    for parent in ["base", "runtime"] {
        assert_eq!(
            before.recipes[parent].version(&before).unwrap(),
            after.recipes[parent].version(&after).unwrap()
        );
    }

    // A source file's bytes are its content: a new banner is a new base.
    std::fs::write(directory.path().join("files/banner"), "goodbye\n").unwrap();
    let edited = spec_in(directory.path(), &format!("{HEAD}{LINEAGE}{GROUP}"));
    let old = before.recipes["base"].version(&before).unwrap();
    let new = edited.recipes["base"].version(&edited).unwrap();
    assert_eq!(old.prefixes[0], new.prefixes[0]);
    assert_ne!(old.prefixes[1], new.prefixes[1]);
}

#[test]
fn a_new_parent_moves_every_prefix_down_the_lineage() {
    let directory = fixture();
    let before = spec_in(directory.path(), &format!("{HEAD}{LINEAGE}{GROUP}"));
    let after = spec_in(
        directory.path(),
        &format!(
            "{HEAD}{}{GROUP}",
            LINEAGE.replace("ami-0123456789abcdef0", "ami-0fedcba9876543210")
        ),
    );
    for name in ["base", "runtime", "app"] {
        let old = before.recipes[name].version(&before).unwrap();
        let new = after.recipes[name].version(&after).unwrap();
        // Its own steps are as they were; every prefix is not.
        assert_eq!(old.step_hashes, new.step_hashes, "{name}");
        assert_ne!(old.parent, new.parent, "{name}");
        for (o, n) in old.prefixes.iter().zip(&new.prefixes) {
            assert_ne!(o, n, "{name}");
        }
    }
}

#[test]
fn a_secret_enters_a_version_by_its_reference_never_its_value() {
    let directory = fixture();
    let source = format!("{HEAD}{LINEAGE}{GROUP}");
    let before = spec_in(directory.path(), &source);
    let app = before.recipes["app"].version(&before).unwrap();

    // A new value under the same reference: the same version.
    std::fs::write(directory.path().join("db.key"), "correct horse\n").unwrap();
    let new_value = spec_in(directory.path(), &source);
    assert_eq!(new_value.recipes["app"].version(&new_value).unwrap(), app);
    let json = serde_json::to_string(&new_value).unwrap();
    assert!(!json.contains("correct horse"), "{json}");

    // Another reference: another role step, another version.
    std::fs::write(directory.path().join("other.key"), "correct horse\n").unwrap();
    let new_reference = spec_in(
        directory.path(),
        &source.replace("file:db.key", "file:other.key"),
    );
    let moved = new_reference.recipes["app"]
        .version(&new_reference)
        .unwrap();
    assert_ne!(moved.step_hashes[0], app.step_hashes[0]);
    assert_eq!(moved.step_hashes[1], app.step_hashes[1]);
}

#[test]
fn a_channel_is_part_of_the_generation_and_the_spec_hash() {
    let directory = fixture();
    let stable = spec_in(directory.path(), &format!("{HEAD}{LINEAGE}{GROUP}"));
    let canary = spec_in(
        directory.path(),
        &format!(
            "{HEAD}{LINEAGE}{}",
            GROUP.replace("app@stable", "app@canary")
        ),
    );
    assert_ne!(stable.groups[0].generation(), canary.groups[0].generation());
    assert_eq!(
        stable.groups[0].launch_hash(),
        canary.groups[0].launch_hash()
    );
    assert_ne!(stable.hash, canary.hash);

    // A recipe change is a new spec, not a new generation of the group
    // (the image at the channel's head is what moves the group).
    let edited = spec_in(
        directory.path(),
        &format!(
            "{HEAD}{}{GROUP}",
            LINEAGE.replace("versions: 3", "versions: 4")
        ),
    );
    assert_ne!(stable.hash, edited.hash);
    assert_eq!(stable.groups[0].generation(), edited.groups[0].generation());

    // A group with an AMI id keeps the generation it had before channels
    // existed: image, instance types and launch hash, nothing more.
    let plain = spec_in(directory.path(), &format!("{HEAD}{LINEAGE}{PLAIN_GROUP}"));
    let group = &plain.groups[0];
    let old_formula = serde_json::json!({
        "image_id": group.image_id,
        "instance_types": group.instance_types,
        "launch_hash": group.launch_hash(),
    });
    let digest = sha2::Sha256::digest(old_formula.to_string().as_bytes());
    assert_eq!(group.generation(), hex::encode(&digest[..4]));
}

#[test]
fn an_overlay_replaces_a_recipes_steps() {
    let directory = fixture();
    let source = format!(
        "{HEAD}{LINEAGE}{GROUP}\
environments:
  prod:
    recipes:
      app:
        steps:
          - {{ name: web, role: web }}
        channels: [stable]
"
    );
    let base = spec_in(directory.path(), &source);
    let prod = load_str(
        &source,
        Path::new("spec.yaml"),
        directory.path(),
        Some("prod"),
    )
    .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(base.recipes["app"].steps.len(), 2);
    assert_eq!(prod.recipes["app"].steps.len(), 1);
    assert_eq!(prod.recipes["app"].channels, ["stable"]);
    assert_eq!(prod.recipes["app"].from, base.recipes["app"].from);
}

fn lines(text: &str, first: usize) -> String {
    let mut text = text.to_string();
    for l in (0..40).rev() {
        text = text.replace(&format!("{{{l}}}"), &(first + l).to_string());
    }
    text
}

fn check_cases(cases: &[(&str, &str, &str)], source: impl Fn(&str) -> String) -> Vec<String> {
    let directory = fixture();
    let mut failures = Vec::new();
    for (name, body, expected) in cases {
        let expected = lines(expected, FIRST);
        let got = match load_in(directory.path(), &source(body)) {
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

/// Each case: the `recipes:` section (from line FIRST + 1), and the whole
/// diagnostic output, with `{L}` standing for line FIRST + L.
#[test]
fn each_bad_recipe_is_one_error_where_it_was_written() {
    // A tag whose value is one character over EC2's 256.
    let long_tag = format!(
        "recipes:
  base:
    from: ami-12345678
    steps: [{{ name: s, shell: 'true' }}]
    tags: {{ team: {} }}
",
        "x".repeat(257)
    );
    let cases: &[(&str, &str, &str)] = &[
        (
            "an unknown parent",
            "recipes:
  base:
    from: ami-12345678
    steps: [{ name: a, shell: 'true' }]
  app:
    from: bsae
    steps: [{ name: a, shell: 'true' }]
",
            "spec.yaml:{6}:11: error: recipes.app.from: unknown recipe `bsae`
  expected: an AMI id, or one of app, base",
        ),
        (
            "a cycle, at its first recipe's from",
            "recipes:
  a:
    from: b
    steps: [{ name: s, shell: 'true' }]
  b:
    from: c
    steps: [{ name: s, shell: 'true' }]
  c:
    from: a
    steps: [{ name: s, shell: 'true' }]
  d:
    from: c
    steps: [{ name: s, shell: 'true' }]
",
            "spec.yaml:{3}:11: error: recipes.a.from: the lineage is a cycle: a → b → c → a
  expected: a lineage that ends at a recipe baked from an AMI id",
        ),
        (
            "a recipe that is its own parent",
            "recipes:
  a:
    from: a
    steps: [{ name: s, shell: 'true' }]
",
            "spec.yaml:{3}:11: error: recipes.a.from: the lineage is a cycle: a → a
  expected: a lineage that ends at a recipe baked from an AMI id",
        ),
        (
            "a from that is not an AMI id",
            "recipes:
  base:
    from: ami-xyz
    steps: [{ name: s, shell: 'true' }]
",
            "spec.yaml:{3}:11: error: recipes.base.from: `ami-xyz` is not an AMI id
  expected: ami- followed by 8 or 17 hex digits, or the name of another recipe",
        ),
        (
            "an unknown role",
            "recipes:
  base:
    from: ami-12345678
    steps:
      - { name: web, role: wbe }
",
            "spec.yaml:{5}:28: error: recipes.base.steps[0].role: unknown role `wbe`
  expected: one of web",
        ),
        (
            "a duplicate step name",
            "recipes:
  base:
    from: ami-12345678
    steps:
      - { name: setup, shell: 'true' }
      - name: setup
        shell: 'false'
",
            "spec.yaml:{6}:15: error: recipes.base.steps[1].name: duplicate step name `setup` (first on line {5})",
        ),
        (
            "a step of two kinds",
            "recipes:
  base:
    from: ami-12345678
    steps:
      - name: both
        shell: 'true'
        role: web
",
            "spec.yaml:{7}:9: error: recipes.base.steps[0] sets both `shell` and `role`
  expected: exactly one of file, shell, role",
        ),
        (
            "a step of no kind",
            "recipes:
  base:
    from: ami-12345678
    steps:
      - name: nothing
",
            "spec.yaml:{5}:9: error: recipes.base.steps[0] sets none of file, shell, role
  expected: exactly one of file, shell, role",
        ),
        (
            "a step without a name",
            "recipes:
  base:
    from: ami-12345678
    steps:
      - shell: 'true'
",
            "spec.yaml:{5}:9: error: missing required field `recipes.base.steps[0].name`",
        ),
        (
            "a relative path",
            "recipes:
  base:
    from: ami-12345678
    steps:
      - name: motd
        file: { path: etc/motd, content: hi }
",
            "spec.yaml:{6}:23: error: recipes.base.steps[0].file.path: 'etc/motd' is not absolute
  expected: an absolute path without . or .. components, like /etc/motd",
        ),
        (
            "a bad mode",
            "recipes:
  base:
    from: ami-12345678
    steps:
      - name: motd
        file:
          path: /etc/motd
          content: hi
          mode: 0999
",
            "spec.yaml:{9}:17: error: recipes.base.steps[0].file.mode: '0999' is not an octal mode such as \"0644\"",
        ),
        (
            "a missing source file",
            "recipes:
  base:
    from: ami-12345678
    steps:
      - name: motd
        file: { path: /etc/motd, source: files/motd }
",
            "spec.yaml:{6}:42: error: recipes.base.steps[0].file.source: cannot read `files/motd`: No such file or directory (os error 2)
  expected: a file relative to the spec's directory",
        ),
        (
            "both content and source",
            "recipes:
  base:
    from: ami-12345678
    steps:
      - name: motd
        file: { path: /etc/motd, content: hi, source: files/banner }
",
            "spec.yaml:{6}:47: error: recipes.base.steps[0].file sets both `content` and `source`
  expected: exactly one of content, source",
        ),
        (
            "a secret in a shell step",
            "recipes:
  base:
    from: ami-12345678
    steps:
      - { name: login, shell: 'login ${secret.db_password}' }
",
            "spec.yaml:{5}:38: error: `${secret.db_password}` is only allowed in user data and role contents
  expected: secrets in user_data script, file or cloud_config, or in a role resource's content, template, vars, command, onlyif or unless",
        ),
        (
            "no steps",
            "recipes:
  base:
    from: ami-12345678
    steps: []
",
            "spec.yaml:{4}:12: error: recipes.base.steps is empty
  expected: at least one step: { name: NAME, file: {...} | shell: SCRIPT | role: ROLE }",
        ),
        (
            "a tag key AWS reserves",
            "recipes:
  base:
    from: ami-12345678
    steps: [{ name: s, shell: 'true' }]
    tags: { 'aws:team': x }
",
            "spec.yaml:{5}:13: error: tag key `aws:team` uses the prefix `aws:`, reserved by AWS
  expected: a key that does not start with aws: or endstate:",
        ),
        (
            "a tag value over EC2's limit",
            &long_tag,
            "spec.yaml:{5}:19: error: tag value is 257 characters, over EC2's limit of 256",
        ),
        (
            "a bad channel name",
            "recipes:
  base:
    from: ami-12345678
    steps: [{ name: s, shell: 'true' }]
    channels: [stable, Canary]
",
            "spec.yaml:{5}:24: error: recipes.base.channels[1]: invalid channel name `Canary`
  expected: 1 to 40 characters of a-z, 0-9 and -",
        ),
        (
            "a channel listed twice",
            "recipes:
  base:
    from: ami-12345678
    steps: [{ name: s, shell: 'true' }]
    channels:
      - stable
      - stable
",
            "spec.yaml:{7}:9: error: recipes.base.channels[1]: channel `stable` is listed twice",
        ),
        (
            "a bad builder",
            "recipes:
  base:
    from: ami-12345678
    steps: [{ name: s, shell: 'true' }]
    builder: vm
",
            "spec.yaml:{5}:14: error: recipes.base.builder: `vm` is not a builder
  expected: volume or instance (or no builder: the backend decides)",
        ),
        (
            "a bad keep duration",
            "recipes:
  base:
    from: ami-12345678
    steps: [{ name: s, shell: 'true' }]
    keep: { younger_than: 14x }
",
            "spec.yaml:{5}:27: error: recipes.base.keep.younger_than: `14x` is not a duration longer than zero
  expected: whole seconds like 3600, or a whole number and a unit (s, m, h, d, w) like 90m, 12h or 14d",
        ),
        (
            "keep with no rule",
            "recipes:
  base:
    from: ami-12345678
    steps: [{ name: s, shell: 'true' }]
    keep: {}
",
            "spec.yaml:{5}:5: error: recipes.base.keep sets neither `versions` nor `younger_than`
  expected: versions: N, younger_than: DURATION, or both",
        ),
        (
            "keep no version",
            "recipes:
  base:
    from: ami-12345678
    steps: [{ name: s, shell: 'true' }]
    keep: { versions: 0 }
",
            "spec.yaml:{5}:23: error: recipes.base.keep.versions (0) is out of range 1..=10,000",
        ),
        (
            "an invalid recipe name and an unknown field",
            "recipes:
  Base:
    from: ami-12345678
    step: [{ name: s, shell: 'true' }]
",
            "spec.yaml:{2}:3: error: invalid recipe name `Base`
  expected: 1 to 40 characters of a-z, 0-9 and -
spec.yaml:{2}:3: error: missing required field `recipes.Base.steps`
spec.yaml:{4}:5: error: unknown field `step` in recipes.Base (did you mean `steps`?)
  expected: one of from, steps, tags, channels, builder, keep",
        ),
    ];
    let failures = check_cases(cases, |body| format!("{HEAD}{body}{PLAIN_GROUP}"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A lineage one recipe deeper than the limit is one error, at the `from`
/// of the recipe that goes past it; one at the limit loads.
#[test]
fn a_lineage_deeper_than_the_limit_is_an_error_at_the_first_recipe_past_it() {
    let chain = |depth: usize| {
        let mut body = String::from(
            "recipes:\n  r1:\n    from: ami-12345678\n    steps: [{ name: s, shell: 'true' }]\n",
        );
        for i in 2..=depth {
            body.push_str(&format!(
                "  r{i}:\n    from: r{}\n    steps: [{{ name: s, shell: 'true' }}]\n",
                i - 1
            ));
        }
        format!("{HEAD}{body}{PLAIN_GROUP}")
    };
    let directory = fixture();
    let at_limit = spec_in(directory.path(), &chain(MAX_LINEAGE_DEPTH));
    let deepest = format!("r{MAX_LINEAGE_DEPTH}");
    assert_eq!(at_limit.lineage(&deepest).unwrap().len(), MAX_LINEAGE_DEPTH);
    assert!(at_limit.recipes[&deepest].version(&at_limit).is_ok());

    let errors = load_in(directory.path(), &chain(MAX_LINEAGE_DEPTH + 2)).unwrap_err();
    // r17's `from` is on line FIRST + 1 + 3 * 16 + 2.
    let names: Vec<String> = (1..=MAX_LINEAGE_DEPTH + 1)
        .rev()
        .map(|i| format!("r{i}"))
        .collect();
    assert_eq!(
        errors,
        format!(
            "spec.yaml:{}:11: error: recipes.r17.from: the lineage {} is 17 recipes deep, over the limit of 16
  expected: at most 16 recipes from a recipe to its image",
            FIRST + 1 + 3 * MAX_LINEAGE_DEPTH + 2,
            names.join(" → ")
        )
    );
}

/// Each case: a group's `image:` line after the lineage, and the whole
/// diagnostic output.
#[test]
fn each_bad_channel_reference_is_one_error_where_it_was_written() {
    let group = |image: &str| {
        format!(
            "groups:
  web:
    image: {image}
    instance_type: t3.micro
    capacity: {{ min: 1, desired: 1, max: 2 }}
    zones: [us-east-1a]
"
        )
    };
    // The lineage is 22 lines: the image is on line FIRST + 25.
    let cases: &[(&str, &str, &str)] = &[
        (
            "a channel of the recipe",
            "app@canary",
            "<loaded without errors>",
        ),
        (
            "an unknown recipe",
            "ap@stable",
            "spec.yaml:{25}:12: error: image `ap@stable`: unknown recipe `ap`
  expected: one of app, base, runtime",
        ),
        (
            "an unknown channel",
            "app@beta",
            "spec.yaml:{25}:16: error: image `app@beta`: recipe `app` has no channel `beta`
  expected: one of stable, canary",
        ),
        (
            "a recipe without channels",
            "base@stable",
            "spec.yaml:{25}:17: error: image `base@stable`: recipe `base` has no channel `stable`
  expected: a channel listed under recipes.base.channels (none are)",
        ),
        (
            "an empty channel",
            "app@",
            "spec.yaml:{25}:12: error: image `app@` is neither an AMI id nor RECIPE@CHANNEL
  expected: ami- followed by 8 or 17 hex digits, like ami-0123456789abcdef0, or RECIPE@CHANNEL",
        ),
    ];
    let failures = check_cases(cases, |image| format!("{HEAD}{LINEAGE}{}", group(image)));
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A group naming a recipe that did not load is not told again.
    let directory = fixture();
    let errors = load_in(
        directory.path(),
        &format!(
            "{HEAD}{}{}",
            LINEAGE.replace("builder: volume", "builder: vm"),
            group("app@stable")
        ),
    )
    .unwrap_err();
    assert_eq!(
        errors,
        lines(
            "spec.yaml:{21}:14: error: recipes.app.builder: `vm` is not a builder
  expected: volume or instance (or no builder: the backend decides)",
            FIRST
        )
    );
}

/// The schema editors read accepts the lineage and refuses a step of two
/// kinds or none, an unknown builder, an empty `keep` and a bad duration.
#[test]
fn the_json_schema_describes_recipes() {
    let valid = format!("{HEAD}{LINEAGE}{GROUP}");
    let cases: &[(&str, String, bool)] = &[
        ("the lineage", valid.clone(), true),
        (
            "a step of two kinds",
            valid.replace(
                "{ name: web, role: web }",
                "{ name: web, role: web, shell: x }",
            ),
            false,
        ),
        (
            "a step of no kind",
            valid.replace("{ name: web, role: web }", "{ name: web }"),
            false,
        ),
        (
            "an unknown builder",
            valid.replace("builder: volume", "builder: vm"),
            false,
        ),
        (
            "an empty keep",
            valid.replace("keep: { versions: 3, younger_than: 14d }", "keep: {}"),
            false,
        ),
        (
            "a bad duration",
            valid.replace("younger_than: 14d", "younger_than: 14x"),
            false,
        ),
        (
            "a file with content and source",
            valid.replace("source: files/banner", "source: files/banner, content: x"),
            false,
        ),
        (
            "an unknown recipe field",
            valid.replace("builder: volume", "bilder: volume"),
            false,
        ),
    ];
    let documents: Vec<String> = cases.iter().map(|(_, text, _)| text.to_string()).collect();
    let verdicts = super::schema_check::schema_verdicts(&documents);
    for ((name, _, valid), verdict) in cases.iter().zip(&verdicts) {
        assert_eq!(verdict.starts_with("valid"), *valid, "{name}: {verdict}");
    }
}
