//! The `Router` alone, without a socket (axum's `oneshot`): the caller is
//! whatever the connection info says, and a request without one is refused.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use common::*;
use endstate_clock::SystemClock;
use endstate_imds::{app, Caller};
use tower::ServiceExt as _;

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_request_without_a_caller_is_refused() {
    let router = app(
        Arc::new(ByPeerAddress::abr()),
        signer(),
        SystemClock::shared(),
    );
    let response = router
        .oneshot(get("/latest/meta-data/instance-id"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_caller_comes_from_the_connection_info() {
    let caller = Caller {
        local: "127.0.0.1:80".parse::<SocketAddr>().unwrap(),
        peer: SocketAddr::new(B_ADDR.into(), 40_000),
        uid: None,
    };
    let router = app(
        Arc::new(ByPeerAddress::abr()),
        signer(),
        SystemClock::shared(),
    )
    .layer(MockConnectInfo(caller));
    let response = router
        .oneshot(get("/latest/meta-data/instance-id"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(&body[..], b"i-bbbbbbbbbbbbbbbbb");
}
