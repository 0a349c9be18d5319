//! The content-addressed layer store: `<dir>/layers/<sha256>/`, one
//! directory tree per layer, named by the SHA-256 of its content (paths,
//! kinds, permission bits, file bytes, link targets — not owners or times),
//! so the same content is one layer however many images and instances use
//! it. Also the starter base image's tree (`endstate-base`).
//!
//! Layers are made by building (or copying, `cp -a`, which keeps xattrs and
//! overlay whiteouts) into a temporary directory next to them, hashing,
//! and renaming into place; a layer that already exists is kept and the
//! copy dropped.
//!
//! Not here: which images or instances use a layer (the records and the
//! runtime know), mounting (the instance runtime's).

use std::fs;
use std::io::{self, Read as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

/// The layers' directory.
#[derive(Debug, Clone)]
pub struct LayerStore {
    root: PathBuf,
}

/// The digest of a directory tree's content.
pub fn tree_digest(dir: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    hash_dir(dir, Path::new(""), &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

fn hash_dir(dir: &Path, rel: &Path, hasher: &mut Sha256) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = rel.join(entry.file_name());
        let meta = fs::symlink_metadata(&path)?;
        let kind = meta.file_type();
        hasher.update(rel.as_os_str().as_encoded_bytes());
        hasher.update([0]);
        hasher.update(format!("{:o}", meta.permissions().mode() & 0o7777).as_bytes());
        if kind.is_symlink() {
            hasher.update(b"l");
            hasher.update(fs::read_link(&path)?.as_os_str().as_encoded_bytes());
        } else if kind.is_dir() {
            hasher.update(b"d");
            hash_dir(&path, &rel, hasher)?;
            hasher.update(b"/d");
        } else if kind.is_file() {
            hasher.update(b"f");
            let mut file = fs::File::open(&path)?;
            let mut content = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                content.update(&buf[..n]);
            }
            hasher.update(content.finalize());
        } else if kind.is_char_device() || kind.is_block_device() {
            // Overlay whiteouts are 0/0 character devices.
            hasher.update(format!("c{}", meta.rdev()).as_bytes());
        } else {
            hasher.update(b"o");
        }
        hasher.update([0]);
    }
    Ok(())
}

/// `cp -a SRC/. DST`: everything of `src` into `dst`, owners, modes, times
/// and xattrs kept.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    fs::create_dir_all(dst)?;
    let mut from = src.as_os_str().to_owned();
    from.push("/.");
    let out = Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(&from)
        .arg(dst)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "cp -a {} {}: {}",
            src.display(),
            dst.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl LayerStore {
    pub fn open(root: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    pub fn path(&self, digest: &str) -> PathBuf {
        self.root.join(digest)
    }

    /// Makes a layer of what `fill` puts in an empty directory.
    pub fn add_with(&self, fill: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<String> {
        let staging = self
            .root
            .join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(&staging)?;
        let made = fill(&staging).and_then(|()| tree_digest(&staging));
        let digest = match made {
            Ok(digest) => digest,
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        let target = self.path(&digest);
        if target.exists() {
            fs::remove_dir_all(&staging)?;
        } else {
            fs::rename(&staging, &target)?;
        }
        Ok(digest)
    }

    /// Makes a layer of a copy of `src`.
    pub fn add_copy(&self, src: &Path) -> io::Result<String> {
        self.add_with(|staging| copy_tree(src, staging))
    }

    pub fn remove(&self, digest: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.path(digest)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// The digests present.
    pub fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Writes the starter base image's tree into `root`: the directories an
/// instance expects, `/etc/hostname`, and `passwd`/`group` with `root`
/// and an `instance` user. Modes are set explicitly so the umask cannot
/// change the digest.
pub fn build_base_tree(root: &Path) -> io::Result<()> {
    let dirs: [(&str, u32); 14] = [
        ("etc", 0o755),
        ("etc/endstate", 0o755),
        ("etc/endstate/services", 0o755),
        ("tmp", 0o1777),
        ("var", 0o755),
        ("var/log", 0o755),
        ("var/tmp", 0o1777),
        ("home", 0o755),
        ("home/instance", 0o755),
        ("root", 0o700),
        ("opt", 0o755),
        ("srv", 0o755),
        ("run", 0o755),
        ("dev", 0o755),
    ];
    for (dir, mode) in dirs {
        let path = root.join(dir);
        fs::create_dir_all(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    }
    let files: [(&str, &str); 5] = [
        ("etc/hostname", "localhost\n"),
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\ninstance:x:1000:1000:instance:/home/instance:/bin/sh\n",
        ),
        ("etc/group", "root:x:0:\ninstance:x:1000:\n"),
        ("etc/hosts", "127.0.0.1 localhost\n"),
        (
            "etc/os-release",
            "NAME=\"endstate base\"\nID=endstate\nPRETTY_NAME=\"endstate base image\"\n",
        ),
    ];
    for (file, content) in files {
        let path = root.join(file);
        fs::write(&path, content)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn same_content_same_digest_and_one_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = LayerStore::open(dir.path().join("layers")).unwrap();
        let a = store.add_with(build_base_tree).unwrap();
        let b = store.add_with(build_base_tree).unwrap();
        assert_eq!(a, b);
        assert_eq!(store.list().unwrap(), vec![a.clone()]);
        assert_eq!(a.len(), 64);
        // A copy of the layer is the same content.
        let c = store.add_copy(&store.path(&a)).unwrap();
        assert_eq!(a, c);
    }

    #[test]
    fn any_change_changes_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        build_base_tree(&tree).unwrap();
        let base = tree_digest(&tree).unwrap();
        fs::write(tree.join("etc/hostname"), "other\n").unwrap();
        let edited = tree_digest(&tree).unwrap();
        assert_ne!(base, edited);
        fs::write(tree.join("etc/hostname"), "localhost\n").unwrap();
        assert_eq!(tree_digest(&tree).unwrap(), base);
        fs::set_permissions(tree.join("etc/hostname"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(tree_digest(&tree).unwrap(), base);
        fs::set_permissions(tree.join("etc/hostname"), fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink("hostname", tree.join("etc/name")).unwrap();
        assert_ne!(tree_digest(&tree).unwrap(), base);
    }
}
