//! Files (and templates, once rendered) and directories: content compared
//! by bytes and reported as SHA-256 and size, never as text; written
//! atomically (a temporary file in the same directory, permissions and
//! owner set on it, fsync, rename, fsync of the directory); mode and owner
//! fixed in place when only they differ. Owners are names resolved in the
//! root's `/etc/passwd` and `/etc/group`. Parents are not created: a
//! missing parent is an error naming it. A symbolic link at a file's path is
//! read through but replaced by the written file; links in parent
//! directories are followed as the host sees them.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::Outcome;
use crate::accounts;
use crate::engine::Context;
use crate::report::Change;
use crate::types::DirectoryResource;
use crate::validate::parse_mode;

/// What a file should be.
pub(crate) struct FileState<'a> {
    pub path: &'a str,
    pub content: &'a [u8],
    pub mode: Option<&'a str>,
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
}

/// How content appears in a report: its hash and size.
pub(crate) fn describe_content(bytes: &[u8]) -> String {
    format!(
        "sha256:{} ({} bytes)",
        hex::encode(Sha256::digest(bytes)),
        bytes.len()
    )
}

fn describe_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

pub(crate) fn converge_file(context: &Context<'_>, file: &FileState<'_>) -> Outcome {
    match converge_file_inner(context, file) {
        Ok(outcome) => outcome,
        Err(message) => Outcome::Failed(message),
    }
}

fn converge_file_inner(context: &Context<'_>, file: &FileState<'_>) -> Result<Outcome, String> {
    if let Some(exec) = created_by_exec(context, file.path) {
        return Ok(Outcome::Unknown(
            format!("{} is created by {exec}, which would run first", file.path),
            Vec::new(),
        ));
    }
    let target = context.host_path(file.path);
    check_parent(context, file.path)?;
    let metadata = match std::fs::metadata(&target) {
        Ok(metadata) if metadata.is_dir() => {
            return Err(format!("{} is a directory", file.path));
        }
        Ok(metadata) => Some(metadata),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(format!("{}: {error}", file.path)),
    };
    let current = match &metadata {
        Some(_) => Some(std::fs::read(&target).map_err(|error| format!("{}: {error}", file.path))?),
        None => None,
    };
    let desired_mode = declared_mode(file.mode)?;
    let mut changes = Vec::new();
    let content_changes = current.as_deref() != Some(file.content);
    if content_changes {
        changes.push(Change::new(
            "content",
            current.as_deref().map(describe_content),
            Some(describe_content(file.content)),
        ));
    }
    let mode = property_changes(
        context,
        metadata.as_ref(),
        desired_mode,
        0o644,
        file,
        &mut changes,
    )?;
    if context.noop || changes.is_empty() {
        return Ok(Outcome::Done(changes));
    }
    let (uid, gid) = resolve_owner(context, file.owner, file.group)?;
    if content_changes {
        write_atomically(&target, file.content, mode, uid, gid)
            .map_err(|error| format!("writing {}: {error}", file.path))?;
    } else {
        set_properties(&target, metadata.as_ref(), mode, uid, gid)
            .map_err(|error| format!("{}: {error}", file.path))?;
    }
    Ok(Outcome::Done(changes))
}

pub(crate) fn converge_directory(context: &Context<'_>, directory: &DirectoryResource) -> Outcome {
    let inner = || -> Result<Outcome, String> {
        if let Some(exec) = created_by_exec(context, &directory.path) {
            return Ok(Outcome::Unknown(
                format!(
                    "{} is created by {exec}, which would run first",
                    directory.path
                ),
                Vec::new(),
            ));
        }
        let target = context.host_path(&directory.path);
        let metadata = match std::fs::metadata(&target) {
            Ok(metadata) if !metadata.is_dir() => {
                return Err(format!("{} exists and is not a directory", directory.path));
            }
            Ok(metadata) => Some(metadata),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(format!("{}: {error}", directory.path)),
        };
        if metadata.is_none() {
            check_parent(context, &directory.path)?;
        }
        let desired_mode = declared_mode(directory.mode.as_deref())?;
        let mut changes = Vec::new();
        if metadata.is_none() {
            changes.push(Change::new("ensure", None, Some("directory".to_string())));
        }
        let state = FileState {
            path: &directory.path,
            content: &[],
            mode: directory.mode.as_deref(),
            owner: directory.owner.as_deref(),
            group: directory.group.as_deref(),
        };
        let mode = property_changes(
            context,
            metadata.as_ref(),
            desired_mode,
            0o755,
            &state,
            &mut changes,
        )?;
        if context.noop || changes.is_empty() {
            return Ok(Outcome::Done(changes));
        }
        let (uid, gid) = resolve_owner(context, state.owner, state.group)?;
        if metadata.is_none() {
            std::fs::create_dir(&target)
                .map_err(|error| format!("creating {}: {error}", directory.path))?;
        }
        set_properties(&target, metadata.as_ref(), mode, uid, gid)
            .map_err(|error| format!("{}: {error}", directory.path))?;
        Ok(Outcome::Done(changes))
    };
    inner().unwrap_or_else(Outcome::Failed)
}

