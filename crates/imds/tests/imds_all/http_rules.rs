//! The metadata service's HTTP rules, one row per rule, over real loopback
//! connections: tokens and TTLs, IMDSv1 and v2, listings, leaves, 404s,
//! refusals, `text/plain`, and the signed identity document.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use crate::common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use endstate_clock::{ManualClock, SharedClock};
use endstate_imds::{open_envelope, verify, ListenerScope};

/// The token a row sends.
#[derive(Debug, Clone, Copy)]
enum Token {
    Absent,
    /// Issued to the calling instance.
    Own,
    /// Issued to instance B.
    Bs,
    /// Not a token at all.
    Garbage,
}

struct Row {
    name: &'static str,
    from: Ipv4Addr,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    token: Token,
    status: u16,
    /// The exact body expected, when the row checks it.
    body: Option<&'static str>,
}

const TTL: &str = "X-aws-ec2-metadata-token-ttl-seconds";

fn rows() -> Vec<Row> {
    let row = |name, from, method, path, token, status, body| Row {
        name,
        from,
        method,
        path,
        headers: &[],
        token,
        status,
        body,
    };
    let put = |name, from, headers, status| Row {
        name,
        from,
        method: "PUT",
        path: "/latest/api/token",
        headers,
        token: Token::Absent,
        status,
        body: None,
    };
    use Token::*;
    vec![
        // The token endpoint.
        put("token, max TTL", A_ADDR, &[(TTL, "21600")], 200),
        put("token, min TTL", A_ADDR, &[(TTL, "1")], 200),
        put("token, TTL 0", A_ADDR, &[(TTL, "0")], 400),
        put("token, TTL too long", A_ADDR, &[(TTL, "21601")], 400),
        put("token, TTL not a number", A_ADDR, &[(TTL, "soon")], 400),
        put("token, no TTL", A_ADDR, &[], 400),
        put(
            "token through a proxy",
            A_ADDR,
            &[(TTL, "60"), ("X-Forwarded-For", "10.0.0.1")],
            403,
        ),
        put("token for a stranger", STRANGER_ADDR, &[(TTL, "60")], 403),
        row("token by GET", A_ADDR, "GET", "/latest/api/token", Absent, 405, None),
        // IMDSv1 and v2.
        row("v1", A_ADDR, "GET", "/latest/meta-data/instance-id", Absent, 200, Some("i-aaaaaaaaaaaaaaaaa")),
        row("v2", A_ADDR, "GET", "/latest/meta-data/instance-id", Own, 200, Some("i-aaaaaaaaaaaaaaaaa")),
        row("garbage token", A_ADDR, "GET", "/latest/meta-data/instance-id", Garbage, 401, None),
        row("another instance's token", A_ADDR, "GET", "/latest/meta-data/instance-id", Bs, 401, None),
        row("v1 where tokens are required", R_ADDR, "GET", "/latest/meta-data/instance-id", Absent, 401, None),
        row("v2 where tokens are required", R_ADDR, "GET", "/latest/meta-data/instance-id", Own, 200, Some("i-rrrrrrrrrrrrrrrrr")),
        row("a bad token where tokens are required", R_ADDR, "GET", "/latest/user-data", Garbage, 401, None),
        // Identity.
        row("a stranger, v1", STRANGER_ADDR, "GET", "/latest/meta-data/instance-id", Absent, 403, None),
        row("a stranger, B's token", STRANGER_ADDR, "GET", "/latest/user-data", Bs, 403, None),
        // The tree.
        row("root", A_ADDR, "GET", "/", Absent, 200, Some("latest/")),
        row("latest", A_ADDR, "GET", "/latest/", Absent, 200, Some("dynamic/\nmeta-data/\nuser-data")),
        row(
            "meta-data listing",
            A_ADDR, "GET", "/latest/meta-data/", Own, 200,
            Some("ami-id\nhostname\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nplacement/\ntags/"),
        ),
        row("meta-data without the slash", A_ADDR, "GET", "/latest/meta-data", Absent, 200, None),
        row("ami-id", A_ADDR, "GET", "/latest/meta-data/ami-id", Own, 200, Some("ami-0abcdef1234567890")),
        row("instance-type", A_ADDR, "GET", "/latest/meta-data/instance-type", Own, 200, Some("t3.micro")),
        row("local-ipv4", A_ADDR, "GET", "/latest/meta-data/local-ipv4", Own, 200, Some("127.0.0.2")),
        row("hostname", A_ADDR, "GET", "/latest/meta-data/hostname", Own, 200, Some("ip-127-0-0-2.ec2.internal")),
        row("local-hostname", A_ADDR, "GET", "/latest/meta-data/local-hostname", Own, 200, Some("ip-127-0-0-2.ec2.internal")),
        row("placement", A_ADDR, "GET", "/latest/meta-data/placement/", Own, 200, Some("availability-zone\nregion")),
        row("zone", A_ADDR, "GET", "/latest/meta-data/placement/availability-zone", Own, 200, Some("eu-west-3b")),
        row("zone, botocore's slash", A_ADDR, "GET", "/latest/meta-data/placement/availability-zone/", Own, 200, Some("eu-west-3b")),
        row("region", A_ADDR, "GET", "/latest/meta-data/placement/region", Own, 200, Some("eu-west-3")),
        row("tags", A_ADDR, "GET", "/latest/meta-data/tags/", Own, 200, Some("instance/")),
        row("tag keys, EC2's exclusions left out", A_ADDR, "GET", "/latest/meta-data/tags/instance/", Own, 200, Some("Name\nteam")),
        row("a tag", A_ADDR, "GET", "/latest/meta-data/tags/instance/Name", Own, 200, Some("web-a")),
        row("an excluded tag", A_ADDR, "GET", "/latest/meta-data/tags/instance/_index", Own, 404, None),
        row("a tag with a space", A_ADDR, "GET", "/latest/meta-data/tags/instance/with%20space", Own, 404, None),
        row("a missing tag", A_ADDR, "GET", "/latest/meta-data/tags/instance/nope", Own, 404, None),
        row("user data", A_ADDR, "GET", "/latest/user-data", Own, 200, Some("#!/bin/sh\necho instance-a secret=aaaa\n")),
        row("no user data", R_ADDR, "GET", "/latest/user-data", Own, 404, None),
        row("no user data, no listing", R_ADDR, "GET", "/latest/", Own, 200, Some("dynamic/\nmeta-data/")),
        row("missing key", A_ADDR, "GET", "/latest/meta-data/iam/info", Own, 404, None),
        row("unknown version", A_ADDR, "GET", "/2016-09-02/meta-data/", Own, 404, None),
        row("dynamic", A_ADDR, "GET", "/latest/dynamic/", Own, 200, Some("instance-identity/")),
        row("identity", A_ADDR, "GET", "/latest/dynamic/instance-identity/", Own, 200, Some("document\npkcs7\nsignature")),
        row("POST", A_ADDR, "POST", "/latest/meta-data/", Absent, 405, None),
    ]
}

