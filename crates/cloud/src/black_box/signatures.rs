//! SigV4 verification: requests signed with the right secret pass; a
//! tampered body, a wrong secret, an unknown key, a missing signature and a
//! stale date are refused with EC2's codes and statuses.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use crate::black_box::common;

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials as AwsCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use common::*;
use endstate_wire::ErrorResponse;

const BODY: &str = "Action=DescribeAvailabilityZones&Version=2016-11-15";
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// The headers that sign `method url` with `body`.
fn signed_headers(
    method: &str,
    url: &str,
    body: &str,
    key: &str,
    secret: &str,
    time: SystemTime,
) -> Vec<(String, String)> {
    let identity = AwsCredentials::new(key, secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("ec2")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [("content-type", CONTENT_TYPE)];
    let signable = SignableRequest::new(
        method,
        url,
        headers.into_iter(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    instructions
        .headers()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

async fn send(
    method: reqwest::Method,
    url: &str,
    body: &str,
    headers: &[(String, String)],
) -> (u16, String) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = http
        .request(method, url)
        .header("content-type", CONTENT_TYPE);
    for (n, v) in headers {
        request = request.header(n, v);
    }
    let response = request.body(body.to_string()).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn code(body: &str) -> String {
    ErrorResponse::from_xml(body)
        .unwrap()
        .first()
        .unwrap()
        .code
        .clone()
}

#[tokio::test]
async fn signatures_are_verified() {
    let clock = clock();
    let cloud = start(config(&clock)).await;
    let url = cloud.url();
    let now = SystemTime::now();

    let good = signed_headers("POST", &url, BODY, ACCESS_KEY, SECRET, now);
    let (status, body) = send(reqwest::Method::POST, &url, BODY, &good).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("us-east-1a"));

    // The same signature over another body.
    let tampered = "Action=DescribeAvailabilityZones&Version=2016-11-15&ZoneName.1=us-east-1b";
    let (status, body) = send(reqwest::Method::POST, &url, tampered, &good).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (403, "SignatureDoesNotMatch")
    );

    let wrong = signed_headers("POST", &url, BODY, ACCESS_KEY, "not-the-secret", now);
    let (status, body) = send(reqwest::Method::POST, &url, BODY, &wrong).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (403, "SignatureDoesNotMatch")
    );

    let unknown = signed_headers("POST", &url, BODY, "AKIDUNKNOWN", SECRET, now);
    let (status, body) = send(reqwest::Method::POST, &url, BODY, &unknown).await;
    assert_eq!((status, code(&body).as_str()), (401, "AuthFailure"));

    let (status, body) = send(reqwest::Method::POST, &url, BODY, &[]).await;
    assert_eq!((status, code(&body).as_str()), (401, "AuthFailure"));

    let stale = signed_headers(
        "POST",
        &url,
        BODY,
        ACCESS_KEY,
        SECRET,
        now - Duration::from_secs(16 * 60),
    );
    let (status, body) = send(reqwest::Method::POST, &url, BODY, &stale).await;
    assert_eq!((status, code(&body).as_str()), (400, "RequestExpired"));
    let slightly_off = signed_headers(
        "POST",
        &url,
        BODY,
        ACCESS_KEY,
        SECRET,
        now - Duration::from_secs(10 * 60),
    );
    let (status, _) = send(reqwest::Method::POST, &url, BODY, &slightly_off).await;
    assert_eq!(status, 200);

    // No secret in the error answers.
    assert!(!body.contains(SECRET));
}

#[tokio::test]
async fn get_with_a_signed_query_string_works() {
    let clock = clock();
    let cloud = start(config(&clock)).await;
    let url = format!(
        "{}?Action=DescribeImages&Version=2016-11-15&ImageId.1={IMAGE}",
        cloud.url()
    );
    let headers = signed_headers("GET", &url, "", ACCESS_KEY, SECRET, SystemTime::now());
    let (status, body) = send(reqwest::Method::GET, &url, "", &headers).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(IMAGE));

    // A parameter added after signing breaks the signature.
    let (status, body) = send(
        reqwest::Method::GET,
        &format!("{url}&Owner.1=self"),
        "",
        &headers,
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (403, "SignatureDoesNotMatch")
    );
}

#[tokio::test]
async fn protocol_errors_use_ec2_codes() {
    let clock = clock();
    let cloud = start(config(&clock)).await;
    let url = cloud.url();
    let now = SystemTime::now();
    for (body, expected) in [
        ("Action=FrobnicateInstances&Version=2016-11-15", "InvalidAction"),
        ("Action=RunInstances&Version=2016-11-15&MinCount=1&MaxCount=1", "MissingParameter"),
        (
            "Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-1&DryRun=true",
            "UnknownParameter",
        ),
        (
            "Action=DescribeInstances&Version=2016-11-15&MaxResults=3",
            "InvalidParameterValue",
        ),
        (
            "Action=DescribeInstances&Version=2016-11-15&MaxResults=5&InstanceId.1=i-0123456789abcdef0",
            "InvalidParameterCombination",
        ),
        (
            "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=flavour&Filter.1.Value.1=x",
            "InvalidParameterValue",
        ),
        (
            "Action=DescribeInstances&Version=2016-11-15&MaxResults=5&NextToken=bogus",
            "InvalidParameterValue",
        ),
    ] {
        let headers = signed_headers("POST", &url, body, ACCESS_KEY, SECRET, now);
        let (status, answer) = send(reqwest::Method::POST, &url, body, &headers).await;
        assert_eq!((status, code(&answer)), (400, expected.to_string()), "{body}");
    }
}
