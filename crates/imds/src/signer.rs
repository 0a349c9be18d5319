//! The cloud's identity signature: an Ed25519 key pair ([`Signer`]) that
//! signs each instance's identity document, and [`verify`] /
//! [`open_envelope`], which `endstate serve` uses to check a document an
//! agent presents.
//!
//! This is **not** AWS's scheme. EC2 signs with RSA/DSA keys of its own and
//! serves a PKCS#7 `SignedData` under `instance-identity/pkcs7`; nothing
//! outside endstate can verify our signatures, and nothing here verifies
//! EC2's. What we serve:
//! - `instance-identity/signature`: the base64 of the 64-byte Ed25519
//!   signature of the document's exact bytes (a *detached* signature);
//! - `instance-identity/pkcs7`: despite its name, not PKCS#7 but an
//!   endstate *attached* envelope — base64 (standard alphabet, lines of 64
//!   characters, as EC2 wraps its pkcs7) of
//!   `"endstate-ed25519-v1\n" ‖ signature (64 bytes) ‖ document bytes`,
//!   so one blob carries both; [`open_envelope`] checks it and returns the
//!   document.
//!
//! Key storage is the caller's: this module generates and loads keys but
//! never writes them anywhere, never shows the secret half in `Debug`, and
//! zeroes it when a [`Signer`] is dropped (ed25519-dalek's `zeroize`).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// What a nonce signature signs before the instance id and the nonce, so
/// that it can never be mistaken for an identity document's signature.
const NONCE_MAGIC: &str = "endstate-nonce-v1\n";
/// A nonce is 16 to 128 characters of `[A-Za-z0-9_-]`.
const NONCE_MIN: usize = 16;
const NONCE_MAX: usize = 128;

/// Length of a public key, in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a secret key, in bytes.
pub const SECRET_KEY_LEN: usize = 32;

/// The first bytes of a [`seal`](Signer::seal)ed envelope.
const ENVELOPE_MAGIC: &[u8] = b"endstate-ed25519-v1\n";
/// EC2 wraps the base64 of its pkcs7 at 64 characters; so do we.
const ENVELOPE_LINE: usize = 64;

/// Why a key could not be made or a signature does not verify.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The operating system's random source failed while generating a key.
    #[error("no randomness for a new key: {0}")]
    Randomness(String),
    /// A public key that is not 32 bytes, or not a point on the curve.
    #[error("not an Ed25519 public key")]
    BadPublicKey,
    /// A signature or envelope that is not base64, or has the wrong shape.
    #[error("malformed signature: {0}")]
    Malformed(&'static str),
    /// Well-formed, but not made by this key over this document.
    #[error("signature does not match the document and key")]
    Mismatch,
}

/// The cloud's signing key.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
}

impl fmt::Debug for Signer {
    /// Shows the public half only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("public_key", &STANDARD.encode(self.public_key_bytes()))
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A new key pair from the operating system's random source.
    pub fn generate() -> Result<Self, SignatureError> {
        let mut secret = [0u8; SECRET_KEY_LEN];
        getrandom::fill(&mut secret).map_err(|e| SignatureError::Randomness(e.to_string()))?;
        Ok(Self::from_bytes(&secret))
    }

    /// The key pair whose secret half is `secret` (as [`Self::to_bytes`]
    /// returned it).
    pub fn from_bytes(secret: &[u8; SECRET_KEY_LEN]) -> Self {
        Self {
            key: SigningKey::from_bytes(secret),
        }
    }

    /// The secret half, for the caller to store (with the care a private key
    /// deserves).
    pub fn to_bytes(&self) -> [u8; SECRET_KEY_LEN] {
        self.key.to_bytes()
    }

