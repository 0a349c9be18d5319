//! The controller over the in-memory `FakeProvider` (a fake of the EC2 layer
//! below, as its name says) and a real SQLite state, on a `ManualClock`
//! that only the test moves: time-driven behaviour asserted without
//! sleeping through it.
//!
//! - a scheduled action (cron in a time zone) fires at its time, and the
//!   group follows it down to 0 and back up;
//! - posted metrics drive target tracking, within min and max;
//! - a paused group is left alone; the events say why each thing happened.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use endstate_clock::{ManualClock, SharedClock};
use endstate_controller::view::{ControllerApi, EventView, MetricSample};
use endstate_controller::{Controller, Options, Parts, SpecSource};
use endstate_exec::{ApplyOptions, Session};
use endstate_provider::fake::FakeProvider;
use endstate_provider::Provider;
use endstate_state::{RunKind, SqliteStore, Store};

/// 2026-11-27T17:59:30Z, a Friday: 18:59:30 in Berlin.
const START: u64 = 1_795_780_800 + 5 * 3600 + 59 * 60 + 30;

fn spec(extra: &str) -> endstate_model::Spec {
    let text = format!(
        r#"project: timed
provider:
  aws: {{ region: us-east-1, endpoint: "http://127.0.0.1:1" }}
groups:
  web:
    image: ami-0123456789abcdef0
    instance_type: t3.micro
    capacity: {{ min: 2, desired: 3, max: 6 }}
    zones: [us-east-1a]
{extra}
"#
    );
    endstate_model::load_str(&text, Path::new("spec.yaml"), Path::new("."), None)
        .unwrap_or_else(|d| panic!("{d}"))
}

/// The system's time: the fake provider stamps launch times with it, and
/// warm-up is judged against them.
fn now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
}

struct World {
    clock: ManualClock,
    fake: Arc<FakeProvider>,
    controller: Controller,
    _dir: tempfile::TempDir,
}

