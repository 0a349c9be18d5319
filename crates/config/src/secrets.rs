//! The secret values of a run: the caller names them (the values its
//! `${secret.*}` references resolved to, passwords given as variables) and
//! every string that leaves the engine — report fields, errors, command
//! output — passes through [`Secrets::redact`]. It does not find secrets by
//! itself: a value nobody marked is not redacted.

use std::collections::BTreeSet;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "<redacted>";

/// A set of secret values to keep out of reports and errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: BTreeSet<String>,
}

impl Secrets {
    /// No secrets.
    pub fn new() -> Secrets {
        Secrets::default()
    }

    /// Marks `value` secret. Empty values are ignored: they would match
    /// everywhere.
    pub fn insert(&mut self, value: impl Into<String>) {
        let value = value.into();
        if !value.is_empty() {
            self.values.insert(value);
        }
    }

    /// Whether no value is marked.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every occurrence of every secret replaced by
    /// [`REDACTED`]; longer secrets first, so a secret containing another
    /// is replaced whole.
    pub fn redact(&self, text: &str) -> String {
        let mut ordered: Vec<&String> = self.values.iter().collect();
        ordered.sort_by_key(|value| std::cmp::Reverse(value.len()));
        let mut out = text.to_string();
        for value in ordered {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), REDACTED);
            }
        }
        out
    }
}

impl<S: Into<String>> FromIterator<S> for Secrets {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Secrets {
        let mut secrets = Secrets::new();
        for value in iter {
            secrets.insert(value);
        }
        secrets
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use super::*;

    #[test]
    fn redacts_every_occurrence_longest_first() {
        let secrets: Secrets = ["hunter2", "hunter2-extra", ""].into_iter().collect();
        assert_eq!(
            secrets.redact("a hunter2-extra b hunter2"),
            "a <redacted> b <redacted>"
        );
        assert_eq!(secrets.redact("nothing here"), "nothing here");
    }
}
