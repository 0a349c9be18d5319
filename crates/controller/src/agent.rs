//! The server side of `endstate agent`, the pull model of configuration
//! management: single-use nonces, sessions opened by an instance's proof
//! of identity, the instance ↔ agent binding made on first use, and the
//! check-in schedule. The controller asks it; the HTTP handlers never
//! decide anything about agents themselves.
//!
//! The proof an agent shows (`POST /v1/agent/session`):
//! - the identity document and its detached signature, fetched from the
//!   instance metadata service (`instance-identity/document`, `/signature`);
//! - a nonce this service issued (single use, 60 s), and the metadata
//!   service's signature of that nonce with the instance id
//!   (`instance-identity/nonce/<nonce>`, an endstate path): only a process
//!   of the instance can obtain it, so a copied document alone — or a
//!   replayed proof — opens nothing;
//! - an agent key (random, kept by the agent 0600): the first session of
//!   an instance binds its hash to the instance, and later sessions must
//!   show the same key. The binding lasts until the controller observes
//!   the instance terminated or gone ([`AgentService::prune_bindings`]).
//!
//! An instance may hold several sessions at once (up to
//! [`MAX_SESSIONS_PER_INSTANCE`]: several processes of one instance may
//! watch), each opened by its own proof; the oldest goes first.
//!
//! All of it is verified with the cloud's Ed25519 public key
//! ([`crate::Options::agent_identity_key`]). Tokens and agent keys are kept
//! as SHA-256 hashes only. Not here: which group an instance is in and
//! what its roles are (the controller's observation and spec), HTTP.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::api::types::{AgentSessionRequest, AgentSessionResponse, NonceResponse};

/// How long a nonce may be used.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(60);
/// At most this many nonces wait to be used; the oldest go first.
const MAX_OPEN_NONCES: usize = 100_000;
/// At most this many sessions per instance; a newer one ends the oldest,
/// so an agent that re-authenticates often leaves at most this many behind.
pub const MAX_SESSIONS_PER_INSTANCE: usize = 16;
/// The key under which the bindings persist among the groups' states (not
/// a group name: group names are DNS-like).
pub const BINDINGS_STATE_KEY: &str = "@agents";

/// Why an agent's request is refused. Each maps to an HTTP status in
/// [`AgentRefusal::status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentRefusal {
    /// 401: the proof or the token does not hold.
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: a valid instance that may not have configuration (not in a
    /// group with roles, terminated, bound to another agent).
    #[error("{0}")]
    Forbidden(String),
    /// 404: this controller does not serve agents (no identity key).
    #[error("{0}")]
    NotServed(String),
    /// 503: the instance is not observed yet; try again later.
    #[error("{0}")]
    Unavailable(String),
    /// 500.
    #[error("{0}")]
    Internal(String),
}

impl AgentRefusal {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            AgentRefusal::Unauthenticated(_) => 401,
            AgentRefusal::Forbidden(_) => 403,
            AgentRefusal::NotServed(_) => 404,
            AgentRefusal::Unavailable(_) => 503,
            AgentRefusal::Internal(_) => 500,
        }
    }

    /// The refusal of a controller that serves no agents.
    pub fn not_served() -> AgentRefusal {
        AgentRefusal::NotServed(
            "this controller serves no agents: it has no identity key of the cloud (see `endstate serve`)".into(),
        )
    }
}

/// Where an instance is, as the controller observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub group: String,
    /// EC2's state name.
    pub state: String,
    /// The group lists roles.
    pub has_roles: bool,
}

/// Nonces, sessions and bindings.
#[derive(Debug)]
pub struct AgentService {
    public_key: Option<[u8; 32]>,
    check_in: Duration,
    /// nonce → when it expires (clock time).
    nonces: Mutex<HashMap<String, Duration>>,
    sessions: Mutex<Sessions>,
    /// instance id → SHA-256 of its agent's key (hex).
    bindings: Mutex<BTreeMap<String, String>>,
    /// Taken while the bindings are written to the store (see
    /// [`AgentService::persist_bindings`]).
    persisting: tokio::sync::Mutex<()>,
}

