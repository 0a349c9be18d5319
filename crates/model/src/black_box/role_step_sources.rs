//! A recipe's role step covers its role's `source:` files: the loader
//! reads the sources of the file and template resources of every role a
//! step applies (and only those roles), records them on the recipe, and
//! the step's hash moves when a source's bytes change and not otherwise;
//! an unreadable one is an error where its `source:` was written; a role
//! without sources hashes exactly as it did before sources were read.

use std::path::Path;

use endstate_model::recipe::{Recipe, SourceFile};
use endstate_model::{load_str, Spec};
use sha2::Digest;

/// `site` has two sources, `plain` none, `agent` one that does not exist
/// and that only a group lists.
const SPEC: &str = "\
project: shop
provider:
  aws:
    region: us-east-1
roles:
  site:
    resources:
      - { kind: file, name: conf, path: /etc/site.conf, source: files/site.conf }
      - { kind: package, name: nginx }
      - { kind: template, name: page, path: /var/www/index.html, source: files/index.j2 }
  plain:
    resources:
      - { kind: file, name: motd, path: /etc/motd, content: hello }
  agent:
    resources:
      - { kind: file, name: key, path: /etc/agent.key, source: files/not-there }
recipes:
  app:
    from: ami-12345678
    steps:
      - { name: site, role: site }
      - { name: motd, role: plain }
      - { name: flag, shell: 'touch /etc/ready' }
  other:
    from: app
    steps:
      - { name: again, role: site }
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 2 }
    zones: [us-east-1a]
    roles: [agent]
";

/// A spec's directory with `site`'s two source files.
fn fixture() -> tempfile::TempDir {
    let directory = tempfile::tempdir().unwrap();
    std::fs::create_dir(directory.path().join("files")).unwrap();
    std::fs::write(directory.path().join("files/site.conf"), "listen 80;\n").unwrap();
    std::fs::write(
        directory.path().join("files/index.j2"),
        "<h1>{{ name }}</h1>\n",
    )
    .unwrap();
    directory
}

fn load_in(directory: &Path, source: &str) -> Result<Spec, String> {
    load_str(source, Path::new("spec.yaml"), directory, None).map_err(|d| d.to_string())
}

