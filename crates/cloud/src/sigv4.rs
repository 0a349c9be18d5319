//! Verification of AWS Signature Version 4 on incoming requests: the
//! Authorization header is parsed, the canonical request rebuilt from what
//! was received (method, path, query, signed headers, a hash of the body
//! actually received), the signature recomputed with the configured secret
//! (`aws-sigv4`'s key derivation and HMAC) and compared in constant time,
//! and the request's date checked against the server's clock.
//!
//! Not here: presigned (query-string) signatures and chunked payloads,
//! which no EC2 client sends; session tokens are accepted but not checked.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use endstate_wire::form::aws_percent_encode;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// How far a request's date may be from the server's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The services a request may be signed for: the cloud serves EC2 and
/// ELBv2 on one endpoint, and each client signs with its own name.
pub const SERVICES: [&str; 2] = ["ec2", endstate_wire::elbv2::ELBV2_SIGNING_NAME];

/// Access key id → secret access key. Debug shows the key ids only.
#[derive(Clone, Default)]
pub struct Credentials {
    secrets: BTreeMap<String, String>,
}

impl Credentials {
    /// No credentials: every request is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key pair.
    pub fn with(mut self, access_key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.secrets.insert(access_key_id.into(), secret.into());
        self
    }

    fn secret(&self, access_key_id: &str) -> Option<&str> {
        self.secrets.get(access_key_id).map(String::as_str)
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_ids", &self.secrets.keys().collect::<Vec<_>>())
            .field("secrets", &"<redacted>")
            .finish()
    }
}

/// The received request, as far as the signature covers it.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn incomplete(message: &str) -> ApiError {
    ApiError::IncompleteSignature(message.to_string())
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, ApiError> {
    let rest = value.strip_prefix(ALGORITHM).ok_or_else(|| {
        incomplete("Unsupported authorization algorithm; expected AWS4-HMAC-SHA256")
    })?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(incomplete(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'",
        ));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = scope[..] else {
        return Err(incomplete(
            "Credential must be KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    if terminator != "aws4_request" {
        return Err(incomplete("Credential scope must end in aws4_request"));
    }
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed_headers.split(';').collect(),
        signature,
    })
}

/// `20261127T162200Z` as a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let parsed = time::PrimitiveDateTime::parse(text, format).ok()?;
    Some(parsed.assume_utc().into())
}

/// The canonical query string: every name and value decoded, re-encoded
/// the way SigV4 wants, sorted.
fn canonical_query(query: Option<&str>) -> String {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let decode = |s: &str| {
        let spaced = s.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                aws_percent_encode(&decode(name)),
                aws_percent_encode(&decode(value)),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header's values, trimmed, inner runs of spaces collapsed, joined by `,`.
fn canonical_header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    if values.is_empty() {
        None
    } else {
        Some(values.join(","))
    }
}

/// Compares two byte strings in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a request's signature against `credentials`, and its date
/// against `now`.
pub fn verify(
    credentials: &Credentials,
    request: &ReceivedRequest<'_>,
    now: SystemTime,
) -> Result<(), ApiError> {
    let Some(header) = request.headers.get("authorization") else {
        return Err(ApiError::AuthFailure(
            "AWS was not able to validate the provided access credentials".to_string(),
        ));
    };
    let header = header
        .to_str()
        .map_err(|_| incomplete("Authorization header is not ASCII"))?;
    let auth = parse_authorization(header)?;
    if !SERVICES.contains(&auth.service) {
        return Err(ApiError::IncompleteSignature(format!(
            "Credential should be scoped to a valid service: '{}' is not one of {}",
            auth.service,
            SERVICES.join(", ")
        )));
    }
    let Some(secret) = credentials.secret(auth.access_key_id) else {
        return Err(ApiError::AuthFailure(
            "AWS was not able to validate the provided access credentials".to_string(),
        ));
    };

    let amz_date = request
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| incomplete("Authorization requires the X-Amz-Date header"))?;
    let signed_at = parse_amz_date(amz_date)
        .ok_or_else(|| incomplete("X-Amz-Date is not of the form YYYYMMDDTHHMMSSZ"))?;
    let skew = match now.duration_since(signed_at) {
        Ok(behind) => behind,
        Err(ahead) => ahead.duration(),
    };
    if skew > MAX_CLOCK_SKEW {
        return Err(ApiError::RequestExpired);
    }
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(ApiError::SignatureDoesNotMatch);
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(incomplete("SignedHeaders must include host"));
    }

    let mut canonical = String::new();
    canonical.push_str(request.method);
    canonical.push('\n');
    canonical.push_str(if request.path.is_empty() {
        "/"
    } else {
        request.path
    });
    canonical.push('\n');
    canonical.push_str(&canonical_query(request.query));
    canonical.push('\n');
    for name in &auth.signed_headers {
        let value =
            canonical_header_value(request.headers, name).ok_or(ApiError::SignatureDoesNotMatch)?;
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&value);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&auth.signed_headers.join(";"));
    canonical.push('\n');
    // The hash of the body received, whatever x-amz-content-sha256 claims:
    // a tampered body must not verify.
    canonical.push_str(&hex::encode(Sha256::digest(request.body)));

    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key =
        aws_sigv4::sign::v4::generate_signing_key(secret, signed_at, auth.region, auth.service);
    let expected = aws_sigv4::sign::v4::calculate_signature(key, string_to_sign.as_bytes());
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::SignatureDoesNotMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_query_sorts_and_reencodes() {
        assert_eq!(
            canonical_query(Some("b=2&a=x+y&c=%2F&Action=Run")),
            "Action=Run&a=x%20y&b=2&c=%2F"
        );
        assert_eq!(canonical_query(None), "");
    }

    #[test]
    fn authorization_header_parses() {
        let auth = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AK/20261127/us-east-1/ec2/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc",
        )
        .unwrap();
        assert_eq!(auth.access_key_id, "AK");
        assert_eq!(auth.region, "us-east-1");
        assert_eq!(auth.signed_headers, vec!["host", "x-amz-date"]);
        assert!(parse_authorization("AWS4-HMAC-SHA256 Credential=AK/x").is_err());
        assert!(parse_authorization("Basic abc").is_err());
    }

    #[test]
    fn only_ec2_and_elbv2_scopes_are_accepted() {
        let credentials = Credentials::new().with("AK", "secret");
        let mut headers = HeaderMap::new();
        let verify_for = |service: &str, headers: &mut HeaderMap| {
            headers.insert(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential=AK/20261127/us-east-1/{service}/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc")
                    .parse()
                    .expect("header"),
            );
            let request = ReceivedRequest {
                method: "POST",
                path: "/",
                query: None,
                headers,
                body: b"",
            };
            verify(&credentials, &request, SystemTime::now())
        };
        let refused = verify_for("s3", &mut headers).expect_err("s3");
        assert_eq!(refused.code(), "IncompleteSignature", "{refused}");
        for service in SERVICES {
            // Past the scope check: refused later, for the missing date.
            let later = verify_for(service, &mut headers).expect_err("no date");
            assert!(
                later.to_string().contains("X-Amz-Date"),
                "{service}: {later}"
            );
        }
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let debug = format!("{:?}", Credentials::new().with("AKID", "s3cr3t"));
        assert!(debug.contains("AKID"));
        assert!(!debug.contains("s3cr3t"));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
