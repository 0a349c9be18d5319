//! The Query-protocol transport our clients share: one signed POST of a
//! form body to an endpoint and its answer, the status and text. Here live
//! the HTTP client (one connection pool per client, no proxy for loopback,
//! no redirects), the credential cache, SigV4 signing for a named service
//! (`ec2`, `elasticloadbalancing`) and the count of requests per
//! operation. Used by [`crate::ec2::Ec2Client`] and
//! [`crate::elbv2::Elbv2Client`].
//!
//! Not here: request and response documents (`endstate-wire`), each
//! service's error document (the clients read their own), retries and
//! rate limits (none: one call is one request).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use crate::ec2::Ec2Config;
use crate::{Operation, ProviderError};

/// The content type of Query-protocol bodies.
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// Refresh credentials this long before they expire.
const CREDENTIAL_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The credentials provider of AWS's standard chain (optionally a named
/// profile). Nothing is contacted until credentials are first asked for.
pub(crate) async fn chain_credentials(
    config: &Ec2Config,
) -> Result<SharedCredentialsProvider, ProviderError> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(config.region.clone()));
    if let Some(profile) = &config.profile {
        loader = loader.profile_name(profile);
    }
    let sdk_config = loader.load().await;
    sdk_config.credentials_provider().ok_or_else(|| {
        ProviderError::Credentials("no credentials provider is configured".to_string())
    })
}

/// Fixed credentials (tests, moto, the built-in cloud).
pub(crate) fn static_credentials(
    access_key_id: impl Into<String>,
    secret_access_key: impl Into<String>,
    session_token: Option<String>,
) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new(
        access_key_id,
        secret_access_key,
        session_token,
        None,
        "endstate-static",
    ))
}

/// Credentials from a provider, kept until shortly before they expire. The
/// SDK's own identity cache lives in its orchestrator, which we do not use,
/// so the cache is ours.
#[derive(Debug)]
struct CredentialCache {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
}

impl CredentialCache {
    fn new(provider: SharedCredentialsProvider) -> Self {
        Self {
            provider,
            cached: Mutex::new(None),
        }
    }

    async fn get(&self) -> Result<Credentials, ProviderError> {
        if let Some(credentials) = lock(&self.cached).clone() {
            let fresh = credentials
                .expiry()
                .is_none_or(|expiry| expiry > SystemTime::now() + CREDENTIAL_REFRESH_MARGIN);
            if fresh {
                return Ok(credentials);
            }
        }
        // Not holding the lock across the await: concurrent callers may
        // each fetch once at expiry, which is harmless.
        let credentials = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| ProviderError::Credentials(error_chain(&e)))?;
        *lock(&self.cached) = Some(credentials.clone());
        Ok(credentials)
    }
}

/// Locks a mutex, ignoring poisoning: the data behind ours (a cache, a
/// counter map) stays valid even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Signed POSTs to one endpoint for one service. Debug shows no secret.
#[derive(Debug)]
pub(crate) struct QueryTransport {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    /// The SigV4 service name.
    service: &'static str,
    credentials: CredentialCache,
    counts: Mutex<BTreeMap<Operation, u64>>,
}