fn spec_in(directory: &Path) -> Spec {
    load_in(directory, SPEC).unwrap_or_else(|d| panic!("{d}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A step hash as `recipe` computes it, from its fields written out here:
/// each name and value as a big-endian u64 length and the bytes.
fn canonical(fields: &[(&str, &[u8])]) -> String {
    let mut hasher = sha2::Sha256::new();
    for (name, value) in fields {
        for bytes in [name.as_bytes(), value] {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        }
    }
    hex::encode(hasher.finalize())
}

fn app(spec: &Spec) -> &Recipe {
    &spec.recipes["app"]
}

#[test]
fn the_sources_of_roles_that_steps_apply_are_read_in_resource_order() {
    let directory = fixture();
    let spec = spec_in(directory.path());
    let files = std::path::absolute(directory.path().join("files")).unwrap();
    let expected = [
        SourceFile {
            written: "files/site.conf".into(),
            path: files.join("site.conf"),
            sha256: sha256_hex(b"listen 80;\n"),
            size: 11,
        },
        SourceFile {
            written: "files/index.j2".into(),
            path: files.join("index.j2"),
            sha256: sha256_hex(b"<h1>{{ name }}</h1>\n"),
            size: 20,
        },
    ];
    assert_eq!(spec.role_sources("site"), expected);
    assert_eq!(app(&spec).role_sources("site"), expected);
    assert_eq!(spec.recipes["other"].role_sources("site"), expected);
    // Read with what they name: every one still as it was loaded.
    for source in spec.role_sources("site") {
        assert_eq!(
            source.read_verified().unwrap(),
            std::fs::read(&source.path).unwrap()
        );
    }
    // A role without sources has no entry; one only a group lists is not
    // read, so its missing file is no error.
    assert!(spec.role_sources("plain").is_empty());
    assert!(!app(&spec).role_sources.contains_key("plain"));
    assert!(spec.role_sources("agent").is_empty());

    // Through JSON and back, unchanged.
    let json = serde_json::to_value(&spec).unwrap();
    let back: Spec = serde_json::from_value(json).unwrap();
    assert_eq!(back, spec);
}

#[test]
fn a_role_steps_version_moves_with_its_sources_bytes_and_only_with_them() {
    let directory = fixture();
    let before = spec_in(directory.path());
    let version = app(&before).version(&before).unwrap();

    // The same bytes written again: the same version.
    std::fs::write(directory.path().join("files/site.conf"), "listen 80;\n").unwrap();
    let rewritten = spec_in(directory.path());
    assert_eq!(app(&rewritten).version(&rewritten).unwrap(), version);

    // New bytes: the role step moves, the other steps do not, and every
    // prefix from the role step on (and the child recipe) is new.
    std::fs::write(directory.path().join("files/site.conf"), "listen 8080;\n").unwrap();
    let edited = spec_in(directory.path());
    let moved = app(&edited).version(&edited).unwrap();
    assert_ne!(moved.step_hashes[0], version.step_hashes[0]);
    assert_eq!(moved.step_hashes[1..], version.step_hashes[1..]);
    for (old, new) in version.prefixes.iter().zip(&moved.prefixes) {
        assert_ne!(old, new);
    }
    let other = |spec: &Spec| spec.recipes["other"].version(spec).unwrap();
    assert_ne!(other(&edited).full(), other(&before).full());

    // A template's source counts as much as a file's.
    std::fs::write(directory.path().join("files/site.conf"), "listen 80;\n").unwrap();
    std::fs::write(
        directory.path().join("files/index.j2"),
        "<h2>{{ name }}</h2>\n",
    )
    .unwrap();
    let template = spec_in(directory.path());
    let template = app(&template).version(&template).unwrap();
    assert_ne!(template.step_hashes[0], version.step_hashes[0]);
    assert_eq!(template.step_hashes[1..], version.step_hashes[1..]);
}

#[test]
fn a_role_step_hashes_its_definition_then_each_source() {
    let directory = fixture();
    let spec = spec_in(directory.path());
    let hashes = app(&spec).step_hashes(&spec);
    let definition = |role: &str| serde_json::to_vec(&spec.roles[role]).unwrap();

    // Without sources: exactly the fields a role step had before sources
    // were read, so existing versions stay as they were.
    let plain = definition("plain");
    let before = [
        ("step", &b"role/v1"[..]),
        ("role", b"plain"),
        ("definition", &plain),
    ];
    assert_eq!(hashes[1], canonical(&before));

    // With sources: each one's path as written and its SHA-256, in
    // resource order, after the definition.
    let site = definition("site");
    let (conf, page) = (
        sha256_hex(b"listen 80;\n"),
        sha256_hex(b"<h1>{{ name }}</h1>\n"),
    );
    let fields = [
        ("step", &b"role/v1"[..]),
        ("role", b"site"),
        ("definition", &site),
        ("source", b"files/site.conf"),
        ("source_sha256", conf.as_bytes()),
        ("source", b"files/index.j2"),
        ("source_sha256", page.as_bytes()),
    ];
    assert_eq!(hashes[0], canonical(&fields));

    // A spec without any sourced role keeps the JSON (and so the spec
    // hash) it had before sources were read.
    let json = serde_json::to_value(&spec).unwrap();
    assert!(json["recipes"]["app"].get("role_sources").is_some());
    let no_sources = SPEC.replace("{ name: site, role: site }", "{ name: site, role: plain }");
    let no_sources = no_sources.replace(
        "{ name: again, role: site }",
        "{ name: again, shell: 'true' }",
    );
    let spec = load_in(directory.path(), &no_sources).unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    for recipe in ["app", "other"] {
        assert!(
            json["recipes"][recipe].get("role_sources").is_none(),
            "{json}"
        );
    }
}

#[test]
fn an_unreadable_role_source_is_an_error_where_it_was_written() {
    let directory = fixture();
    std::fs::remove_file(directory.path().join("files/site.conf")).unwrap();
    std::fs::remove_file(directory.path().join("files/index.j2")).unwrap();
    let errors = load_in(directory.path(), SPEC).unwrap_err();
    // Both at once, each once though two recipes apply the role, at its
    // `source:` value; the group-only role's missing file is no error.
    assert_eq!(
        errors,
        "\
spec.yaml:8:65: error: roles.site.resources[0].source: cannot read `files/site.conf` (role `site`, resource file:conf, applied by recipes.app step `site`): No such file or directory (os error 2)
  expected: a file relative to the spec's directory
spec.yaml:10:74: error: roles.site.resources[2].source: cannot read `files/index.j2` (role `site`, resource template:page, applied by recipes.app step `site`): No such file or directory (os error 2)
  expected: a file relative to the spec's directory"
    );
}

#[test]
fn an_overlay_resource_is_reported_where_the_overlay_wrote_it() {
    let directory = fixture();
    let source = format!(
        "{SPEC}\
environments:
  prod:
    roles:
      site:
        resources:
          - {{ kind: file, name: conf, path: /etc/site.conf, source: files/prod.conf }}
"
    );
    // The base environment does not read the overlay's file.
    spec_in(directory.path());
    load_in(directory.path(), &source).unwrap();
    let prod = load_str(
        &source,
        Path::new("spec.yaml"),
        directory.path(),
        Some("prod"),
    )
    .map_err(|d| d.to_string())
    .unwrap_err();
    assert_eq!(
        prod,
        "\
spec.yaml:40:69: error: roles.site.resources[0].source: cannot read `files/prod.conf` (role `site`, resource file:conf, applied by recipes.app step `site`): No such file or directory (os error 2)
  expected: a file relative to the spec's directory"
    );
    std::fs::write(directory.path().join("files/prod.conf"), "listen 443;\n").unwrap();
    let prod = load_str(
        &source,
        Path::new("spec.yaml"),
        directory.path(),
        Some("prod"),
    )
    .unwrap();
    let written: Vec<&str> = prod
        .role_sources("site")
        .iter()
        .map(|s| s.written.as_str())
        .collect();
    assert_eq!(written, ["files/prod.conf"]);
}
