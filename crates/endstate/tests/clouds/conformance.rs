//! The provider conformance suite: one set of checks over
//! `&dyn endstate_provider::Provider` (and `Ec2Client`'s extra calls where
//! the trait has none), run against a real moto, the built-in cloud's
//! `simulated` backend and its `process` backend, each a real server on
//! loopback reached through our own EC2 client.
//!
//! Every check compares what a target does with what EC2 documents. Where
//! a target is known to differ, [`DIVERGENCES`] says so — which target,
//! which check, what EC2 does, what the target does instead and why — and
//! the check insists on exactly that documented behaviour: a divergence
//! that goes away, or a new one, fails the suite until the table is
//! updated. Nothing is skipped.
//!
//! Each (check, target) pair is its own test with its own server; every
//! instance a test launched is terminated before its server goes (the
//! process backend's instances are processes that outlive it).
//!
//! Not here: the aws CLI's view of the same server (`aws_cli_cloud.rs`),
//! throttling and eventual consistency (off in these servers; the simulated
//! backend's own tests and `throttle.rs` cover them).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use endstate_cloud::{CloudState, Credentials, ProcessBackend, ProcessConfig, RunningCloud};
use endstate_model::MetadataOptions;
use endstate_provider::ec2::{Ec2Client, Ec2Config};
use endstate_provider::{Filter, Instance, InstanceState, LaunchRequest, Provider, ProviderError};
use endstate_testkit::moto::MotoServer;
use endstate_wire::DescribeInstanceStatusRequest;

/// The three implementations of EC2 the suite holds to EC2's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Moto,
    Simulated,
    Process,
}

/// A place where a target knowingly differs from EC2.
#[derive(Debug)]
struct Divergence {
    /// The targets that diverge so (the simulated and process backends
    /// share one implementation of EC2's semantics, so usually both).
    targets: &'static [Kind],
    /// The name of the check's outcome (`check/case`).
    case: &'static str,
    /// What EC2 does, as the check words its outcome.
    ec2: &'static str,
    /// What the target does instead, worded the same way.
    observed: &'static str,
    /// Where EC2's behaviour is documented, and, for the built-in cloud,
    /// the fix proposed.
    why: &'static str,
}

const MOTO: &[Kind] = &[Kind::Moto];

/// Every known divergence from EC2. An entry here is checked, not skipped:
/// the target must behave exactly as recorded. The built-in cloud has none
/// recorded: an entry for it names both of its backends, which answer from
/// one core (`crates/cloud/src/simulated.rs`), and its fix goes there.
const DIVERGENCES: &[Divergence] = &[
    Divergence {
        targets: MOTO,
        case: "client_token/same_parameters",
        ec2: "the same instances",
        observed: "new instances",
        why: "moto 5.2.5 ignores ClientToken (../shared/ec2-facts.md); EC2 answers a repeated \
              RunInstances with the first call's instances (EC2 API reference, 'Ensuring \
              idempotency').",
    },
    Divergence {
        targets: MOTO,
        case: "client_token/different_parameters",
        ec2: "error IdempotentParameterMismatch",
        observed: "ok",
        why: "moto 5.2.5 ignores ClientToken, so a reused token with other parameters \
              launches again; EC2 refuses it with IdempotentParameterMismatch.",
    },
    Divergence {
        targets: MOTO,
        case: "paging/page_size",
        ec2: "pages of at most 5 instances",
        observed: "a page of 8 instances",
        why: "moto pages DescribeInstances by reservation, not by instance \
              (../shared/ec2-facts.md): 4 reservations of 2 fit one page of MaxResults=5.",
    },
    Divergence {
        targets: MOTO,
        case: "unknown_ids/create_tags",
        ec2: "error InvalidInstanceID.NotFound",
        observed: "ok",
        why: "moto tags an instance id that names nothing without complaint; EC2 checks \
              the resource exists (InvalidInstanceID.NotFound, EC2 error codes).",
    },
    Divergence {
        targets: MOTO,
        case: "unknown_ids/delete_tags",
        ec2: "error InvalidInstanceID.NotFound",
        observed: "ok",
        why: "as for CreateTags: moto does not check that the resource exists.",
    },
    Divergence {
        targets: MOTO,
        case: "malformed_ids/terminate",
        ec2: "error InvalidInstanceID.Malformed",
        observed: "error InvalidInstanceID.NotFound",
        why: "moto does not check the form of instance ids; EC2 answers an id that is not \
              i- and 8 or 17 hex digits with InvalidInstanceID.Malformed (EC2 error codes).",
    },
    Divergence {
        targets: MOTO,
        case: "malformed_ids/describe_status",
        ec2: "error InvalidInstanceID.Malformed",
        observed: "error InvalidInstanceID.NotFound",
        why: "as for TerminateInstances: moto does not check the form of instance ids.",
    },
    Divergence {
        targets: MOTO,
        case: "terminate/again",
        ec2: "ok, terminated",
        observed: "ok, shutting-down",
        why: "moto reports an already terminated instance as shutting-down again in the \
              answer (its describe still says terminated); EC2 answers with its current \
              state, terminated (TerminateInstances is idempotent).",
    },
    Divergence {
        targets: MOTO,
        case: "tag_rules/reserved_prefix",
        ec2: "error InvalidParameterValue",
        observed: "ok",
        why: "moto accepts tag keys starting with aws:; EC2 refuses them (\"Tag keys \
              starting with 'aws:' are reserved for internal use\", InvalidParameterValue, \
              as reported against real EC2 in AndrewFarley/AWS-Automated-Daily-Instance-\
              AMI-Snapshots#7).",
    },
    Divergence {
        targets: MOTO,
        case: "filters/instance_state_code",
        ec2: "the running instances",
        observed: "error Http500",
        why: "moto 5.2.5's server fails (HTTP 500, NotImplementedError) on the \
              instance-state-code filter combined with a tag filter; EC2 documents it \
              among DescribeInstances' filters.",
    },
    Divergence {
        targets: MOTO,
        case: "filters/unknown_name",
        ec2: "error InvalidParameterValue",
        observed: "error Http500",
        why: "moto raises NotImplementedError (HTTP 500) for a filter it does not know; \
              EC2 answers InvalidParameterValue (\"The filter 'colour' is invalid\").",
    },
];