impl QueryTransport {
    /// A transport to `endpoint` (http or https, with a host), signing for
    /// `service` in `region`, each request bounded by `timeout`.
    pub(crate) fn new(
        endpoint: &str,
        region: &str,
        service: &'static str,
        timeout: Duration,
        provider: SharedCredentialsProvider,
    ) -> Result<Self, ProviderError> {
        let url = reqwest::Url::parse(endpoint)
            .map_err(|e| ProviderError::Config(format!("invalid endpoint {endpoint:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ProviderError::Config(format!(
                "invalid endpoint {endpoint:?}: not http or https"
            )));
        }
        let Some(host) = url.host_str() else {
            return Err(ProviderError::Config(format!(
                "invalid endpoint {endpoint:?}: no host"
            )));
        };
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // A redirected POST would carry a signature for another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("endstate/", env!("CARGO_PKG_VERSION")));
        if is_loopback(host) {
            // Loopback endpoints (moto, the built-in cloud) are never
            // reached through an HTTP proxy from the environment.
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| ProviderError::Config(format!("HTTP client: {}", error_chain(&e))))?;
        Ok(Self {
            http,
            endpoint: url.to_string(),
            region: region.to_string(),
            service,
            credentials: CredentialCache::new(provider),
            counts: Mutex::new(BTreeMap::new()),
        })
    }

    /// The endpoint URL.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The region requests are signed for.
    pub(crate) fn region(&self) -> &str {
        &self.region
    }

    /// Requests sent so far, per operation (failed ones included).
    pub(crate) fn request_counts(&self) -> BTreeMap<Operation, u64> {
        lock(&self.counts).clone()
    }

    /// POSTs `body`, signed, and returns the answer's status and text,
    /// whatever the status. Transport failures say whether the request may
    /// have taken effect. The body is never logged: it carries user data.
    pub(crate) async fn post(
        &self,
        operation: Operation,
        body: String,
    ) -> Result<(u16, String), ProviderError> {
        let credentials = self.credentials.get().await?;
        let signed = signing_headers(
            self.service,
            &self.endpoint,
            &body,
            &credentials,
            &self.region,
            SystemTime::now(),
        )?;
        *lock(&self.counts).entry(operation).or_insert(0) += 1;

        let mut http_request = self
            .http
            .post(&self.endpoint)
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE);
        for (name, value) in signed {
            http_request = http_request.header(name, value);
        }
        let response = http_request
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(operation, &e))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| ProviderError::Transport {
                operation,
                message: format!("reading the response: {}", error_chain(&e)),
                // The server answered, so it saw the request.
                outcome_unknown: true,
            })?;
        tracing::debug!(status, service = self.service, "query response");
        Ok((status, text))
    }
}

