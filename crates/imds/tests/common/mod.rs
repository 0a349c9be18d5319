//! Test machinery for the metadata service's black-box tests: fixture
//! instances, sources keyed by peer address or uid, a running service on
//! loopback, and a raw HTTP/1.1 client that can choose its source address.
//! Nothing here talks to anything but 127.0.0.0/8.

#![allow(dead_code)] // Each test binary uses a different part.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use endstate_clock::{SharedClock, SystemClock};
use endstate_imds::{
    serve, Caller, InstanceMetadata, ListenerScope, MetadataSource, Running, Signer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// Instance A: IMDSv1 allowed, user data, tags.
pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Instance B: IMDSv1 allowed, other user data.
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Instance R: tokens required, no user data.
pub const R_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
/// Belongs to no instance.
pub const STRANGER_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

pub const A_USER_DATA: &[u8] = b"#!/bin/sh\necho instance-a secret=aaaa\n";
pub const B_USER_DATA: &[u8] = b"#!/bin/sh\necho instance-b secret=bbbb\n";

pub fn instance(id: &str, ip: Ipv4Addr) -> InstanceMetadata {
    InstanceMetadata {
        instance_id: id.to_owned(),
        ami_id: "ami-0abcdef1234567890".to_owned(),
        instance_type: "t3.micro".to_owned(),
        local_ipv4: ip,
        hostname: format!("ip-{}.ec2.internal", ip.to_string().replace('.', "-")),
        availability_zone: "eu-west-3b".to_owned(),
        region: "eu-west-3".to_owned(),
        account_id: "123456789012".to_owned(),
        architecture: "x86_64".to_owned(),
        pending_time: time::macros::datetime!(2026-11-27 16:00:00 UTC),
        tags: BTreeMap::new(),
        tags_in_metadata: true,
        user_data: None,
        tokens_required: false,
        hop_limit: 1,
    }
}

pub fn instance_a() -> InstanceMetadata {
    let mut a = instance("i-aaaaaaaaaaaaaaaaa", A_ADDR);
    a.user_data = Some(A_USER_DATA.to_vec());
    a.tags = [
        ("Name", "web-a"),
        ("team", "edge"),
        ("with space", "hidden"),
        ("a/b", "hidden"),
        (".", "hidden"),
        ("..", "hidden"),
        ("_index", "hidden"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    a
}

pub fn instance_b() -> InstanceMetadata {
    let mut b = instance("i-bbbbbbbbbbbbbbbbb", B_ADDR);
    b.user_data = Some(B_USER_DATA.to_vec());
    b
}

pub fn instance_r() -> InstanceMetadata {
    let mut r = instance("i-rrrrrrrrrrrrrrrrr", R_ADDR);
    r.tokens_required = true;
    r
}

/// Maps a caller to an instance by the caller's source IP: the stand-in for
/// the process backend's uid mapping, since most tests run as one uid.
/// Test-only: a source address is no identity in production — any process
/// may bind any 127.x.y.z, and a client that binds nothing gets the
/// destination's address as its source on loopback.
#[derive(Debug, Default)]
pub struct ByPeerAddress(pub Vec<(IpAddr, Arc<InstanceMetadata>)>);

impl ByPeerAddress {
    pub fn abr() -> Self {
        Self(vec![
            (A_ADDR.into(), Arc::new(instance_a())),
            (B_ADDR.into(), Arc::new(instance_b())),
            (R_ADDR.into(), Arc::new(instance_r())),
        ])
    }
}

impl MetadataSource for ByPeerAddress {
    fn lookup(&self, caller: &Caller) -> Option<Arc<InstanceMetadata>> {
        self.0
            .iter()
            .find(|(ip, _)| *ip == caller.peer.ip())
            .map(|(_, instance)| Arc::clone(instance))
    }
}

/// Maps a caller to an instance by the uid owning its socket, as the
/// process backend will.
#[derive(Debug)]
pub struct ByUid(pub Vec<(u32, Arc<InstanceMetadata>)>);

impl MetadataSource for ByUid {
    fn lookup(&self, caller: &Caller) -> Option<Arc<InstanceMetadata>> {
        let uid = caller.uid?;
        self.0
            .iter()
            .find(|(owner, _)| *owner == uid)
            .map(|(_, instance)| Arc::clone(instance))
    }
}

/// This process's filesystem uid — the uid its sockets are owned by — read
/// from `/proc/self/status` (no libc: `unsafe` is forbidden).
pub fn own_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .unwrap();
    // Uid: real effective saved filesystem
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

pub fn signer() -> Arc<Signer> {
    Arc::new(Signer::from_bytes(&[42u8; 32]))
}

pub async fn start(source: impl MetadataSource, scope: ListenerScope) -> Running {
    start_with(
        source,
        scope,
        signer(),
        SystemClock::shared(),
        Ipv4Addr::LOCALHOST,
    )
    .await
}

pub async fn start_with(
    source: impl MetadataSource,
    scope: ListenerScope,
    signer: Arc<Signer>,
    clock: SharedClock,
    ip: Ipv4Addr,
) -> Running {
    serve(
        SocketAddr::new(ip.into(), 0),
        scope,
        Arc::new(source),
        signer,
        clock,
    )
    .await
    .unwrap()
}

/// An HTTP reply, parsed.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// Sends one request from `from` (any port) to `server` and reads the reply
/// to the end (`Connection: close`). `headers` are `Name: value` lines.
pub async fn send(
    server: SocketAddr,
    from: Ipv4Addr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.into(), 0)).unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "PUT" || method == "POST" {
        request.push_str("Content-Length: 0\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    let body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked { dechunk(&body) } else { body };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
}

/// An IMDSv2 token for the instance calling from `from`.
pub async fn token(server: SocketAddr, from: Ipv4Addr) -> String {
    let reply = send(
        server,
        from,
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
    )
    .await;
    assert_eq!(reply.status, 200, "token for {from}");
    reply.text()
}