/// Open sessions, by token and by instance.
#[derive(Debug, Default)]
struct Sessions {
    /// SHA-256 of a token (hex) → the instance it speaks for.
    by_token: HashMap<String, String>,
    /// instance id → its sessions' token hashes, oldest first.
    by_instance: HashMap<String, VecDeque<String>>,
}

impl Sessions {
    /// Adds `token_hash` for `instance`, ending its oldest sessions beyond
    /// [`MAX_SESSIONS_PER_INSTANCE`].
    fn open(&mut self, instance: &str, token_hash: String) {
        let tokens = self.by_instance.entry(instance.to_string()).or_default();
        while tokens.len() >= MAX_SESSIONS_PER_INSTANCE {
            if let Some(oldest) = tokens.pop_front() {
                self.by_token.remove(&oldest);
            }
        }
        tokens.push_back(token_hash.clone());
        self.by_token.insert(token_hash, instance.to_string());
    }

    fn end(&mut self, instance: &str) {
        for token in self.by_instance.remove(instance).unwrap_or_default() {
            self.by_token.remove(&token);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn random_token(bytes: usize) -> Result<String, AgentRefusal> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer)
        .map_err(|e| AgentRefusal::Internal(format!("no randomness for a token: {e}")))?;
    Ok(hex::encode(buffer))
}

/// The delay until `instance`'s next check-in: `base` ± 20%, spread by a
/// hash of the instance id and `round`, so agents restarted together
/// check in spread over 40% of the period, not at once.
pub fn check_in_delay(instance: &str, round: &str, base: Duration) -> Duration {
    base.mul_f64(0.8 + 0.4 * spread(instance, round))
}

/// A number in [0, 1], uniform over instance ids, fixed per instance and
/// round: where in a window this instance acts.
pub fn spread(instance: &str, round: &str) -> f64 {
    let digest = Sha256::digest(format!("{instance}\n{round}").as_bytes());
    f64::from(u16::from_be_bytes([digest[0], digest[1]])) / f64::from(u16::MAX)
}

impl AgentService {
    /// A service verifying with `public_key` (none: agents are refused),
    /// assigning check-ins around `check_in`, with the `bindings` persisted
    /// earlier.
    pub fn new(
        public_key: Option<[u8; 32]>,
        check_in: Duration,
        bindings: BTreeMap<String, String>,
    ) -> AgentService {
        AgentService {
            public_key,
            check_in,
            nonces: Mutex::new(HashMap::new()),
            sessions: Mutex::new(Sessions::default()),
            bindings: Mutex::new(bindings),
            persisting: tokio::sync::Mutex::new(()),
        }
    }

    fn key(&self) -> Result<&[u8; 32], AgentRefusal> {
        self.public_key
            .as_ref()
            .ok_or_else(AgentRefusal::not_served)
    }

    /// A fresh nonce, valid until `now` + [`NONCE_LIFETIME`].
    pub fn nonce(&self, now: Duration) -> Result<NonceResponse, AgentRefusal> {
        self.key()?;
        let nonce = random_token(24)?;
        let mut nonces = lock(&self.nonces);
        nonces.retain(|_, expires| *expires > now);
        if nonces.len() >= MAX_OPEN_NONCES {
            if let Some(oldest) = nonces
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(n, _)| n.clone())
            {
                nonces.remove(&oldest);
            }
        }
        nonces.insert(nonce.clone(), now + NONCE_LIFETIME);
        Ok(NonceResponse {
            nonce,
            expires_in_seconds: NONCE_LIFETIME.as_secs(),
        })
    }

