//! Checks roles before anything runs: duplicate ids, `requires` and
//! `notify` targets that do not exist (or, for `notify`, are not services),
//! dependency cycles (named in full), and the fields of each resource
//! (absolute paths without `..`, octal modes, exactly one content source).
//! Every error is reported at once, naming the resource and the field. It
//! also computes the order in which the engine converges resources. No I/O.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Resource, Role};

/// One problem with the declared roles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role {role}: {resource}: {field}: {message}")]
pub struct ValidationError {
    /// The role declaring the resource.
    pub role: String,
    /// The resource's id.
    pub resource: String,
    /// The field at fault, such as `requires[1]` or `mode`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// The resource's index in [`declared`]'s list, so that a caller
    /// holding positions (the spec loader) can point at it even when two
    /// resources share an id.
    pub index: usize,
}

/// A resource with the role that declares it.
#[derive(Debug, Clone, Copy)]
pub struct Declared<'a> {
    /// The role's name.
    pub role: &'a str,
    /// The resource.
    pub resource: &'a Resource,
}

/// Every resource of `roles`, in declaration order.
pub fn declared(roles: &[Role]) -> Vec<Declared<'_>> {
    roles
        .iter()
        .flat_map(|role| {
            role.resources.iter().map(move |resource| Declared {
                role: &role.name,
                resource,
            })
        })
        .collect()
}

/// Checks `roles`; on success returns the indices (into [`declared`]'s
/// list) in convergence order: every resource after those it requires and
/// those that notify it, declaration order otherwise.
pub fn validate(roles: &[Role]) -> Result<Vec<usize>, Vec<ValidationError>> {
    let resources = declared(roles);
    let mut errors = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (position, declared) in resources.iter().enumerate() {
        let id = declared.resource.id();
        if let Some(first) = index.get(&id) {
            errors.push(error(
                position,
                declared,
                "name",
                format!(
                    "duplicate id (first declared in role {})",
                    resources[*first].role
                ),
            ));
        } else {
            index.insert(id, position);
        }
        check_fields(position, declared, &mut errors);
    }

    // Edges point from a resource to those that must come before it.
    let mut before: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); resources.len()];
    for (position, declared) in resources.iter().enumerate() {
        for (i, target) in declared.resource.requires().iter().enumerate() {
            match index.get(target) {
                Some(&other) if other == position => errors.push(error(
                    position,
                    declared,
                    &format!("requires[{i}]"),
                    "a resource cannot require itself".to_string(),
                )),
                Some(&other) => {
                    before[position].insert(other);
                }
                None => errors.push(error(
                    position,
                    declared,
                    &format!("requires[{i}]"),
                    format!("no resource '{target}'"),
                )),
            }
        }
        for (i, target) in declared.resource.notify().iter().enumerate() {
            match index.get(target) {
                Some(&other) if !matches!(resources[other].resource, Resource::Service(_)) => {
                    errors.push(error(
                        position,
                        declared,
                        &format!("notify[{i}]"),
                        format!("'{target}' is not a service: only services can be notified"),
                    ))
                }
                Some(&other) if other == position => errors.push(error(
                    position,
                    declared,
                    &format!("notify[{i}]"),
                    "a service cannot notify itself".to_string(),
                )),
                Some(&other) => {
                    before[other].insert(position);
                }
                None => errors.push(error(
                    position,
                    declared,
                    &format!("notify[{i}]"),
                    format!("no resource '{target}'"),
                )),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    match order(&before) {
        Ok(order) => Ok(order),
        Err(cycle) => {
            let names: Vec<String> = cycle.iter().map(|&i| resources[i].resource.id()).collect();
            let first = &resources[cycle[0]];
            Err(vec![error(
                cycle[0],
                first,
                "requires",
                format!("dependency cycle: {}", names.join(" -> ")),
            )])
        }
    }
}

fn error(index: usize, declared: &Declared<'_>, field: &str, message: String) -> ValidationError {
    ValidationError {
        index,
        role: declared.role.to_string(),
        resource: declared.resource.id(),
        field: field.to_string(),
        message,
    }
}

/// Kahn's algorithm, lowest index first; on a cycle, the cycle (its first
/// element repeated at the end).
fn order(before: &[BTreeSet<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let count = before.len();
    let mut waiting: Vec<usize> = before.iter().map(BTreeSet::len).collect();
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (node, deps) in before.iter().enumerate() {
        for &dep in deps {
            after[dep].push(node);
        }
    }
    let mut ready: BTreeSet<usize> = (0..count).filter(|&n| waiting[n] == 0).collect();
    let mut out = Vec::with_capacity(count);
    while let Some(node) = ready.pop_first() {
        out.push(node);
        for &next in &after[node] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.insert(next);
            }
        }
    }
    if out.len() == count {
        return Ok(out);
    }
    // Some node still waits: walk its unfinished dependencies until one repeats.
    let done: BTreeSet<usize> = out.into_iter().collect();
    let mut path: Vec<usize> = Vec::new();
    let mut node = (0..count).find(|n| !done.contains(n)).unwrap_or(0);
    loop {
        if let Some(start) = path.iter().position(|&n| n == node) {
            let mut cycle: Vec<usize> = path[start..].to_vec();
            // `path` follows "depends on"; a cycle reads better in run order.
            cycle.reverse();
            let first = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, &n)| n)
                .map_or(0, |(i, _)| i);
            cycle.rotate_left(first);
            cycle.push(cycle[0]);
            return Err(cycle);
        }
        path.push(node);
        node = before[node]
            .iter()
            .copied()
            .find(|n| !done.contains(n))
            .unwrap_or(node);
    }
}