/// Whether `observed` is EC2's behaviour, or the divergence recorded for
/// this target and case; if not, what is wrong.
fn judge(kind: Kind, case: &str, ec2: &str, observed: &str) -> Result<(), String> {
    let known: Vec<&Divergence> = DIVERGENCES
        .iter()
        .filter(|d| d.targets.contains(&kind) && d.case == case)
        .collect();
    match known.as_slice() {
        [] if observed == ec2 => Ok(()),
        [] => Err(format!(
            "{case}: {kind:?} diverges from EC2: EC2 does {ec2:?}, {kind:?} did {observed:?}. \
             Fix the target, or record the divergence in DIVERGENCES with why."
        )),
        [divergence] if divergence.ec2 != ec2 => Err(format!(
            "{case}: DIVERGENCES says EC2 does {:?}; the check says {ec2:?}",
            divergence.ec2
        )),
        [divergence] if divergence.observed != observed => Err(format!(
            "{case}: {kind:?} no longer diverges from EC2 as recorded (recorded {:?}, \
             EC2 {ec2:?}, now {observed:?}): update DIVERGENCES",
            divergence.observed
        )),
        [_] => Ok(()),
        _ => Err(format!("{case}: DIVERGENCES lists {kind:?} more than once")),
    }
}

/// What a call did, as the checks word outcomes: `ok` or `error CODE`.
fn outcome<T>(result: &Result<T, ProviderError>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(ProviderError::Api { code, .. }) => format!("error {code}"),
        Err(other) => format!("failure {other}"),
    }
}

/// Process-backend targets run one at a time in this binary, to bound the
/// load they put on the machine (clouds on one host no longer collide: a
/// slot whose address or uid another cloud holds is passed over).
static PROCESS_BACKEND: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running EC2 implementation and a client for it.
struct Target {
    kind: Kind,
    client: Ec2Client,
    url: String,
    /// An image RunInstances accepts and DescribeImages lists.
    image_id: String,
    /// Instances launched by the check, terminated at the end.
    launched: Mutex<BTreeSet<String>>,
    /// Cases that neither matched EC2 nor a recorded divergence; the test
    /// fails with all of them at the end.
    findings: Mutex<Vec<String>>,
    /// Dropped with the target: moto is killed by its PID.
    _moto: Option<MotoServer>,
    cloud: Mutex<Option<RunningCloud>>,
    /// Dropped with the target: its prober and metadata services stop.
    _process: Option<Arc<ProcessBackend>>,
    _dir: Option<tempfile::TempDir>,
    _serial: Option<tokio::sync::MutexGuard<'static, ()>>,
}

const KEY: &str = "AKIDCONFORMANCE0001";
const SECRET: &str = "conformance-secret-key-0000000000000000";

fn client_for(url: &str, key: &str, secret: &str) -> Ec2Client {
    Ec2Client::with_static_credentials(
        Ec2Config::new("us-east-1").with_endpoint(url),
        key,
        secret,
        None,
    )
    .expect("an EC2 client")
}

/// The simulated backend as `endstate cloud serve` configures it: EC2's
/// lifecycle with 1 s phases, no throttling, no consistency delay.
fn cloud_ec2_config() -> endstate_cloud::SimulatedConfig {
    let mut config = endstate_cloud::SimulatedConfig::new("us-east-1");
    config.throttling = None;
    config.timings = endstate_cloud::Timings {
        pending: Duration::from_secs(1),
        stopping: Duration::from_secs(1),
        shutting_down: Duration::from_secs(1),
    };
    config
}