    /// Checks `request`'s proof (consuming its nonce whatever the outcome)
    /// and returns the instance id it proves.
    pub fn verify_proof(
        &self,
        request: &AgentSessionRequest,
        now: Duration,
    ) -> Result<String, AgentRefusal> {
        let key = self.key()?;
        let fresh = lock(&self.nonces)
            .remove(&request.nonce)
            .is_some_and(|expires| expires > now);
        if !fresh {
            return Err(AgentRefusal::Unauthenticated(
                "nonce: unknown, already used or expired; ask POST /v1/agent/nonce for another"
                    .into(),
            ));
        }
        endstate_imds::verify(request.document.as_bytes(), &request.signature, key).map_err(
            |e| AgentRefusal::Unauthenticated(format!("signature: the identity document {e}")),
        )?;
        let document: serde_json::Value = serde_json::from_str(&request.document)
            .map_err(|e| AgentRefusal::Unauthenticated(format!("document: not JSON: {e}")))?;
        let instance = document
            .get("instanceId")
            .and_then(|v| v.as_str())
            .ok_or_else(|| AgentRefusal::Unauthenticated("document: no instanceId".to_string()))?
            .to_string();
        endstate_imds::verify_nonce(&instance, &request.nonce, &request.nonce_signature, key)
            .map_err(|e| {
                AgentRefusal::Unauthenticated(format!(
                    "nonce_signature: not the metadata service's signature of this nonce for {instance}: {e}"
                ))
            })?;
        Ok(instance)
    }

    /// Opens a session for `instance` (proved by [`Self::verify_proof`]),
    /// placed as `placement`, binding it to `agent_key` on first use.
    /// Returns the session and, when the bindings changed, all of them to
    /// persist.
    #[allow(clippy::type_complexity)]
    pub fn open_session(
        &self,
        instance: &str,
        agent_key: &str,
        placement: Option<&Placement>,
    ) -> Result<(AgentSessionResponse, Option<BTreeMap<String, String>>), AgentRefusal> {
        let placement = admit(instance, placement)?;
        if agent_key.len() < 32 {
            return Err(AgentRefusal::Unauthenticated(
                "agent_key: at least 32 characters".into(),
            ));
        }
        let key_hash = sha256_hex(agent_key);
        let changed = {
            let mut bindings = lock(&self.bindings);
            match bindings.get(instance) {
                Some(bound) if *bound != key_hash => {
                    return Err(AgentRefusal::Forbidden(format!(
                        "instance {instance} is bound to another agent (bound on its first session)"
                    )))
                }
                Some(_) => None,
                None => {
                    bindings.insert(instance.to_string(), key_hash);
                    Some(bindings.clone())
                }
            }
        };
        let token = random_token(32)?;
        lock(&self.sessions).open(instance, sha256_hex(&token));
        Ok((
            AgentSessionResponse {
                token,
                instance_id: instance.to_string(),
                group: placement.group.clone(),
            },
            changed,
        ))
    }

    /// Writes the bindings with `write`, one writer at a time, each with
    /// the bindings as they are when its turn comes: the last write holds
    /// the newest, whatever order binding and pruning ran in.
    pub async fn persist_bindings<F, E>(
        &self,
        write: impl FnOnce(BTreeMap<String, String>) -> F,
    ) -> Result<(), E>
    where
        F: std::future::Future<Output = Result<(), E>>,
    {
        let _turn = self.persisting.lock().await;
        write(self.bindings()).await
    }

    /// The instance `token` speaks for.
    pub fn instance_of(&self, token: &str) -> Result<String, AgentRefusal> {
        lock(&self.sessions)
            .by_token
            .get(&sha256_hex(token))
            .cloned()
            .ok_or_else(|| {
                AgentRefusal::Unauthenticated(
                    "the agent token is not valid (open a session: POST /v1/agent/session)".into(),
                )
            })
    }

    /// Ends every session of `instance` (it terminated, or left its group).
    pub fn end_sessions(&self, instance: &str) {
        lock(&self.sessions).end(instance);
    }

