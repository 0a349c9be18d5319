//! The agent routes over HTTP, on a real `Controller` over the in-memory
//! `FakeProvider`: the test plays the instance metadata service with its
//! own Ed25519 key (as the built-in cloud's would sign), so every proof is
//! built the way `endstate agent` builds it. Checked: a session serves its
//! instance's own group's roles only; a replayed proof and a copied
//! document without the instance's nonce signature are refused; an
//! instance in a group without roles is refused; a token is its
//! instance's only and ends when the instance stops; an instance may hold
//! several sessions; the long poll wakes on a spec change; a report is an
//! event with counts; a terminated instance's binding is forgotten, in
//! the store too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use endstate_clock::{SharedClock, SystemClock};
use endstate_controller::api::types::{AgentReport, AgentSessionRequest};
use endstate_controller::client::{Client, ClientError};
use endstate_controller::view::{ControllerApi, SpecSubmission};
use endstate_controller::{Controller, Options, Parts, SpecSource};
use endstate_exec::{ApplyOptions, Session};
use endstate_imds::Signer;
use endstate_plan::InstanceState;
use endstate_provider::fake::FakeProvider;
use endstate_provider::Provider;
use endstate_state::{RunKind, SqliteStore, Store};

const KEY_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const KEY_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn spec_text(web_content: &str) -> String {
    format!(
        r#"project: agents
provider:
  aws: {{ region: us-east-1, endpoint: "http://127.0.0.1:1" }}
roles:
  web:
    resources:
      - {{ kind: file, name: web, path: /etc/web, content: "{web_content}" }}
  db:
    resources:
      - {{ kind: file, name: db, path: /etc/db, content: only-for-db }}
groups:
  web:
    image: ami-0123456789abcdef0
    instance_type: t3.micro
    capacity: {{ min: 1, desired: 1, max: 1 }}
    zones: [us-east-1a]
    roles: [web]
  db:
    image: ami-0123456789abcdef0
    instance_type: t3.micro
    capacity: {{ min: 1, desired: 1, max: 1 }}
    zones: [us-east-1a]
    roles: [db]
  bare:
    image: ami-0123456789abcdef0
    instance_type: t3.micro
    capacity: {{ min: 1, desired: 1, max: 1 }}
    zones: [us-east-1a]
"#
    )
}