#[tokio::test]
async fn every_rule() {
    let server = start(ByPeerAddress::abr(), ListenerScope::AnyInstance).await;
    let addr = server.local_addr();
    let b_token = token(addr, B_ADDR).await;
    let mut failures = Vec::new();
    for row in rows() {
        let token = match row.token {
            Token::Absent => None,
            Token::Own => Some(token(addr, row.from).await),
            Token::Bs => Some(b_token.clone()),
            Token::Garbage => Some("AAAAnot-a-token".to_owned()),
        };
        let mut headers: Vec<(&str, &str)> = row.headers.to_vec();
        if let Some(token) = &token {
            headers.push(("X-aws-ec2-metadata-token", token));
        }
        let reply = send(addr, row.from, row.method, row.path, &headers).await;
        if reply.status != row.status {
            failures.push(format!(
                "{}: status {} (expected {})",
                row.name, reply.status, row.status
            ));
            continue;
        }
        if reply.header("content-type") != Some("text/plain") {
            failures.push(format!(
                "{}: content-type {:?}",
                row.name,
                reply.header("content-type")
            ));
        }
        if let Some(body) = row.body {
            if reply.body != body.as_bytes() {
                failures.push(format!("{}: body {:?}", row.name, reply.text()));
            }
        }
        if row.method == "PUT" && reply.status == 200 {
            let ttl = row.headers.iter().find(|(n, _)| *n == TTL).map(|(_, v)| *v);
            if reply.header(TTL) != ttl {
                failures.push(format!("{}: TTL header {:?}", row.name, reply.header(TTL)));
            }
            if reply.body.is_empty() {
                failures.push(format!("{}: empty token", row.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn tokens_expire() {
    let clock = ManualClock::new(Duration::from_secs(1_800_000_000));
    let shared: SharedClock = Arc::new(clock.clone());
    let server = start_with(
        ByPeerAddress::abr(),
        ListenerScope::AnyInstance,
        signer(),
        shared,
        Ipv4Addr::LOCALHOST,
    )
    .await;
    let addr = server.local_addr();
    let reply = send(addr, A_ADDR, "PUT", "/latest/api/token", &[(TTL, "5")]).await;
    let token = reply.text();
    let headers = [("X-aws-ec2-metadata-token", token.as_str())];
    let path = "/latest/meta-data/instance-id";
    assert_eq!(send(addr, A_ADDR, "GET", path, &headers).await.status, 200);
    clock.advance(Duration::from_millis(4_999));
    assert_eq!(send(addr, A_ADDR, "GET", path, &headers).await.status, 200);
    clock.advance(Duration::from_millis(1));
    assert_eq!(send(addr, A_ADDR, "GET", path, &headers).await.status, 401);
}

#[tokio::test]
async fn the_identity_document_is_signed() {
    let signer = signer();
    let server = start(ByPeerAddress::abr(), ListenerScope::AnyInstance).await;
    let addr = server.local_addr();
    let get = |path: &'static str| send(addr, A_ADDR, "GET", path, &[]);

    let document = get("/latest/dynamic/instance-identity/document").await;
    assert_eq!(document.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&document.body).unwrap();
    assert_eq!(json["instanceId"], "i-aaaaaaaaaaaaaaaaa");
    assert_eq!(json["accountId"], "123456789012");
    assert_eq!(json["availabilityZone"], "eu-west-3b");
    assert_eq!(json["region"], "eu-west-3");
    assert_eq!(json["privateIp"], "127.0.0.2");
    assert_eq!(json["pendingTime"], "2026-11-27T16:00:00Z");
    assert_eq!(json["architecture"], "x86_64");
    assert_eq!(json["imageId"], "ami-0abcdef1234567890");
    assert_eq!(json["instanceType"], "t3.micro");
    assert_eq!(json["version"], "2017-09-30");
    for null in [
        "billingProducts",
        "devpayProductCodes",
        "marketplaceProductCodes",
        "kernelId",
        "ramdiskId",
    ] {
        assert!(json[null].is_null(), "{null}");
    }

    let signature = get("/latest/dynamic/instance-identity/signature").await;
    assert_eq!(signature.status, 200);
    verify(
        &document.body,
        &signature.text(),
        &signer.public_key_bytes(),
    )
    .unwrap();
    let b_document = send(
        addr,
        B_ADDR,
        "GET",
        "/latest/dynamic/instance-identity/document",
        &[],
    )
    .await;
    assert!(verify(
        &b_document.body,
        &signature.text(),
        &signer.public_key_bytes()
    )
    .is_err());

    let pkcs7 = get("/latest/dynamic/instance-identity/pkcs7").await;
    assert_eq!(pkcs7.status, 200);
    let carried = open_envelope(&pkcs7.text(), &signer.public_key_bytes()).unwrap();
    assert_eq!(carried, document.body);
}

#[tokio::test]
async fn serve_refuses_non_loopback_addresses() {
    let err = endstate_imds::serve(
        "0.0.0.0:0".parse().unwrap(),
        ListenerScope::AnyInstance,
        Arc::new(ByPeerAddress::abr()),
        signer(),
        endstate_clock::SystemClock::shared(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, endstate_imds::ImdsError::NotLoopback(_)),
        "{err}"
    );
}