/// An HTTP error answer that is no error document of the service (an HTML
/// page from a proxy, moto's crash page): it keeps its status and gets a
/// code of the form `HttpNNN`.
pub(crate) fn undocumented_error(operation: Operation, status: u16, body: &str) -> ProviderError {
    ProviderError::Api {
        operation,
        status,
        code: format!("Http{status}"),
        message: body
            .chars()
            .take(200)
            .collect::<String>()
            .trim()
            .to_string(),
        request_id: None,
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The headers that sign a POST of `body` to `url`: `authorization`,
/// `x-amz-date` and, with a session token, `x-amz-security-token`. The
/// signature covers `content-type`, `host` and those.
fn signing_headers(
    service: &str,
    url: &str,
    body: &str,
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, ProviderError> {
    let signing_error = |e: &dyn std::error::Error| {
        ProviderError::Credentials(format!("signing: {}", error_chain(e)))
    };
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| signing_error(&e))?
        .into();
    let headers = [("content-type", CONTENT_TYPE)];
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.into_iter(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .map_err(|e| signing_error(&e))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| signing_error(&e))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect())
}

/// A connection-level failure. Refused or unresolvable connections never
/// carried the request; anything later may have.
fn transport_error(operation: Operation, error: &reqwest::Error) -> ProviderError {
    let outcome_unknown = !(error.is_connect() || error.is_builder());
    ProviderError::Transport {
        operation,
        message: error_chain(error),
        outcome_unknown,
    }
}

/// An error and its sources, `: `-joined (reqwest's and the SDK's own
/// messages hide the cause, such as "connection refused").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn example_credentials(session_token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token.map(str::to_string),
            None,
            "test",
        )
    }

    const BODY: &str = "Action=DescribeInstances&Filter.1.Name=tag%3Aendstate%3Aproject&Filter.1.Value.1=demo&MaxResults=1000&Version=2016-11-15";

    /// 2015-08-30T12:36:00Z, the time of AWS's SigV4 examples.
    fn example_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Expected values computed by botocore's `SigV4Auth` (a third-party
    /// implementation) for the same request, credentials and time.
    #[test]
    fn signature_matches_botocore() {
        let cases = [
            (
                "https://ec2.us-east-1.amazonaws.com/",
                None,
                "content-type;host;x-amz-date",
                "d7fb4de1af606daad5fdc334a85376f027a8816d0f366885c05b2764d6f579a6",
            ),
            (
                "http://127.0.0.1:5000/",
                None,
                "content-type;host;x-amz-date",
                "a79805e0136cb09b05b34b2880b9b319e937fc5aaf13846a6af301ceb779fecb",
            ),
            (
                "http://127.0.0.1:5000/",
                Some("SESSIONTOKEN/+="),
                "content-type;host;x-amz-date;x-amz-security-token",
                "df780b98c6630fa6141069337726614a6555969d105e22b1d56fac74dcc339e0",
            ),
        ];
        for (url, token, signed_headers, signature) in cases {
            let headers = signing_headers(
                "ec2",
                url,
                BODY,
                &example_credentials(token),
                "us-east-1",
                example_time(),
            )
            .unwrap();
            assert_eq!(
                header(&headers, "authorization").unwrap(),
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/ec2/aws4_request, \
                     SignedHeaders={signed_headers}, Signature={signature}"
                ),
                "{url} {token:?}"
            );
            assert_eq!(header(&headers, "x-amz-date"), Some("20150830T123600Z"));
            assert_eq!(header(&headers, "x-amz-security-token"), token);
        }
    }

    #[test]
    fn credential_scope_names_region_and_service() {
        let headers = signing_headers(
            "ec2",
            "http://127.0.0.1:1/",
            "Action=X",
            &example_credentials(None),
            "eu-west-3",
            SystemTime::now(),
        )
        .unwrap();
        let authorization = header(&headers, "authorization").unwrap();
        assert!(
            authorization.contains("/eu-west-3/ec2/aws4_request, "),
            "{authorization}"
        );
    }

    #[test]
    fn elbv2_requests_are_signed_for_their_own_service() {
        let headers = signing_headers(
            "elasticloadbalancing",
            "http://127.0.0.1:1/",
            "Action=DescribeLoadBalancers&Version=2015-12-01",
            &example_credentials(None),
            "us-east-1",
            SystemTime::now(),
        )
        .unwrap();
        let authorization = header(&headers, "authorization").unwrap();
        assert!(
            authorization.contains("/us-east-1/elasticloadbalancing/aws4_request, "),
            "{authorization}"
        );
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("127.3.4.5"));
        assert!(is_loopback("[::1]"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("ec2.us-east-1.amazonaws.com"));
    }

    /// Hands out credentials expiring `lifetime` from now, counting calls.
    #[derive(Debug)]
    struct CountingProvider {
        calls: std::sync::Arc<std::sync::atomic::AtomicU32>,
        lifetime: Duration,
    }

    impl ProvideCredentials for CountingProvider {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let expiry = SystemTime::now() + self.lifetime;
            aws_credential_types::provider::future::ProvideCredentials::ready(Ok(Credentials::new(
                "AKID",
                "secret",
                None,
                Some(expiry),
                "counting",
            )))
        }
    }

    #[tokio::test]
    async fn credentials_are_cached_until_near_expiry() {
        for (lifetime, expected_calls) in
            [(Duration::from_secs(3600), 1), (Duration::from_secs(60), 3)]
        {
            let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
            let provider = CountingProvider {
                calls: calls.clone(),
                lifetime,
            };
            let cache = CredentialCache::new(SharedCredentialsProvider::new(provider));
            for _ in 0..3 {
                cache.get().await.unwrap();
            }
            assert_eq!(
                calls.load(std::sync::atomic::Ordering::SeqCst),
                expected_calls
            );
        }
    }
}