fn check_fields(index: usize, declared: &Declared<'_>, errors: &mut Vec<ValidationError>) {
    let resource = declared.resource;
    let mut push =
        |field: &str, message: String| errors.push(error(index, declared, field, message));
    if resource.name().is_empty() {
        push("name", "must not be empty".to_string());
    }
    let mut path_field = |field: &str, value: &str| {
        if let Err(message) = check_path(value) {
            push(field, message);
        }
    };
    match resource {
        Resource::File(file) => {
            path_field("path", &file.path);
        }
        Resource::Directory(directory) => path_field("path", &directory.path),
        Resource::Template(template) => path_field("path", &template.path),
        Resource::Exec(exec) => {
            if let Some(creates) = &exec.creates {
                path_field("creates", creates);
            }
        }
        _ => {}
    }
    let mut push =
        |field: &str, message: String| errors.push(error(index, declared, field, message));
    let mode = match resource {
        Resource::File(file) => file.mode.as_deref(),
        Resource::Directory(directory) => directory.mode.as_deref(),
        Resource::Template(template) => template.mode.as_deref(),
        _ => None,
    };
    if let Some(mode) = mode {
        if let Err(message) = parse_mode(mode) {
            push("mode", message);
        }
    }
    match resource {
        Resource::File(file) if file.content.is_some() == file.source.is_some() => push(
            "content",
            "give exactly one of `content` and `source`".to_string(),
        ),
        Resource::Template(template)
            if template.template.is_some() == template.source.is_some() =>
        {
            push(
                "template",
                "give exactly one of `template` and `source`".to_string(),
            )
        }
        Resource::Exec(exec) if exec.command.trim().is_empty() => {
            push("command", "must not be empty".to_string())
        }
        Resource::Exec(exec) if exec.timeout == Some(0) => {
            push("timeout", "must be at least 1 second".to_string())
        }
        Resource::User(user) if !valid_account_name(&user.name) => push(
            "name",
            "not a user name (lowercase letters, digits, '_', '-'; at most 32)".to_string(),
        ),
        Resource::Group(group) if !valid_account_name(&group.name) => push(
            "name",
            "not a group name (lowercase letters, digits, '_', '-'; at most 32)".to_string(),
        ),
        Resource::Package(package) => {
            let name = package.package.as_deref().unwrap_or(&package.name);
            if !valid_package_name(name) {
                push("package", format!("'{name}' is not a Debian package name"));
            }
        }
        Resource::Service(service) => {
            let name = service.service.as_deref().unwrap_or(&service.name);
            if !valid_service_name(name) {
                push(
                    "service",
                    format!("'{name}' is not a service name (letters, digits, '-', '_', '.', '@')"),
                );
            }
        }
        _ => {}
    }
}

