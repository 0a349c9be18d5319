//! The spec loader: YAML text to a validated [`Spec`]. It parses with
//! `marked-yaml` so that every node keeps its position, overlays the chosen
//! environment on the marked tree (so errors still point where a value was
//! written), interpolates `${var.*}` / `${secret.*}`, and validates, collecting
//! every problem instead of stopping at the first. The `roles:` section
//! (and [`load_roles`], a roles file on its own) is in [`role_section`],
//! the `recipes:` section and a group's `image: RECIPE@CHANNEL` in
//! [`recipe_section`].
//!
//! It reads files (the spec, user data files) and checks that secrets could
//! be resolved, but never reads a secret's value: that happens at apply time
//! in [`UserData::render`] and [`crate::roles::resolve_secrets`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Node};
use sha2::{Digest, Sha256};

use crate::cloud_config::{self, Value};
use crate::health::{BrakeConfig, ConfigError, ExpectedStatus, HealthCheck, ProbeTarget};
use crate::interpolate::{self, Piece};
use crate::rollout::{self, Amount, GroupLoadBalancer, LoadBalancerSpec, Rollout, Strategy};
use crate::user_data::{self, oversize_message, USER_DATA_LIMIT};
use crate::{
    Capacity, Diagnostic, Diagnostics, DisruptionBudget, Group, MetadataOptions, Provider,
    RootVolume, Scaling, SecretRef, Spec, UserData, UserDataPart, Zone,
};
use endstate_config::Role;
use endstate_scaling::schedule::{ScheduleError, ScheduledAction, ScheduledActionConfig};
use endstate_scaling::step::{AdjustmentType, StepAdjustment, StepConfigError, StepScalingConfig};
use endstate_scaling::target::TargetTrackingConfig;
use endstate_scaling::tz::TimeZone;

pub(crate) mod recipe_section;
pub(crate) mod role_section;

/// Reads, overlays, interpolates and validates the spec at `path`. User data
/// files and `file:` secrets are relative to the spec's directory.
pub fn load(path: &Path, environment: Option<&str>) -> Result<Spec, Diagnostics> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read the spec: {e}"),
            expected: None,
        }])
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    load_str(&source, path, &base_dir, environment)
}

/// [`load`] for a spec already in memory: `file_name` is what diagnostics
/// name, `base_dir` what relative paths are relative to.
pub fn load_str(
    source: &str,
    file_name: &Path,
    base_dir: &Path,
    environment: Option<&str>,
) -> Result<Spec, Diagnostics> {
    run(source, file_name, base_dir, |loader, root| {
        loader.spec(root, environment)
    })
}

/// Reads the roles of a standalone roles file, for `endstate config
/// apply FILE`: a YAML mapping with a `roles:` section, using `variables:`
/// and `secrets:` when it has them. A spec file works too: its other
/// sections must be spec sections but are not checked.
pub fn load_roles(path: &Path) -> Result<BTreeMap<String, Role>, Diagnostics> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read the roles file: {e}"),
            expected: None,
        }])
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    load_roles_str(&source, path, &base_dir)
}

/// [`load_roles`] for a document already in memory.
pub fn load_roles_str(
    source: &str,
    file_name: &Path,
    base_dir: &Path,
) -> Result<BTreeMap<String, Role>, Diagnostics> {
    run(source, file_name, base_dir, |loader, root| {
        loader.roles_document(root)
    })
}

/// Parses `source` and hands its root to `read`; every diagnostic, sorted
/// by place, when there is any.
fn run<T>(
    source: &str,
    file_name: &Path,
    base_dir: &Path,
    read: impl FnOnce(&mut Loader<'_>, Node) -> Option<T>,
) -> Result<T, Diagnostics> {
    // Editors do not count a byte order mark as a column, and YAML ignores it.
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let mut loader = Loader {
        file: file_name.to_path_buf(),
        base_dir: base_dir.to_path_buf(),
        lines: source
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .collect(),
        diagnostics: Vec::new(),
        variables: BTreeMap::new(),
        secrets: BTreeMap::new(),
        bad_secrets: Vec::new(),
        region: None,
        load_balancer_names: Vec::new(),
        load_balancer_users: BTreeMap::new(),
        role_names: Vec::new(),
        roles: None,
        role_source_at: BTreeMap::new(),
        recipe_channels: BTreeMap::new(),
    };
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    let value = match marked_yaml::parse_yaml_with_options(0, source, options) {
        Ok(root) => {
            loader.second_document();
            read(&mut loader, root)
        }
        Err(e) => {
            loader.syntax_error(&e);
            None
        }
    };
    let mut diagnostics = loader.diagnostics;
    match value {
        Some(value) if diagnostics.is_empty() => Ok(value),
        _ => {
            let spec_file = file_name.to_path_buf();
            diagnostics.sort_by(|a, b| {
                (a.file != spec_file, &a.file, a.line, a.column).cmp(&(
                    b.file != spec_file,
                    &b.file,
                    b.line,
                    b.column,
                ))
            });
            diagnostics.dedup();
            Err(Diagnostics(diagnostics))
        }
    }
}

/// Where `${secret.*}` may stand.
const SECRETS_ALLOWED: &str = "secrets in user_data script, file or cloud_config, \
or in a role resource's content, template, vars, command, onlyif or unless";

/// A place in a file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    col: usize,
}

const START: Pos = Pos { line: 1, col: 1 };

fn scalar_pos(s: &MarkedScalarNode) -> Pos {
    s.span().start().map_or(START, |m| Pos {
        line: m.line(),
        col: m.column(),
    })
}

/// Where to point at a value whose key is at `key`: the value itself when it
/// has a useful position, else its key (an empty value's marker is on the
/// next line; a block mapping's is after its first key).
fn value_pos(node: &Node, key: Pos) -> Pos {
    match node {
        Node::Scalar(s) if s.as_str().is_empty() && s.may_coerce() => key,
        Node::Scalar(s) => scalar_pos(s),
        Node::Mapping(m) => m.keys().next().map_or(key, scalar_pos),
        Node::Sequence(s) => s.span().start().map_or(key, |m| Pos {
            line: m.line(),
            col: m.column(),
        }),
    }
}

/// A scalar as YAML's core schema types it (quoted scalars are strings).
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
}

impl Scalar {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::Int(_) => "an integer",
            Scalar::Str(_) => "a string",
        }
    }

    fn as_text(&self) -> Option<String> {
        match self {
            Scalar::Null => None,
            Scalar::Bool(b) => Some(b.to_string()),
            Scalar::Int(i) => Some(i.to_string()),
            Scalar::Str(s) => Some(s.clone()),
        }
    }
}

fn node_kind(node: &Node) -> &'static str {
    match node {
        Node::Mapping(_) => "a mapping",
        Node::Sequence(_) => "a list",
        Node::Scalar(s) => literal(s).kind(),
    }
}

/// The type of a scalar as written, before interpolation.
fn literal(s: &MarkedScalarNode) -> Scalar {
    let raw = s.as_str();
    if !s.may_coerce() {
        return Scalar::Str(raw.to_string());
    }
    match raw {
        "" | "~" | "null" | "Null" | "NULL" => Scalar::Null,
        "true" | "True" | "TRUE" => Scalar::Bool(true),
        "false" | "False" | "FALSE" => Scalar::Bool(false),
        _ if is_decimal_int(raw) => raw
            .parse()
            .map_or(Scalar::Str(raw.to_string()), Scalar::Int),
        _ => Scalar::Str(raw.to_string()),
    }
}

/// `[-+]?(0|[1-9][0-9]*)`: leading zeros (`0644`) are not integers here, so
/// that a file mode stays the string it looks like.
fn is_decimal_int(s: &str) -> bool {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
}

/// A resolved scalar that may hold secrets (user data only).
enum Resolved {
    Scalar(Scalar),
    Parts(Vec<UserDataPart>),
}

/// Where the text being interpolated came from, to point into it.
enum Origin<'a> {
    /// A scalar in the spec starting at this position.
    Spec(Pos),
    /// A user data file, read whole.
    File(&'a Path),
}

/// The mapping fields of one YAML mapping, after unknown ones were reported.
struct Fields<'n> {
    map: &'n MarkedMappingNode,
}

impl<'n> Fields<'n> {
    /// The value of `name` and the position of its key; `None` when absent
    /// or null (an explicit null is how an overlay unsets a value).
    fn get(&self, name: &str) -> Option<(Pos, &'n Node)> {
        let (key, value) = self.map.get_key_value(name)?;
        match value {
            Node::Scalar(s) if literal(s) == Scalar::Null => None,
            _ => Some((scalar_pos(key), value)),
        }
    }

    fn key_pos(&self, name: &str) -> Option<Pos> {
        self.map.get_key_value(name).map(|(k, _)| scalar_pos(k))
    }
}

const TOP_FIELDS: &[&str] = &[
    "project",
    "provider",
    "variables",
    "secrets",
    "load_balancers",
    "roles",
    "recipes",
    "groups",
    "environments",
];
const OVERLAY_FIELDS: &[&str] = &[
    "provider",
    "variables",
    "secrets",
    "load_balancers",
    "roles",
    "recipes",
    "groups",
];
const AWS_FIELDS: &[&str] = &["region", "endpoint", "profile"];
const LOCAL_FIELDS: &[&str] = &["region", "dir"];
const GROUP_FIELDS: &[&str] = &[
    "image",
    "instance_types",
    "instance_type",
    "capacity",
    "zones",
    "security_groups",
    "key_pair",
    "iam_instance_profile",
    "root_volume",
    "metadata",
    "tags",
    "user_data",
    "disruption_budget",
    "health_check",
    "replacement_brake",
    "scaling",
    "load_balancer",
    "rollout",
    "roles",
];
const CAPACITY_FIELDS: &[&str] = &["min", "desired", "max"];
const ROOT_VOLUME_FIELDS: &[&str] = &["size_gib", "type"];
const METADATA_FIELDS: &[&str] = &["tokens", "hop_limit"];
const USER_DATA_FIELDS: &[&str] = &["script", "file", "cloud_config"];
const BUDGET_FIELDS: &[&str] = &["min_healthy", "max_surge"];
const HEALTH_CHECK_FIELDS: &[&str] = &[
    "http",
    "tcp",
    "interval",
    "timeout",
    "healthy_threshold",
    "unhealthy_threshold",
    "grace_period",
];
const HTTP_FIELDS: &[&str] = &["port", "path", "expected"];
const TCP_FIELDS: &[&str] = &["port"];
const BRAKE_FIELDS: &[&str] = &["max_unhealthy_share", "min_unhealthy", "window"];
const LOAD_BALANCER_FIELDS: &[&str] = &["port", "deregistration_delay"];
const GROUP_LOAD_BALANCER_FIELDS: &[&str] = &["name", "port"];
const ROLLOUT_FIELDS: &[&str] = &[
    "strategy",
    "max_surge",
    "max_unavailable",
    "pause",
    "canary",
    "canary_pause",
    "keep_old_for",
    "healthy_timeout",
    "watch",
    "auto_rollback",
    "max_error_rate",
];
/// The `rollout:` keys that belong to one strategy only.
const ROLLING_ONLY: &[&str] = &["max_surge", "max_unavailable", "pause"];
const BLUE_GREEN_ONLY: &[&str] = &["canary", "canary_pause", "keep_old_for"];
/// The `rollout:` keys of both strategies.
const ROLLOUT_COMMON: &[&str] = &[
    "healthy_timeout",
    "watch",
    "auto_rollback",
    "max_error_rate",
];
/// ELB's longest deregistration delay (`deregistration_delay.timeout_seconds`).
const MAX_DEREGISTRATION_DELAY: i64 = 3_600;
const SCALING_FIELDS: &[&str] = &["target_tracking", "step", "scheduled"];
const TARGET_FIELDS: &[&str] = &[
    "metric",
    "target",
    "scale_out_cooldown",
    "scale_in_cooldown",
    "instance_warmup",
    "disable_scale_in",
];
const STEP_POLICY_FIELDS: &[&str] = &[
    "metric",
    "threshold",
    "adjustment_type",
    "steps",
    "instance_warmup",
    "scale_in_cooldown",
    "min_adjustment_magnitude",
];
const STEP_FIELDS: &[&str] = &["lower", "upper", "adjustment"];
const SCHEDULED_FIELDS: &[&str] = &["name", "cron", "time_zone", "min", "max", "desired"];
const ADJUSTMENT_TYPES: &[(&str, AdjustmentType)] = &[
    ("change_in_capacity", AdjustmentType::ChangeInCapacity),
    ("exact_capacity", AdjustmentType::ExactCapacity),
    (
        "percent_change_in_capacity",
        AdjustmentType::PercentChangeInCapacity,
    ),
];
pub(crate) const VOLUME_TYPES: &[&str] = &["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"];