impl World {
    /// A controller whose clock stands at `start` (since the epoch).
    async fn start(spec: endstate_model::Spec, start: Duration) -> Self {
        let clock = ManualClock::new(start);
        let shared: SharedClock = Arc::new(clock.clone());
        let fake = Arc::new(FakeProvider::with_zones(["us-east-1a"]));
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("state.db"), Arc::clone(&shared)).unwrap());
        let session = Arc::new(
            Session::begin(
                Arc::clone(&store),
                Arc::clone(&shared),
                "endstate serve",
                Duration::from_secs(60),
                RunKind::Serve,
                &spec.hash,
                &spec.environment,
            )
            .await
            .unwrap(),
        );
        let provider: Arc<dyn Provider> = fake.clone();
        let controller = Controller::start(
            Parts {
                clock: shared,
                provider,
                load_balancing: None,
                api_calls: Box::new(BTreeMap::new),
                store,
                session,
                spec,
                source: SpecSource {
                    path: None,
                    environment: None,
                },
                options: Options {
                    period: Duration::from_secs(10),
                    observe_every: Duration::from_secs(1),
                    apply: ApplyOptions {
                        poll_interval: Duration::from_millis(500),
                        ..ApplyOptions::default()
                    },
                    ..Options::default()
                },
            },
            Controller::counters(),
        )
        .await
        .unwrap();
        Self {
            clock,
            fake,
            controller,
            _dir: dir,
        }
    }

    fn live(&self) -> usize {
        self.fake
            .instances()
            .iter()
            .filter(|i| i.state.is_live())
            .count()
    }

    /// Moves the clock in steps of 0.5 s, letting the controller's tasks
    /// run between steps, until `done` or `limit` of clock time passed.
    async fn run_until(&self, limit: Duration, mut done: impl FnMut(&Self) -> bool) {
        let end = self.clock_now() + limit;
        while !done(self) {
            assert!(
                self.clock_now() < end,
                "not done after {limit:?} of clock time; events: {:#?}",
                self.events()
            );
            self.step().await;
        }
    }

    /// Moves the clock by `span`, in the same steps as [`World::run_until`].
    async fn run_for(&self, span: Duration) {
        let end = self.clock_now() + span;
        while self.clock_now() < end {
            self.step().await;
        }
    }

    async fn step(&self) {
        self.clock.advance(Duration::from_millis(500));
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    fn clock_now(&self) -> Duration {
        endstate_clock::Clock::now(&self.clock)
    }

    fn events(&self) -> Vec<EventView> {
        self.controller.events_after(0, 10_000, None).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_action_fires_at_its_time_in_its_time_zone() {
    let world = World::start(
        spec(
            r#"    scaling:
      scheduled:
        - name: evening
          cron: "0 19 * * 1-5"
          time_zone: Europe/Berlin
          min: 0
          desired: 0
        - name: morning
          cron: "0 8 * * 1-5"
          time_zone: Europe/Berlin
          min: 2
          desired: 3"#,
        ),
        Duration::from_secs(START),
    )
    .await;
    world
        .run_until(Duration::from_secs(20), |w| w.live() == 3)
        .await;
    assert!(
        world.clock_now() < Duration::from_secs(START + 30),
        "before 19:00 Berlin"
    );
    world
        .run_until(Duration::from_secs(60), |w| {
            w.live() == 0
                && w.events()
                    .iter()
                    .any(|e| e.kind == "reconcile_finished" && e.data["terminated"] == 3)
        })
        .await;
    let events = world.events();
    let fired: Vec<&EventView> = events
        .iter()
        .filter(|e| e.kind == "scheduled_action")
        .collect();
    assert_eq!(fired.len(), 1, "{events:#?}");
    assert_eq!(fired[0].data["policy"], "scheduled:evening");
    assert_eq!(
        (fired[0].data["from"].as_u64(), fired[0].data["to"].as_u64()),
        (Some(3), Some(0))
    );
    // Fired at 18:00:00 UTC (19:00 in Berlin), within one observation (1 s).
    let at =
        time::OffsetDateTime::parse(&fired[0].at, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp();
    let nineteen_berlin = i64::try_from(START + 30).unwrap();
    assert!(
        (nineteen_berlin..=nineteen_berlin + 1).contains(&at),
        "fired at {}",
        fired[0].at
    );
    let group = world.controller.group("web").unwrap();
    assert_eq!((group.min, group.desired), (0, 0));
    assert!(
        events
            .iter()
            .any(|e| e.kind == "terminated" && e.reason.contains("scale-in")),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_metrics_drive_target_tracking_within_min_and_max() {
    let world = World::start(
        spec(
            r#"    scaling:
      target_tracking:
        - metric: requests
          target: 100
          scale_out_cooldown: 30
          scale_in_cooldown: 30
          instance_warmup: 0"#,
        ),
        now(),
    )
    .await;
    world
        .run_until(Duration::from_secs(20), |w| w.live() == 3)
        .await;
    // 3 instances at 400 each against a target of 100: 12 wanted, max 6.
    let post = |value: f64| {
        let api = world.controller.api();
        async move {
            api.put_metrics(vec![MetricSample {
                group: "web".into(),
                instance: None,
                metric: "requests".into(),
                value,
            }])
            .await
            .unwrap()
        }
    };
    post(400.0).await;
    world
        .run_until(Duration::from_secs(30), |w| w.live() == 6)
        .await;
    assert_eq!(world.controller.group("web").unwrap().desired, 6);
    // Idle: back down, one step at a time, never below min (2).
    let mut lowest = 6;
    for _ in 0..40 {
        post(0.0).await;
        world.run_for(Duration::from_secs(5)).await;
        lowest = lowest.min(world.controller.group("web").unwrap().desired);
    }
    world
        .run_until(Duration::from_secs(30), |w| w.live() == 2)
        .await;
    assert_eq!(lowest, 2);
    let activity = world.controller.scaling_activity(Some("web")).unwrap();
    assert!(
        activity.iter().all(|a| (2..=6).contains(&a.to)),
        "{activity:#?}"
    );
    assert!(activity.iter().any(|a| a.to == 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_group_is_left_alone_until_resumed() {
    let world = World::start(spec(""), now()).await;
    world
        .run_until(Duration::from_secs(20), |w| w.live() == 3)
        .await;
    world.controller.pause("web", "maintenance").await.unwrap();
    let victim = world.fake.instances()[0].id.clone();
    world
        .fake
        .set_state(&victim, endstate_provider::InstanceState::Terminated);
    world.run_for(Duration::from_secs(30)).await;
    assert_eq!(world.live(), 2, "nothing acts on a paused group");
    world.controller.resume("web").await.unwrap();
    world
        .run_until(Duration::from_secs(30), |w| w.live() == 3)
        .await;
    let kinds: Vec<String> = world.events().into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&"group_paused".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"group_resumed".to_string()), "{kinds:?}");
}