/// The exec (noop) whose `creates` is `path` or one of its parents.
fn created_by_exec(context: &Context<'_>, path: &str) -> Option<String> {
    context
        .expected
        .exec_creates
        .iter()
        .find(|(creates, _)| {
            path == creates.as_str()
                || path
                    .strip_prefix(creates.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .map(|(_, exec)| exec.clone())
}

fn check_parent(context: &Context<'_>, path: &str) -> Result<(), String> {
    let parent = Path::new(path).parent().unwrap_or(Path::new("/"));
    let parent_text = parent.to_string_lossy();
    if context.host_path(&parent_text).is_dir()
        || context.expected.paths.contains(parent_text.as_ref())
    {
        return Ok(());
    }
    Err(format!(
        "parent directory {parent_text} does not exist (declare it as a directory resource)"
    ))
}

fn declared_mode(mode: Option<&str>) -> Result<Option<u32>, String> {
    mode.map(|mode| parse_mode(mode).map_err(|message| format!("mode: {message}")))
        .transpose()
}

/// Records mode, owner and group changes; returns the mode to set.
fn property_changes(
    context: &Context<'_>,
    metadata: Option<&std::fs::Metadata>,
    desired_mode: Option<u32>,
    default_mode: u32,
    state: &FileState<'_>,
    changes: &mut Vec<Change>,
) -> Result<u32, String> {
    let current_mode = metadata.map(|metadata| metadata.mode() & 0o7777);
    let mode = desired_mode.or(current_mode).unwrap_or(default_mode);
    if current_mode != Some(mode) {
        changes.push(Change::new(
            "mode",
            current_mode.map(describe_mode),
            Some(describe_mode(mode)),
        ));
    }
    if let Some(owner) = state.owner {
        let current = metadata.map(|metadata| accounts::user_name(context.root, metadata.uid()));
        if current.as_deref() != Some(owner) {
            check_user(context, owner)?;
            changes.push(Change::new("owner", current, Some(owner.to_string())));
        }
    }
    if let Some(group) = state.group {
        let current = metadata.map(|metadata| accounts::group_name(context.root, metadata.gid()));
        if current.as_deref() != Some(group) {
            check_group(context, group)?;
            changes.push(Change::new("group", current, Some(group.to_string())));
        }
    }
    Ok(mode)
}

/// Whether `owner` exists in the root (or, in noop, would by then).
fn check_user(context: &Context<'_>, owner: &str) -> Result<(), String> {
    if context.noop && context.expected.users.contains(owner) {
        return Ok(());
    }
    find_uid(context.root, owner).map(drop)
}

fn check_group(context: &Context<'_>, group: &str) -> Result<(), String> {
    if context.noop && context.expected.groups.contains(group) {
        return Ok(());
    }
    find_gid(context.root, group).map(drop)
}

fn find_uid(root: &Path, name: &str) -> Result<u32, String> {
    accounts::users(root)?
        .into_iter()
        .find(|user| user.name == name)
        .map(|user| user.uid)
        .ok_or_else(|| format!("owner: no user '{name}' in {}/etc/passwd", root.display()))
}

fn find_gid(root: &Path, name: &str) -> Result<u32, String> {
    accounts::groups(root)?
        .into_iter()
        .find(|group| group.name == name)
        .map(|group| group.gid)
        .ok_or_else(|| format!("group: no group '{name}' in {}/etc/group", root.display()))
}

fn resolve_owner(
    context: &Context<'_>,
    owner: Option<&str>,
    group: Option<&str>,
) -> Result<(Option<u32>, Option<u32>), String> {
    let uid = owner.map(|name| find_uid(context.root, name)).transpose()?;
    let gid = group.map(|name| find_gid(context.root, name)).transpose()?;
    Ok((uid, gid))
}

/// Writes `content` to `target` through a temporary file beside it.
fn write_atomically(
    target: &Path,
    content: &[u8],
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> std::io::Result<()> {
    let directory = target.parent().unwrap_or(Path::new("/"));
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_default();
    // Unique within the process too: two runs may write the same directory.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let serial = COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = directory.join(format!(
        ".{name}.endstate-{}-{serial}.tmp",
        std::process::id()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(content)?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(&file, uid, gid)?;
        }
        // After the chown, which clears set-id bits.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.sync_all()?;
        std::fs::rename(&temp, target)?;
        File::open(directory)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn set_properties(
    target: &Path,
    metadata: Option<&std::fs::Metadata>,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> std::io::Result<()> {
    let uid = uid.filter(|&uid| metadata.is_none_or(|metadata| metadata.uid() != uid));
    let gid = gid.filter(|&gid| metadata.is_none_or(|metadata| metadata.gid() != gid));
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(target, uid, gid)?;
    }
    std::fs::set_permissions(target, Permissions::from_mode(mode))
}
