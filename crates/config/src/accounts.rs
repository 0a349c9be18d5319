//! The root's account databases, read as files: `/etc/passwd` and
//! `/etc/group` under the root, so that owners resolve to the root's ids
//! (not the host's NSS). Reading only; `useradd`/`groupadd` write them.

use std::path::Path;

/// One `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// One `/etc/group` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The root's users; a missing file has none.
pub(crate) fn users(root: &Path) -> Result<Vec<PasswdEntry>, String> {
    let path = root.join("etc/passwd");
    let text = read(&path)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: fields[0].to_string(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
                home: fields[5].to_string(),
                shell: fields[6].to_string(),
            })
        })
        .collect())
}

/// The root's groups; a missing file has none.
pub(crate) fn groups(root: &Path) -> Result<Vec<GroupEntry>, String> {
    let path = root.join("etc/group");
    let text = read(&path)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: fields[0].to_string(),
                gid: fields[2].parse().ok()?,
                members: fields[3]
                    .split(',')
                    .filter(|member| !member.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect())
}

fn read(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(error) => Err(format!("{}: {error}", path.display())),
    }
}

/// The name of `uid` in the root, or the number.
pub(crate) fn user_name(root: &Path, uid: u32) -> String {
    users(root)
        .ok()
        .and_then(|users| users.into_iter().find(|user| user.uid == uid))
        .map_or_else(|| uid.to_string(), |user| user.name)
}

/// The name of `gid` in the root, or the number.
pub(crate) fn group_name(root: &Path, gid: u32) -> String {
    groups(root)
        .ok()
        .and_then(|groups| groups.into_iter().find(|group| group.gid == gid))
        .map_or_else(|| gid.to_string(), |group| group.name)
}