    /// The public half, to give to whoever verifies (`endstate serve`).
    pub fn public_key_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.key.verifying_key().to_bytes()
    }

    /// The base64 of the signature of `document`: the body of
    /// `instance-identity/signature`.
    pub fn sign(&self, document: &[u8]) -> String {
        STANDARD.encode(self.key.sign(document).to_bytes())
    }

    /// The base64 signature binding `nonce` to `instance_id`: the body of
    /// endstate's `instance-identity/nonce/<nonce>` (not an EC2 path). An
    /// agent shows it with its identity document to prove it runs on the
    /// instance now, not merely that it once saw the document.
    pub fn sign_nonce(&self, instance_id: &str, nonce: &str) -> String {
        self.sign(nonce_message(instance_id, nonce).as_bytes())
    }

    /// The attached envelope of `document`: the body of
    /// `instance-identity/pkcs7` (see the module docs; not PKCS#7).
    pub fn seal(&self, document: &[u8]) -> String {
        let signature = self.key.sign(document).to_bytes();
        let mut envelope =
            Vec::with_capacity(ENVELOPE_MAGIC.len() + signature.len() + document.len());
        envelope.extend_from_slice(ENVELOPE_MAGIC);
        envelope.extend_from_slice(&signature);
        envelope.extend_from_slice(document);
        let encoded = STANDARD.encode(envelope);
        // Base64 is ASCII, so splitting its bytes yields valid UTF-8 lines.
        encoded
            .as_bytes()
            .chunks(ENVELOPE_LINE)
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn verifying_key(public_key: &[u8]) -> Result<VerifyingKey, SignatureError> {
    let bytes: &[u8; PUBLIC_KEY_LEN] = public_key
        .try_into()
        .map_err(|_| SignatureError::BadPublicKey)?;
    VerifyingKey::from_bytes(bytes).map_err(|_| SignatureError::BadPublicKey)
}

fn decode_base64(text: &str) -> Result<Vec<u8>, SignatureError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(compact)
        .map_err(|_| SignatureError::Malformed("not base64"))
}

/// Checks that `signature` — the text of `instance-identity/signature`
/// (base64; surrounding whitespace ignored) — is `public_key`'s signature
/// of exactly `document` (the bytes of `instance-identity/document`).
pub fn verify(document: &[u8], signature: &str, public_key: &[u8]) -> Result<(), SignatureError> {
    let key = verifying_key(public_key)?;
    let bytes = decode_base64(signature)?;
    let signature = Signature::from_slice(&bytes)
        .map_err(|_| SignatureError::Malformed("not a 64-byte signature"))?;
    key.verify_strict(document, &signature)
        .map_err(|_| SignatureError::Mismatch)
}

fn nonce_message(instance_id: &str, nonce: &str) -> String {
    format!("{NONCE_MAGIC}{instance_id}\n{nonce}")
}