impl Target {
    async fn start(kind: Kind) -> Self {
        match kind {
            Kind::Moto => {
                let moto = MotoServer::start().await;
                let url = moto.url().to_string();
                Target {
                    kind,
                    client: client_for(&url, "testing", "testing"),
                    url,
                    // One of moto's built-in images (an Ubuntu AMI).
                    image_id: "ami-1e749f67".to_string(),
                    launched: Mutex::default(),
                    findings: Mutex::default(),
                    _moto: Some(moto),
                    cloud: Mutex::default(),
                    _process: None,
                    _dir: None,
                    _serial: None,
                }
            }
            Kind::Simulated => {
                let simulated = cloud_ec2_config();
                let image_id = simulated.images[0].image_id.clone();
                let cloud = endstate_cloud::serve(endstate_cloud::CloudConfig {
                    port: 0,
                    credentials: Credentials::new().with(KEY, SECRET),
                    simulated,
                    clock: endstate_clock::SystemClock::shared(),
                })
                .await
                .expect("starting the simulated cloud");
                let url = cloud.url();
                Target {
                    kind,
                    client: client_for(&url, KEY, SECRET),
                    url,
                    image_id,
                    launched: Mutex::default(),
                    findings: Mutex::default(),
                    _moto: None,
                    cloud: Mutex::new(Some(cloud)),
                    _process: None,
                    _dir: None,
                    _serial: None,
                }
            }
            Kind::Process => {
                let serial = PROCESS_BACKEND.lock().await;
                let dir = tempfile::tempdir().expect("temp dir");
                let endstate = std::path::PathBuf::from(env!("CARGO_BIN_EXE_endstate"));
                let mut config = ProcessConfig::new(dir.path().join("cloud"));
                config.ec2 = cloud_ec2_config();
                config.init_command = vec![
                    endstate.clone().into(),
                    "cloud".into(),
                    "instance-init".into(),
                ];
                config.extra_binds = vec![(endstate, "/opt/endstate/bin/endstate".into())];
                config.status_interval = Duration::from_millis(500);
                config.stop_grace = Duration::from_secs(3);
                let backend = ProcessBackend::open(config).expect("opening the process backend");
                let image_id = backend.base_image_id().to_string();
                let state = CloudState::new(backend.clone(), Credentials::new().with(KEY, SECRET));
                let cloud = endstate_cloud::serve_state(0, state)
                    .await
                    .expect("starting the process cloud");
                let url = cloud.url();
                Target {
                    kind,
                    client: client_for(&url, KEY, SECRET),
                    url,
                    image_id,
                    launched: Mutex::default(),
                    findings: Mutex::default(),
                    _moto: None,
                    cloud: Mutex::new(Some(cloud)),
                    _process: Some(backend),
                    _dir: Some(dir),
                    _serial: Some(serial),
                }
            }
        }
    }

    /// Checks one case against EC2 and the divergence table, noting a
    /// mismatch and carrying on, so that one run shows every divergence.
    fn conform(&self, case: &str, ec2: &str, observed: &str) {
        if let Err(finding) = judge(self.kind, case, ec2, observed) {
            self.findings.lock().expect("findings").push(finding);
        }
    }

    fn provider(&self) -> &dyn Provider {
        &self.client
    }

    /// Another client for the same endpoint, paging DescribeInstances by
    /// `page_size`.
    fn paged(&self, page_size: u32) -> Ec2Client {
        let (key, secret) = match self.kind {
            Kind::Moto => ("testing", "testing"),
            Kind::Simulated | Kind::Process => (KEY, SECRET),
        };
        client_for(&self.url, key, secret).with_page_size(page_size)
    }

    /// How long instances take to change state on this target.
    fn settle_timeout(&self) -> Duration {
        match self.kind {
            Kind::Moto | Kind::Simulated => Duration::from_secs(30),
            Kind::Process => Duration::from_secs(90),
        }
    }

    fn launch_request(&self, count: u32, tags: &[(&str, &str)], token: &str) -> LaunchRequest {
        LaunchRequest {
            image_id: self.image_id.clone(),
            instance_type: "t3.micro".to_string(),
            count,
            zone: "us-east-1a".to_string(),
            subnet_id: None,
            security_group_ids: Vec::new(),
            key_name: None,
            iam_instance_profile: None,
            root_volume: None,
            metadata: MetadataOptions::default(),
            user_data: None,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            client_token: token.to_string(),
        }
    }

    /// RunInstances, remembering what it launched.
    async fn run(&self, request: &LaunchRequest) -> Result<Vec<Instance>, ProviderError> {
        let result = self.provider().run_instances(request).await;
        if let Ok(instances) = &result {
            self.launched
                .lock()
                .expect("launched")
                .extend(instances.iter().map(|i| i.id.clone()));
        }
        result
    }

