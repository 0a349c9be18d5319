//! The checker against real loopback listeners, its time driven by a
//! `ManualClock`: rounds happen when the clock says, never by real sleeps.
//!
//! A `ManualClock` rather than a paused tokio runtime: with real sockets, a
//! paused runtime auto-advances its timers whenever it waits on I/O, which
//! would fire probe timeouts at random.

use super::*;
use crate::config::ProbeTarget;
use crate::event::EventKind;
use endstate_clock::ManualClock;
use std::net::Ipv4Addr;
use tokio::net::TcpListener;

const T0: Duration = Duration::from_secs(1_800_000_000);

async fn wait_for_round(rounds: &mut watch::Receiver<u64>, n: u64) {
    tokio::time::timeout(Duration::from_secs(10), rounds.wait_for(|r| *r >= n))
        .await
        .expect("round in time")
        .expect("checker running");
}

#[tokio::test]
async fn probes_every_interval_and_reports_transitions_at_the_clock_time() {
    // Two instances on one port: 127.0.0.1 listens, 127.0.0.2 does not.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut check = HealthCheck::new(ProbeTarget::Tcp { port });
    check.healthy_threshold = 2;
    check.unhealthy_threshold = 2;
    check.grace_period_seconds = 0;
    let targets = vec![
        Target {
            id: "i-good".into(),
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            launched_at: T0,
        },
        Target {
            id: "i-dead".into(),
            address: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            launched_at: T0,
        },
    ];
    let clock = ManualClock::new(T0);
    let (events_tx, mut events) = mpsc::channel(16);
    let checker =
        Checker::start(check, targets, Arc::new(clock.clone()), 1, events_tx).expect("checker");
    let mut rounds = checker.rounds();

    wait_for_round(&mut rounds, 1).await;
    // One result is below every threshold: only the counted failure.
    let first = events.try_recv().expect("the dead one's failed probe");
    assert_eq!(first.kind, EventKind::ProbeFailed);
    assert_eq!(first.subject, "i-dead");
    assert_eq!(
        first.reason,
        "probe failed (1 of 2 in a row): connection refused"
    );
    assert!(events.try_recv().is_err(), "no transition yet");

    // 29 s is not yet an interval; the second round comes at exactly 30 s, so
    // the transitions carry T0 + 30 s.
    clock.advance(Duration::from_secs(29));
    tokio::task::yield_now().await;
    assert_eq!(*rounds.borrow(), 1);
    clock.advance(Duration::from_secs(1));
    wait_for_round(&mut rounds, 2).await;

    let mut got = vec![
        events.recv().await.expect("event"),
        events.recv().await.expect("event"),
        events.recv().await.expect("event"),
    ];
    got.sort_by(|a, b| (&a.subject, a.kind.as_str()).cmp(&(&b.subject, b.kind.as_str())));
    assert_eq!(
        got,
        vec![
            Event {
                at: T0 + Duration::from_secs(30),
                subject: "i-dead".into(),
                kind: EventKind::InstanceUnhealthy,
                reason: "unhealthy after 2 consecutive failed probes (connection refused)".into(),
            },
            Event {
                at: T0 + Duration::from_secs(30),
                subject: "i-dead".into(),
                kind: EventKind::ProbeFailed,
                reason: "probe failed (2 of 2 in a row): connection refused".into(),
            },
            Event {
                at: T0 + Duration::from_secs(30),
                subject: "i-good".into(),
                kind: EventKind::InstanceHealthy,
                reason: "healthy after 2 consecutive successful probes".into(),
            },
        ]
    );
    let health = checker.health().borrow().clone();
    assert_eq!(health.get("i-good"), Some(&HealthStatus::Healthy));
    assert_eq!(health.get("i-dead"), Some(&HealthStatus::Unhealthy));

    // The listener goes away: two more rounds and i-good is unhealthy too.
    drop(listener);
    clock.advance(Duration::from_secs(30));
    wait_for_round(&mut rounds, 3).await;
    // i-dead is already unhealthy: its failures are no longer counted out.
    let counted = events.try_recv().expect("i-good's first failure");
    assert_eq!(
        (counted.subject.as_str(), counted.kind),
        ("i-good", EventKind::ProbeFailed)
    );
    assert!(events.try_recv().is_err());
    clock.advance(Duration::from_secs(30));
    wait_for_round(&mut rounds, 4).await;
    let failed = events.recv().await.expect("event");
    assert_eq!(
        (failed.subject.as_str(), failed.kind),
        ("i-good", EventKind::ProbeFailed)
    );
    let down = events.recv().await.expect("event");
    assert_eq!(down.subject, "i-good");
    assert_eq!(down.kind, EventKind::InstanceUnhealthy);
    assert_eq!(down.at, T0 + Duration::from_secs(90));

    // Targets change from the next round on; stopped, it probes no more.
    checker.set_targets(Vec::new());
    clock.advance(Duration::from_secs(30));
    wait_for_round(&mut rounds, 5).await;
    assert!(checker.health().borrow().is_empty());
    checker.stop().await;
    clock.advance(Duration::from_secs(300));
    tokio::task::yield_now().await;
    assert_eq!(*rounds.borrow(), 5);
    assert!(
        events.recv().await.is_none(),
        "the checker's sender is gone"
    );
}

/// Three instances on 127.0.0.1-3, one port, each answering HTTP after 100 ms
/// while counting how many probes are open at once.
async fn slow_servers() -> (u16, Arc<std::sync::atomic::AtomicUsize>, Vec<Target>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let port = first.local_addr().expect("addr").port();
    let mut listeners = vec![first];
    for last in [2, 3] {
        listeners.push(
            TcpListener::bind((Ipv4Addr::new(127, 0, 0, last), port))
                .await
                .expect("bind the same port on another loopback address"),
        );
    }
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut targets = Vec::new();
    for listener in listeners {
        let address = listener.local_addr().expect("addr").ip();
        targets.push(Target {
            id: format!("i-{address}"),
            address,
            launched_at: T0,
        });
        let (open, most) = (Arc::clone(&open), Arc::clone(&most));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (open, most) = (Arc::clone(&open), Arc::clone(&most));
                tokio::spawn(async move {
                    let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let mut buffer = [0u8; 1024];
                    let _ = socket.read(&mut buffer).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
    }
    (port, most, targets)
}

#[tokio::test]
async fn at_most_concurrency_probes_run_at_once() {
    for (concurrency, expected) in [(1, 1), (3, 3)] {
        let (port, most, targets) = slow_servers().await;
        let check = HealthCheck::new(ProbeTarget::Http {
            port,
            path: "/".into(),
            expected: Default::default(),
        });
        let clock = ManualClock::new(T0);
        let (events_tx, _events) = mpsc::channel(16);
        let checker = Checker::start(check, targets, Arc::new(clock), concurrency, events_tx)
            .expect("checker");
        wait_for_round(&mut checker.rounds(), 1).await;
        assert_eq!(
            most.load(std::sync::atomic::Ordering::SeqCst),
            expected,
            "concurrency {concurrency}"
        );
        checker.stop().await;
    }
}
