//! The executor and the governor over `FakeProvider` (an in-memory EC2
//! stand-in) and a real SQLite state file: capacity fallbacks, launches
//! whose answer was lost, recovery of a crashed run's intents, Ctrl-C,
//! throttling absorbed by retries, and the client-side buckets.
//!
//! Time is tokio's paused clock, so backoffs and bucket waits pass at once
//! while their lengths are still accounted.

use std::sync::Arc;
use std::time::Duration;

use endstate_clock::{SharedClock, TokioClock};
use endstate_exec::{
    observe, ApplyOptions, Collect, Event, Executor, Governor, RateLimits, RetryPolicy, Session,
};
use endstate_model::{
    Capacity, DisruptionBudget, Group, MetadataOptions, Provider as SpecProvider, Spec, Zone,
};
use endstate_plan::{plan, PlanOptions};
use endstate_provider::fake::{FakeProvider, FaultKind, InjectedFault};
use endstate_provider::{Operation, Provider};
use endstate_state::{IntentKind, RunKind, SqliteStore, Store};
use tokio::sync::watch;

fn spec(desired: u32) -> Arc<Spec> {
    Arc::new(Spec {
        load_balancers: Vec::new(),
        project: "unit".into(),
        environment: "default".into(),
        provider: SpecProvider::Aws {
            region: "us-east-1".into(),
            endpoint: None,
            profile: None,
        },
        groups: vec![Group {
            name: "web".into(),
            image_id: "ami-11111111".into(),
            image_channel: None,
            instance_types: vec!["t3.micro".into(), "t3a.micro".into()],
            capacity: Capacity {
                min: 0,
                desired,
                max: desired * 2,
            },
            zones: vec![
                Zone {
                    name: "us-east-1a".into(),
                    subnet_ids: vec![],
                },
                Zone {
                    name: "us-east-1b".into(),
                    subnet_ids: vec![],
                },
            ],
            security_group_ids: vec![],
            key_name: None,
            iam_instance_profile: None,
            root_volume: None,
            metadata: MetadataOptions::default(),
            tags: Default::default(),
            user_data: None,
            budget: DisruptionBudget::default(),
            health_check: None,
            brake: Default::default(),
            scaling: Default::default(),
            load_balancer: None,
            rollout: None,
            roles: Vec::new(),
        }],
        hash: "hash".into(),
        roles: Default::default(),
        recipes: Default::default(),
    })
}

struct Rig {
    fake: Arc<FakeProvider>,
    governor: Arc<Governor>,
    store: Arc<dyn Store>,
    events: Arc<Collect>,
    clock: SharedClock,
    _dir: tempfile::TempDir,
}

fn rig(limits: RateLimits) -> Rig {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = TokioClock::shared();
    let fake = Arc::new(FakeProvider::with_zones(["us-east-1a", "us-east-1b"]));
    let events = Arc::new(Collect::default());
    let governor = Arc::new(Governor::new(
        fake.clone(),
        clock.clone(),
        &limits,
        RetryPolicy::default(),
        events.clone(),
    ));
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path().join("state.db"), clock.clone()).expect("state"));
    Rig {
        fake,
        governor,
        store,
        events,
        clock,
        _dir: dir,
    }
}

impl Rig {
    async fn session(&self) -> Arc<Session> {
        Arc::new(
            Session::begin(
                self.store.clone(),
                self.clock.clone(),
                "test",
                Duration::from_secs(60),
                RunKind::Apply,
                "hash",
                "default",
            )
            .await
            .expect("session"),
        )
    }

    fn executor(&self, cancel: watch::Receiver<bool>) -> Executor {
        Executor::new(
            self.governor.clone(),
            self.clock.clone(),
            self.events.clone(),
            ApplyOptions {
                poll_interval: Duration::from_millis(10),
                ..ApplyOptions::default()
            },
            cancel,
        )
    }

    async fn converge(&self, spec: &Arc<Spec>) -> endstate_exec::ApplyReport {
        let (_keep, cancel) = watch::channel(false);
        let session = self.session().await;
        let executor = self.executor(cancel);
        executor.recover(&session, spec).await.expect("recover");
        let observed = observe(self.governor.as_ref(), &spec.project)
            .await
            .expect("observe");
        let plan = plan(spec, &observed, &PlanOptions::default());
        let report = executor.apply(&session, spec, &plan).await.expect("apply");
        Arc::try_unwrap(session)
            .ok()
            .expect("session unshared")
            .finish(endstate_state::RunOutcome::Succeeded, serde_json::json!({}))
            .await
            .expect("finish");
        report
    }

    async fn live(&self, project: &str) -> usize {
        observe(self.fake.as_ref(), project)
            .await
            .expect("observe")
            .instances
            .iter()
            .filter(|i| i.state.is_live())
            .count()
    }
}