    async fn launch(&self, count: u32, tags: &[(&str, &str)]) -> Vec<String> {
        let token = unique("tok");
        let instances = self
            .run(&self.launch_request(count, tags, &token))
            .await
            .unwrap_or_else(|e| panic!("{:?}: launching {count}: {e}", self.kind));
        assert_eq!(instances.len(), count as usize);
        ids(&instances)
    }

    /// Every instance matching `filters`, all pages.
    async fn list(&self, filters: &[Filter]) -> Vec<Instance> {
        endstate_provider::describe_all(self.provider(), filters)
            .await
            .unwrap_or_else(|e| panic!("{:?}: describing {filters:?}: {e}", self.kind))
            .0
    }

    /// The instances of `ids` (by the `instance-id` filter), by id.
    async fn by_id(&self, ids: &[String]) -> BTreeMap<String, Instance> {
        self.list(&[Filter::new("instance-id", ids.iter().cloned())])
            .await
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect()
    }

    /// Polls until every instance of `ids` is in `state`.
    async fn wait_for(&self, ids: &[String], state: InstanceState) {
        let deadline = Instant::now() + self.settle_timeout();
        loop {
            let found = self.by_id(ids).await;
            let states: BTreeMap<&String, Option<InstanceState>> = ids
                .iter()
                .map(|id| (id, found.get(id).map(|i| i.state)))
                .collect();
            if states.values().all(|s| *s == Some(state)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{:?}: not all {} within {:?}: {states:?}{}",
                self.kind,
                state.as_str(),
                self.settle_timeout(),
                self.events(ids)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The process backend's events of `ids`, for failure messages.
    fn events(&self, ids: &[String]) -> String {
        let Some(backend) = &self._process else {
            return String::new();
        };
        let mut text = String::new();
        for id in ids {
            let events = backend.events(id).unwrap_or_default();
            text.push_str(&format!("\n{id}:"));
            for event in events {
                text.push_str(&format!("\n  {} {} {}", event.at, event.kind, event.detail));
            }
        }
        text
    }

    /// Terminates everything the check launched and waits until it is
    /// terminated; then stops the server.
    async fn clean_up(&self) {
        let launched: Vec<String> = self
            .launched
            .lock()
            .expect("launched")
            .iter()
            .cloned()
            .collect();
        if !launched.is_empty() {
            let live: Vec<String> = self
                .by_id(&launched)
                .await
                .into_values()
                .filter(|i| i.state != InstanceState::Terminated)
                .map(|i| i.id)
                .collect();
            if !live.is_empty() {
                self.provider()
                    .terminate_instances(&live)
                    .await
                    .unwrap_or_else(|e| panic!("{:?}: cleaning up: {e}", self.kind));
            }
            if self.kind == Kind::Process {
                self.wait_for(&launched, InstanceState::Terminated).await;
            }
        }
        let cloud = self.cloud.lock().expect("cloud").take();
        if let Some(cloud) = cloud {
            cloud.shutdown().await.expect("stopping the cloud");
        }
    }
}

fn ids(instances: &[Instance]) -> Vec<String> {
    let mut ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
    ids.sort();
    ids
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Runs one check against one target: starts the target, runs the check on
/// its own task (so a failed check still cleans up), terminates what it
/// launched, stops the server, then passes the check's panic on.
async fn run_check<F, Fut>(kind: Kind, check: F)
where
    F: FnOnce(Arc<Target>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _pass = crate::gate::enter("conformance");
    let target = Arc::new(Target::start(kind).await);
    let checked = tokio::spawn(check(target.clone())).await;
    let cleaner = target.clone();
    let cleaned = tokio::spawn(async move { cleaner.clean_up().await }).await;
    // The check's own failure first: a clean-up that failed after it is
    // most likely its consequence.
    if let (Err(_), Err(error)) = (&checked, &cleaned) {
        eprintln!("{kind:?}: the clean-up failed as well: {error}");
    }
    for result in [checked, cleaned] {
        if let Err(error) = result {
            match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(error) => panic!("the check did not finish: {error}"),
            }
        }
    }
    let findings = target.findings.lock().expect("findings").clone();
    assert!(
        findings.is_empty(),
        "{kind:?} does not behave as EC2 or as DIVERGENCES records:\n{}",
        findings.join("\n")
    );
}

// ---- the checks ----

/// RunInstances with a ClientToken, twice: EC2 answers the second call with
/// the first call's instances; with other parameters, it refuses.
async fn client_token(t: Arc<Target>) {
    let token = unique("tok");
    let tags = [("conformance", "client-token")];
    let request = t.launch_request(2, &tags, &token);
    let first = t.run(&request).await.expect("first launch");
    assert_eq!(first.len(), 2);
    let second = t.run(&request).await.expect("second launch");
    let same = if ids(&second) == ids(&first) {
        "the same instances"
    } else if ids(&second).iter().all(|id| !ids(&first).contains(id)) {
        "new instances"
    } else {
        "some of the same instances"
    };
    t.conform("client_token/same_parameters", "the same instances", same);

    let mut other = request.clone();
    other.count = 3;
    let mismatch = t.run(&other).await;
    t.conform(
        "client_token/different_parameters",
        "error IdempotentParameterMismatch",
        &outcome(&mismatch),
    );
    let mut other = request.clone();
    other.instance_type = "t3.small".to_string();
    let mismatch = t.run(&other).await;
    t.conform(
        "client_token/different_parameters",
        "error IdempotentParameterMismatch",
        &outcome(&mismatch),
    );
}

/// DescribeInstances by tag filter (one value, several values, a
/// wildcard), by the instance-id filter, and DescribeInstanceStatus by id.
async fn describe_by_tag_and_id(t: Arc<Target>) {
    let run = unique("run");
    let web = t.launch(2, &[("run", &run), ("role", "web")]).await;
    let worker = t.launch(1, &[("run", &run), ("role", "worker")]).await;
    let _other = t.launch(1, &[("run", "someone-else")]).await;
    let mut all: Vec<String> = web.iter().chain(&worker).cloned().collect();
    all.sort();

    let tagged = |role: &[&str]| {
        vec![
            Filter::tag("run", run.clone()),
            Filter::new("tag:role", role.iter().copied()),
        ]
    };
    assert_eq!(ids(&t.list(&tagged(&["web"])).await), web, "{:?}", t.kind);
    assert_eq!(ids(&t.list(&tagged(&["worker"])).await), worker);
    assert_eq!(ids(&t.list(&tagged(&["web", "worker"])).await), all);
    assert_eq!(ids(&t.list(&tagged(&["w*"])).await), all, "wildcard");
    assert!(t.list(&tagged(&["nobody"])).await.is_empty());
    assert!(t
        .list(&[Filter::tag("run", unique("nothing"))])
        .await
        .is_empty());
    let by_key = t
        .list(&[
            Filter::new("tag-key", ["role"]),
            Filter::tag("run", run.clone()),
        ])
        .await;
    assert_eq!(ids(&by_key), all, "tag-key");

    let found = t.by_id(&web[..1]).await;
    assert_eq!(found.keys().cloned().collect::<Vec<_>>(), web[..1].to_vec());
    let instance = &found[&web[0]];
    assert_eq!(instance.image_id, t.image_id);
    assert_eq!(instance.instance_type, "t3.micro");
    assert_eq!(instance.zone, "us-east-1a");
    assert_eq!(instance.tags.get("role").map(String::as_str), Some("web"));
    assert_eq!(instance.tags.get("run"), Some(&run));

    t.wait_for(&all, InstanceState::Running).await;
    let status = t
        .client
        .describe_instance_status(&DescribeInstanceStatusRequest {
            instance_ids: all.clone(),
            include_all_instances: Some(true),
            ..Default::default()
        })
        .await
        .expect("DescribeInstanceStatus by id");
    let mut status_ids: Vec<String> = status
        .statuses
        .iter()
        .map(|s| s.instance_id.clone())
        .collect();
    status_ids.sort();
    assert_eq!(status_ids, all);
    assert!(status.statuses.iter().all(|s| s.state.name == "running"));
}

/// Paging with a small page size: every instance exactly once, and pages
/// no larger than asked.
async fn paging(t: Arc<Target>) {
    let run = unique("page");
    let mut launched = Vec::new();
    for _ in 0..4 {
        launched.extend(t.launch(2, &[("run", &run)]).await);
    }
    launched.sort();
    let client = t.paged(5);
    let filters = [Filter::tag("run", run.clone())];
    let mut seen = Vec::new();
    let mut largest = 0;
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let (page, next) = client
            .describe_instances_page(&filters, token.as_deref())
            .await
            .expect("a page");
        pages += 1;
        largest = largest.max(page.len());
        seen.extend(page.into_iter().map(|i| i.id));
        match next {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => break,
        }
        assert!(pages <= 20, "{:?}: paging does not end", t.kind);
    }
    let mut once = seen.clone();
    once.sort();
    once.dedup();
    let every_once = if once.len() == seen.len() && once == launched {
        "every instance exactly once".to_string()
    } else {
        format!(
            "{} listed, {} distinct, of {}",
            seen.len(),
            once.len(),
            launched.len()
        )
    };
    t.conform(
        "paging/every_instance_once",
        "every instance exactly once",
        &every_once,
    );
    let sized = if largest <= 5 {
        "pages of at most 5 instances".to_string()
    } else {
        format!("a page of {largest} instances")
    };
    t.conform("paging/page_size", "pages of at most 5 instances", &sized);
    // The provider's own paging loop agrees.
    let (all, _) = endstate_provider::describe_all(&client, &filters)
        .await
        .expect("describe_all");
    assert_eq!(ids(&all), launched);
}

/// CreateTags adds and overwrites; DeleteTags by key removes; filters see
/// both at once.
async fn tags(t: Arc<Target>) {
    let run = unique("tags");
    let launched = t.launch(2, &[("run", &run)]).await;
    let provider = t.provider();
    let add: BTreeMap<String, String> = [("colour", "blue"), ("size", "small")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    provider
        .create_tags(&launched, &add)
        .await
        .expect("CreateTags");
    let found = t.by_id(&launched).await;
    for id in &launched {
        let tags = &found[id].tags;
        assert_eq!(
            tags.get("colour").map(String::as_str),
            Some("blue"),
            "{tags:?}"
        );
        assert_eq!(tags.get("size").map(String::as_str), Some("small"));
        assert_eq!(tags.get("run"), Some(&run));
    }
    let blue = t
        .list(&[
            Filter::tag("run", run.clone()),
            Filter::tag("colour", "blue"),
        ])
        .await;
    assert_eq!(ids(&blue), launched);

    let overwrite: BTreeMap<String, String> = [("colour".to_string(), "red".to_string())]
        .into_iter()
        .collect();
    provider
        .create_tags(&launched[..1], &overwrite)
        .await
        .expect("CreateTags overwrite");
    let red = t.list(&[Filter::tag("colour", "red")]).await;
    assert_eq!(ids(&red), launched[..1].to_vec());
    let blue = t.list(&[Filter::tag("colour", "blue")]).await;
    assert_eq!(ids(&blue), launched[1..].to_vec());

    provider
        .delete_tags(&launched, &["colour".to_string()])
        .await
        .expect("DeleteTags");
    let found = t.by_id(&launched).await;
    for id in &launched {
        let tags = &found[id].tags;
        assert!(!tags.contains_key("colour"), "{tags:?}");
        assert_eq!(tags.get("size").map(String::as_str), Some("small"));
    }
    assert!(t.list(&[Filter::tag("colour", "red")]).await.is_empty());
    assert!(t.list(&[Filter::tag("colour", "blue")]).await.is_empty());
}

/// What CreateTags and DeleteTags refuse, and what else they tag.
async fn tag_rules(t: Arc<Target>) {
    let run = unique("rules");
    let launched = t.launch(1, &[("run", &run)]).await;
    let provider = t.provider();

    // 50 tags per resource: the launch's one and 50 more are too many.
    let many: BTreeMap<String, String> = (0..50)
        .map(|n| (format!("key{n:02}"), n.to_string()))
        .collect();
    let over = provider.create_tags(&launched, &many).await;
    t.conform(
        "tag_rules/over_50",
        "error TagLimitExceeded",
        &outcome(&over),
    );
    let tags = &t.by_id(&launched).await[&launched[0]].tags;
    let kept = if tags.len() == 1 {
        "unchanged".to_string()
    } else {
        format!("{} tags", tags.len())
    };
    t.conform("tag_rules/over_50_changes_nothing", "unchanged", &kept);

    // Keys starting with aws: are AWS's own.
    let reserved: BTreeMap<String, String> = [("aws:owner".to_string(), "me".to_string())].into();
    let refused = provider.create_tags(&launched, &reserved).await;
    t.conform(
        "tag_rules/reserved_prefix",
        "error InvalidParameterValue",
        &outcome(&refused),
    );

    // CreateTags takes any taggable resource: an image, with an instance.
    let label: BTreeMap<String, String> = [("label".to_string(), run.clone())].into();
    let both = vec![launched[0].clone(), t.image_id.clone()];
    let tagged = provider.create_tags(&both, &label).await;
    t.conform("tag_rules/image_and_instance", "ok", &outcome(&tagged));
    if tagged.is_ok() {
        let image = provider
            .describe_images(std::slice::from_ref(&t.image_id))
            .await
            .expect("DescribeImages");
        assert_eq!(image[0].tags.get("label"), Some(&run), "{image:?}");
        provider
            .delete_tags(&both, &["label".to_string()])
            .await
            .expect("DeleteTags on the image and the instance");
    }
}

/// The instances of run `run` that `filter` also selects, or the error.
/// Outcomes name the expected sets (`launched` is "the running
/// instances", its first "the first instance") so that they read the same
/// on every target.
async fn filtered(t: &Target, run: &str, launched: &[String], filter: Filter) -> String {
    let result =
        endstate_provider::describe_all(t.provider(), &[Filter::tag("run", run), filter]).await;
    match result {
        Ok((instances, _)) if ids(&instances) == launched => "the running instances".to_string(),
        Ok((instances, _)) if ids(&instances) == launched[..1] => "the first instance".to_string(),
        Ok((instances, _)) => format!("{:?}", ids(&instances)),
        Err(e) => outcome::<()>(&Err(e)),
    }
}

/// DescribeInstances filters EC2 documents beyond tags and ids.
async fn filters(t: Arc<Target>) {
    let run = unique("filters");
    let launched = t.launch(2, &[("run", &run)]).await;
    t.wait_for(&launched, InstanceState::Running).await;
    let first = &t.by_id(&launched).await[&launched[0]];
    // Filters that every instance of the run matches.
    for (check, filter) in [
        (
            "filters/instance_state_code",
            Filter::new("instance-state-code", ["16"]),
        ),
        (
            "filters/instance_state_name",
            Filter::new("instance-state-name", ["running"]),
        ),
        (
            "filters/instance_type",
            Filter::new("instance-type", ["t3.micro"]),
        ),
        (
            "filters/availability_zone",
            Filter::new("availability-zone", ["us-east-1a"]),
        ),
        (
            "filters/image_id",
            Filter::new("image-id", [t.image_id.clone()]),
        ),
    ] {
        t.conform(
            check,
            "the running instances",
            &filtered(&t, &run, &launched, filter).await,
        );
    }
    let ip = first.private_ip.clone().expect("a private address");
    t.conform(
        "filters/private_ip_address",
        "the first instance",
        &filtered(&t, &run, &launched, Filter::new("private-ip-address", [ip])).await,
    );
    t.conform(
        "filters/unknown_name",
        "error InvalidParameterValue",
        &filtered(&t, &run, &launched, Filter::new("colour", ["blue"])).await,
    );
}

/// TerminateInstances: the answer, the end state, and what listings show
/// of terminated instances afterwards.
async fn terminate(t: Arc<Target>) {
    let run = unique("term");
    let launched = t.launch(2, &[("run", &run)]).await;
    t.wait_for(&launched, InstanceState::Running).await;
    let changes = t
        .provider()
        .terminate_instances(&launched)
        .await
        .expect("TerminateInstances");
    let mut changed: Vec<String> = changes.iter().map(|(id, _)| id.clone()).collect();
    changed.sort();
    assert_eq!(changed, launched);
    for (id, state) in &changes {
        assert!(
            matches!(
                state,
                InstanceState::ShuttingDown | InstanceState::Terminated
            ),
            "{:?}: {id} is {state:?} after TerminateInstances",
            t.kind
        );
    }
    t.wait_for(&launched, InstanceState::Terminated).await;

    // EC2 keeps terminated instances in DescribeInstances for about an
    // hour, filtered listings included.
    let listed = t.list(&[Filter::tag("run", run.clone())]).await;
    let shown = if listed.is_empty() {
        "gone".to_string()
    } else if ids(&listed) == launched
        && listed.iter().all(|i| i.state == InstanceState::Terminated)
    {
        "listed as terminated".to_string()
    } else {
        format!("{listed:?}")
    };
    t.conform("terminate/filtered_listing", "listed as terminated", &shown);
    let live = t
        .list(&[
            Filter::tag("run", run.clone()),
            Filter::new("instance-state-name", ["pending", "running"]),
        ])
        .await;
    assert!(live.is_empty(), "{live:?}");

    // Terminating a terminated instance is no error, and says so.
    let again = t.provider().terminate_instances(&launched[..1]).await;
    let again = match &again {
        Ok(changes) => format!(
            "ok, {}",
            changes
                .iter()
                .map(|(_, state)| state.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Err(_) => outcome(&again),
    };
    t.conform("terminate/again", "ok, terminated", &again);
}

/// Well-formed ids that name nothing.
async fn unknown_ids(t: Arc<Target>) {
    let unknown = vec!["i-0123456789abcdef0".to_string()];
    let provider = t.provider();
    let not_found = "error InvalidInstanceID.NotFound";
    t.conform(
        "unknown_ids/terminate",
        not_found,
        &outcome(&provider.terminate_instances(&unknown).await),
    );
    let tags: BTreeMap<String, String> = [("a".to_string(), "b".to_string())].into();
    t.conform(
        "unknown_ids/create_tags",
        not_found,
        &outcome(&provider.create_tags(&unknown, &tags).await),
    );
    t.conform(
        "unknown_ids/delete_tags",
        not_found,
        &outcome(&provider.delete_tags(&unknown, &["a".to_string()]).await),
    );
    let status = t
        .client
        .describe_instance_status(&DescribeInstanceStatusRequest {
            instance_ids: unknown.clone(),
            include_all_instances: Some(true),
            ..Default::default()
        })
        .await;
    t.conform("unknown_ids/describe_status", not_found, &outcome(&status));
    t.conform(
        "unknown_ids/console_output",
        not_found,
        &outcome(&t.client.console_output(&unknown[0]).await),
    );
    // A filter on an id that names nothing is an empty answer, not an error.
    let filtered = provider
        .describe_instances_page(&[Filter::new("instance-id", unknown.clone())], None)
        .await
        .map(|(page, _)| page.len());
    let filtered = match filtered {
        Ok(0) => "no instances".to_string(),
        other => format!("{other:?}"),
    };
    t.conform("unknown_ids/filter", "no instances", &filtered);
}

/// Ids that are not instance ids at all.
async fn malformed_ids(t: Arc<Target>) {
    let malformed = vec!["i-nothex!".to_string()];
    let provider = t.provider();
    let error = "error InvalidInstanceID.Malformed";
    t.conform(
        "malformed_ids/terminate",
        error,
        &outcome(&provider.terminate_instances(&malformed).await),
    );
    let status = t
        .client
        .describe_instance_status(&DescribeInstanceStatusRequest {
            instance_ids: malformed.clone(),
            include_all_instances: Some(true),
            ..Default::default()
        })
        .await;
    t.conform("malformed_ids/describe_status", error, &outcome(&status));
    let tags: BTreeMap<String, String> = [("a".to_string(), "b".to_string())].into();
    // CreateTags checks ids against every resource type's pattern: one
    // that matches none is no resource id at all, i- or not.
    t.conform(
        "malformed_ids/create_tags",
        "error InvalidID",
        &outcome(&provider.create_tags(&malformed, &tags).await),
    );
    // Not a resource id of any kind.
    t.conform(
        "malformed_ids/create_tags_not_a_resource",
        "error InvalidID",
        &outcome(&provider.create_tags(&["bogus".to_string()], &tags).await),
    );
}

/// DescribeImages of a known, an unknown and a malformed image id.
async fn images(t: Arc<Target>) {
    let provider = t.provider();
    let known = provider
        .describe_images(std::slice::from_ref(&t.image_id))
        .await
        .expect("DescribeImages of the target's image");
    assert_eq!(known.len(), 1, "{known:?}");
    assert_eq!(known[0].id, t.image_id);
    assert_eq!(known[0].state, "available");
    t.conform(
        "images/unknown",
        "error InvalidAMIID.NotFound",
        &outcome(
            &provider
                .describe_images(&["ami-0123456789abcdef0".to_string()])
                .await,
        ),
    );
    t.conform(
        "images/malformed",
        "error InvalidAMIID.Malformed",
        &outcome(
            &provider
                .describe_images(&["not-an-image".to_string()])
                .await,
        ),
    );
}

/// DescribeAvailabilityZones: the region's zones, named after it.
async fn availability_zones(t: Arc<Target>) {
    let zones = t
        .provider()
        .describe_availability_zones()
        .await
        .expect("DescribeAvailabilityZones");
    assert!(zones.len() >= 2, "{:?}: {zones:?}", t.kind);
    let distinct: BTreeSet<&String> = zones.iter().collect();
    assert_eq!(distinct.len(), zones.len(), "{zones:?}");
    for zone in &zones {
        let suffix = zone
            .strip_prefix("us-east-1")
            .unwrap_or_else(|| panic!("{:?}: {zone} is not a zone of us-east-1", t.kind));
        assert!(
            suffix.len() == 1 && suffix.chars().all(|c| c.is_ascii_lowercase()),
            "{zone}"
        );
    }
    assert!(zones.iter().any(|z| z == "us-east-1a"), "{zones:?}");
}

/// One test per check and target: `conformance <check>::<target>`.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        $(
            mod $check {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn moto() {
                    run_check(Kind::Moto, super::$check).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn simulated() {
                    run_check(Kind::Simulated, super::$check).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn process() {
                    run_check(Kind::Process, super::$check).await;
                }
            }
        )*

        /// The table is well formed: every entry names a case a check
        /// exercises, once, and says why.
        #[test]
        fn divergence_table_is_well_formed() {
            let mut seen = BTreeSet::new();
            for d in DIVERGENCES {
                assert!(!d.targets.is_empty(), "{d:?} names no target");
                for target in d.targets {
                    assert!(seen.insert((format!("{target:?}"), d.case)), "{d:?} is listed twice");
                }
                assert_ne!(d.ec2, d.observed, "{d:?} is no divergence");
                assert!(!d.why.is_empty(), "{d:?} says not why");
                let check = d.case.split('/').next().unwrap_or_default();
                assert!(
                    [$(stringify!($check)),*].contains(&check),
                    "{d:?} names no check"
                );
            }
        }
    };
}

conformance!(
    client_token,
    describe_by_tag_and_id,
    paging,
    tags,
    tag_rules,
    filters,
    terminate,
    unknown_ids,
    malformed_ids,
    images,
    availability_zones,
);
