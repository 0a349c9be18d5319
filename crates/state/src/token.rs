//! API tokens: the bearer tokens of the controller's HTTP API, and how they
//! are made and hashed.
//!
//! A token's plaintext is `es_` followed by 64 hex digits (32 bytes from the
//! operating system's random source). It is shown to the user once, when
//! made; the store keeps only its SHA-256, so a copy of the state file
//! cannot be used to call the API. With 256 random bits an unsalted fast
//! hash suffices: there is nothing to guess.
//!
//! These are plain values and pure functions; the SQL lives in
//! [`crate::sqlite`]. This module does not decide who may do what with a
//! token: every unrevoked token grants the whole API.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::StateError;

/// What every token's plaintext starts with, so a leaked one is recognisable
/// (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "es_";

/// How often, at most, a token's `last_used_ms` is written: verifying a
/// token on every request must not make every request a write.
pub(crate) const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// A token as listed: never its plaintext, nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its id, for `endstate token revoke`.
    pub id: i64,
    /// The name it was given (who or what uses it).
    pub name: String,
    /// When it was made, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// When it last verified, to the minute; `None` if never.
    pub last_used_ms: Option<i64>,
    /// Whether it was revoked; a revoked token never verifies again.
    pub revoked: bool,
}

/// A fresh plaintext token.
///
/// Errors: [`StateError::Random`] when the OS has no randomness to give.
pub(crate) fn new_plaintext() -> Result<String, StateError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(StateError::Random)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

/// What the store keeps of a plaintext token: its SHA-256, in hex.
pub(crate) fn hash(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintexts_have_the_prefix_and_256_random_bits() {
        let a = new_plaintext().expect("random");
        let b = new_plaintext().expect("random");
        assert_ne!(a, b);
        let digits = a.strip_prefix(TOKEN_PREFIX).expect("prefix");
        assert_eq!(digits.len(), 64);
        assert!(digits.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_hash_is_sha256_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
