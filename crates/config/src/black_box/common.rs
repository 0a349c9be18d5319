//! Test roots: temporary directories standing in for a machine's `/`, with
//! just enough inside (a shell and its libraries, account files, dpkg's
//! query tool) for the engine's commands to run in them through `chroot`.
//! Nothing here touches the host's own files, users, packages or services.

#![allow(dead_code, clippy::unwrap_used)] // Shared by test files; a panic is the failure report.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use endstate_config::facts::{Facts, Instance, Os};
use endstate_config::{Report, Role, Status};

/// The engine runs commands inside test roots with `chroot`, which needs
/// root; CI runs as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs commands inside a throwaway root with chroot, which needs root privileges"
    );
}

/// An empty root with `/etc`.
pub fn empty_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    root
}

/// Copies the host's `program` into `root` at `inside`, with the shared
/// libraries `ldd` names, so that it runs under `chroot root`.
pub fn install_program(root: &Path, program: &str, inside: &str) {
    let host = which(program);
    let target = root.join(inside.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(&host, &target).unwrap();
    let ldd = Command::new("ldd").arg(&host).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|word| word.starts_with('/'))
            .map(PathBuf::from);
        if let Some(library) = path {
            let copy = root.join(library.strip_prefix("/").unwrap());
            if !copy.exists() {
                std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
                std::fs::copy(&library, &copy).unwrap();
            }
        }
    }
}

fn which(program: &str) -> PathBuf {
    for directory in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let path = Path::new(directory).join(program);
        if path.exists() {
            return std::fs::canonicalize(path).unwrap();
        }
    }
    panic!("{program} is not installed on this machine");
}

/// A root with `/bin/sh` (dash) and `/etc`, `/tmp`.
pub fn shell_root() -> tempfile::TempDir {
    let root = empty_root();
    install_program(root.path(), "dash", "/bin/sh");
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    root
}

/// Writes an executable shell script at `inside`.
pub fn install_script(root: &Path, inside: &str, script: &str) {
    let target = root.join(inside.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, script).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Facts for tests: Debian 13, an instance with tags.
pub fn facts() -> Facts {
    Facts {
        os: Os {
            id: "debian".to_string(),
            id_like: Vec::new(),
            version_id: "13".to_string(),
            version_codename: "trixie".to_string(),
            pretty_name: "Debian GNU/Linux 13 (trixie)".to_string(),
        },
        hostname: "test-host".to_string(),
        cpus: 2,
        memory_bytes: 4 << 30,
        addresses: Vec::new(),
        instance: Some(Instance {
            id: "i-0123456789abcdef0".to_string(),
            metadata: BTreeMap::from([("instance-type".to_string(), "t3.micro".to_string())]),
            tags: BTreeMap::from([("Name".to_string(), "web-1".to_string())]),
        }),
    }
}

/// Roles from JSON.
pub fn roles(value: serde_json::Value) -> Vec<Role> {
    serde_json::from_value(value).unwrap()
}

/// One role named `test` with `resources`.
pub fn role(resources: serde_json::Value) -> Vec<Role> {
    roles(serde_json::json!([{"name": "test", "resources": resources}]))
}

/// The status of `id`.
pub fn status(report: &Report, id: &str) -> Status {
    report
        .resource(id)
        .unwrap_or_else(|| panic!("no {id} in {}", report.to_json()))
        .status
}

/// Every file under `root` with its bytes and mode, to compare before and
/// after a run that must not touch anything.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Option<Vec<u8>>, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(directory) = stack.pop() {
        for entry in std::fs::read_dir(&directory).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let metadata = std::fs::symlink_metadata(&path).unwrap();
            if metadata.is_dir() {
                stack.push(path.clone());
                out.insert(path, (None, metadata.mode()));
            } else {
                let bytes = if metadata.is_file() {
                    Some(std::fs::read(&path).unwrap())
                } else {
                    None
                };
                out.insert(path, (bytes, metadata.mode()));
            }
        }
    }
    out
}

/// Asserts that a noop report predicted the real one exactly: every
/// `would_change` is `changed` with the same changes, every `unchanged`
/// unchanged.
pub fn assert_predicted(noop: &Report, real: &Report) {
    assert_eq!(noop.resources.len(), real.resources.len());
    for (predicted, actual) in noop.resources.iter().zip(&real.resources) {
        assert_eq!(predicted.id, actual.id);
        let expected = match predicted.status {
            Status::WouldChange => Status::Changed,
            other => other,
        };
        assert_eq!(
            expected,
            actual.status,
            "{}: noop said {:?}, the real run {:?}\nnoop: {}\nreal: {}",
            predicted.id,
            predicted.status,
            actual.status,
            noop.to_json(),
            real.to_json()
        );
        assert_eq!(predicted.changes, actual.changes, "{}", predicted.id);
    }
}