#[tokio::test(start_paused = true)]
async fn capacity_errors_fall_back_to_the_next_type_and_say_so() {
    let rig = rig(RateLimits::unlimited());
    rig.fake
        .inject(InjectedFault::capacity("us-east-1a", "t3.micro").times(10));
    let report = rig.converge(&spec(4)).await;
    assert_eq!(report.launched.len(), 4);
    assert_eq!(report.fallbacks, 1);
    let types: Vec<String> = rig
        .fake
        .instances()
        .iter()
        .filter(|i| i.zone == "us-east-1a")
        .map(|i| i.instance_type.clone())
        .collect();
    assert_eq!(types, vec!["t3a.micro", "t3a.micro"]);
    assert!(rig.events.events().iter().any(|e| matches!(
        e,
        Event::FallingBack { from, to, .. } if from == "t3.micro in us-east-1a" && to == "t3a.micro in us-east-1a"
    )));
    assert!(rig.store.open_intents().expect("intents").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_lost_launch_answer_is_resolved_by_reading_not_by_launching_again() {
    let rig = rig(RateLimits::unlimited());
    rig.fake
        .inject(InjectedFault::new(Operation::RunInstances, FaultKind::LostResponse).times(2));
    let report = rig.converge(&spec(6)).await;
    assert_eq!(report.launched.len(), 6);
    assert_eq!(rig.live("unit").await, 6, "no duplicate");
    let runs = rig.fake.request_counts()[&Operation::RunInstances];
    assert_eq!(
        runs, 2,
        "the lost launches were found by tag, not sent again"
    );
    assert!(rig
        .events
        .events()
        .iter()
        .any(|e| matches!(e, Event::Resolved { found: 3, .. })));
}

#[tokio::test(start_paused = true)]
async fn a_crashed_runs_sent_launch_is_resent_with_its_token_and_never_doubled() {
    let rig = rig(RateLimits::unlimited());
    let spec = spec(2);
    // A run journals a launch and marks it sent, then dies before the call
    // goes out; its lock is taken over (here: released, as a takeover would).
    {
        let holder = endstate_state::HolderInfo::current("crashed run");
        let lease = rig
            .store
            .acquire_lock(&holder, Duration::from_secs(60))
            .expect("lock");
        let run = rig
            .store
            .begin_run(&lease, RunKind::Apply, "hash", "default")
            .expect("run");
        let intent = rig
            .store
            .record_intent(
                &lease,
                &endstate_state::NewIntent {
                    run_id: run,
                    kind: IntentKind::Launch,
                    group: "web".into(),
                    zone: Some("us-east-1a".into()),
                    detail: serde_json::json!({ "count": 2, "instance_type": "t3.micro", "subnet_id": null }),
                },
            )
            .expect("intent");
        rig.store
            .mark_intent_sent(&lease, &intent.id)
            .expect("sent");
        rig.store.release(&lease).expect("release");
    }
    let report = rig.converge(&spec).await;
    assert_eq!(rig.live("unit").await, 2, "exactly desired after recovery");
    assert_eq!(
        report.launched.len(),
        0,
        "the resent intent already filled the group"
    );
    assert!(rig
        .events
        .events()
        .iter()
        .any(|e| matches!(e, Event::Recovered { .. })));
    assert_eq!(rig.fake.request_counts()[&Operation::RunInstances], 1);
    assert!(rig.store.open_intents().expect("intents").is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_new_launches() {
    let rig = rig(RateLimits::unlimited());
    let spec = spec(4);
    let (cancel_tx, cancel) = watch::channel(false);
    cancel_tx.send(true).expect("cancel");
    let session = rig.session().await;
    let executor = rig.executor(cancel);
    let observed = observe(rig.governor.as_ref(), "unit")
        .await
        .expect("observe");
    let plan = plan(&spec, &observed, &PlanOptions::default());
    let report = executor.apply(&session, &spec, &plan).await.expect("apply");
    assert!(report.interrupted);
    assert!(report.launched.is_empty());
    assert_eq!(
        rig.fake.request_counts().get(&Operation::RunInstances),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried_with_backoff_and_reported() {
    let rig = rig(RateLimits::unlimited());
    rig.fake
        .inject(InjectedFault::throttle(Operation::DescribeInstances).times(3));
    let observed = observe(rig.governor.as_ref(), "unit")
        .await
        .expect("observe");
    assert!(observed.instances.is_empty());
    let stats = rig.governor.stats();
    assert_eq!(stats.throttled, 3);
    assert_eq!(stats.calls["DescribeInstances"], 4);
    let waits = rig
        .events
        .events()
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Throttled {
                    by_server: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(waits, 3);
}

#[tokio::test(start_paused = true)]
async fn client_buckets_pace_run_instances_at_ec2s_rate() {
    let rig = rig(RateLimits::ec2_defaults());
    let started = tokio::time::Instant::now();
    for _ in 0..10 {
        let request = endstate_provider::LaunchRequest {
            image_id: "ami-11111111".into(),
            instance_type: "t3.micro".into(),
            count: 1,
            zone: "us-east-1a".into(),
            subnet_id: None,
            security_group_ids: vec![],
            key_name: None,
            iam_instance_profile: None,
            root_volume: None,
            metadata: MetadataOptions::default(),
            user_data: None,
            tags: Default::default(),
            client_token: uuid_like(),
        };
        rig.governor.run_instances(&request).await.expect("launch");
    }
    // 5 at once, then 5 more at 2 per second less the 5% margin: 5 / 1.9 s.
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        (2.6..2.7).contains(&elapsed),
        "10 launches took {elapsed:.3}s"
    );
    assert!(rig.governor.stats().bucket_wait_secs >= 2.6);
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("token-{}", NEXT.fetch_add(1, Ordering::SeqCst))
}
