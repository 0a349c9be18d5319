//! Users and groups: compared with the root's `/etc/passwd` and
//! `/etc/group`, created or changed with the shadow tools (`useradd`,
//! `usermod`, `groupadd`, `groupmod`) run on the host with `--root`, which
//! enter the root themselves. Supplementary groups are added, never
//! removed; home directories are not created.

use std::time::Duration;

use super::Outcome;
use crate::accounts;
use crate::command::{self, Place};
use crate::engine::Context;
use crate::report::Change;
use crate::types::{GroupResource, UserResource};

/// How long a shadow tool may take.
const TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn converge_user(context: &Context<'_>, user: &UserResource) -> Outcome {
    let inner = || -> Result<Vec<Change>, String> {
        let users = accounts::users(context.root)?;
        let groups = accounts::groups(context.root)?;
        let current = users.iter().find(|entry| entry.name == user.name);
        let mut changes = Vec::new();
        if current.is_none() {
            changes.push(Change::new("ensure", None, Some("present".to_string())));
        }
        let mut flags: Vec<String> = Vec::new();
        let mut differ = |field: &str, flag: &str, from: Option<String>, to: Option<String>| {
            if let Some(to) = to {
                if from.as_deref() != Some(to.as_str()) {
                    changes.push(Change::new(field, from, Some(to.clone())));
                    flags.push(flag.to_string());
                    flags.push(to);
                }
            }
        };
        let primary = current.map(|entry| {
            groups
                .iter()
                .find(|group| group.gid == entry.gid)
                .map_or_else(|| entry.gid.to_string(), |group| group.name.clone())
        });
        differ(
            "uid",
            "--uid",
            current.map(|e| e.uid.to_string()),
            user.uid.map(|uid| uid.to_string()),
        );
        differ("group", "--gid", primary, user.group.clone());
        differ(
            "home",
            "--home-dir",
            current.map(|e| e.home.clone()),
            user.home.clone(),
        );
        differ(
            "shell",
            "--shell",
            current.map(|e| e.shell.clone()),
            user.shell.clone(),
        );
        let member_of: Vec<String> = groups
            .iter()
            .filter(|group| group.members.contains(&user.name))
            .map(|group| group.name.clone())
            .collect();
        let missing: Vec<&String> = user
            .groups
            .iter()
            .filter(|group| !member_of.contains(group))
            .collect();
        if !missing.is_empty() {
            let mut after = member_of.clone();
            after.extend(missing.iter().map(|group| group.to_string()));
            changes.push(Change::new(
                "groups",
                Some(member_of.join(",")),
                Some(after.join(",")),
            ));
        }
        if context.noop || changes.is_empty() {
            return Ok(changes);
        }
        let mut argv: Vec<String> = Vec::new();
        if current.is_none() {
            argv.push("useradd".to_string());
            if user.system {
                argv.push("--system".to_string());
            }
            if !user.groups.is_empty() {
                argv.push("--groups".to_string());
                argv.push(user.groups.join(","));
            }
        } else {
            argv.push("usermod".to_string());
            if !missing.is_empty() {
                argv.push("--append".to_string());
                argv.push("--groups".to_string());
                argv.push(
                    missing
                        .iter()
                        .map(|g| g.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
        }
        argv.extend(flags);
        shadow_tool(context, argv, &user.name)?;
        Ok(changes)
    };
    inner().map_or_else(Outcome::Failed, Outcome::Done)
}

pub(crate) fn converge_group(context: &Context<'_>, group: &GroupResource) -> Outcome {
    let inner = || -> Result<Vec<Change>, String> {
        let groups = accounts::groups(context.root)?;
        let current = groups.iter().find(|entry| entry.name == group.name);
        let mut changes = Vec::new();
        let mut argv: Vec<String> = Vec::new();
        match current {
            None => {
                changes.push(Change::new("ensure", None, Some("present".to_string())));
                argv.push("groupadd".to_string());
                if group.system {
                    argv.push("--system".to_string());
                }
                if let Some(gid) = group.gid {
                    changes.push(Change::new("gid", None, Some(gid.to_string())));
                    argv.extend(["--gid".to_string(), gid.to_string()]);
                }
            }
            Some(entry) => match group.gid {
                Some(gid) if gid != entry.gid => {
                    changes.push(Change::new(
                        "gid",
                        Some(entry.gid.to_string()),
                        Some(gid.to_string()),
                    ));
                    argv.extend(["groupmod".to_string(), "--gid".to_string(), gid.to_string()]);
                }
                _ => {}
            },
        }
        if context.noop || changes.is_empty() {
            return Ok(changes);
        }
        shadow_tool(context, argv, &group.name)?;
        Ok(changes)
    };
    inner().map_or_else(Outcome::Failed, Outcome::Done)
}

/// Runs `argv NAME` on the host, with `--root` unless the root is `/`.
fn shadow_tool(context: &Context<'_>, mut argv: Vec<String>, name: &str) -> Result<(), String> {
    if context.root != std::path::Path::new("/") {
        argv.insert(1, "--root".to_string());
        argv.insert(2, context.root.display().to_string());
    }
    argv.push(name.to_string());
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let tool = args.first().copied().unwrap_or_default();
    match command::run(Place::Host, &args, &[], TIMEOUT) {
        Ok(output) if output.success() => Ok(()),
        Ok(output) => Err(format!("{tool}: {}", output.describe())),
        Err(message) => Err(format!("{tool}: {message}")),
    }
}
