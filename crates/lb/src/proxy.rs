//! One client request through the balancer: choose a group by weight and a
//! target in it, forward with the pooled upstream client, retry a GET or
//! HEAD once on another target of the same group when the first attempt
//! failed before any response byte, and stamp the response with
//! `x-endstate-target` and `x-endstate-generation`.
//!
//! Bodies are buffered whole in both directions (so a retry can resend the
//! request); this is not a streaming proxy, and it does not do WebSocket
//! upgrades, HTTP/2 or TLS. Errors of its own are 502 (the target failed) and
//! 503 (no target), with a short text body and `x-endstate-target: none`.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use rand::Rng;

use crate::group::{Group, Picked};
use crate::Shared;

pub(crate) const TARGET_HEADER: &str = "x-endstate-target";
pub(crate) const GENERATION_HEADER: &str = "x-endstate-generation";

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // The forward action is read once, when the request starts: see
    // `LoadBalancer::set_forward`.
    let forward = Arc::clone(&*crate::read(&shared.forward));
    let Some(group) = choose_group(&shared, &forward) else {
        return Ok(own_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no target group to forward to",
        ));
    };
    group.counters.request();
    let response = forward_in(&shared, &group, request).await;
    let status = response.status().as_u16();
    group.counters.response(status);
    group.window.record(shared.clock.now(), status);
    Ok(response)
}

fn choose_group(shared: &Shared, forward: &[(crate::TargetGroupId, u32)]) -> Option<Arc<Group>> {
    let total: u64 = forward.iter().map(|&(_, w)| u64::from(w)).sum();
    if total == 0 {
        return None;
    }
    let mut ticket = rand::rng().random_range(0..total);
    let id = forward.iter().find_map(|&(id, w)| {
        if ticket < u64::from(w) {
            Some(id)
        } else {
            ticket -= u64::from(w);
            None
        }
    })?;
    crate::read(&shared.groups).get(&id).cloned()
}

async fn forward_in(
    shared: &Shared,
    group: &Group,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return own_error(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            )
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    let retriable = parts.method == Method::GET || parts.method == Method::HEAD;

    let Some(first) = group.pick(None) else {
        return own_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no target in the target group",
        );
    };
    let mut attempt = first;
    let mut retried = false;
    loop {
        let url = format!(
            "http://{}{path}",
            std::net::SocketAddr::new(attempt.target.address, attempt.target.port)
        );
        let sent = shared
            .http
            .request(parts.method.clone(), url)
            .headers(headers.clone())
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(upstream) => return relay(group, &attempt, upstream).await,
            Err(_) => {
                // No response byte came back: the request may be retried.
                attempt.counters.upstream_error();
                group.counters.upstream_error();
                group.connection_failed(&attempt.target.id);
                if !retriable || retried {
                    return own_error(
                        StatusCode::BAD_GATEWAY,
                        "the target failed before answering",
                    );
                }
                retried = true;
                let failed = attempt.target.id.clone();
                match group.pick(Some(&failed)) {
                    Some(next) => attempt = next,
                    None => {
                        return own_error(
                            StatusCode::BAD_GATEWAY,
                            "the target failed before answering",
                        )
                    }
                }
            }
        }
    }
}

async fn relay(
    group: &Group,
    attempt: &Picked,
    upstream: reqwest::Response,
) -> Response<Full<Bytes>> {
    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    // Response bytes have arrived: whatever happens now is never retried.
    let body = match upstream.bytes().await {
        Ok(body) => body,
        Err(_) => {
            attempt.counters.upstream_error();
            group.counters.upstream_error();
            return own_error(StatusCode::BAD_GATEWAY, "the target's response broke off");
        }
    };
    attempt.counters.response(status.as_u16());
    strip_hop_by_hop(&mut headers);
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    stamp(
        response.headers_mut(),
        &attempt.target.id,
        &attempt.target.generation,
    );
    response
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn stamp(headers: &mut HeaderMap, target: &str, generation: &str) {
    for (name, value) in [(TARGET_HEADER, target), (GENERATION_HEADER, generation)] {
        let value =
            HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// A response the balancer makes itself.
pub(crate) fn own_error(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        HeaderName::from_static(TARGET_HEADER),
        HeaderValue::from_static("none"),
    );
    response
}