/// Whether `nonce` may be signed: 16 to 128 characters of `[A-Za-z0-9_-]`
/// (so it is one path segment and cannot smuggle a newline).
pub fn is_valid_nonce(nonce: &str) -> bool {
    (NONCE_MIN..=NONCE_MAX).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks that `signature` is [`Signer::sign_nonce`]'s signature of
/// `nonce` for `instance_id` under `public_key`.
pub fn verify_nonce(
    instance_id: &str,
    nonce: &str,
    signature: &str,
    public_key: &[u8],
) -> Result<(), SignatureError> {
    if !is_valid_nonce(nonce) || instance_id.contains('\n') {
        return Err(SignatureError::Malformed("not a nonce"));
    }
    verify(
        nonce_message(instance_id, nonce).as_bytes(),
        signature,
        public_key,
    )
}

/// Checks an envelope — the text of `instance-identity/pkcs7` — against
/// `public_key` and returns the document it carries.
pub fn open_envelope(envelope: &str, public_key: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let key = verifying_key(public_key)?;
    let bytes = decode_base64(envelope)?;
    let rest = bytes
        .strip_prefix(ENVELOPE_MAGIC)
        .ok_or(SignatureError::Malformed("not an endstate envelope"))?;
    if rest.len() < Signature::BYTE_SIZE {
        return Err(SignatureError::Malformed("envelope too short"));
    }
    let (signature, document) = rest.split_at(Signature::BYTE_SIZE);
    let signature = Signature::from_slice(signature)
        .map_err(|_| SignatureError::Malformed("not a 64-byte signature"))?;
    key.verify_strict(document, &signature)
        .map_err(|_| SignatureError::Mismatch)?;
    Ok(document.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENT: &[u8] = b"{\n  \"instanceId\" : \"i-1\"\n}";

    #[test]
    fn a_signature_verifies_with_the_public_key() {
        let signer = Signer::generate().unwrap();
        let signature = signer.sign(DOCUMENT);
        verify(DOCUMENT, &signature, &signer.public_key_bytes()).unwrap();
        verify(
            DOCUMENT,
            &format!("{signature}\n"),
            &signer.public_key_bytes(),
        )
        .unwrap();
    }

    #[test]
    fn a_changed_document_or_another_key_does_not_verify() {
        let signer = Signer::generate().unwrap();
        let other = Signer::generate().unwrap();
        let signature = signer.sign(DOCUMENT);
        assert!(matches!(
            verify(b"{}", &signature, &signer.public_key_bytes()),
            Err(SignatureError::Mismatch)
        ));
        assert!(matches!(
            verify(DOCUMENT, &signature, &other.public_key_bytes()),
            Err(SignatureError::Mismatch)
        ));
        assert!(matches!(
            verify(DOCUMENT, "not base64!", &signer.public_key_bytes()),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(DOCUMENT, &signature, &[0u8; 5]),
            Err(SignatureError::BadPublicKey)
        ));
    }

    #[test]
    fn a_nonce_signature_binds_the_instance_and_the_nonce() {
        let signer = Signer::generate().unwrap();
        let key = signer.public_key_bytes();
        let nonce = "abcdefghijklmnop0123";
        let signature = signer.sign_nonce("i-1", nonce);
        verify_nonce("i-1", nonce, &signature, &key).unwrap();
        assert!(verify_nonce("i-2", nonce, &signature, &key).is_err());
        assert!(verify_nonce("i-1", "abcdefghijklmnop0124", &signature, &key).is_err());
        // A document signature is never a nonce signature.
        assert!(verify_nonce("i-1", nonce, &signer.sign(DOCUMENT), &key).is_err());
        assert!(!is_valid_nonce("short"));
        assert!(!is_valid_nonce("abcdefghijklmnop\n0123"));
    }

    #[test]
    fn keys_round_trip_through_bytes() {
        let signer = Signer::generate().unwrap();
        let again = Signer::from_bytes(&signer.to_bytes());
        assert_eq!(again.public_key_bytes(), signer.public_key_bytes());
        verify(DOCUMENT, &again.sign(DOCUMENT), &signer.public_key_bytes()).unwrap();
    }

    #[test]
    fn debug_shows_no_secret() {
        let signer = Signer::from_bytes(&[7u8; 32]);
        let shown = format!("{signer:?}");
        assert!(!shown.contains(&STANDARD.encode([7u8; 32])), "{shown}");
        assert!(shown.contains(&STANDARD.encode(signer.public_key_bytes())));
    }

    #[test]
    fn envelopes_carry_and_protect_the_document() {
        let signer = Signer::generate().unwrap();
        let document = vec![b'x'; 500];
        let envelope = signer.seal(&document);
        assert!(envelope.lines().all(|line| line.len() <= 64));
        assert_eq!(
            open_envelope(&envelope, &signer.public_key_bytes()).unwrap(),
            document
        );

        let mut bytes = decode_base64(&envelope).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            open_envelope(&STANDARD.encode(&bytes), &signer.public_key_bytes()),
            Err(SignatureError::Mismatch)
        ));
        assert!(matches!(
            open_envelope(&STANDARD.encode(b"short"), &signer.public_key_bytes()),
            Err(SignatureError::Malformed(_))
        ));
    }
}
