//! Roles as a loaded spec carries them: `endstate_config`'s [`Role`]s whose
//! string values may hold a secret *placeholder*, `${secret:env:NAME}` or
//! `${secret:file:PATH}`, where the spec wrote `${secret.NAME}` — the same
//! notation user data's template uses. Plans, state and hashes see only
//! placeholders; [`resolve_secrets`] swaps in the values at apply time and
//! names them, so the engine's report redacts them.
//!
//! It neither parses the spec (the loader writes the placeholders and
//! refuses any other text that looks like one) nor runs roles (that is
//! `endstate_config`'s engine).

use std::collections::BTreeSet;

use endstate_config::{Role, Secrets};

use crate::user_data::{resolve_secret, SecretError};
use crate::SecretRef;

/// What starts a secret placeholder in a role's string value.
pub const PLACEHOLDER_PREFIX: &str = "${secret:";

/// The placeholder that stands for `secret` in a role's value.
pub fn placeholder(secret: &SecretRef) -> String {
    format!("{PLACEHOLDER_PREFIX}{secret}}}")
}

/// The secrets `role`'s values need at apply time.
pub fn role_secrets(role: &Role) -> BTreeSet<SecretRef> {
    let mut found = BTreeSet::new();
    if let Ok(value) = serde_json::to_value(role) {
        walk_strings_ref(&value, &mut |text| {
            for (_, secret) in placeholders(text) {
                found.insert(secret);
            }
        });
    }
    found
}

/// `role` with every placeholder replaced by its secret's value, and those
/// values as [`Secrets`] for the engine to redact. No error carries a
/// value.
pub fn resolve_secrets(role: &Role) -> Result<(Role, Secrets), SecretError> {
    let rebuild = || SecretError::RoleShape {
        role: role.name.clone(),
    };
    let mut value = serde_json::to_value(role).map_err(|_| rebuild())?;
    let mut secrets = Secrets::new();
    let mut failure = None;
    walk_strings_mut(&mut value, &mut |text: &mut String| {
        if failure.is_some() || !text.contains(PLACEHOLDER_PREFIX) {
            return;
        }
        let mut out = String::with_capacity(text.len());
        let mut cursor = 0;
        for (range, secret) in placeholders(text) {
            out.push_str(&text[cursor..range.start]);
            match resolve_secret(&secret) {
                Ok(resolved) => {
                    out.push_str(&resolved);
                    secrets.insert(resolved);
                }
                Err(error) => {
                    failure = Some(error);
                    return;
                }
            }
            cursor = range.end;
        }
        out.push_str(&text[cursor..]);
        *text = out;
    });
    if let Some(error) = failure {
        return Err(error);
    }
    let resolved: Role = serde_json::from_value(value).map_err(|_| rebuild())?;
    Ok((resolved, secrets))
}

/// The placeholders in `text`: the byte range of each and its secret.
fn placeholders(text: &str) -> Vec<(std::ops::Range<usize>, SecretRef)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find(PLACEHOLDER_PREFIX) {
        let start = from + found;
        let inner_start = start + PLACEHOLDER_PREFIX.len();
        let Some(close) = text[inner_start..].find('}') else {
            break;
        };
        let inner = &text[inner_start..inner_start + close];
        let end = inner_start + close + 1;
        let secret = if let Some(name) = inner.strip_prefix("env:") {
            Some(SecretRef::Env(name.to_string()))
        } else {
            inner
                .strip_prefix("file:")
                .map(|path| SecretRef::File(path.to_string()))
        };
        if let Some(secret) = secret {
            out.push((start..end, secret));
        }
        from = end;
    }
    out
}

fn walk_strings_ref(value: &serde_json::Value, visit: &mut impl FnMut(&str)) {
    match value {
        serde_json::Value::String(text) => visit(text),
        serde_json::Value::Array(items) => items.iter().for_each(|v| walk_strings_ref(v, visit)),
        serde_json::Value::Object(map) => map.values().for_each(|v| walk_strings_ref(v, visit)),
        _ => {}
    }
}

fn walk_strings_mut(value: &mut serde_json::Value, visit: &mut impl FnMut(&mut String)) {
    match value {
        serde_json::Value::String(text) => visit(text),
        serde_json::Value::Array(items) => {
            items.iter_mut().for_each(|v| walk_strings_mut(v, visit));
        }
        serde_json::Value::Object(map) => {
            map.values_mut().for_each(|v| walk_strings_mut(v, visit));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use super::*;

    #[test]
    fn resolves_placeholders_and_names_the_values() {
        let directory = tempfile::tempdir().unwrap();
        let key = directory.path().join("key");
        std::fs::write(&key, "s3cret\n").unwrap();
        let key = SecretRef::File(key.to_string_lossy().into_owned());
        let role: Role = serde_json::from_value(serde_json::json!({
            "name": "db",
            "resources": [{
                "kind": "file", "name": "conf", "path": "/etc/db.conf",
                "content": format!("password={} again={}\n", placeholder(&key), placeholder(&key)),
            }]
        }))
        .unwrap();
        assert_eq!(role_secrets(&role), BTreeSet::from([key.clone()]));
        let (resolved, secrets) = resolve_secrets(&role).unwrap();
        let endstate_config::Resource::File(file) = &resolved.resources[0] else {
            panic!("{resolved:?}");
        };
        assert_eq!(
            file.content.as_deref(),
            Some("password=s3cret again=s3cret\n")
        );
        assert_eq!(secrets.redact("it is s3cret"), "it is <redacted>");
        // The role itself still holds only the reference.
        assert!(!serde_json::to_string(&role).unwrap().contains("s3cret"));
    }

    #[test]
    fn an_unresolvable_secret_names_the_reference_only() {
        let role: Role = serde_json::from_value(serde_json::json!({
            "name": "r",
            "resources": [{
                "kind": "exec", "name": "e",
                "command": "login ${secret:env:ENDSTATE_ROLES_TEST_UNSET}",
            }]
        }))
        .unwrap();
        let error = resolve_secrets(&role).unwrap_err();
        assert!(
            error.to_string().contains("ENDSTATE_ROLES_TEST_UNSET"),
            "{error}"
        );
    }
}