struct World {
    fake: Arc<FakeProvider>,
    store: Arc<dyn Store>,
    controller: Controller,
    signer: Signer,
    client: Client,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let clock: SharedClock = SystemClock::shared();
        let fake = Arc::new(FakeProvider::with_zones(["us-east-1a"]));
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(dir.path().join("state.db"), Arc::clone(&clock)).unwrap());
        let spec = endstate_model::load_str(
            &spec_text("v1"),
            Path::new("spec.yaml"),
            Path::new("."),
            None,
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let session = Arc::new(
            Session::begin(
                Arc::clone(&store),
                Arc::clone(&clock),
                "endstate serve",
                Duration::from_secs(60),
                RunKind::Serve,
                &spec.hash,
                &spec.environment,
            )
            .await
            .unwrap(),
        );
        let signer = Signer::generate().unwrap();
        let provider: Arc<dyn Provider> = fake.clone();
        let controller = Controller::start(
            Parts {
                clock,
                provider,
                load_balancing: None,
                api_calls: Box::new(BTreeMap::new),
                store: Arc::clone(&store),
                session,
                spec,
                source: SpecSource {
                    path: None,
                    environment: None,
                },
                options: Options {
                    period: Duration::from_secs(10),
                    observe_every: Duration::from_millis(200),
                    apply: ApplyOptions {
                        poll_interval: Duration::from_millis(50),
                        ..ApplyOptions::default()
                    },
                    agent_identity_key: Some(signer.public_key_bytes()),
                    agent_long_poll: Duration::from_secs(3),
                    ..Options::default()
                },
            },
            Controller::counters(),
        )
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let api = controller.api();
        tokio::spawn(endstate_controller::api::serve(
            listener,
            api,
            std::future::pending(),
        ));
        World {
            fake,
            store,
            controller,
            signer,
            client: Client::new(base, ""),
            _dir: dir,
        }
    }

    /// The running instance of `group`, once the controller observed it.
    async fn instance_of(&self, group: &str) -> String {
        let started = Instant::now();
        loop {
            if let Ok(instances) = self.controller.instances(Some(group)) {
                if let Some(i) = instances.iter().find(|i| i.state == "running") {
                    return i.id.clone();
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no {group} instance"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn document(instance: &str) -> String {
        format!("{{\n  \"instanceId\" : \"{instance}\",\n  \"region\" : \"us-east-1\"\n}}")
    }

    /// The proof the agent of `instance` sends, as its metadata service
    /// would sign it, for a fresh nonce.
    async fn proof(&self, instance: &str, key: &str) -> AgentSessionRequest {
        let nonce = self.client.agent_nonce().await.unwrap().nonce;
        let document = World::document(instance);
        AgentSessionRequest {
            signature: self.signer.sign(document.as_bytes()),
            nonce_signature: self.signer.sign_nonce(instance, &nonce),
            document,
            nonce,
            agent_key: key.into(),
        }
    }

    async fn session(&self, instance: &str, key: &str) -> Client {
        let proof = self.proof(instance, key).await;
        let session = self.client.agent_session(&proof).await.unwrap();
        assert_eq!(session.instance_id, instance);
        self.client.with_token(session.token)
    }
}

fn status(result: Result<impl std::fmt::Debug, ClientError>) -> u16 {
    result.unwrap_err().status().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_get_their_own_groups_roles_over_an_authenticated_channel() {
    let world = World::start().await;
    let web = world.instance_of("web").await;
    let db = world.instance_of("db").await;
    let bare = world.instance_of("bare").await;

    // Each session serves its own group's roles only.
    let web_agent = world.session(&web, KEY_A).await;
    let config = web_agent
        .agent_config(None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (config.group.as_str(), config.instance_id.as_str()),
        ("web", web.as_str())
    );
    let served = serde_json::to_string(&config.roles).unwrap();
    assert!(
        served.contains("/etc/web") && !served.contains("only-for-db"),
        "{served}"
    );
    assert!(
        (48.0..=72.0).contains(&config.check_in_seconds),
        "{}",
        config.check_in_seconds
    );
    let db_agent = world.session(&db, KEY_B).await;
    let db_config = db_agent
        .agent_config(None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(db_config.group, "db");
    assert!(!serde_json::to_string(&db_config.roles)
        .unwrap()
        .contains("/etc/web"));

    // A replayed proof: its nonce is spent. (Its session is a second one
    // of the instance: `web_agent`'s holds too.)
    let proof = world.proof(&web, KEY_A).await;
    let newer = world.client.agent_session(&proof).await.unwrap();
    assert_eq!(status(world.client.agent_session(&proof).await), 403);
    web_agent
        .agent_config(None, Duration::from_secs(5))
        .await
        .unwrap();
    let web_agent = world.client.with_token(newer.token);
    // A copied document and signature with a fresh nonce, but without the
    // instance's signature of that nonce.
    let fresh = world.client.agent_nonce().await.unwrap().nonce;
    let copied = AgentSessionRequest {
        nonce: fresh,
        ..proof.clone()
    };
    assert_eq!(status(world.client.agent_session(&copied).await), 403);
    // Another agent key for a bound instance.
    let stolen = world.proof(&web, KEY_B).await;
    assert_eq!(status(world.client.agent_session(&stolen).await), 403);
    // An instance of a group without roles.
    let bare_proof = world.proof(&bare, KEY_A).await;
    assert_eq!(status(world.client.agent_session(&bare_proof).await), 403);
    // No token, or a made-up one.
    assert_eq!(
        status(
            world
                .client
                .agent_config(None, Duration::from_secs(5))
                .await
        ),
        401
    );
    assert_eq!(
        status(
            world
                .client
                .with_token("0".repeat(64))
                .agent_config(None, Duration::from_secs(5))
                .await
        ),
        401
    );

    // The long poll holds while nothing changes, and wakes on a change.
    let started = Instant::now();
    let same = web_agent
        .agent_config(Some(&config.version), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(same.version, config.version);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let waiting = {
        let agent = web_agent.clone();
        let version = config.version.clone();
        tokio::spawn(async move {
            let asked = Instant::now();
            let config = agent
                .agent_config(Some(&version), Duration::from_secs(5))
                .await
                .unwrap();
            (config, asked.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    world
        .controller
        .submit_spec(SpecSubmission {
            yaml: spec_text("v2"),
            environment: None,
            file_name: None,
            allow_mass_terminate: false,
        })
        .await
        .unwrap();
    let (changed, waited) = waiting.await.unwrap();
    assert_ne!(changed.version, config.version);
    assert!(serde_json::to_string(&changed.roles)
        .unwrap()
        .contains("v2"));
    assert!(waited < Duration::from_secs(2), "{waited:?}");

    // A report is an event with counts, about the token's own instance.
    let report: endstate_config::Report = serde_json::from_value(serde_json::json!({
        "started": "2026-11-28T00:00:00Z", "duration_ms": 4, "root": "/", "noop": false,
        "outcome": "ok", "errors": [],
        "resources": [{"id": "file:web", "role": "web", "status": "changed",
                       "changes": [], "duration_ms": 1}]
    }))
    .unwrap();
    let recorded = web_agent
        .agent_report(&AgentReport {
            version: changed.version.clone(),
            report,
        })
        .await
        .unwrap();
    assert_eq!(recorded.recorded, "config_converged");
    let events = world.controller.events_after(0, 1000, None).unwrap();
    let converged: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "config_converged")
        .collect();
    assert_eq!(converged.len(), 1);
    assert_eq!(
        (converged[0].subject.as_str(), converged[0].group.as_str()),
        (web.as_str(), "web")
    );
    assert_eq!(converged[0].data["changed"], 1);
    assert_eq!(events.iter().filter(|e| e.kind == "agent_bound").count(), 2);

    // A stopped instance loses its configuration and its session.
    assert!(world.fake.set_state(&db, InstanceState::Stopped));
    let started = Instant::now();
    loop {
        match db_agent.agent_config(None, Duration::from_secs(5)).await {
            Ok(_) => {}
            Err(e) => {
                assert!(matches!(e.status(), Some(403 | 503)), "{e}");
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status(db_agent.agent_config(None, Duration::from_secs(5)).await),
        401
    );
    // The web agent's token still works: tokens are per instance.
    web_agent
        .agent_config(None, Duration::from_secs(5))
        .await
        .unwrap();

    // A terminated instance's binding is forgotten, in the store too.
    // (Which bindings are kept is `agent`'s unit test: the stopped db
    // instance may be replaced, and so unbound, meanwhile.)
    let bound = |world: &World| -> BTreeMap<String, String> {
        let states = world.store.group_states().unwrap();
        states
            .get("@agents")
            .map(|v| serde_json::from_value(v.clone()).unwrap())
            .unwrap_or_default()
    };
    assert!(bound(&world).contains_key(&web), "{:?}", bound(&world));
    assert!(world.fake.set_state(&web, InstanceState::Terminated));
    // The binding is written first, then the event.
    let unbound_event = |world: &World| {
        let events = world.controller.events_after(0, 1000, None).unwrap();
        events
            .iter()
            .any(|e| e.kind == "agent_unbound" && e.subject == web)
    };
    let started = Instant::now();
    while bound(&world).contains_key(&web) || !unbound_event(&world) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still bound ({:?}) or no agent_unbound event",
            bound(&world)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status(web_agent.agent_config(None, Duration::from_secs(5)).await),
        401
    );
    world.controller.shutdown().await;
}
