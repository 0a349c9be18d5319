//! IMDSv2 session tokens: issued for one instance with a TTL, checked on
//! each request.
//!
//! Tokens are stateless: a token is its expiry and a keyed SHA-256 tag over
//! (instance, expiry), so checking one needs no table and issuing millions
//! costs no memory. Binding to the instance is the tag's: a token issued to
//! A fails the check for B. Tokens cannot be revoked before they expire
//! (EC2's cannot either).
//!
//! This module does not read HTTP headers; the service does.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::Signer;

/// The longest TTL EC2 allows, in seconds (six hours).
pub const MAX_TTL_SECONDS: u64 = 21_600;

/// Issues and checks tokens with one key.
#[derive(Clone)]
pub(crate) struct TokenIssuer {
    key: [u8; 32],
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").finish_non_exhaustive()
    }
}

/// Expiry (8 bytes) then tag (32 bytes).
const TOKEN_LEN: usize = 40;

impl TokenIssuer {
    /// An issuer whose key is derived from the signer's secret (a hash with
    /// its own label, so the two uses never share a key): tokens survive a
    /// restart of the service with the same signer, as long as they live.
    pub(crate) fn new(signer: &Signer) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"endstate-imds token key v1\0");
        hasher.update(signer.to_bytes());
        Self {
            key: hasher.finalize().into(),
        }
    }

    /// A token for `instance_id` valid until `now + ttl`.
    pub(crate) fn issue(&self, instance_id: &str, now: Duration, ttl: Duration) -> String {
        let expiry = millis(now.saturating_add(ttl));
        let mut token = [0u8; TOKEN_LEN];
        token[..8].copy_from_slice(&expiry.to_be_bytes());
        token[8..].copy_from_slice(&self.tag(instance_id, expiry));
        URL_SAFE_NO_PAD.encode(token)
    }

    /// Whether `token` was issued for `instance_id` and is still valid at
    /// `now`.
    pub(crate) fn check(&self, token: &str, instance_id: &str, now: Duration) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(token.trim()) else {
            return false;
        };
        let Ok(bytes) = <[u8; TOKEN_LEN]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&bytes[..8]);
        let expiry = u64::from_be_bytes(expiry);
        let tag_matches = constant_time_eq(&bytes[8..], &self.tag(instance_id, expiry));
        tag_matches && millis(now) < expiry
    }

    /// SHA-256(key ‖ SHA-256(instance id) ‖ expiry): the hashed message is
    /// always 72 bytes, so SHA-256's length extension (which only yields
    /// longer messages) cannot forge a tag.
    fn tag(&self, instance_id: &str, expiry: u64) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(Sha256::digest(instance_id.as_bytes()));
        hasher.update(expiry.to_be_bytes());
        hasher.finalize().into()
    }
}

fn millis(at: Duration) -> u64 {
    u64::try_from(at.as_millis()).unwrap_or(u64::MAX)
}

/// Compares without stopping at the first difference, so timing does not
/// reveal how much of a guessed tag is right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(&Signer::from_bytes(&[1u8; 32]))
    }

    const NOW: Duration = Duration::from_secs(1_800_000_000);

    #[test]
    fn a_token_is_valid_until_it_expires() {
        let token = issuer().issue("i-a", NOW, Duration::from_secs(60));
        assert!(issuer().check(&token, "i-a", NOW));
        assert!(issuer().check(&token, "i-a", NOW + Duration::from_millis(59_999)));
        assert!(!issuer().check(&token, "i-a", NOW + Duration::from_secs(60)));
    }

    #[test]
    fn a_token_is_bound_to_its_instance() {
        let token = issuer().issue("i-a", NOW, Duration::from_secs(60));
        assert!(!issuer().check(&token, "i-b", NOW));
    }

    #[test]
    fn a_token_from_another_key_or_tampered_is_refused() {
        let other = TokenIssuer::new(&Signer::from_bytes(&[2u8; 32]));
        let token = other.issue("i-a", NOW, Duration::from_secs(60));
        assert!(!issuer().check(&token, "i-a", NOW));

        // Moving the expiry forward breaks the tag.
        let token = issuer().issue("i-a", NOW, Duration::from_secs(60));
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[0] = 0xff;
        assert!(!issuer().check(&URL_SAFE_NO_PAD.encode(&bytes), "i-a", NOW));
        assert!(!issuer().check("", "i-a", NOW));
        assert!(!issuer().check("garbage", "i-a", NOW));
    }
}