    /// Forgets the binding (and ends the sessions) of every bound instance
    /// that `observed` does not hold: terminated, or absent from a complete
    /// observation of the project. Returns the instances unbound: when
    /// there are any, the bindings changed and are to be persisted.
    pub fn prune_bindings(&self, observed: impl Fn(&str) -> bool) -> Vec<String> {
        let gone: Vec<String> = {
            let mut bindings = lock(&self.bindings);
            let gone: Vec<String> = bindings
                .keys()
                .filter(|instance| !observed(instance))
                .cloned()
                .collect();
            for instance in &gone {
                bindings.remove(instance);
            }
            gone
        };
        let mut sessions = lock(&self.sessions);
        for instance in &gone {
            sessions.end(instance);
        }
        gone
    }

    /// The bindings now: instance id → SHA-256 of its agent's key (hex).
    pub fn bindings(&self) -> BTreeMap<String, String> {
        lock(&self.bindings).clone()
    }

    /// How long to hold `instance`'s long poll: 75% to 100% of `limit`,
    /// by a hash of the instance id, so agents that started together (a
    /// restarted server's) do not all ask again at the same moment.
    pub fn hold(&self, instance: &str, limit: Duration) -> Duration {
        limit.mul_f64(0.75 + 0.25 * spread(instance, "hold"))
    }

    /// When `instance` should check in next, for configuration `version`.
    pub fn check_in(&self, instance: &str, version: &str) -> Duration {
        check_in_delay(instance, version, self.check_in)
    }
}

/// `placement` if an instance there may have configuration.
pub fn admit<'p>(
    instance: &str,
    placement: Option<&'p Placement>,
) -> Result<&'p Placement, AgentRefusal> {
    let placement = placement.ok_or_else(|| {
        AgentRefusal::Unavailable(format!(
            "instance {instance} is in no group this controller has observed (yet)"
        ))
    })?;
    if matches!(
        placement.state.as_str(),
        "terminated" | "shutting-down" | "stopping" | "stopped"
    ) {
        return Err(AgentRefusal::Forbidden(format!(
            "instance {instance} is {}",
            placement.state
        )));
    }
    if !placement.has_roles {
        return Err(AgentRefusal::Forbidden(format!(
            "instance {instance}'s group {} lists no roles",
            placement.group
        )));
    }
    Ok(placement)
}

