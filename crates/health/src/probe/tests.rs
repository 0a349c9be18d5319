//! Probes against real servers on loopback, started by each test.

use super::*;
use crate::config::ExpectedStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn http_check(port: u16, timeout_seconds: u64) -> HealthCheck {
    let mut check = HealthCheck::new(ProbeTarget::Http {
        port,
        path: "/health".into(),
        expected: ExpectedStatus::default(),
    });
    check.timeout_seconds = timeout_seconds;
    check
}

/// Answers each connection in turn with the next of `answers`: `Some(raw
/// response)` is written after the request is read, `None` closes the
/// connection unanswered. Returns the request lines it saw.
async fn serve(listener: TcpListener, answers: Vec<Option<&'static str>>) -> Vec<String> {
    let mut requests = Vec::new();
    for answer in answers {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut buffer = vec![0u8; 4096];
        let mut read = 0;
        while !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buffer[read..]).await.expect("read");
            assert!(n > 0, "client closed before a full request");
            read += n;
        }
        let text = String::from_utf8_lossy(&buffer[..read]).to_string();
        requests.push(text.lines().next().unwrap_or_default().to_string());
        if let Some(response) = answer {
            socket.write_all(response.as_bytes()).await.expect("write");
        }
        drop(socket);
    }
    requests
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
const ERROR: &str =
    "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const REDIRECT: &str =
    "HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

#[tokio::test]
async fn http_probe_judges_200_then_500_then_a_closed_connection() {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(serve(
        listener,
        vec![Some(OK), Some(ERROR), None, Some(REDIRECT)],
    ));
    let prober = Prober::new(&http_check(port, 5)).expect("prober");

    assert_eq!(prober.probe(LOOPBACK).await, ProbeResult::Ok);
    assert_eq!(
        prober.probe(LOOPBACK).await,
        ProbeResult::Failed(ProbeFailure::Status(500))
    );
    assert_eq!(
        prober.probe(LOOPBACK).await,
        ProbeResult::Failed(ProbeFailure::Closed)
    );
    // Redirects are judged, not followed.
    assert_eq!(
        prober.probe(LOOPBACK).await,
        ProbeResult::Failed(ProbeFailure::Status(302))
    );

    let requests = server.await.expect("server");
    assert_eq!(requests, vec!["GET /health HTTP/1.1"; 4]);
}

#[tokio::test]
async fn http_probe_times_out_on_a_server_that_never_answers() {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accepts and reads, then holds the connection open without a word.
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut buffer = [0u8; 1024];
        let _ = socket.read(&mut buffer).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let prober = Prober::new(&http_check(port, 1)).expect("prober");
    let started = std::time::Instant::now();
    assert_eq!(
        prober.probe(LOOPBACK).await,
        ProbeResult::Failed(ProbeFailure::Timeout)
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    server.abort();
}

#[tokio::test]
async fn http_probe_reports_refused_when_nothing_listens() {
    let port = closed_port().await;
    let prober = Prober::new(&http_check(port, 5)).expect("prober");
    assert_eq!(
        prober.probe(LOOPBACK).await,
        ProbeResult::Failed(ProbeFailure::Refused)
    );
}

#[tokio::test]
async fn tcp_probe_is_ok_when_accepted_and_refused_when_not() {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let prober = Prober::new(&HealthCheck::new(ProbeTarget::Tcp { port })).expect("prober");
    assert_eq!(prober.probe(LOOPBACK).await, ProbeResult::Ok);
    drop(listener);
    assert_eq!(
        prober.probe(LOOPBACK).await,
        ProbeResult::Failed(ProbeFailure::Refused)
    );
}

/// A loopback port nothing listens on: bound, then released.
pub(crate) async fn closed_port() -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.expect("bind");
    listener.local_addr().expect("addr").port()
}
