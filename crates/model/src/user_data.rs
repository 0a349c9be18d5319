//! User data at apply time: resolving secret references, gzip when the text
//! is over EC2's limit, and the size check shared with the loader. It does
//! not parse specs, and it never puts a secret's value in an error or a
//! `Debug` output.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

use crate::{SecretRef, UserData, UserDataPart};

/// EC2's limit on user data, in bytes, before base64 encoding.
pub const USER_DATA_LIMIT: usize = 16_384;

/// Why a secret or the user data that uses it could not be produced. No
/// variant carries a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `env:NAME` names a variable that is not set.
    #[error("secret env:{name}: environment variable {name} is not set")]
    EnvNotSet { name: String },
    /// `env:NAME` names a variable whose value is not UTF-8.
    #[error("secret env:{name}: environment variable {name} is not valid UTF-8")]
    EnvNotUnicode { name: String },
    /// `file:PATH` could not be read.
    #[error("secret file:{path}: cannot read it: {source}")]
    FileUnreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The rendered user data does not fit even after gzip.
    #[error("{}", oversize_message(*.bytes, *.gzip_bytes))]
    UserDataTooLarge { bytes: usize, gzip_bytes: usize },
    /// A role could not be rebuilt after its secrets were resolved (its
    /// shape does not change, so this is not expected).
    #[error("role {role}: cannot rebuild it with its secrets resolved")]
    RoleShape { role: String },
    /// gzip itself failed (it writes to memory, so this is not expected).
    #[error("cannot gzip user data: {0}")]
    Gzip(#[source] std::io::Error),
}

/// Reads a secret's value. A `file:` secret loses one trailing newline,
/// because files written by `echo` or editors end with one that is not part
/// of the secret.
pub fn resolve_secret(r: &SecretRef) -> Result<String, SecretError> {
    match r {
        SecretRef::Env(name) => match std::env::var(name) {
            Ok(value) => Ok(value),
            Err(std::env::VarError::NotPresent) => {
                Err(SecretError::EnvNotSet { name: name.clone() })
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(SecretError::EnvNotUnicode { name: name.clone() })
            }
        },
        SecretRef::File(path) => {
            let mut value =
                std::fs::read_to_string(path).map_err(|source| SecretError::FileUnreadable {
                    path: path.clone(),
                    source,
                })?;
            if value.ends_with('\n') {
                value.pop();
                if value.ends_with('\r') {
                    value.pop();
                }
            }
            Ok(value)
        }
    }
}

/// Checks, without reading its value, that a secret could be resolved now.
pub(crate) fn check_secret(r: &SecretRef) -> Result<(), String> {
    match r {
        SecretRef::Env(name) => match std::env::var_os(name) {
            Some(_) => Ok(()),
            None => Err(format!("environment variable {name} is not set")),
        },
        SecretRef::File(path) => match std::fs::File::open(path) {
            Ok(file) => match file.metadata() {
                Ok(meta) if meta.is_file() => Ok(()),
                Ok(_) => Err(format!("{path} is not a file")),
                Err(e) => Err(format!("cannot read {path}: {e}")),
            },
            Err(e) => Err(format!("cannot read {path}: {e}")),
        },
    }
}

impl UserData {
    /// Builds user data from parts, computing its template hash.
    pub fn from_parts(parts: Vec<UserDataPart>) -> Self {
        let template_hash = hex::encode(Sha256::digest(template_text(&parts).as_bytes()));
        Self {
            parts,
            template_hash,
        }
    }

    /// The text with each secret written as `${secret:REF}`: what the hash
    /// is over and what the loader measures.
    pub fn template(&self) -> String {
        template_text(&self.parts)
    }

    /// The secrets this user data needs at apply time.
    pub fn secrets(&self) -> impl Iterator<Item = &SecretRef> {
        self.parts.iter().filter_map(|part| match part {
            UserDataPart::Secret(r) | UserDataPart::IndentedSecret { secret: r, .. } => Some(r),
            UserDataPart::Text(_) => None,
        })
    }

    /// The bytes to send as EC2 user data: secrets resolved, then gzipped
    /// when the text is over [`USER_DATA_LIMIT`] and gzip makes it fit
    /// (cloud-init and the built-in cloud both detect gzip by its magic).
    pub fn render(&self) -> Result<Vec<u8>, SecretError> {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                UserDataPart::Text(t) => text.push_str(t),
                UserDataPart::Secret(r) => text.push_str(&resolve_secret(r)?),
                UserDataPart::IndentedSecret { secret, indent } => {
                    let value = resolve_secret(secret)?;
                    let line_break = format!("\n{}", " ".repeat(*indent));
                    text.push_str(&value.replace('\n', &line_break));
                }
            }
        }
        fit(text.into_bytes())
    }
}

fn template_text(parts: &[UserDataPart]) -> String {
    let mut text = String::new();
    for part in parts {
        match part {
            UserDataPart::Text(t) => text.push_str(t),
            // The indentation is not shown: it follows from the text around.
            UserDataPart::Secret(r) | UserDataPart::IndentedSecret { secret: r, .. } => {
                // A file secret is stored by absolute path; the template (and
                // so the launch hash) names only the file, so that the same
                // spec run from another checkout does not look changed.
                let shown = match r {
                    SecretRef::Env(_) => r.to_string(),
                    SecretRef::File(path) => {
                        let name = std::path::Path::new(path)
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_else(|| path.clone());
                        format!("file:{name}")
                    }
                };
                text.push_str("${secret:");
                text.push_str(&shown);
                text.push('}');
            }
        }
    }
    text
}

/// Returns `bytes` as they are when they fit, else their gzip when that
/// fits, else an error naming both sizes.
pub(crate) fn fit(bytes: Vec<u8>) -> Result<Vec<u8>, SecretError> {
    if bytes.len() <= USER_DATA_LIMIT {
        return Ok(bytes);
    }
    let compressed = gzip(&bytes).map_err(SecretError::Gzip)?;
    if compressed.len() <= USER_DATA_LIMIT {
        Ok(compressed)
    } else {
        Err(SecretError::UserDataTooLarge {
            bytes: bytes.len(),
            gzip_bytes: compressed.len(),
        })
    }
}

pub(crate) fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}

pub(crate) fn oversize_message(bytes: usize, gzip_bytes: usize) -> String {
    format!(
        "user data is {} bytes (gzip {}), over EC2's limit of {} bytes",
        thousands(bytes),
        thousands(gzip_bytes),
        thousands(USER_DATA_LIMIT)
    )
}

/// `20511` -> `20,511`.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(16_384), "16,384");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn secret_error_never_shows_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = resolve_secret(&SecretRef::File(missing.display().to_string())).unwrap_err();
        assert!(err.to_string().starts_with("secret file:"));
    }
}
