//! Query-protocol form parameters: the flat `Name.N.Member=value` map an EC2
//! request body carries, and its `application/x-www-form-urlencoded`
//! encoding.
//!
//! Encoding follows AWS's rules: only the unreserved characters
//! `A-Za-z0-9-_.~` stay literal, everything else becomes `%XX` (upper-case
//! hex), a space included. Decoding also accepts `+` for a space, because
//! botocore (the aws CLI) encodes bodies with Python's `urlencode`.
//!
//! This module knows nothing of EC2 actions; `crate::requests` does.

use std::collections::{BTreeMap, BTreeSet};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::WireError;

/// Every byte except AWS's unreserved characters is percent-encoded.
const AWS_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes `s` the way AWS canonicalises query strings and form
/// bodies.
pub fn aws_percent_encode(s: &str) -> String {
    utf8_percent_encode(s, AWS_ENCODE).to_string()
}

/// The parameters of one Query-protocol request, keyed by name. A name
/// appears at most once; order does not matter to the protocol, and the map
/// keeps names sorted so that encodings are deterministic.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Params {
    map: BTreeMap<String, String>,
}

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, replacing any earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.map.insert(name.into(), value.into());
    }

    /// Sets `name` if `value` is present.
    pub fn insert_opt(&mut self, name: impl Into<String>, value: Option<impl Into<String>>) {
        if let Some(value) = value {
            self.insert(name, value);
        }
    }

    /// Sets `prefix.1`, `prefix.2`, ... to the values.
    pub fn insert_list<S: AsRef<str>>(&mut self, prefix: &str, values: &[S]) {
        for (i, value) in values.iter().enumerate() {
            self.insert(format!("{prefix}.{}", i + 1), value.as_ref());
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// The value of `name`, or `MissingParameter`.
    pub fn require(&self, name: &str) -> Result<&str, WireError> {
        self.get(name)
            .ok_or_else(|| WireError::MissingParameter(name.to_string()))
    }

    /// The value of `name` parsed as an unsigned number.
    pub fn get_u32(&self, name: &str) -> Result<Option<u32>, WireError> {
        self.get(name)
            .map(|v| {
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| WireError::InvalidParameterValue {
                        name: name.to_string(),
                        reason: format!("expected a non-negative integer, got {v:?}"),
                    })
            })
            .transpose()
    }

    /// The value of `name` parsed as `true` / `false` (any case).
    pub fn get_bool(&self, name: &str) -> Result<Option<bool>, WireError> {
        self.get(name)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(WireError::InvalidParameterValue {
                    name: name.to_string(),
                    reason: format!("expected true or false, got {v:?}"),
                }),
            })
            .transpose()
    }

    /// The member indices `N` present under `prefix` (as `prefix.N` or
    /// `prefix.N.Member`), in numeric order. Indices start at 1.
    pub fn indices(&self, prefix: &str) -> Result<Vec<u32>, WireError> {
        let dotted = format!("{prefix}.");
        let mut found = BTreeSet::new();
        for key in self.map.range(dotted.clone()..).map(|(k, _)| k) {
            let Some(rest) = key.strip_prefix(&dotted) else {
                break;
            };
            let index = rest.split('.').next().unwrap_or(rest);
            match index.parse::<u32>() {
                Ok(n) if n >= 1 && !index.starts_with('0') => {
                    found.insert(n);
                }
                _ => {
                    return Err(WireError::InvalidParameterValue {
                        name: key.clone(),
                        reason: format!("{index:?} is not a list index (1, 2, ...)"),
                    })
                }
            }
        }
        Ok(found.into_iter().collect())
    }

    /// The values of a flat list `prefix.1`, `prefix.2`, ... in index order.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, WireError> {
        self.indices(prefix)?
            .into_iter()
            .map(|n| self.require(&format!("{prefix}.{n}")).map(str::to_string))
            .collect()
    }

    /// Fails with `UnknownParameter` on the first name whose first segment
    /// (before any `.`) is not in `known`. A server must not silently ignore
    /// a parameter it does not understand (`DryRun`, say).
    pub fn reject_unknown(&self, known: &[&str]) -> Result<(), WireError> {
        for key in self.map.keys() {
            let head = key.split('.').next().unwrap_or(key);
            if !known.contains(&head) {
                return Err(WireError::UnknownParameter(key.clone()));
            }
        }
        Ok(())
    }

    /// `(name, value)` pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The form body: `name=value` pairs joined by `&`, AWS-percent-encoded.
    pub fn to_form(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.map {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(&aws_percent_encode(k));
            out.push('=');
            out.push_str(&aws_percent_encode(v));
        }
        out
    }

    /// Parses a form body. Accepts `+` for a space; rejects invalid UTF-8
    /// and a name given twice.
    pub fn from_form(body: &str) -> Result<Self, WireError> {
        let mut params = Params::new();
        for pair in body.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = form_decode(raw_name)?;
            let value = form_decode(raw_value)?;
            if params.map.contains_key(&name) {
                return Err(WireError::MalformedForm(format!(
                    "parameter {name} given twice"
                )));
            }
            params.map.insert(name, value);
        }
        Ok(params)
    }
}