/// The configuration of `group` in `spec`: its roles hash and its roles
/// in the order it lists them, secrets resolved. Only `group`'s roles:
/// another group's never travel to this instance.
#[allow(clippy::type_complexity)]
pub fn group_roles(
    spec: &endstate_model::Spec,
    group: &str,
) -> Result<(String, Vec<endstate_config::Role>, Vec<String>), AgentRefusal> {
    let group = spec
        .groups
        .iter()
        .find(|g| g.name == group)
        .ok_or_else(|| AgentRefusal::Forbidden(format!("group {group} is not in the spec")))?;
    if group.roles.is_empty() {
        return Err(AgentRefusal::Forbidden(format!(
            "group {} lists no roles",
            group.name
        )));
    }
    let mut roles = Vec::with_capacity(group.roles.len());
    let mut secrets = Vec::new();
    for name in &group.roles {
        let role = spec.roles.get(name).ok_or_else(|| {
            AgentRefusal::Internal(format!(
                "group {}: role {name} is not in the spec",
                group.name
            ))
        })?;
        let (resolved, _) = endstate_model::roles::resolve_secrets(role).map_err(|e| {
            AgentRefusal::Internal(format!("group {}: role {name}: {e}", group.name))
        })?;
        roles.push(resolved);
        // The values resolve_secrets just put in (the engine's Secrets
        // does not hand its values out).
        for secret in endstate_model::roles::role_secrets(role) {
            let value = endstate_model::resolve_secret(&secret).map_err(|e| {
                AgentRefusal::Internal(format!("group {}: role {name}: {e}", group.name))
            })?;
            secrets.push(value);
        }
    }
    Ok((group.roles_hash(&spec.roles), roles, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use endstate_imds::Signer;

    const DOCUMENT: &str = "{\n  \"instanceId\" : \"i-1\"\n}";
    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn service(signer: &Signer) -> AgentService {
        AgentService::new(
            Some(signer.public_key_bytes()),
            Duration::from_secs(60),
            BTreeMap::new(),
        )
    }

    fn proof(signer: &Signer, nonce: &str) -> AgentSessionRequest {
        AgentSessionRequest {
            document: DOCUMENT.into(),
            signature: signer.sign(DOCUMENT.as_bytes()),
            nonce: nonce.into(),
            nonce_signature: signer.sign_nonce("i-1", nonce),
            agent_key: KEY.into(),
        }
    }

    fn placed(group: &str) -> Placement {
        Placement {
            group: group.into(),
            state: "running".into(),
            has_roles: true,
        }
    }

    #[test]
    fn a_nonce_is_single_use_and_expires() {
        let signer = Signer::generate().unwrap();
        let agents = service(&signer);
        let now = Duration::from_secs(1000);
        let nonce = agents.nonce(now).unwrap().nonce;
        assert_eq!(
            agents.verify_proof(&proof(&signer, &nonce), now).unwrap(),
            "i-1"
        );
        // The same proof again: the nonce is spent.
        assert!(matches!(
            agents.verify_proof(&proof(&signer, &nonce), now),
            Err(AgentRefusal::Unauthenticated(_))
        ));
        let late = agents.nonce(now).unwrap().nonce;
        assert!(agents
            .verify_proof(&proof(&signer, &late), now + NONCE_LIFETIME)
            .is_err());
    }

    #[test]
    fn a_copied_document_without_the_instances_nonce_signature_is_refused() {
        let signer = Signer::generate().unwrap();
        let agents = service(&signer);
        let now = Duration::from_secs(1000);
        // An old nonce signature of the instance (seen once) does not sign
        // a new nonce.
        let old = agents.nonce(now).unwrap().nonce;
        let copied = proof(&signer, &old);
        let fresh = agents.nonce(now).unwrap().nonce;
        let replay = AgentSessionRequest {
            nonce: fresh.clone(),
            ..copied.clone()
        };
        assert!(matches!(
            agents.verify_proof(&replay, now),
            Err(AgentRefusal::Unauthenticated(m)) if m.starts_with("nonce_signature")
        ));
        // Another key's signatures do not verify.
        let other = Signer::generate().unwrap();
        let nonce = agents.nonce(now).unwrap().nonce;
        assert!(agents.verify_proof(&proof(&other, &nonce), now).is_err());
        // A changed document does not verify.
        let nonce = agents.nonce(now).unwrap().nonce;
        let mut forged = proof(&signer, &nonce);
        forged.document = DOCUMENT.replace("i-1", "i-2");
        assert!(agents.verify_proof(&forged, now).is_err());
    }

    #[test]
    fn first_use_binds_the_instance_to_its_agent() {
        let signer = Signer::generate().unwrap();
        let agents = service(&signer);
        let (session, changed) = agents
            .open_session("i-1", KEY, Some(&placed("web")))
            .unwrap();
        assert_eq!(session.group, "web");
        assert_eq!(changed.unwrap().get("i-1"), Some(&sha256_hex(KEY)));
        let (again, unchanged) = agents
            .open_session("i-1", KEY, Some(&placed("web")))
            .unwrap();
        assert!(unchanged.is_none());
        // Both sessions speak for the instance (several of its processes
        // may watch).
        assert_eq!(agents.instance_of(&session.token).unwrap(), "i-1");
        assert_eq!(agents.instance_of(&again.token).unwrap(), "i-1");
        let thief = "ffffffffffffffffffffffffffffffffff";
        assert!(matches!(
            agents.open_session("i-1", thief, Some(&placed("web"))),
            Err(AgentRefusal::Forbidden(_))
        ));
    }

    #[test]
    fn an_instance_holds_a_bounded_number_of_sessions_oldest_ended_first() {
        let signer = Signer::generate().unwrap();
        let agents = service(&signer);
        let tokens: Vec<String> = (0..MAX_SESSIONS_PER_INSTANCE + 2)
            .map(|_| {
                agents
                    .open_session("i-1", KEY, Some(&placed("web")))
                    .unwrap()
                    .0
                    .token
            })
            .collect();
        let (other, _) = agents
            .open_session("i-2", KEY, Some(&placed("web")))
            .unwrap();
        // The two oldest of i-1's ended; the rest, and i-2's, hold.
        assert!(agents.instance_of(&tokens[0]).is_err());
        assert!(agents.instance_of(&tokens[1]).is_err());
        for token in &tokens[2..] {
            assert_eq!(agents.instance_of(token).unwrap(), "i-1");
        }
        assert_eq!(agents.instance_of(&other.token).unwrap(), "i-2");
        agents.end_sessions("i-1");
        assert!(tokens.iter().all(|t| agents.instance_of(t).is_err()));
        assert_eq!(agents.instance_of(&other.token).unwrap(), "i-2");
    }

    #[test]
    fn bindings_of_instances_no_longer_observed_are_pruned() {
        let signer = Signer::generate().unwrap();
        let agents = service(&signer);
        let (gone_session, _) = agents
            .open_session("i-gone", KEY, Some(&placed("web")))
            .unwrap();
        let (kept_session, _) = agents
            .open_session("i-kept", KEY, Some(&placed("web")))
            .unwrap();
        let unbound = agents.prune_bindings(|id| id == "i-kept");
        assert_eq!(unbound, ["i-gone"]);
        assert_eq!(agents.bindings().keys().collect::<Vec<_>>(), ["i-kept"]);
        // Its sessions ended with the binding; the kept instance's hold.
        assert!(agents.instance_of(&gone_session.token).is_err());
        assert_eq!(agents.instance_of(&kept_session.token).unwrap(), "i-kept");
        // Nothing more to prune: nothing to persist.
        assert!(agents.prune_bindings(|id| id == "i-kept").is_empty());
        // An id reused by a new instance binds afresh, to any key.
        let other = "ffffffffffffffffffffffffffffffffff";
        let (_, changed) = agents
            .open_session("i-gone", other, Some(&placed("web")))
            .unwrap();
        assert_eq!(changed.unwrap().get("i-gone"), Some(&sha256_hex(other)));
    }

    #[test]
    fn persisted_bindings_hold_after_a_restart() {
        let signer = Signer::generate().unwrap();
        let bound = [("i-1".to_string(), sha256_hex(KEY))].into_iter().collect();
        let agents = AgentService::new(
            Some(signer.public_key_bytes()),
            Duration::from_secs(60),
            bound,
        );
        let thief = "ffffffffffffffffffffffffffffffffff";
        assert!(agents
            .open_session("i-1", thief, Some(&placed("web")))
            .is_err());
        let (_, changed) = agents
            .open_session("i-1", KEY, Some(&placed("web")))
            .unwrap();
        assert!(changed.is_none());
    }

    #[test]
    fn long_polls_are_held_75_to_100_percent_of_the_limit() {
        let agents = AgentService::new(None, Duration::from_secs(60), BTreeMap::new());
        let limit = Duration::from_secs(30);
        let holds: Vec<Duration> = (0..200)
            .map(|i| agents.hold(&format!("i-{i}"), limit))
            .collect();
        assert!(holds
            .iter()
            .all(|h| *h >= limit.mul_f64(0.75) && *h <= limit));
        assert!(holds.iter().any(|h| *h < limit.mul_f64(0.8)));
        assert!(holds.iter().any(|h| *h > limit.mul_f64(0.95)));
    }

    #[test]
    fn tokens_are_scoped_to_their_instance() {
        let signer = Signer::generate().unwrap();
        let agents = service(&signer);
        let (one, _) = agents
            .open_session("i-1", KEY, Some(&placed("web")))
            .unwrap();
        let (two, _) = agents
            .open_session("i-2", KEY, Some(&placed("db")))
            .unwrap();
        assert_eq!(agents.instance_of(&one.token).unwrap(), "i-1");
        assert_eq!(agents.instance_of(&two.token).unwrap(), "i-2");
        assert!(agents.instance_of("made-up").is_err());
        agents.end_sessions("i-1");
        assert!(agents.instance_of(&one.token).is_err());
        assert!(agents.instance_of(&two.token).is_ok());
    }

    #[test]
    fn instances_without_roles_or_alive_are_refused() {
        let terminated = Placement {
            state: "terminated".into(),
            ..placed("web")
        };
        let bare = Placement {
            has_roles: false,
            ..placed("web")
        };
        assert!(matches!(
            admit("i-1", Some(&terminated)),
            Err(AgentRefusal::Forbidden(_))
        ));
        assert!(matches!(
            admit("i-1", Some(&bare)),
            Err(AgentRefusal::Forbidden(_))
        ));
        assert!(matches!(
            admit("i-1", None),
            Err(AgentRefusal::Unavailable(_))
        ));
    }

    #[test]
    fn check_ins_spread_within_twenty_percent() {
        let base = Duration::from_secs(60);
        let delays: Vec<Duration> = (0..1000)
            .map(|i| check_in_delay(&format!("i-{i:017x}"), "v1", base))
            .collect();
        assert!(delays
            .iter()
            .all(|d| *d >= base.mul_f64(0.8) && *d <= base.mul_f64(1.2)));
        // Spread over the 24 one-second buckets of 48 s to 72 s: none holds
        // twice its share (42).
        let mut buckets = BTreeMap::new();
        for d in &delays {
            *buckets.entry(d.as_secs()).or_insert(0) += 1;
        }
        assert!(buckets.values().all(|n| *n < 84), "{buckets:?}");
        assert!(buckets.len() >= 24, "{buckets:?}");
    }

    #[test]
    fn only_the_groups_own_roles_are_served() {
        let yaml = "\
project: p
provider:
  aws:
    region: us-east-1
roles:
  web:
    resources:
      - { kind: file, name: web, path: /etc/web, content: web }
  db:
    resources:
      - { kind: file, name: db, path: /etc/db, content: secret-db }
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    roles: [web]
  db:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
    roles: [db]
  bare:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 1, desired: 1, max: 1 }
    zones: [us-east-1a]
";
        let spec = endstate_model::load_str(
            yaml,
            std::path::Path::new("spec.yaml"),
            std::path::Path::new("/nonexistent"),
            None,
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let (version, roles, secrets) = group_roles(&spec, "web").unwrap();
        assert!(secrets.is_empty());
        let served = serde_json::to_string(&roles).unwrap();
        assert!(served.contains("/etc/web"), "{served}");
        assert!(!served.contains("secret-db"), "{served}");
        assert_eq!(roles.len(), 1);
        assert_ne!(version, group_roles(&spec, "db").unwrap().0);
        assert!(matches!(
            group_roles(&spec, "bare"),
            Err(AgentRefusal::Forbidden(_))
        ));
        assert!(matches!(
            group_roles(&spec, "gone"),
            Err(AgentRefusal::Forbidden(_))
        ));
    }

    #[test]
    fn no_key_serves_no_agents() {
        let agents = AgentService::new(None, Duration::from_secs(60), BTreeMap::new());
        assert!(matches!(
            agents.nonce(Duration::ZERO),
            Err(AgentRefusal::NotServed(_))
        ));
    }
}
