//! `Ec2Client::new` with the standard AWS credential chain, in a process of
//! its own (it sets environment variables, so it has exactly one test), and
//! the headers a real request carries, captured by a one-shot loopback
//! server: the Content-Type, and a SigV4 Authorization with the profile's
//! key, the `…/us-east-1/ec2/aws4_request` scope and the signed headers.
//!
//! The metadata service is disabled and every credential source but a
//! temporary shared-credentials file is cleared, so nothing but 127.0.0.1 is
//! ever contacted.

// Tests fail by panicking; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

use endstate_provider::ec2::{Ec2Client, Ec2Config};
use endstate_provider::Provider;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ZONES_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeAvailabilityZonesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>req-1</requestId><availabilityZoneInfo><item><zoneName>us-east-1a</zoneName><zoneState>available</zoneState><regionName>us-east-1</regionName></item></availabilityZoneInfo></DescribeAvailabilityZonesResponse>"#;

/// Answers one HTTP request with `ZONES_XML` and returns the request's head
/// and body.
async fn capture_one(listener: tokio::net::TcpListener) -> (String, String) {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, body) = loop {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed early");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                break (head.to_string(), body.to_string());
            }
        }
    };
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        ZONES_XML.len(),
        ZONES_XML
    );
    socket.write_all(reply.as_bytes()).await.unwrap();
    (head, body)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn profile_credentials_sign_requests() {
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        "[endstate-test]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n",
    )
    .unwrap();
    let config_file = dir.path().join("config");
    std::fs::write(&config_file, "").unwrap();
    // This process has this one test, so changing its environment races
    // with nothing.
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &credentials);
    std::env::set_var("AWS_CONFIG_FILE", &config_file);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        std::env::remove_var(var);
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(capture_one(listener));

    let mut config = Ec2Config::new("us-east-1").with_endpoint(format!("http://127.0.0.1:{port}/"));
    config.profile = Some("endstate-test".to_string());
    let client = Ec2Client::new(config).await.unwrap();
    let zones = client.describe_availability_zones().await.unwrap();
    assert_eq!(zones, vec!["us-east-1a"]);

    let (head, body) = server.await.unwrap();
    assert!(head.starts_with("POST / HTTP/1.1"), "{head}");
    assert_eq!(
        header(&head, "content-type"),
        Some("application/x-www-form-urlencoded; charset=utf-8")
    );
    assert_eq!(body, "Action=DescribeAvailabilityZones&Version=2016-11-15");
    let authorization = header(&head, "authorization").unwrap();
    let date = header(&head, "x-amz-date").unwrap();
    let day = &date[..8];
    let prefix = format!(
        "AWS4-HMAC-SHA256 Credential=AKIDPROFILE/{day}/us-east-1/ec2/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date, Signature="
    );
    assert!(authorization.starts_with(&prefix), "{authorization}");
    let signature = &authorization[prefix.len()..];
    assert_eq!(signature.len(), 64);
    assert!(signature.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(!head.contains("profile-secret"));
}