/// The most a group may ask for; a guard against typos like `desired: 30000`.
pub const MAX_CAPACITY: u32 = 10_000;
/// User tags per group: EC2 allows 50 per resource, and endstate's owner
/// tags need some of them.
pub const MAX_USER_TAGS: usize = 40;

/// Keys of a group, and of its user data, of which an overlay that sets one
/// replaces the others (rather than leaving both set).
const GROUP_EXCLUSIVE: &[&str] = &["instance_type", "instance_types"];
const USER_DATA_EXCLUSIVE: &[&str] = &["script", "file", "cloud_config"];
const PROBE_EXCLUSIVE: &[&str] = &["http", "tcp"];

/// Merges `overlay` into `base`: mappings key by key, anything else
/// replaced. Nodes keep the spans of the file where they were written, so
/// errors point at the base or the overlay, wherever the value came from.
/// `path` is the keys from the root down to `base`.
fn merge(base: &mut Node, overlay: &Node, path: &mut Vec<String>) {
    match (base, overlay) {
        (Node::Mapping(base), Node::Mapping(overlay)) => {
            let exclusive: &[&str] = match path.as_slice() {
                [groups, _] if groups == "groups" => GROUP_EXCLUSIVE,
                [groups, _, user_data] if groups == "groups" && user_data == "user_data" => {
                    USER_DATA_EXCLUSIVE
                }
                [groups, _, check] if groups == "groups" && check == "health_check" => {
                    PROBE_EXCLUSIVE
                }
                _ => &[],
            };
            if matches!(path.as_slice(), [groups, _, rollout] if groups == "groups" && rollout == "rollout")
            {
                // An overlay that switches the strategy drops the base's keys
                // of the other one, as setting `tcp` drops `http`.
                let foreign = match overlay.get_scalar("strategy").map(MarkedScalarNode::as_str) {
                    Some("rolling") => BLUE_GREEN_ONLY,
                    Some("blue_green") => ROLLING_ONLY,
                    _ => &[],
                };
                for key in foreign {
                    base.remove(*key);
                }
            }
            for (key, value) in overlay.iter() {
                if exclusive.contains(&key.as_str()) {
                    for other in exclusive.iter().filter(|o| **o != key.as_str()) {
                        base.remove(*other);
                    }
                }
                match base.get_mut(key.as_str()) {
                    Some(existing) => {
                        path.push(key.as_str().to_string());
                        merge(existing, value, path);
                        path.pop();
                    }
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// The allowed name closest to a misspelt one, if any is close.
fn did_you_mean<'a>(wrong: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|candidate| (edit_distance(wrong, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.min(candidate.len() / 2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

struct Loader<'s> {
    file: PathBuf,
    base_dir: PathBuf,
    lines: Vec<&'s str>,
    diagnostics: Vec<Diagnostic>,
    variables: BTreeMap<String, Scalar>,
    secrets: BTreeMap<String, SecretRef>,
    /// Declared secrets whose declaration was invalid (already reported).
    bad_secrets: Vec<String>,
    region: Option<String>,
    /// Every name under `load_balancers:`, valid or not (a bad one is
    /// reported there, not again where a group names it).
    load_balancer_names: Vec<String>,
    /// Which group took each load balancer, and where it named it.
    load_balancer_users: BTreeMap<String, (String, Pos)>,
    /// Every name under `roles:`, valid or not (a bad role is reported
    /// there, not again where a group lists it).
    role_names: Vec<String>,
    /// The roles, once every one of them loaded and validated together.
    roles: Option<BTreeMap<String, Role>>,
    /// Where each role's resources wrote `source:`, in resource order
    /// (`None` for a resource without one), so that a role step's
    /// unreadable source is reported where it was written.
    role_source_at: BTreeMap<String, Vec<Option<Pos>>>,
    /// Every name under `recipes:`, valid or not, with its channels when
    /// the recipe loaded (a bad recipe is reported there, not again where
    /// a group names it).
    recipe_channels: BTreeMap<String, Option<Vec<String>>>,
}

impl Loader<'_> {
    fn error(&mut self, at: Pos, message: impl Into<String>) {
        self.error_expected(at, message, None::<String>);
    }

    fn error_expected(
        &mut self,
        at: Pos,
        message: impl Into<String>,
        expected: Option<impl Into<String>>,
    ) {
        self.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            line: at.line,
            column: at.col,
            message: message.into(),
            expected: expected.map(Into::into),
        });
    }

    fn syntax_error(&mut self, e: &LoadError) {
        let (at, message) = match e {
            LoadError::TopLevelMustBeMapping(m) => {
                (m, "the spec must be a YAML mapping".to_string())
            }
            LoadError::TopLevelMustBeSequence(m) => (m, "unexpected top-level list".to_string()),
            LoadError::UnexpectedAnchor(m) => (m, "YAML anchors are not supported".to_string()),
            LoadError::MappingKeyMustBeScalar(m) => {
                (m, "mapping keys must be plain strings".to_string())
            }
            LoadError::UnexpectedTag(m) => (m, "YAML tags (`!foo`) are not supported".to_string()),
            LoadError::ScanError(m, scan) => {
                let text = scan.to_string();
                // yaml-rust's message ends with its own " at byte N line L
                // column C"; ours says where already.
                let info = text.split(" at byte ").next().unwrap_or(&text).to_string();
                let line = self.lines.get(m.line().saturating_sub(1)).copied();
                if info.contains("flow") && line.is_some_and(|l| l.contains("${")) {
                    self.error_expected(
                        Pos {
                            line: m.line(),
                            col: m.column(),
                        },
                        format!("invalid YAML: {info}"),
                        Some("quotes around references inside { } and [ ], like { desired: '${var.n}' }"),
                    );
                    return;
                }
                (m, format!("invalid YAML: {info}"))
            }
            LoadError::DuplicateKey(inner) => {
                let first = scalar_pos(&inner.prev_key);
                let at = scalar_pos(&inner.key);
                self.error(
                    at,
                    format!(
                        "duplicate key `{}` (first set on line {})",
                        inner.key.as_str(),
                        first.line
                    ),
                );
                return;
            }
        };
        self.error(
            Pos {
                line: at.line(),
                col: at.column(),
            },
            message,
        );
    }

    /// The parser reads the first YAML document only; a second one would be
    /// silently ignored, so it is an error. A `---` at column 1 after any
    /// content starts one (block scalars in a spec are always indented).
    fn second_document(&mut self) {
        let mut seen_content = false;
        for (i, line) in self.lines.iter().enumerate() {
            let starts_document =
                line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
            if starts_document && seen_content {
                self.error_expected(
                    Pos {
                        line: i + 1,
                        col: 1,
                    },
                    "a second YAML document",
                    Some("one document per spec file"),
                );
                return;
            }
            let trimmed = line.trim_start();
            seen_content |= !(trimmed.is_empty()
                || trimmed.starts_with('#')
                || trimmed.starts_with('%')
                || starts_document);
        }
    }

    /// Checks that `node` is a mapping with only `allowed` keys.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        at: Pos,
        path: &str,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        let Node::Mapping(map) = node else {
            self.error(
                value_pos(node, at),
                format!("{path}: expected a mapping, found {}", node_kind(node)),
            );
            return None;
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let place = if path.is_empty() {
                    String::new()
                } else {
                    format!(" in {path}")
                };
                self.error_expected(
                    scalar_pos(key),
                    match did_you_mean(key.as_str(), allowed) {
                        Some(near) => format!(
                            "unknown field `{}`{place} (did you mean `{near}`?)",
                            key.as_str()
                        ),
                        None => format!("unknown field `{}`{place}", key.as_str()),
                    },
                    Some(format!("one of {}", allowed.join(", "))),
                );
            }
        }
        Some(Fields { map })
    }

    fn missing(&mut self, at: Pos, path: &str, field: &str) {
        let full = join(path, field);
        self.error(at, format!("missing required field `{full}`"));
    }

    // ----- scalars and interpolation -------------------------------------

    /// Interpolates `text`; `None` after reporting errors.
    fn interpolate(
        &mut self,
        text: &str,
        origin: &Origin<'_>,
        secrets_allowed: bool,
    ) -> Option<Vec<UserDataPart>> {
        let (pieces, errors) = interpolate::parse(text);
        let mut ok = errors.is_empty();
        for e in errors {
            self.error_at_offset(origin, text, e.offset, e.message, e.expected);
        }
        let mut parts: Vec<UserDataPart> = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Text(t) => push_text(&mut parts, &t),
                Piece::Var { name, offset } => match self.variables.get(&name) {
                    Some(value) => {
                        let value = value.as_text().unwrap_or_default();
                        push_text(&mut parts, &value);
                    }
                    None => {
                        ok = false;
                        let expected = self.known("variables", self.variables.keys());
                        self.error_at_offset(
                            origin,
                            text,
                            offset,
                            format!("unknown variable `{name}`"),
                            Some(expected),
                        );
                    }
                },
                Piece::Secret { name, offset } => {
                    if !secrets_allowed {
                        ok = false;
                        self.error_at_offset(
                            origin,
                            text,
                            offset,
                            format!("`${{secret.{name}}}` is only allowed in user data and role contents"),
                            Some(SECRETS_ALLOWED.to_string()),
                        );
                        continue;
                    }
                    match self.secrets.get(&name).cloned() {
                        Some(r) => {
                            if let Err(why) = user_data::check_secret(&r) {
                                ok = false;
                                self.error_at_offset(
                                    origin,
                                    text,
                                    offset,
                                    format!("secret `{name}` ({r}) cannot be resolved: {why}"),
                                    None,
                                );
                            }
                            parts.push(UserDataPart::Secret(r));
                        }
                        None if self.bad_secrets.contains(&name) => ok = false,
                        None => {
                            ok = false;
                            let expected = self.known("secrets", self.secrets.keys());
                            self.error_at_offset(
                                origin,
                                text,
                                offset,
                                format!("unknown secret `{name}`"),
                                Some(expected),
                            );
                        }
                    }
                }
            }
        }
        ok.then_some(parts)
    }

    fn known<'k>(&self, section: &str, names: impl Iterator<Item = &'k String>) -> String {
        let names: Vec<&str> = names.map(String::as_str).collect();
        if names.is_empty() {
            format!("a name declared under `{section}:` (none are)")
        } else {
            format!("one of {}", names.join(", "))
        }
    }

    fn error_at_offset(
        &mut self,
        origin: &Origin<'_>,
        text: &str,
        offset: usize,
        message: String,
        expected: Option<String>,
    ) {
        match origin {
            Origin::Spec(start) => {
                let at = self.locate(*start, text, offset);
                self.error_expected(at, message, expected);
            }
            Origin::File(path) => {
                let before = &text[..offset];
                let line = before.matches('\n').count() + 1;
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let col = before[line_start..].chars().count() + 1;
                self.diagnostics.push(Diagnostic {
                    file: path.to_path_buf(),
                    line,
                    column: col,
                    message,
                    expected,
                });
            }
        }
    }

    /// The position in the spec of byte `offset` of a scalar's value that
    /// starts at `start`. Exact for plain and quoted single-line scalars and
    /// for literal blocks; the scalar's start otherwise.
    fn locate(&self, start: Pos, value: &str, offset: usize) -> Pos {
        let before = &value[..offset];
        let k = before.matches('\n').count();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let c = value[line_start..offset].chars().count();
        let line_end = value[line_start..]
            .find('\n')
            .map_or(value.len(), |i| line_start + i);
        let value_line = &value[line_start..line_end];
        let line_no = start.line + k;
        let Some(src) = line_no.checked_sub(1).and_then(|i| self.lines.get(i)) else {
            return start;
        };
        if k == 0 {
            let from: String = src.chars().skip(start.col - 1).collect();
            if from.starts_with(value_line) {
                return Pos {
                    line: line_no,
                    col: start.col + c,
                };
            }
            if (from.starts_with('"') || from.starts_with('\''))
                && from[1..].starts_with(value_line)
            {
                return Pos {
                    line: line_no,
                    col: start.col + 1 + c,
                };
            }
        } else if let Some(indent) = src.strip_suffix(value_line) {
            if indent.chars().all(char::is_whitespace) {
                return Pos {
                    line: line_no,
                    col: indent.chars().count() + c + 1,
                };
            }
        }
        start
    }

    /// A scalar outside user data: typed, with `${var.*}` substituted.
    fn scalar(&mut self, node: &Node, key: Pos, path: &str, want: &str) -> Option<(Pos, Scalar)> {
        let at = value_pos(node, key);
        let Node::Scalar(s) = node else {
            self.error(
                at,
                format!("{path}: expected {want}, found {}", node_kind(node)),
            );
            return None;
        };
        match self.resolve(s, at, false)? {
            Resolved::Scalar(v) => Some((at, v)),
            Resolved::Parts(parts) => Some((at, Scalar::Str(parts_text(&parts)))),
        }
    }

    fn resolve(&mut self, s: &MarkedScalarNode, at: Pos, secrets: bool) -> Option<Resolved> {
        match literal(s) {
            Scalar::Str(raw) => {
                let (pieces, errors) = interpolate::parse(&raw);
                // A scalar that is `${var.NAME}` alone takes the variable's
                // type, quoted or not: inside `{ }` and `[ ]` YAML needs the
                // quotes, so they cannot be what decides the type.
                if let ([Piece::Var { name, .. }], true) = (pieces.as_slice(), errors.is_empty()) {
                    if let Some(v) = self.variables.get(name) {
                        return Some(Resolved::Scalar(v.clone()));
                    }
                }
                let parts = self.interpolate(&raw, &Origin::Spec(at), secrets)?;
                if secrets {
                    Some(Resolved::Parts(parts))
                } else {
                    Some(Resolved::Scalar(Scalar::Str(parts_text(&parts))))
                }
            }
            other => Some(Resolved::Scalar(other)),
        }
    }

    fn string(&mut self, node: &Node, key: Pos, path: &str) -> Option<(Pos, String)> {
        let (at, v) = self.scalar(node, key, path, "a string")?;
        match v.as_text() {
            Some(s) => Some((at, s)),
            None => {
                self.error(at, format!("{path}: expected a string, found null"));
                None
            }
        }
    }

    fn integer(&mut self, node: &Node, key: Pos, path: &str) -> Option<(Pos, i64)> {
        let (at, v) = self.scalar(node, key, path, "an integer")?;
        match v {
            Scalar::Int(i) => Some((at, i)),
            other => {
                self.error(
                    at,
                    format!("{path}: expected an integer, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// An integer in `lo..=hi`.
    fn bounded(
        &mut self,
        node: &Node,
        key: Pos,
        path: &str,
        lo: i64,
        hi: i64,
    ) -> Option<(Pos, u32)> {
        let (at, i) = self.integer(node, key, path)?;
        if i < lo || i > hi {
            self.error(
                at,
                format!(
                    "{path} ({i}) is out of range {lo}..={}",
                    user_data::thousands(usize::try_from(hi).unwrap_or(usize::MAX))
                ),
            );
            return None;
        }
        // In range of u32 by the check above (callers pass hi <= u32::MAX).
        u32::try_from(i).ok().map(|v| (at, v))
    }

    fn list<'n>(&mut self, node: &'n Node, key: Pos, path: &str) -> Option<&'n [Node]> {
        match node {
            Node::Sequence(s) => Some(s.as_slice()),
            other => {
                self.error(
                    value_pos(other, key),
                    format!("{path}: expected a list, found {}", node_kind(other)),
                );
                None
            }
        }
    }

    fn string_list(&mut self, node: &Node, key: Pos, path: &str) -> Option<Vec<(Pos, String)>> {
        let items = self.list(node, key, path)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            match self.string(item, value_pos(node, key), &item_path) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    // ----- the spec -------------------------------------------------------

    fn spec(&mut self, mut root: Node, environment: Option<&str>) -> Option<Spec> {
        let top = self.fields(&root, START, "", TOP_FIELDS)?;
        let overlay = self.environment(&top, environment);
        if let Some(overlay) = overlay {
            merge(&mut root, &overlay, &mut Vec::new());
        }
        let Node::Mapping(map) = &root else {
            return None;
        };
        let top = Fields { map };

        let project = match top.get("project") {
            Some((key, node)) => self.project(node, key),
            None => {
                self.missing(START, "", "project");
                None
            }
        };
        let provider = match top.get("provider") {
            Some((key, node)) => self.provider(node, key),
            None => {
                self.missing(START, "", "provider");
                None
            }
        };
        if let Some((key, node)) = top.get("variables") {
            self.variables(node, key);
        }
        if let Some((key, node)) = top.get("secrets") {
            self.secrets(node, key);
        }
        // Before the groups, which name them.
        let roles = match top.get("roles") {
            Some((key, node)) => self.roles_section(node, key),
            None => Some(BTreeMap::new()),
        };
        self.roles.clone_from(&roles);
        // After the roles, which role steps name; before the groups, which
        // name recipes' channels.
        let recipes = match top.get("recipes") {
            Some((key, node)) => self.recipes_section(node, key),
            None => Some(BTreeMap::new()),
        };
        let load_balancers = match top.get("load_balancers") {
            Some((key, node)) => self.load_balancers(node, key),
            None => Some(Vec::new()),
        };
        let groups = match top.get("groups") {
            Some((key, node)) => self.groups(node, key),
            None => {
                self.missing(START, "", "groups");
                None
            }
        };
        let mut spec = Spec {
            load_balancers: load_balancers?,
            roles: roles?,
            recipes: recipes?,
            project: project?,
            environment: environment.unwrap_or("default").to_string(),
            provider: provider?,
            groups: groups?,
            hash: String::new(),
        };
        spec.hash = spec_hash(&spec);
        Some(spec)
    }

    /// Validates `environments` and returns the chosen overlay.
    fn environment(&mut self, top: &Fields<'_>, environment: Option<&str>) -> Option<Node> {
        let envs = top.get("environments");
        let mut names = Vec::new();
        let mut chosen = None;
        if let Some((key, node)) = envs {
            if !matches!(node, Node::Mapping(_)) {
                self.error(
                    value_pos(node, key),
                    format!(
                        "environments: expected a mapping, found {}",
                        node_kind(node)
                    ),
                );
            }
        }
        if let Some((_, Node::Mapping(map))) = envs {
            for (name, overlay) in map.iter() {
                names.push(name.as_str().to_string());
                let path = format!("environments.{}", name.as_str());
                let at = scalar_pos(name);
                if !is_dns_name(name.as_str()) {
                    self.error_expected(
                        at,
                        format!("invalid environment name `{}`", name.as_str()),
                        Some(NAME_RULE),
                    );
                }
                let is_null = matches!(overlay, Node::Scalar(s) if literal(s) == Scalar::Null);
                if !is_null {
                    self.fields(overlay, at, &path, OVERLAY_FIELDS);
                }
                if Some(name.as_str()) == environment && !is_null {
                    chosen = Some(overlay.clone());
                }
            }
        }
        if let Some(wanted) = environment {
            if !names.iter().any(|n| n == wanted) {
                let at = top.key_pos("environments").unwrap_or(START);
                let expected = if names.is_empty() {
                    "no environments are defined".to_string()
                } else {
                    format!("one of {}", names.join(", "))
                };
                self.error_expected(
                    at,
                    format!("unknown environment `{wanted}`"),
                    Some(expected),
                );
            }
        }
        match chosen {
            Some(node @ Node::Mapping(_)) => Some(node),
            _ => None,
        }
    }

    fn project(&mut self, node: &Node, key: Pos) -> Option<String> {
        let (at, name) = self.string(node, key, "project")?;
        if !is_dns_name(&name) {
            self.error_expected(
                at,
                format!("invalid project name `{name}`"),
                Some(NAME_RULE),
            );
            return None;
        }
        Some(name)
    }

    fn provider(&mut self, node: &Node, key: Pos) -> Option<Provider> {
        let fields = self.fields(node, key, "provider", &["aws", "local"])?;
        if let Some(local_key) = fields.key_pos("local") {
            if let Some(aws_key) = fields.key_pos("aws") {
                self.error_expected(
                    aws_key,
                    "provider: both `aws` and `local` are configured",
                    Some("one provider"),
                );
                return None;
            }
            return self.local_provider(fields.get("local").map(|(_, n)| n), local_key);
        }
        let Some((aws_key, aws)) = fields.get("aws") else {
            self.error_expected(
                value_pos(node, key),
                "provider: no provider configured",
                Some("aws or local"),
            );
            return None;
        };
        let aws = self.fields(aws, aws_key, "provider.aws", AWS_FIELDS)?;
        let region = match aws.get("region") {
            Some((k, n)) => self.region_value(n, k, "provider.aws.region"),
            None => {
                self.missing(aws_key, "provider.aws", "region");
                None
            }
        };
        self.region.clone_from(&region);
        let endpoint = match aws.get("endpoint") {
            Some((k, n)) => self
                .string(n, k, "provider.aws.endpoint")
                .and_then(|(at, url)| {
                    if is_http_url(&url) {
                        Some(Some(url))
                    } else {
                        self.error_expected(
                            at,
                            format!("invalid endpoint `{url}`"),
                            Some("an http:// or https:// URL"),
                        );
                        None
                    }
                }),
            None => Some(None),
        };
        let profile = optional_string(self, &aws, "profile", "provider.aws.profile");
        Some(Provider::Aws {
            region: region?,
            endpoint: endpoint?,
            profile: profile?,
        })
    }

    /// `provider.local`: an empty mapping (or `{}`), or `region` and `dir`.
    fn local_provider(&mut self, node: Option<&Node>, key: Pos) -> Option<Provider> {
        let local = match node {
            Some(node) => Some(self.fields(node, key, "provider.local", LOCAL_FIELDS)?),
            None => None,
        };
        let region = match local.as_ref().and_then(|l| l.get("region")) {
            Some((k, n)) => self.region_value(n, k, "provider.local.region"),
            None => Some(crate::types::LOCAL_DEFAULT_REGION.to_string()),
        };
        self.region.clone_from(&region);
        let dir = match &local {
            Some(local) => optional_string(self, local, "dir", "provider.local.dir"),
            None => Some(None),
        };
        Some(Provider::Local {
            region: region?,
            dir: dir?,
        })
    }

    fn region_value(&mut self, node: &Node, key: Pos, field: &str) -> Option<String> {
        self.string(node, key, field).and_then(|(at, r)| {
            if is_region(&r) {
                Some(r)
            } else {
                self.error_expected(
                    at,
                    format!("invalid region `{r}`"),
                    Some("a region name like us-east-1"),
                );
                None
            }
        })
    }

    fn variables(&mut self, node: &Node, key: Pos) {
        let Node::Mapping(map) = node else {
            self.error(
                value_pos(node, key),
                format!("variables: expected a mapping, found {}", node_kind(node)),
            );
            return;
        };
        for (name, value) in map.iter() {
            let at = scalar_pos(name);
            if !interpolate::is_name(name.as_str()) {
                self.error_expected(
                    at,
                    format!("invalid variable name `{}`", name.as_str()),
                    Some(IDENT_RULE),
                );
                continue;
            }
            let path = format!("variables.{}", name.as_str());
            match value {
                Node::Scalar(s) => match literal(s) {
                    Scalar::Null => self.error_expected(
                        value_pos(value, at),
                        format!("{path}: expected a value, found null"),
                        Some("a string, integer or boolean"),
                    ),
                    v => {
                        self.variables.insert(name.as_str().to_string(), v);
                    }
                },
                other => self.error_expected(
                    value_pos(other, at),
                    format!(
                        "{path}: expected a string, integer or boolean, found {}",
                        node_kind(other)
                    ),
                    None::<String>,
                ),
            }
        }
    }

    fn secrets(&mut self, node: &Node, key: Pos) {
        let Node::Mapping(map) = node else {
            self.error(
                value_pos(node, key),
                format!("secrets: expected a mapping, found {}", node_kind(node)),
            );
            return;
        };
        for (name, value) in map.iter() {
            let at = scalar_pos(name);
            let name = name.as_str().to_string();
            if !interpolate::is_name(&name) {
                self.error_expected(
                    at,
                    format!("invalid secret name `{name}`"),
                    Some(IDENT_RULE),
                );
                continue;
            }
            let path = format!("secrets.{name}");
            let reference = match value {
                Node::Scalar(s) => match literal(s) {
                    Scalar::Str(text) => Some((value_pos(value, at), text)),
                    other => {
                        self.error(
                            value_pos(value, at),
                            format!("{path}: expected a string, found {}", other.kind()),
                        );
                        None
                    }
                },
                other => {
                    self.error(
                        value_pos(other, at),
                        format!("{path}: expected a string, found {}", node_kind(other)),
                    );
                    None
                }
            };
            match reference.and_then(|(pos, text)| self.secret_ref(pos, &text)) {
                Some(r) => {
                    self.secrets.insert(name, r);
                }
                None => self.bad_secrets.push(name),
            }
        }
    }

    fn secret_ref(&mut self, at: Pos, text: &str) -> Option<SecretRef> {
        const FORMS: &str = "env:NAME or file:PATH";
        if let Some(var) = text.strip_prefix("env:") {
            if is_env_name(var) {
                return Some(SecretRef::Env(var.to_string()));
            }
            self.error_expected(
                at,
                format!("invalid environment variable name in secret reference `{text}`"),
                Some("env:NAME with NAME of letters, digits and `_`"),
            );
            return None;
        }
        if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                self.error_expected(at, "secret reference `file:` has no path", Some(FORMS));
                return None;
            }
            let joined = self.base_dir.join(path);
            let absolute = std::path::absolute(&joined).unwrap_or(joined);
            return Some(SecretRef::File(absolute.to_string_lossy().into_owned()));
        }
        self.error_expected(
            at,
            format!("invalid secret reference `{text}`"),
            Some(FORMS),
        );
        None
    }

    fn groups(&mut self, node: &Node, key: Pos) -> Option<Vec<Group>> {
        let Node::Mapping(map) = node else {
            self.error(
                value_pos(node, key),
                format!("groups: expected a mapping, found {}", node_kind(node)),
            );
            return None;
        };
        let mut groups = Vec::new();
        let mut ok = true;
        for (name, value) in map.iter() {
            match self.group(name, value) {
                Some(g) => groups.push(g),
                None => ok = false,
            }
        }
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        ok.then_some(groups)
    }

    fn group(&mut self, name_node: &MarkedScalarNode, node: &Node) -> Option<Group> {
        let at = scalar_pos(name_node);
        let name = name_node.as_str().to_string();
        let mut ok = true;
        if !is_dns_name(&name) {
            self.error_expected(at, format!("invalid group name `{name}`"), Some(NAME_RULE));
            ok = false;
        }
        let f = self.fields(node, at, &format!("group `{name}`"), GROUP_FIELDS)?;

        let image = match f.get("image") {
            Some((k, n)) => self
                .string(n, k, "image")
                .and_then(|(pos, image)| self.group_image(pos, image)),
            None => {
                self.missing(at, "", "image");
                None
            }
        };

        let instance_types = match (f.get("instance_types"), f.get("instance_type")) {
            (Some(_), Some((k, _))) => {
                self.error_expected(
                    k,
                    "`instance_type` and `instance_types` are both set",
                    Some("only one of them"),
                );
                None
            }
            (Some((k, n)), None) => self.instance_types(n, k),
            (None, Some((k, n))) => self
                .string(n, k, "instance_type")
                .and_then(|(pos, t)| self.instance_type(pos, t))
                .map(|t| vec![t]),
            (None, None) => {
                self.missing(at, "", "instance_types");
                None
            }
        };

        let capacity = match f.get("capacity") {
            Some((k, n)) => self.capacity(n, k),
            None => {
                self.missing(at, "", "capacity");
                None
            }
        };

        let zones = match f.get("zones") {
            Some((k, n)) => self.zones(n, k),
            None => {
                self.missing(at, "", "zones");
                None
            }
        };

        let security_group_ids = match f.get("security_groups") {
            Some((k, n)) => self.string_list(n, k, "security_groups").and_then(|ids| {
                let mut all_ok = true;
                for (pos, id) in &ids {
                    if !id.starts_with("sg-") || id.len() <= 3 {
                        self.error_expected(
                            *pos,
                            format!("security group id `{id}` does not start with `sg-`"),
                            Some("a security group id like sg-0123456789abcdef0"),
                        );
                        all_ok = false;
                    }
                }
                all_ok.then(|| ids.into_iter().map(|(_, id)| id).collect())
            }),
            None => Some(Vec::new()),
        };

        let key_name = optional_string(self, &f, "key_pair", "key_pair");
        let iam_instance_profile =
            optional_string(self, &f, "iam_instance_profile", "iam_instance_profile");

        let root_volume = match f.get("root_volume") {
            Some((k, n)) => self.root_volume(n, k).map(Some),
            None => Some(None),
        };
        let metadata = match f.get("metadata") {
            Some((k, n)) => self.metadata(n, k),
            None => Some(MetadataOptions::default()),
        };
        let tags = match f.get("tags") {
            Some((k, n)) => self.tags(n, k, "group"),
            None => Some(BTreeMap::new()),
        };
        let user_data = match f.get("user_data") {
            Some((k, n)) => self.user_data(n, k).map(Some),
            None => Some(None),
        };
        let budget = match f.get("disruption_budget") {
            Some((k, n)) => self.budget(n, k),
            None => Some(DisruptionBudget::default()),
        };
        let health_check = match f.get("health_check") {
            Some((k, n)) => self.health_check(n, k).map(Some),
            None => Some(None),
        };
        let brake = match f.get("replacement_brake") {
            Some((k, n)) => self.brake(n, k),
            None => Some(BrakeConfig::default()),
        };
        let scaling = match f.get("scaling") {
            Some((k, n)) => self.scaling(n, k, capacity.as_ref().map(|c| c.max)),
            None => Some(Scaling::default()),
        };
        let load_balancer = match f.get("load_balancer") {
            Some((k, n)) => self.group_load_balancer(n, k, &name).map(Some),
            None => Some(None),
        };
        let desired = capacity.as_ref().map(|c| c.desired);
        let rollout = match (f.get("rollout"), &load_balancer) {
            (Some((k, n)), Some(Some(_))) => self.rollout(n, k, desired).map(Some),
            (Some((k, n)), Some(None)) => {
                self.error_expected(
                    k,
                    format!("rollout: group `{name}` has no load_balancer"),
                    Some("a load_balancer: { name: LB, port: PORT } beside the rollout"),
                );
                // Its own errors are worth reporting too.
                self.rollout(n, k, desired);
                None
            }
            // The load balancer's error is reported; the rollout's may be.
            (Some((k, n)), None) => self.rollout(n, k, desired).and(None),
            (None, Some(Some(_))) => Some(Some(Rollout::default_rolling())),
            (None, _) => Some(None),
        };
        let roles = match f.get("roles") {
            Some((k, n)) => self.group_roles(n, k, &name),
            None => Some(Vec::new()),
        };

        ok.then_some(())?;
        let (image_id, image_channel) = image?;
        Some(Group {
            name,
            image_id,
            image_channel,
            instance_types: instance_types?,
            capacity: capacity?,
            zones: zones?,
            security_group_ids: security_group_ids?,
            key_name: key_name?,
            iam_instance_profile: iam_instance_profile?,
            root_volume: root_volume?,
            metadata: metadata?,
            tags: tags?,
            user_data: user_data?,
            budget: budget?,
            health_check: health_check?,
            brake: brake?,
            scaling: scaling?,
            load_balancer: load_balancer?,
            rollout: rollout?,
            roles: roles?,
        })
    }

    fn instance_types(&mut self, node: &Node, key: Pos) -> Option<Vec<String>> {
        let items = self.string_list(node, key, "instance_types")?;
        if items.is_empty() {
            self.error_expected(
                value_pos(node, key),
                "instance_types is empty",
                Some("at least one instance type, like [t3.micro]"),
            );
            return None;
        }
        let mut out = Vec::new();
        for (pos, t) in items {
            out.push(self.instance_type(pos, t));
        }
        out.into_iter().collect()
    }

    fn instance_type(&mut self, at: Pos, t: String) -> Option<String> {
        let valid = t.split_once('.').is_some_and(|(family, size)| {
            !family.is_empty()
                && !size.is_empty()
                && family
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && size
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
        if valid {
            Some(t)
        } else {
            self.error_expected(
                at,
                format!("invalid instance type `{t}`"),
                Some("FAMILY.SIZE, like t3.micro"),
            );
            None
        }
    }

    fn capacity(&mut self, node: &Node, key: Pos) -> Option<Capacity> {
        let f = self.fields(node, key, "capacity", CAPACITY_FIELDS)?;
        let get = |this: &mut Self, field: &str| match f.get(field) {
            Some((k, n)) => {
                this.bounded(n, k, &format!("capacity.{field}"), 0, i64::from(u32::MAX))
            }
            None => {
                this.missing(key, "capacity", field);
                None
            }
        };
        let min = get(self, "min");
        let desired = get(self, "desired");
        let max = get(self, "max");
        let (max_at, max) = max?;
        if max > MAX_CAPACITY {
            self.error(
                max_at,
                format!(
                    "capacity.max ({max}) is over the limit of {}",
                    user_data::thousands(MAX_CAPACITY as usize)
                ),
            );
            return None;
        }
        let (min_at, min) = min?;
        if min > max {
            self.error(
                min_at,
                format!("capacity.min ({min}) is greater than capacity.max ({max})"),
            );
            return None;
        }
        let (desired_at, desired) = desired?;
        if desired < min || desired > max {
            self.error(
                desired_at,
                format!(
                    "capacity.desired ({desired}) is not between capacity.min ({min}) and capacity.max ({max})"
                ),
            );
            return None;
        }
        Some(Capacity { min, desired, max })
    }

    fn zones(&mut self, node: &Node, key: Pos) -> Option<Vec<Zone>> {
        let mut zones = Vec::new();
        let mut ok = true;
        match node {
            Node::Mapping(map) => {
                for (name, subnets) in map.iter() {
                    let at = scalar_pos(name);
                    let zone = name.as_str().to_string();
                    ok &= self.zone_name(at, &zone);
                    let is_null = matches!(subnets, Node::Scalar(s) if literal(s) == Scalar::Null);
                    let subnet_ids = if is_null {
                        Vec::new()
                    } else {
                        match self.string_list(subnets, at, &format!("zones.{zone}")) {
                            Some(ids) => {
                                let mut out = Vec::new();
                                for (pos, id) in ids {
                                    if id.starts_with("subnet-") && id.len() > 7 {
                                        out.push(id);
                                    } else {
                                        self.error_expected(
                                            pos,
                                            format!(
                                                "subnet id `{id}` does not start with `subnet-`"
                                            ),
                                            Some("a subnet id like subnet-0123456789abcdef0"),
                                        );
                                        ok = false;
                                    }
                                }
                                out
                            }
                            None => {
                                ok = false;
                                Vec::new()
                            }
                        }
                    };
                    zones.push(Zone {
                        name: zone,
                        subnet_ids,
                    });
                }
            }
            Node::Sequence(_) => {
                for (pos, zone) in self.string_list(node, key, "zones")? {
                    ok &= self.zone_name(pos, &zone);
                    zones.push(Zone {
                        name: zone,
                        subnet_ids: Vec::new(),
                    });
                }
            }
            other => {
                self.error(
                    value_pos(other, key),
                    format!(
                        "zones: expected a mapping or a list, found {}",
                        node_kind(other)
                    ),
                );
                return None;
            }
        }
        if zones.is_empty() {
            self.error_expected(
                value_pos(node, key),
                "zones is empty",
                Some("at least one availability zone"),
            );
            return None;
        }
        ok.then_some(zones)
    }

    fn zone_name(&mut self, at: Pos, zone: &str) -> bool {
        let well_formed = !zone.is_empty()
            && zone
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && zone.ends_with(|c: char| c.is_ascii_lowercase());
        if !well_formed {
            self.error_expected(
                at,
                format!("invalid availability zone `{zone}`"),
                Some("a zone name like us-east-1a"),
            );
            return false;
        }
        if let Some(region) = self.region.clone() {
            if !zone.starts_with(&region) || zone.len() == region.len() {
                self.error(at, format!("zone `{zone}` is not in region {region}"));
                return false;
            }
        }
        true
    }

    fn root_volume(&mut self, node: &Node, key: Pos) -> Option<RootVolume> {
        let f = self.fields(node, key, "root_volume", ROOT_VOLUME_FIELDS)?;
        let size = match f.get("size_gib") {
            Some((k, n)) => self.bounded(n, k, "root_volume.size_gib", 1, 16_384),
            None => {
                self.missing(key, "root_volume", "size_gib");
                None
            }
        };
        let volume_type = match f.get("type") {
            Some((k, n)) => self.string(n, k, "root_volume.type").and_then(|(at, t)| {
                if VOLUME_TYPES.contains(&t.as_str()) {
                    Some(t)
                } else {
                    self.error_expected(
                        at,
                        format!("unknown volume type `{t}`"),
                        Some(format!("one of {}", VOLUME_TYPES.join(", "))),
                    );
                    None
                }
            }),
            None => Some("gp3".to_string()),
        };
        Some(RootVolume {
            size_gib: size?.1,
            volume_type: volume_type?,
        })
    }

    fn metadata(&mut self, node: &Node, key: Pos) -> Option<MetadataOptions> {
        let f = self.fields(node, key, "metadata", METADATA_FIELDS)?;
        let defaults = MetadataOptions::default();
        let tokens_required = match f.get("tokens") {
            Some((k, n)) => {
                self.string(n, k, "metadata.tokens")
                    .and_then(|(at, t)| match t.as_str() {
                        "required" => Some(true),
                        "optional" => Some(false),
                        _ => {
                            self.error_expected(
                                at,
                                format!("metadata.tokens: unknown value `{t}`"),
                                Some("required or optional"),
                            );
                            None
                        }
                    })
            }
            None => Some(defaults.tokens_required),
        };
        let hop_limit = match f.get("hop_limit") {
            Some((k, n)) => self
                .bounded(n, k, "metadata.hop_limit", 1, 64)
                .and_then(|(_, v)| u8::try_from(v).ok()),
            None => Some(defaults.hop_limit),
        };
        Some(MetadataOptions {
            tokens_required: tokens_required?,
            hop_limit: hop_limit?,
        })
    }

    /// User tags of a group or a recipe (`owner`): EC2's limits, and
    /// neither `aws:` nor `endstate:` keys.
    fn tags(&mut self, node: &Node, key: Pos, owner: &str) -> Option<BTreeMap<String, String>> {
        let Node::Mapping(map) = node else {
            self.error(
                value_pos(node, key),
                format!("tags: expected a mapping, found {}", node_kind(node)),
            );
            return None;
        };
        let mut tags = BTreeMap::new();
        let mut ok = true;
        if map.len() > MAX_USER_TAGS {
            self.error(
                key,
                format!(
                    "tags: {} tags, over the limit of {MAX_USER_TAGS} user tags per {owner}",
                    map.len()
                ),
            );
            ok = false;
        }
        for (k, v) in map.iter() {
            let at = scalar_pos(k);
            let tag = k.as_str();
            let lower = tag.to_ascii_lowercase();
            if tag.is_empty() {
                self.error(at, "tag key is empty");
                ok = false;
            } else if lower.starts_with("aws:") {
                self.error_expected(
                    at,
                    format!("tag key `{tag}` uses the prefix `aws:`, reserved by AWS"),
                    Some("a key that does not start with aws: or endstate:"),
                );
                ok = false;
            } else if lower.starts_with("endstate:") {
                self.error_expected(
                    at,
                    format!("tag key `{tag}` uses the prefix `endstate:`, reserved for endstate's own tags"),
                    Some("a key that does not start with aws: or endstate:"),
                );
                ok = false;
            } else if tag.chars().count() > 128 {
                self.error(
                    at,
                    format!(
                        "tag key is {} characters, over EC2's limit of 128",
                        tag.chars().count()
                    ),
                );
                ok = false;
            }
            let path = format!("tags.{tag}");
            let value = match v {
                Node::Scalar(s) if literal(s) == Scalar::Null => Some((at, String::new())),
                _ => self.string(v, at, &path),
            };
            match value {
                Some((pos, value)) if value.chars().count() > 256 => {
                    self.error(
                        pos,
                        format!(
                            "tag value is {} characters, over EC2's limit of 256",
                            value.chars().count()
                        ),
                    );
                    ok = false;
                }
                Some((_, value)) => {
                    tags.insert(tag.to_string(), value);
                }
                None => ok = false,
            }
        }
        ok.then_some(tags)
    }

    fn budget(&mut self, node: &Node, key: Pos) -> Option<DisruptionBudget> {
        let f = self.fields(node, key, "disruption_budget", BUDGET_FIELDS)?;
        let defaults = DisruptionBudget::default();
        let min_healthy = match f.get("min_healthy") {
            Some((k, n)) => self.share(n, k, "disruption_budget.min_healthy"),
            None => Some(defaults.min_healthy_share),
        };
        let max_surge = match f.get("max_surge") {
            Some((k, n)) => self
                .bounded(
                    n,
                    k,
                    "disruption_budget.max_surge",
                    0,
                    i64::from(MAX_CAPACITY),
                )
                .map(|(_, v)| Some(v)),
            None => Some(defaults.max_surge),
        };
        Some(DisruptionBudget {
            min_healthy_share: min_healthy?,
            max_surge: max_surge?,
        })
    }

    /// `90%` or `0.9` (or `0` / `1`).
    fn share(&mut self, node: &Node, key: Pos, path: &str) -> Option<f64> {
        let (at, v) = self.scalar(node, key, path, "a share")?;
        let share = match &v {
            Scalar::Int(i) if (0..=1).contains(i) => Some(*i as f64),
            Scalar::Str(s) => match s.strip_suffix('%') {
                Some(percent) => percent.trim().parse::<f64>().ok().map(|p| p / 100.0),
                None => s.parse::<f64>().ok(),
            },
            _ => None,
        };
        match share {
            Some(share) if (0.0..=1.0).contains(&share) => Some(share),
            _ => {
                let shown = v.as_text().unwrap_or_else(|| "null".to_string());
                self.error_expected(
                    at,
                    format!("{path} ({shown}) is not a share"),
                    Some("a percentage like 90% or a fraction between 0 and 1 like 0.9"),
                );
                None
            }
        }
    }

    // ----- what `endstate serve` reads: health, brake, scaling -------------

    /// Whole seconds, as every duration in the spec is written.
    fn seconds(&mut self, node: &Node, key: Pos, path: &str) -> Option<(Pos, u64)> {
        self.bounded(node, key, path, 0, i64::from(u32::MAX))
            .map(|(at, v)| (at, u64::from(v)))
    }

    /// An integer or a decimal number (`50`, `0.5`, `-2.5`).
    fn number(&mut self, node: &Node, key: Pos, path: &str) -> Option<(Pos, f64)> {
        let (at, v) = self.scalar(node, key, path, "a number")?;
        let number = match &v {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Str(s) => s.parse::<f64>().ok().filter(|f| f.is_finite()),
            Scalar::Null | Scalar::Bool(_) => None,
        };
        if number.is_none() {
            match &v {
                Scalar::Str(s) => self.error(at, format!("{path}: `{s}` is not a number")),
                other => self.error(
                    at,
                    format!("{path}: expected a number, found {}", other.kind()),
                ),
            }
        }
        number.map(|n| (at, n))
    }

    fn boolean(&mut self, node: &Node, key: Pos, path: &str) -> Option<bool> {
        let (at, v) = self.scalar(node, key, path, "a boolean")?;
        match v {
            Scalar::Bool(b) => Some(b),
            other => {
                self.error_expected(
                    at,
                    format!("{path}: expected a boolean, found {}", other.kind()),
                    Some("true or false"),
                );
                None
            }
        }
    }

    /// A required field: its key and value, or a reported error.
    fn required<'n>(
        &mut self,
        f: &Fields<'n>,
        at: Pos,
        path: &str,
        field: &str,
    ) -> Option<(Pos, &'n Node)> {
        let found = f.get(field);
        if found.is_none() {
            self.missing(at, path, field);
        }
        found
    }

    fn health_check(&mut self, node: &Node, key: Pos) -> Option<HealthCheck> {
        const PATH: &str = "health_check";
        let f = self.fields(node, key, PATH, HEALTH_CHECK_FIELDS)?;
        let mut path_at = None;
        let probe = match (f.get("http"), f.get("tcp")) {
            (Some(_), Some((k, _))) => {
                self.error_expected(
                    k,
                    "health_check sets both `http` and `tcp`",
                    Some("one of http, tcp"),
                );
                None
            }
            (Some((k, n)), None) => self.http_probe(n, k, &mut path_at),
            (None, Some((k, n))) => self.tcp_probe(n, k),
            (None, None) => {
                self.error_expected(
                    key,
                    "health_check sets neither `http` nor `tcp`",
                    Some("http: { port: 8080 } or tcp: { port: 22 }"),
                );
                None
            }
        };
        // Defaults come from the type; the probe is replaced below.
        let mut check = HealthCheck::new(ProbeTarget::Tcp { port: 1 });
        let mut ok = true;
        let mut at = BTreeMap::new();
        for (field, target) in [
            ("interval", &mut check.interval_seconds),
            ("timeout", &mut check.timeout_seconds),
            ("grace_period", &mut check.grace_period_seconds),
        ] {
            if let Some((k, n)) = f.get(field) {
                match self.seconds(n, k, &join(PATH, field)) {
                    Some((pos, v)) => {
                        *target = v;
                        at.insert(field, pos);
                    }
                    None => ok = false,
                }
            }
        }
        for (field, target) in [
            ("healthy_threshold", &mut check.healthy_threshold),
            ("unhealthy_threshold", &mut check.unhealthy_threshold),
        ] {
            if let Some((k, n)) = f.get(field) {
                match self.bounded(n, k, &join(PATH, field), 0, i64::from(u32::MAX)) {
                    Some((pos, v)) => {
                        *target = v;
                        at.insert(field, pos);
                    }
                    None => ok = false,
                }
            }
        }
        let probe = probe?;
        check.probe = probe;
        if !ok {
            return None;
        }
        let Err(errors) = check.validate() else {
            return Some(check);
        };
        for e in errors {
            let (pos, message) = match &e {
                ConfigError::ZeroInterval => (
                    at.get("interval"),
                    "health_check.interval must be at least 1".to_string(),
                ),
                ConfigError::TimeoutNotBelowInterval { timeout, interval } => (
                    at.get("timeout").or(at.get("interval")),
                    format!(
                        "health_check.timeout ({timeout}) must be at least 1 and less than \
                         health_check.interval ({interval})"
                    ),
                ),
                ConfigError::ZeroThreshold(field) => (
                    at.get(field),
                    format!("health_check.{field} must be at least 1"),
                ),
                ConfigError::RelativePath(p) => (
                    path_at.as_ref(),
                    format!("health_check.http.path `{p}` must start with `/`"),
                ),
                ConfigError::BadStatus(_) => (None, e.to_string()),
            };
            self.error(pos.copied().unwrap_or(key), message);
        }
        None
    }

    fn http_probe(
        &mut self,
        node: &Node,
        key: Pos,
        path_at: &mut Option<Pos>,
    ) -> Option<ProbeTarget> {
        const PATH: &str = "health_check.http";
        let f = self.fields(node, key, PATH, HTTP_FIELDS)?;
        let port = self
            .required(&f, key, PATH, "port")
            .and_then(|(k, n)| self.port(n, k, "health_check.http.port"));
        let path = match f.get("path") {
            Some((k, n)) => self.string(n, k, "health_check.http.path").map(|(at, p)| {
                *path_at = Some(at);
                p
            }),
            None => Some("/".to_string()),
        };
        let expected = match f.get("expected") {
            Some((k, n)) => {
                let (at, v) = self.scalar(n, k, "health_check.http.expected", "a status")?;
                let text = v.as_text().unwrap_or_default();
                match text.parse::<ExpectedStatus>() {
                    Ok(expected) => Some(expected),
                    Err(_) => {
                        self.error_expected(
                            at,
                            format!("health_check.http.expected `{text}` is not a list of HTTP statuses"),
                            Some("codes and ranges within 100-599, like 200, \"200-299\" or \"200,204\""),
                        );
                        None
                    }
                }
            }
            None => Some(ExpectedStatus::default()),
        };
        Some(ProbeTarget::Http {
            port: port?,
            path: path?,
            expected: expected?,
        })
    }

    fn tcp_probe(&mut self, node: &Node, key: Pos) -> Option<ProbeTarget> {
        let f = self.fields(node, key, "health_check.tcp", TCP_FIELDS)?;
        let (k, n) = self.required(&f, key, "health_check.tcp", "port")?;
        let port = self.port(n, k, "health_check.tcp.port")?;
        Some(ProbeTarget::Tcp { port })
    }

    fn port(&mut self, node: &Node, key: Pos, path: &str) -> Option<u16> {
        self.bounded(node, key, path, 1, 65_535)
            .and_then(|(_, p)| u16::try_from(p).ok())
    }

    fn brake(&mut self, node: &Node, key: Pos) -> Option<BrakeConfig> {
        let f = self.fields(node, key, "replacement_brake", BRAKE_FIELDS)?;
        let defaults = BrakeConfig::default();
        let share = match f.get("max_unhealthy_share") {
            Some((k, n)) => self.share(n, k, "replacement_brake.max_unhealthy_share"),
            None => Some(defaults.max_unhealthy_share),
        };
        let min = match f.get("min_unhealthy") {
            Some((k, n)) => self
                .bounded(
                    n,
                    k,
                    "replacement_brake.min_unhealthy",
                    0,
                    i64::from(MAX_CAPACITY),
                )
                .map(|(_, v)| v),
            None => Some(defaults.min_unhealthy),
        };
        let window = match f.get("window") {
            Some((k, n)) => self
                .seconds(n, k, "replacement_brake.window")
                .map(|(_, v)| v),
            None => Some(defaults.window_seconds),
        };
        Some(BrakeConfig {
            max_unhealthy_share: share?,
            min_unhealthy: min?,
            window_seconds: window?,
        })
    }

    /// `group_max` is the group's `capacity.max` when it parsed.
    fn scaling(&mut self, node: &Node, key: Pos, group_max: Option<u32>) -> Option<Scaling> {
        let f = self.fields(node, key, "scaling", SCALING_FIELDS)?;
        let mut ok = true;
        let mut scaling = Scaling::default();
        if let Some((k, n)) = f.get("target_tracking") {
            let items = self.list(n, k, "scaling.target_tracking");
            ok &= items.is_some();
            let items = items.unwrap_or_default();
            for (i, item) in items.iter().enumerate() {
                let path = format!("scaling.target_tracking[{i}]");
                match self.target_tracking(item, value_pos(item, k), &path) {
                    Some(policy) => scaling.target_tracking.push(policy),
                    None => ok = false,
                }
            }
        }
        if let Some((k, n)) = f.get("step") {
            let items = self.list(n, k, "scaling.step");
            ok &= items.is_some();
            let items = items.unwrap_or_default();
            for (i, item) in items.iter().enumerate() {
                let path = format!("scaling.step[{i}]");
                match self.step_policy(item, value_pos(item, k), &path, group_max) {
                    Some(policy) => scaling.step.push(policy),
                    None => ok = false,
                }
            }
        }
        if let Some((k, n)) = f.get("scheduled") {
            let items = self.list(n, k, "scaling.scheduled");
            ok &= items.is_some();
            let items = items.unwrap_or_default();
            let mut names: BTreeMap<String, Pos> = BTreeMap::new();
            for (i, item) in items.iter().enumerate() {
                let path = format!("scaling.scheduled[{i}]");
                match self.scheduled(item, value_pos(item, k), &path, group_max) {
                    Some((name_at, action)) => {
                        if let Some(first) = names.get(&action.name) {
                            self.error_expected(
                                name_at,
                                format!(
                                    "{path}.name: duplicate scheduled action `{}` (first on line {})",
                                    action.name, first.line
                                ),
                                Some("a name unique within the group"),
                            );
                            ok = false;
                        } else {
                            names.insert(action.name.clone(), name_at);
                        }
                        scaling.scheduled.push(action);
                    }
                    None => ok = false,
                }
            }
        }
        ok.then_some(scaling)
    }

    /// A metric's name: `[a-z][a-z0-9_]*`.
    fn metric(&mut self, f: &Fields<'_>, at: Pos, path: &str) -> Option<String> {
        let (k, n) = self.required(f, at, path, "metric")?;
        let (pos, metric) = self.string(n, k, &join(path, "metric"))?;
        let mut chars = metric.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid {
            Some(metric)
        } else {
            self.error_expected(
                pos,
                format!("{path}.metric: invalid metric name `{metric}`"),
                Some("a-z, 0-9 and _, starting with a letter, like cpu"),
            );
            None
        }
    }

    /// An optional duration in seconds, `default` when absent.
    fn seconds_or(&mut self, f: &Fields<'_>, path: &str, field: &str, default: u64) -> Option<u64> {
        match f.get(field) {
            Some((k, n)) => self.seconds(n, k, &join(path, field)).map(|(_, v)| v),
            None => Some(default),
        }
    }

    fn target_tracking(
        &mut self,
        node: &Node,
        at: Pos,
        path: &str,
    ) -> Option<TargetTrackingConfig> {
        let f = self.fields(node, at, path, TARGET_FIELDS)?;
        let metric = self.metric(&f, at, path);
        let target = self
            .required(&f, at, path, "target")
            .and_then(|(k, n)| self.number(n, k, &join(path, "target")))
            .and_then(|(pos, target)| {
                if target > 0.0 {
                    Some(target)
                } else {
                    self.error(
                        pos,
                        format!("{path}.target ({target}) must be greater than 0"),
                    );
                    None
                }
            });
        let scale_out = self.seconds_or(&f, path, "scale_out_cooldown", 300);
        let scale_in = self.seconds_or(&f, path, "scale_in_cooldown", 300);
        let warmup = self.seconds_or(&f, path, "instance_warmup", 300);
        let disable_scale_in = match f.get("disable_scale_in") {
            Some((k, n)) => self.boolean(n, k, &join(path, "disable_scale_in")),
            None => Some(false),
        };
        Some(TargetTrackingConfig {
            metric: metric?,
            target: target?,
            scale_out_cooldown_secs: scale_out?,
            scale_in_cooldown_secs: scale_in?,
            instance_warmup_secs: warmup?,
            disable_scale_in: disable_scale_in?,
        })
    }

    fn step_policy(
        &mut self,
        node: &Node,
        at: Pos,
        path: &str,
        group_max: Option<u32>,
    ) -> Option<StepScalingConfig> {
        let f = self.fields(node, at, path, STEP_POLICY_FIELDS)?;
        let metric = self.metric(&f, at, path);
        let threshold = self
            .required(&f, at, path, "threshold")
            .and_then(|(k, n)| self.number(n, k, &join(path, "threshold")));
        let adjustment_type = self
            .required(&f, at, path, "adjustment_type")
            .and_then(|(k, n)| self.string(n, k, &join(path, "adjustment_type")))
            .and_then(|(pos, name)| {
                let found = ADJUSTMENT_TYPES.iter().find(|(n, _)| *n == name);
                if found.is_none() {
                    let names: Vec<&str> = ADJUSTMENT_TYPES.iter().map(|(n, _)| *n).collect();
                    self.error_expected(
                        pos,
                        format!("{path}.adjustment_type: unknown type `{name}`"),
                        Some(format!("one of {}", names.join(", "))),
                    );
                }
                found.map(|(_, t)| *t)
            });
        let mut step_at = Vec::new();
        let steps = self.required(&f, at, path, "steps").and_then(|(k, n)| {
            let items = self.list(n, k, &join(path, "steps"))?;
            step_at.push(value_pos(n, k));
            let mut steps = Vec::new();
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                let step_path = format!("{path}.steps[{i}]");
                let item_at = value_pos(item, k);
                match self.step(item, item_at, &step_path, adjustment_type, group_max) {
                    Some((adjustment_at, step)) => {
                        step_at.push(item_at);
                        step_at.push(adjustment_at);
                        steps.push(step);
                    }
                    None => ok = false,
                }
            }
            ok.then_some(steps)
        });
        let magnitude = match f.get("min_adjustment_magnitude") {
            Some((k, n)) => self
                .bounded(
                    n,
                    k,
                    &join(path, "min_adjustment_magnitude"),
                    1,
                    i64::from(group_max.unwrap_or(MAX_CAPACITY)),
                )
                .map(|(_, v)| Some(v)),
            None => Some(None),
        };
        let warmup = self.seconds_or(&f, path, "instance_warmup", 300);
        let scale_in = self.seconds_or(&f, path, "scale_in_cooldown", 300);
        let policy = StepScalingConfig {
            metric: metric?,
            threshold: threshold?.1,
            adjustment_type: adjustment_type?,
            steps: steps?,
            min_adjustment_magnitude: magnitude?,
            instance_warmup_secs: warmup?,
            scale_in_cooldown_secs: scale_in?,
        };
        // step_at holds the steps list, then each step and its adjustment.
        let list_at = step_at.first().copied().unwrap_or(at);
        let step_pos = |i: usize| step_at.get(1 + 2 * i).copied().unwrap_or(list_at);
        let adjustment_pos = |i: usize| step_at.get(2 + 2 * i).copied().unwrap_or(list_at);
        let Err(e) = policy.validate() else {
            return Some(policy);
        };
        let (pos, message) = match e {
            StepConfigError::NoSteps(_) => (list_at, format!("{path}.steps is empty")),
            StepConfigError::EmptyInterval { index } => (
                step_pos(index),
                format!("{path}.steps[{index}]: lower must be below upper"),
            ),
            StepConfigError::Overlap { a, b } => (
                step_pos(b),
                format!("{path}.steps[{b}] overlaps {path}.steps[{a}]"),
            ),
            StepConfigError::NegativeExact { index, value } => (
                adjustment_pos(index),
                format!(
                    "{path}.steps[{index}].adjustment ({value}) is negative, and exact_capacity sets the capacity to it"
                ),
            ),
        };
        self.error(pos, message);
        None
    }

    /// One step, and where its adjustment is written.
    fn step(
        &mut self,
        node: &Node,
        at: Pos,
        path: &str,
        adjustment_type: Option<AdjustmentType>,
        group_max: Option<u32>,
    ) -> Option<(Pos, StepAdjustment)> {
        let f = self.fields(node, at, path, STEP_FIELDS)?;
        let bound = |this: &mut Self, field: &str| match f.get(field) {
            Some((k, n)) => this.number(n, k, &join(path, field)).map(|(_, v)| Some(v)),
            None => Some(None),
        };
        let lower = bound(self, "lower");
        let upper = bound(self, "upper");
        let adjustment = self
            .required(&f, at, path, "adjustment")
            .and_then(|(k, n)| self.integer(n, k, &join(path, "adjustment")));
        let (adjustment_at, adjustment) = adjustment?;
        if let (Some(AdjustmentType::ExactCapacity), Some(max)) = (adjustment_type, group_max) {
            if adjustment > i64::from(max) {
                self.error(
                    adjustment_at,
                    format!(
                        "{path}.adjustment ({adjustment}) is over capacity.max ({max}), and exact_capacity sets the capacity to it"
                    ),
                );
                return None;
            }
        }
        Some((
            adjustment_at,
            StepAdjustment {
                lower_bound: lower?,
                upper_bound: upper?,
                adjustment,
            },
        ))
    }

    /// A scheduled action and where its name is written.
    fn scheduled(
        &mut self,
        node: &Node,
        at: Pos,
        path: &str,
        group_max: Option<u32>,
    ) -> Option<(Pos, ScheduledActionConfig)> {
        let f = self.fields(node, at, path, SCHEDULED_FIELDS)?;
        let name = self
            .required(&f, at, path, "name")
            .and_then(|(k, n)| self.string(n, k, &join(path, "name")))
            .and_then(|(pos, name)| {
                if name.is_empty() {
                    self.error(pos, format!("{path}.name is empty"));
                    None
                } else {
                    Some((pos, name))
                }
            });
        let cron = self
            .required(&f, at, path, "cron")
            .and_then(|(k, n)| self.string(n, k, &join(path, "cron")));
        let zone = match f.get("time_zone") {
            Some((k, n)) => self
                .string(n, k, &join(path, "time_zone"))
                .map(|(pos, z)| (Some(pos), z)),
            None => Some((None, "UTC".to_string())),
        };
        let value = |this: &mut Self, field: &str| match f.get(field) {
            Some((k, n)) => this
                .bounded(n, k, &join(path, field), 0, i64::from(MAX_CAPACITY))
                .map(Some),
            None => Some(None),
        };
        let min = value(self, "min");
        let max = value(self, "max");
        let desired = value(self, "desired");
        let ((name_at, name), (cron_at, cron), (zone_at, time_zone)) = (name?, cron?, zone?);
        let (min, max, desired) = (min?, max?, desired?);
        let config = ScheduledActionConfig {
            name,
            cron,
            time_zone,
            min: min.map(|(_, v)| v),
            max: max.map(|(_, v)| v),
            desired: desired.map(|(_, v)| v),
        };
        let mut ok = true;
        // Without a max of its own, the action lives within the group's.
        if let (None, Some(group_max)) = (max, group_max) {
            for (field, set) in [("min", min), ("desired", desired)] {
                if let Some((pos, v)) = set {
                    if v > group_max {
                        self.error(
                            pos,
                            format!(
                                "{path}.{field} ({v}) is over capacity.max ({group_max}), and the action does not set max"
                            ),
                        );
                        ok = false;
                    }
                }
            }
        }
        // The zone is loaded first; when it fails, the rest is still
        // checked against UTC so that every error is reported at once.
        let mut errors = Vec::new();
        if let Err(e) = ScheduledAction::from_config(&config) {
            if matches!(e, ScheduleError::Zone { .. }) {
                errors.push(e);
                if let Err(more) = ScheduledAction::with_zone(&config, TimeZone::fixed("UTC", 0)) {
                    errors.push(more);
                }
            } else {
                errors.push(e);
            }
        }
        for e in errors {
            ok = false;
            match e {
                ScheduleError::Zone { source, .. } => self.error_expected(
                    zone_at.unwrap_or(at),
                    format!("{path}.time_zone: {source}"),
                    Some("an IANA time zone name, like Europe/Berlin or UTC"),
                ),
                ScheduleError::Cron { source, .. } => {
                    let pos = match source.offset {
                        Some(offset) => self.locate(cron_at, &config.cron, offset),
                        None => cron_at,
                    };
                    self.error_expected(
                        pos,
                        format!("{path}.cron: {source}"),
                        Some("minute hour day-of-month month day-of-week, like \"0 19 * * 1-5\""),
                    );
                }
                ScheduleError::NothingToSet(_) => self.error_expected(
                    at,
                    format!("{path} sets none of min, max and desired"),
                    Some("at least one of min, max, desired"),
                ),
                ScheduleError::MinAboveMax {
                    min: lo, max: hi, ..
                } => self.error(
                    min.map_or(at, |(pos, _)| pos),
                    format!("{path}.min ({lo}) is greater than {path}.max ({hi})"),
                ),
            }
        }
        ok.then_some((name_at, config))
    }

    // ----- rollouts: load balancers and strategies -------------------------

    /// `load_balancers:`, sorted by name.
    fn load_balancers(&mut self, node: &Node, key: Pos) -> Option<Vec<LoadBalancerSpec>> {
        let Node::Mapping(map) = node else {
            self.error(
                value_pos(node, key),
                format!(
                    "load_balancers: expected a mapping, found {}",
                    node_kind(node)
                ),
            );
            return None;
        };
        self.load_balancer_names = map.keys().map(|k| k.as_str().to_string()).collect();
        let mut out = Vec::new();
        let mut ok = true;
        let mut ports: BTreeMap<u16, (String, Pos)> = BTreeMap::new();
        for (name_node, value) in map.iter() {
            let at = scalar_pos(name_node);
            let name = name_node.as_str().to_string();
            if !is_load_balancer_name(&name) {
                self.error_expected(
                    at,
                    format!("invalid load balancer name `{name}`"),
                    Some(LOAD_BALANCER_NAME_RULE),
                );
                ok = false;
            }
            let path = format!("load_balancers.{name}");
            let Some(f) = self.fields(value, at, &path, LOAD_BALANCER_FIELDS) else {
                ok = false;
                continue;
            };
            let port = self
                .required(&f, at, &path, "port")
                .and_then(|(k, n)| self.bounded(n, k, &join(&path, "port"), 1, 65_535))
                .and_then(|(pos, p)| u16::try_from(p).ok().map(|p| (pos, p)));
            let delay = match f.get("deregistration_delay") {
                Some((k, n)) => self
                    .bounded(
                        n,
                        k,
                        &join(&path, "deregistration_delay"),
                        0,
                        MAX_DEREGISTRATION_DELAY,
                    )
                    .map(|(_, v)| u64::from(v)),
                None => Some(300),
            };
            let Some((port_at, port)) = port else {
                ok = false;
                continue;
            };
            if let Some((first, first_at)) = ports.get(&port) {
                self.error_expected(
                    port_at,
                    format!(
                        "{path}.port ({port}) is already the port of load balancer `{first}` (line {})",
                        first_at.line
                    ),
                    Some("a listener port of its own for each load balancer"),
                );
                ok = false;
            } else {
                ports.insert(port, (name.clone(), port_at));
            }
            let Some(delay) = delay else {
                ok = false;
                continue;
            };
            out.push(LoadBalancerSpec {
                name,
                port,
                deregistration_delay: Duration::from_secs(delay),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        ok.then_some(out)
    }

    /// A group's `load_balancer:`: a name under `load_balancers:` that no
    /// other group has taken (a listener forwards to one group's target
    /// groups, which a rollout switches), and the instances' traffic port.
    fn group_load_balancer(
        &mut self,
        node: &Node,
        key: Pos,
        group: &str,
    ) -> Option<GroupLoadBalancer> {
        const PATH: &str = "load_balancer";
        let f = self.fields(node, key, PATH, GROUP_LOAD_BALANCER_FIELDS)?;
        let name = self
            .required(&f, key, PATH, "name")
            .and_then(|(k, n)| self.string(n, k, "load_balancer.name"));
        let port = self
            .required(&f, key, PATH, "port")
            .and_then(|(k, n)| self.port(n, k, "load_balancer.port"));
        let (name_at, name) = name?;
        if !self.load_balancer_names.contains(&name) {
            let expected = self.known("load_balancers", self.load_balancer_names.iter());
            self.error_expected(
                name_at,
                format!("load_balancer.name: unknown load balancer `{name}`"),
                Some(expected),
            );
            return None;
        }
        if let Some((other, other_at)) = self.load_balancer_users.get(&name).cloned() {
            self.error_expected(
                name_at,
                format!(
                    "load_balancer.name: load balancer `{name}` is already used by group `{other}` (line {})",
                    other_at.line
                ),
                Some("one group per load balancer: its listener forwards to that group's generations"),
            );
            return None;
        }
        self.load_balancer_users
            .insert(name.clone(), (group.to_string(), name_at));
        Some(GroupLoadBalancer { name, port: port? })
    }

    /// A group's `rollout:`; `desired` is its `capacity.desired` when that
    /// parsed, to check that a rolling update can move at all.
    fn rollout(&mut self, node: &Node, key: Pos, desired: Option<u32>) -> Option<Rollout> {
        const PATH: &str = "rollout";
        let f = self.fields(node, key, PATH, ROLLOUT_FIELDS)?;
        let mut ok = true;
        let rolling = self
            .required(&f, key, PATH, "strategy")
            .and_then(|(k, n)| self.string(n, k, "rollout.strategy"))
            .and_then(|(at, s)| match s.as_str() {
                "rolling" => Some(true),
                "blue_green" => Some(false),
                _ => {
                    self.error_expected(
                        at,
                        format!("rollout.strategy: unknown strategy `{s}`"),
                        Some("rolling or blue_green"),
                    );
                    None
                }
            });
        if let Some(rolling) = rolling {
            let (this, other, foreign, own) = if rolling {
                ("rolling", "blue_green", BLUE_GREEN_ONLY, ROLLING_ONLY)
            } else {
                ("blue_green", "rolling", ROLLING_ONLY, BLUE_GREEN_ONLY)
            };
            for field in foreign {
                if let Some((k, _)) = f.get(field) {
                    let keys: Vec<&str> = own.iter().chain(ROLLOUT_COMMON).copied().collect();
                    self.error_expected(
                        k,
                        format!("rollout.{field} is a setting of strategy {other}, and this rollout is {this}"),
                        Some(format!("for {this}: {}", keys.join(", "))),
                    );
                    ok = false;
                }
            }
        }
        let defaults = Rollout::default_rolling();
        let max_surge = match f.get("max_surge") {
            Some((k, n)) => self
                .amount(n, k, "rollout.max_surge")
                .map(|(at, a)| (Some(at), a)),
            None => Some((None, rollout::DEFAULT_MAX_SURGE)),
        };
        let max_unavailable = match f.get("max_unavailable") {
            Some((k, n)) => self
                .amount(n, k, "rollout.max_unavailable")
                .map(|(at, a)| (Some(at), a)),
            None => Some((None, rollout::DEFAULT_MAX_UNAVAILABLE)),
        };
        let pause = self.seconds_or(&f, PATH, "pause", 0);
        let canary = match f.get("canary") {
            Some((k, n)) => self.canary(n, k),
            None => Some(Vec::new()),
        };
        let canary_pause = self.seconds_or(
            &f,
            PATH,
            "canary_pause",
            rollout::DEFAULT_CANARY_PAUSE.as_secs(),
        );
        let keep_old_for = self.seconds_or(
            &f,
            PATH,
            "keep_old_for",
            rollout::DEFAULT_KEEP_OLD_FOR.as_secs(),
        );
        let healthy_timeout = match f.get("healthy_timeout") {
            Some((k, n)) => self
                .seconds(n, k, "rollout.healthy_timeout")
                .and_then(|(at, v)| {
                    if v == 0 {
                        self.error(at, "rollout.healthy_timeout must be at least 1");
                        None
                    } else {
                        Some(v)
                    }
                }),
            None => Some(defaults.healthy_timeout.as_secs()),
        };
        let watch = self.seconds_or(&f, PATH, "watch", defaults.watch.as_secs());
        let auto_rollback = match f.get("auto_rollback") {
            Some((k, n)) => self.boolean(n, k, "rollout.auto_rollback"),
            None => Some(defaults.auto_rollback),
        };
        let max_error_rate = match f.get("max_error_rate") {
            Some((k, n)) => self.share(n, k, "rollout.max_error_rate").and_then(|rate| {
                if rate > 0.0 {
                    Some(rate)
                } else {
                    self.error_expected(
                        value_pos(n, k),
                        "rollout.max_error_rate must be greater than 0",
                        Some("a percentage like 5% or a fraction like 0.05"),
                    );
                    None
                }
            }),
            None => Some(defaults.max_error_rate),
        };
        let strategy = if rolling? {
            let ((surge_at, max_surge), (unavailable_at, max_unavailable)) =
                (max_surge?, max_unavailable?);
            // Scaling may move desired later; a group at 0 still gets the
            // check at 1, where literal zeros already fail.
            if let Some(desired) = desired.map(|d| d.max(1)) {
                if max_surge.round_up(desired) == 0 && max_unavailable.round_down(desired) == 0 {
                    self.error_expected(
                        unavailable_at.or(surge_at).unwrap_or(key),
                        format!(
                            "rollout.max_surge and rollout.max_unavailable both come to 0 instances at a desired capacity of {desired}: no instance could be replaced"
                        ),
                        Some("max_surge or max_unavailable of at least one instance, like max_surge: 1"),
                    );
                    ok = false;
                }
            }
            Strategy::Rolling {
                max_surge,
                max_unavailable,
                pause: Duration::from_secs(pause?),
            }
        } else {
            Strategy::BlueGreen {
                canary: canary?,
                canary_pause: Duration::from_secs(canary_pause?),
                keep_old_for: Duration::from_secs(keep_old_for?),
            }
        };
        let rollout = Rollout {
            strategy,
            healthy_timeout: Duration::from_secs(healthy_timeout?),
            watch: Duration::from_secs(watch?),
            auto_rollback: auto_rollback?,
            max_error_rate: max_error_rate?,
        };
        ok.then_some(rollout)
    }

    /// A number of instances (`2`) or a whole percentage of desired
    /// capacity (`"25%"`).
    fn amount(&mut self, node: &Node, key: Pos, path: &str) -> Option<(Pos, Amount)> {
        const EXPECTED: &str =
            "a number of instances like 2, or a whole percentage of desired capacity like 25%";
        let (at, v) = self.scalar(node, key, path, "a count or a percentage")?;
        let max = i64::from(MAX_CAPACITY);
        match &v {
            Scalar::Int(i) if (0..=max).contains(i) => {
                u32::try_from(*i).ok().map(|n| (at, Amount::Count(n)))
            }
            Scalar::Int(i) => {
                self.error(
                    at,
                    format!(
                        "{path} ({i}) is out of range 0..={}",
                        user_data::thousands(MAX_CAPACITY as usize)
                    ),
                );
                None
            }
            Scalar::Str(s) => match s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                Some(p) if p <= 100 => Some((at, Amount::Percent(p))),
                Some(p) => {
                    self.error(at, format!("{path} ({p}%) is over 100%"));
                    None
                }
                None => {
                    self.error_expected(
                        at,
                        format!("{path} (`{s}`) is not a count or a percentage"),
                        Some(EXPECTED),
                    );
                    None
                }
            },
            other => {
                self.error_expected(
                    at,
                    format!(
                        "{path}: expected a count or a percentage, found {}",
                        other.kind()
                    ),
                    Some(EXPECTED),
                );
                None
            }
        }
    }

    /// `canary:`: percentages of requests for the new generation, each
    /// 1..=99 and greater than the one before.
    fn canary(&mut self, node: &Node, key: Pos) -> Option<Vec<u32>> {
        let items = self.list(node, key, "rollout.canary")?;
        let mut steps: Vec<u32> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = format!("rollout.canary[{i}]");
            let Some((at, step)) = self.bounded(item, value_pos(node, key), &path, 1, 99) else {
                ok = false;
                continue;
            };
            if let Some(&previous) = steps.last() {
                if step <= previous {
                    self.error_expected(
                        at,
                        format!(
                            "{path} ({step}) is not greater than the step before it ({previous})"
                        ),
                        Some("percentages in increasing order, like [10, 50]"),
                    );
                    ok = false;
                }
            }
            steps.push(step);
        }
        ok.then_some(steps)
    }

    fn user_data(&mut self, node: &Node, key: Pos) -> Option<UserData> {
        let f = self.fields(node, key, "user_data", USER_DATA_FIELDS)?;
        let set: Vec<(&str, Pos, &Node)> = USER_DATA_FIELDS
            .iter()
            .filter_map(|name| f.get(name).map(|(k, n)| (*name, k, n)))
            .collect();
        let (kind, k, n) = match set.as_slice() {
            [one] => *one,
            [] => {
                self.error_expected(
                    key,
                    "user_data sets none of script, file, cloud_config",
                    Some("exactly one of script, file, cloud_config"),
                );
                return None;
            }
            [first, second, ..] => {
                self.error_expected(
                    second.1,
                    format!("user_data sets both `{}` and `{}`", first.0, second.0),
                    Some("exactly one of script, file, cloud_config"),
                );
                return None;
            }
        };
        let parts = match kind {
            "script" => {
                let at = value_pos(n, k);
                match n {
                    Node::Scalar(s) => match literal(s) {
                        Scalar::Str(text) => self.interpolate(&text, &Origin::Spec(at), true),
                        other => {
                            self.error(
                                at,
                                format!(
                                    "user_data.script: expected a string, found {}",
                                    other.kind()
                                ),
                            );
                            None
                        }
                    },
                    other => {
                        self.error(
                            at,
                            format!(
                                "user_data.script: expected a string, found {}",
                                node_kind(other)
                            ),
                        );
                        None
                    }
                }
            }
            "file" => {
                let (at, path) = self.string(n, k, "user_data.file")?;
                let full = self.base_dir.join(&path);
                match std::fs::read_to_string(&full) {
                    Ok(text) => self.interpolate(&text, &Origin::File(&full), true),
                    Err(e) => {
                        self.error(at, format!("cannot read user data file `{path}`: {e}"));
                        None
                    }
                }
            }
            _ => {
                let Node::Mapping(map) = n else {
                    self.error(
                        value_pos(n, k),
                        format!(
                            "user_data.cloud_config: expected a mapping, found {}",
                            node_kind(n)
                        ),
                    );
                    return None;
                };
                let root = self.cloud_config_map(map)?;
                Some(cloud_config::emit(&root))
            }
        }?;
        let user_data = UserData::from_parts(parts);
        let template = user_data.template();
        if template.len() > USER_DATA_LIMIT {
            match user_data::gzip(template.as_bytes()) {
                Ok(compressed) if compressed.len() <= USER_DATA_LIMIT => {}
                Ok(compressed) => {
                    self.error_expected(
                        key,
                        oversize_message(template.len(), compressed.len()),
                        Some("smaller user data: fetch large files at boot, or bake them into the image"),
                    );
                    return None;
                }
                Err(e) => {
                    self.error(key, format!("cannot gzip user data: {e}"));
                    return None;
                }
            }
        }
        Some(user_data)
    }

    fn cloud_config_map(&mut self, map: &MarkedMappingNode) -> Option<Vec<(String, Value)>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (k, v) in map.iter() {
            match self.cloud_config_value(v, scalar_pos(k)) {
                Some(value) => out.push((k.as_str().to_string(), value)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn cloud_config_value(&mut self, node: &Node, key: Pos) -> Option<Value> {
        match node {
            Node::Mapping(m) => self.cloud_config_map(m).map(Value::Map),
            Node::Sequence(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for item in items.iter() {
                    match self.cloud_config_value(item, value_pos(node, key)) {
                        Some(v) => out.push(v),
                        None => ok = false,
                    }
                }
                ok.then_some(Value::List(out))
            }
            Node::Scalar(s) => {
                let at = value_pos(node, key);
                Some(match self.resolve(s, at, true)? {
                    Resolved::Scalar(Scalar::Null) => Value::Null,
                    Resolved::Scalar(Scalar::Bool(b)) => Value::Bool(b),
                    Resolved::Scalar(Scalar::Int(i)) => Value::Int(i),
                    Resolved::Scalar(Scalar::Str(t)) => Value::text(t),
                    Resolved::Parts(parts) => Value::Str(parts),
                })
            }
        }
    }
}

/// An optional string field: `Some(None)` when absent, `None` after an error.
fn optional_string(
    loader: &mut Loader<'_>,
    f: &Fields<'_>,
    field: &str,
    path: &str,
) -> Option<Option<String>> {
    match f.get(field) {
        Some((k, n)) => loader.string(n, k, path).map(|(_, s)| Some(s)),
        None => Some(None),
    }
}

fn push_text(parts: &mut Vec<UserDataPart>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(UserDataPart::Text(last)) = parts.last_mut() {
        last.push_str(text);
    } else {
        parts.push(UserDataPart::Text(text.to_string()));
    }
}

fn parts_text(parts: &[UserDataPart]) -> String {
    parts
        .iter()
        .filter_map(|p| match p {
            UserDataPart::Text(t) => Some(t.as_str()),
            UserDataPart::Secret(_) | UserDataPart::IndentedSecret { .. } => None,
        })
        .collect()
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// sha256 over the canonical JSON of the spec (secrets are references in
/// it, so the hash says nothing about their values).
pub(crate) fn spec_hash(spec: &Spec) -> String {
    let mut canonical = serde_json::json!({
        "project": spec.project,
        "environment": spec.environment,
        "provider": spec.provider,
        "groups": spec.groups,
        "load_balancers": spec.load_balancers,
        "roles": spec.roles,
    });
    // Only when there are any, so that a spec without recipes keeps the
    // hash it had before they existed.
    if !spec.recipes.is_empty() {
        canonical["recipes"] = serde_json::json!(spec.recipes);
    }
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

const LOAD_BALANCER_NAME_RULE: &str =
    "1 to 32 characters of A-Z, a-z, 0-9 and -, not starting or ending with - nor starting with internal-";

/// ELBv2's load balancer names: 1..=32 of `[A-Za-z0-9-]`, no leading or
/// trailing `-`, and not `internal-…` (ELB keeps that prefix for itself).
fn is_load_balancer_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.starts_with("internal-")
}

const NAME_RULE: &str = "1 to 40 characters of a-z, 0-9 and -";
const IDENT_RULE: &str = "letters, digits, `_` and `-`, starting with a letter or `_`";

/// Project, group and environment names: `[a-z0-9-]{1,40}`.
fn is_dns_name(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.contains('-')
        && s.ends_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !host.contains(char::is_whitespace)
    })
}

/// `ami-` and 8 or 17 lowercase hex digits.
fn is_ami_id(s: &str) -> bool {
    s.strip_prefix("ami-").is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17)
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_for_misspelt_fields() {
        assert_eq!(did_you_mean("imge", GROUP_FIELDS), Some("image"));
        assert_eq!(
            did_you_mean("instance_typs", GROUP_FIELDS),
            Some("instance_types")
        );
        assert_eq!(did_you_mean("regoin", AWS_FIELDS), Some("region"));
        assert_eq!(did_you_mean("colour", GROUP_FIELDS), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn ami_ids() {
        assert!(is_ami_id("ami-12345678"));
        assert!(is_ami_id("ami-0123456789abcdef0"));
        assert!(!is_ami_id("ami-123"));
        assert!(!is_ami_id("ami-0123456789ABCDEF0"));
        assert!(!is_ami_id("img-12345678"));
    }

    #[test]
    fn urls_and_regions() {
        assert!(is_http_url("http://127.0.0.1:5000"));
        assert!(is_http_url("https://ec2.us-east-1.amazonaws.com/"));
        assert!(!is_http_url("ftp://x"));
        assert!(!is_http_url("http://"));
        assert!(is_region("us-east-1"));
        assert!(!is_region("us east"));
    }
}