/// An absolute path without `.` or `..` components.
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("'{path}' is not absolute"));
    }
    if path.split('/').any(|part| part == ".." || part == ".") {
        return Err(format!("'{path}' must not contain '.' or '..'"));
    }
    Ok(())
}

/// Permission bits from an octal string such as `"0644"` or `"755"`.
pub fn parse_mode(mode: &str) -> Result<u32, String> {
    let digits = mode.strip_prefix("0o").unwrap_or(mode);
    if digits.is_empty() || digits.len() > 4 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(format!("'{mode}' is not an octal mode such as \"0644\""));
    }
    u32::from_str_radix(digits, 8).map_err(|error| format!("'{mode}': {error}"))
}

fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn valid_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use super::*;

    fn roles(yaml_json: serde_json::Value) -> Vec<Role> {
        serde_json::from_value(yaml_json).unwrap()
    }

    #[test]
    fn names_unknown_targets_duplicates_and_fields() {
        let roles = roles(serde_json::json!([{
            "name": "web",
            "resources": [
                {"kind": "file", "name": "a", "path": "etc/a", "content": "x", "requires": ["file:missing"]},
                {"kind": "file", "name": "a", "path": "/etc/a", "content": "x", "mode": "0999"},
                {"kind": "exec", "name": "e", "command": "true", "notify": ["file:a"]},
            ]
        }]));
        let errors = validate(&roles).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "role web: file:a: path: 'etc/a' is not absolute",
                "role web: file:a: name: duplicate id (first declared in role web)",
                "role web: file:a: mode: '0999' is not an octal mode such as \"0644\"",
                "role web: file:a: requires[0]: no resource 'file:missing'",
                "role web: exec:e: notify[0]: 'file:a' is not a service: only services can be notified",
            ]
        );
        // Each error names the resource by its place too: the duplicate is the second.
        let indices: Vec<usize> = errors.iter().map(|e| e.index).collect();
        assert_eq!(indices, [0, 1, 1, 0, 2]);
    }

    #[test]
    fn names_the_cycle() {
        let roles = roles(serde_json::json!([{
            "name": "r",
            "resources": [
                {"kind": "exec", "name": "a", "command": "true", "requires": ["exec:c"]},
                {"kind": "exec", "name": "b", "command": "true", "requires": ["exec:a"]},
                {"kind": "exec", "name": "c", "command": "true", "requires": ["exec:b"]},
                {"kind": "exec", "name": "free", "command": "true"},
            ]
        }]));
        let errors = validate(&roles).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "role r: exec:a: requires: dependency cycle: exec:a -> exec:b -> exec:c -> exec:a"
        );
    }

    #[test]
    fn orders_by_requires_and_notify_then_declaration() {
        let roles = roles(serde_json::json!([{
            "name": "r",
            "resources": [
                {"kind": "service", "name": "web"},
                {"kind": "file", "name": "conf", "path": "/c", "content": "x", "notify": ["service:web"], "requires": ["directory:d"]},
                {"kind": "directory", "name": "d", "path": "/d"},
                {"kind": "exec", "name": "last", "command": "true"},
            ]
        }]));
        assert_eq!(validate(&roles).unwrap(), vec![2, 1, 0, 3]);
    }
}