fn form_decode(raw: &str) -> Result<String, WireError> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| WireError::MalformedForm("a parameter is not valid UTF-8".to_string()))
}

/// Values can hold user data and secrets' neighbours; Debug lists names only.
impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.map.keys()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut params = Params::new();
        for (k, v) in iter {
            params.insert(k, v);
        }
        params
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encodes_only_unreserved_characters_literally() {
        assert_eq!(aws_percent_encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(
            aws_percent_encode("a b+c/d:e=f&g*"),
            "a%20b%2Bc%2Fd%3Ae%3Df%26g%2A"
        );
        assert_eq!(aws_percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn form_roundtrips_awkward_values() {
        let params: Params = [
            ("Tag.1.Key", "endstate:project"),
            ("Tag.1.Value", "a b+c&d=e/é~"),
        ]
        .into_iter()
        .collect();
        let body = params.to_form();
        assert_eq!(
            body,
            "Tag.1.Key=endstate%3Aproject&Tag.1.Value=a%20b%2Bc%26d%3De%2F%C3%A9~"
        );
        assert_eq!(Params::from_form(&body).unwrap(), params);
    }

    #[test]
    fn decoding_accepts_plus_as_space_and_empty_values() {
        let params = Params::from_form("Name=a+b%2Bc&Empty=&Bare").unwrap();
        assert_eq!(params.get("Name"), Some("a b+c"));
        assert_eq!(params.get("Empty"), Some(""));
        assert_eq!(params.get("Bare"), Some(""));
    }

    #[test]
    fn decoding_rejects_duplicates_and_bad_utf8() {
        assert!(matches!(
            Params::from_form("A=1&A=2"),
            Err(WireError::MalformedForm(_))
        ));
        assert!(matches!(
            Params::from_form("A=%FF"),
            Err(WireError::MalformedForm(_))
        ));
    }

    #[test]
    fn indices_are_numeric_and_ignore_longer_prefixes() {
        let params: Params = [
            ("Tag.10.Key", "j"),
            ("Tag.2.Key", "b"),
            ("Tag.1.Key", "a"),
            ("TagSpecification.1.ResourceType", "instance"),
        ]
        .into_iter()
        .collect();
        assert_eq!(params.indices("Tag").unwrap(), vec![1, 2, 10]);
        let bad: Params = [("Tag.0.Key", "x")].into_iter().collect();
        assert!(bad.indices("Tag").is_err());
        let bad: Params = [("Tag.x.Key", "x")].into_iter().collect();
        assert!(bad.indices("Tag").is_err());
    }

    #[test]
    fn debug_hides_values() {
        let params: Params = [("UserData", "c2VjcmV0")].into_iter().collect();
        assert_eq!(format!("{params:?}"), "{\"UserData\"}");
    }
}
