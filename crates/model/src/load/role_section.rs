//! The `roles:` section and a group's `roles:` list: YAML with positions to
//! `endstate_config`'s [`Role`]s. Each resource's fields are checked here
//! against its kind (unknown fields, types, required ones) with the
//! place they were written; the checks across resources (duplicate ids,
//! `requires` / `notify` targets, cycles, paths, modes) are
//! `endstate_config::validate`'s, run on every role together and then on
//! each group's list, and mapped back to the resource and field they name.
//! Those run once every resource has parsed, so that a resource with a typo
//! is not reported again as a missing target.
//!
//! Secrets stay references: a `${secret.NAME}` in a content-like field
//! becomes a placeholder (see [`crate::roles`]). Minijinja's `{{ … }}` and
//! `{% … %}` are not interpolation syntax, so templates pass through as
//! written. It does not run roles.

use std::collections::BTreeMap;

use endstate_config::{validate, Resource, Role};
use marked_yaml::Node;
use serde_json::Value as Json;

use super::{
    join, literal, node_kind, scalar_pos, value_pos, Fields, Loader, Pos, Resolved, Scalar,
    IDENT_RULE, START, TOP_FIELDS,
};
use crate::interpolate;
use crate::roles::{placeholder, PLACEHOLDER_PREFIX};
use crate::UserDataPart;

const ROLE_FIELDS: &[&str] = &["resources"];

/// How a resource field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A string; `${secret.*}` refused.
    Text,
    /// A string that may hold secrets (content, commands).
    SecretText,
    /// A list of strings.
    List,
    Bool,
    /// A uid or gid.
    Id,
    /// Whole seconds.
    Seconds,
    /// `running` or `stopped`.
    Ensure,
    /// A mapping of template variables, any YAML below; strings may hold
    /// secrets.
    Vars,
}

use Shape::{Bool, Ensure, Id, List, Seconds, SecretText, Text, Vars};

/// Role names, as variable names: the schema's pattern and the loader's check.
pub(crate) const ROLE_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_-]*$";

const FILE: &[(&str, Shape)] = &[
    ("name", Text),
    ("path", Text),
    ("content", SecretText),
    ("source", Text),
    ("mode", Text),
    ("owner", Text),
    ("group", Text),
    ("requires", List),
    ("notify", List),
];
const DIRECTORY: &[(&str, Shape)] = &[
    ("name", Text),
    ("path", Text),
    ("mode", Text),
    ("owner", Text),
    ("group", Text),
    ("requires", List),
    ("notify", List),
];
const TEMPLATE: &[(&str, Shape)] = &[
    ("name", Text),
    ("path", Text),
    ("template", SecretText),
    ("source", Text),
    ("vars", Vars),
    ("mode", Text),
    ("owner", Text),
    ("group", Text),
    ("requires", List),
    ("notify", List),
];
const PACKAGE: &[(&str, Shape)] = &[
    ("name", Text),
    ("package", Text),
    ("version", Text),
    ("requires", List),
    ("notify", List),
];
const SERVICE: &[(&str, Shape)] = &[
    ("name", Text),
    ("service", Text),
    ("ensure", Ensure),
    ("enabled", Bool),
    ("requires", List),
    ("notify", List),
];
const USER: &[(&str, Shape)] = &[
    ("name", Text),
    ("uid", Id),
    ("group", Text),
    ("groups", List),
    ("home", Text),
    ("shell", Text),
    ("system", Bool),
    ("requires", List),
    ("notify", List),
];
const GROUP: &[(&str, Shape)] = &[
    ("name", Text),
    ("gid", Id),
    ("system", Bool),
    ("requires", List),
    ("notify", List),
];
const EXEC: &[(&str, Shape)] = &[
    ("name", Text),
    ("command", SecretText),
    ("creates", Text),
    ("onlyif", SecretText),
    ("unless", SecretText),
    ("timeout", Seconds),
    ("requires", List),
    ("notify", List),
];

/// One kind of resource as the spec writes it.
pub(crate) struct KindFields {
    pub(crate) kind: &'static str,
    /// Its fields besides `kind`, `name` first.
    pub(crate) fields: &'static [(&'static str, Shape)],
    /// The fields it requires besides `kind` and `name`.
    pub(crate) required: &'static [&'static str],
}

const fn kind(
    kind: &'static str,
    fields: &'static [(&'static str, Shape)],
    required: &'static [&'static str],
) -> KindFields {
    KindFields {
        kind,
        fields,
        required,
    }
}

/// Every kind, in the order messages list them. The JSON Schema is built
/// from this table too.
pub(crate) const KINDS: &[KindFields] = &[
    kind("file", FILE, &["path"]),
    kind("directory", DIRECTORY, &["path"]),
    kind("template", TEMPLATE, &["path"]),
    kind("package", PACKAGE, &[]),
    kind("service", SERVICE, &[]),
    kind("user", USER, &[]),
    kind("group", GROUP, &[]),
    kind("exec", EXEC, &["command"]),
];

/// The kinds' names, in order, for messages and the schema.
pub(crate) fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.kind).collect()
}

/// Where one resource and its fields were written, to point at them when
/// `validate` names a field.
struct Place {
    /// The resource's first key.
    at: Pos,
    /// `roles.NAME.resources[I]`.
    path: String,
    /// Each field's value.
    fields: BTreeMap<&'static str, Pos>,
    /// Each item of `requires` and of `notify`.
    requires: Vec<Pos>,
    notify: Vec<Pos>,
}

impl Place {
    fn field(&self, field: &str) -> Pos {
        let item = |prefix: &str, items: &[Pos]| {
            field
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| items.get(i).copied())
        };
        if let Some(at) = item("requires[", &self.requires).or(item("notify[", &self.notify)) {
            return at;
        }
        let fallback: &[&str] = match field {
            // Exactly one of content/template and source: point at whichever is there.
            "content" | "template" => &["source"],
            // A cycle runs through requires or notify.
            "requires" => &["notify"],
            // `package` / `service` default to the name.
            "package" | "service" => &["name"],
            _ => &[],
        };
        std::iter::once(field)
            .chain(fallback.iter().copied())
            .find_map(|f| self.fields.get(f).copied())
            .unwrap_or(self.at)
    }
}

impl Loader<'_> {
    /// A standalone roles file: top-level keys of a spec only, `roles:`
    /// required, `variables:` and `secrets:` read for interpolation.
    pub(super) fn roles_document(&mut self, root: Node) -> Option<BTreeMap<String, Role>> {
        let top = self.fields(&root, START, "", TOP_FIELDS)?;
        if let Some((key, node)) = top.get("variables") {
            self.variables(node, key);
        }
        if let Some((key, node)) = top.get("secrets") {
            self.secrets(node, key);
        }
        match top.get("roles") {
            Some((key, node)) => self.roles_section(node, key),
            None => {
                self.missing(START, "", "roles");
                None
            }
        }
    }

    /// `roles:`, name → `{ resources: [...] }`, validated together.
    pub(super) fn roles_section(
        &mut self,
        node: &Node,
        key: Pos,
    ) -> Option<BTreeMap<String, Role>> {
        let Node::Mapping(map) = node else {
            self.error(
                value_pos(node, key),
                format!("roles: expected a mapping, found {}", node_kind(node)),
            );
            return None;
        };
        self.role_names = map.keys().map(|k| k.as_str().to_string()).collect();
        let mut roles: BTreeMap<String, (Role, Vec<Place>)> = BTreeMap::new();
        let mut ok = true;
        for (name_node, value) in map.iter() {
            let at = scalar_pos(name_node);
            let name = name_node.as_str().to_string();
            if !interpolate::is_name(&name) {
                self.error_expected(at, format!("invalid role name `{name}`"), Some(IDENT_RULE));
                ok = false;
            }
            let path = format!("roles.{name}");
            let is_null = matches!(value, Node::Scalar(s) if literal(s) == Scalar::Null);
            let mut resources = Vec::new();
            let mut places = Vec::new();
            if !is_null {
                let before = self.diagnostics.len();
                let Some(f) = self.fields(value, at, &path, ROLE_FIELDS) else {
                    ok = false;
                    continue;
                };
                ok &= self.diagnostics.len() == before;
                if let Some((k, n)) = f.get("resources") {
                    let list_path = join(&path, "resources");
                    let Some(items) = self.list(n, k, &list_path) else {
                        ok = false;
                        continue;
                    };
                    let list_at = value_pos(n, k);
                    for (i, item) in items.iter().enumerate() {
                        let item_path = format!("{list_path}[{i}]");
                        match self.resource(item, value_pos(item, list_at), item_path) {
                            Some((resource, place)) => {
                                resources.push(resource);
                                places.push(place);
                            }
                            None => ok = false,
                        }
                    }
                }
            }
            let source_at = places.iter().map(|p| p.fields.get("source").copied());
            self.role_source_at
                .insert(name.clone(), source_at.collect());
            roles.insert(name.clone(), (Role { name, resources }, places));
        }
        if !ok {
            return None;
        }
        let (list, places): (Vec<Role>, Vec<Vec<Place>>) = roles.into_values().unzip();
        let places: Vec<Place> = places.into_iter().flatten().collect();
        if let Err(errors) = validate(&list) {
            for error in errors {
                let Some(place) = places.get(error.index) else {
                    // Not expected: `index` is into the declaration order `places` follows.
                    self.error(START, format!("roles: {error}"));
                    continue;
                };
                let expected = error
                    .message
                    .starts_with("dependency cycle")
                    .then_some("resources without a cycle: drop one `requires` or `notify` of it");
                self.error_expected(
                    place.field(&error.field),
                    format!(
                        "{}: {}: {}: {}",
                        place.path, error.resource, error.field, error.message
                    ),
                    expected,
                );
            }
            return None;
        }
        Some(list.into_iter().map(|r| (r.name.clone(), r)).collect())
    }

    /// One resource: its kind, then its kind's fields; `None` after
    /// reporting every problem with it.
    fn resource(&mut self, node: &Node, at: Pos, path: String) -> Option<(Resource, Place)> {
        let before = self.diagnostics.len();
        let Node::Mapping(map) = node else {
            self.error(
                at,
                format!("{path}: expected a mapping, found {}", node_kind(node)),
            );
            return None;
        };
        let kind_field = Fields { map }.get("kind");
        let Some((kind_key, kind_node)) = kind_field else {
            self.missing(at, &path, "kind");
            return None;
        };
        let (kind_at, kind) = self.string(kind_node, kind_key, &join(&path, "kind"))?;
        let Some(KindFields {
            fields: table,
            required,
            ..
        }) = KINDS.iter().find(|k| k.kind == kind)
        else {
            self.error_expected(
                kind_at,
                format!("{path}.kind: unknown kind `{kind}`"),
                Some(format!("one of {}", kind_names().join(", "))),
            );
            // Its other fields cannot be checked without a kind.
            return None;
        };
        let mut allowed: Vec<&str> = vec!["kind"];
        allowed.extend(table.iter().map(|(name, _)| *name));
        let f = self.fields(node, at, &path, &allowed)?;
        let mut place = Place {
            at,
            path,
            fields: BTreeMap::new(),
            requires: Vec::new(),
            notify: Vec::new(),
        };
        let mut object = serde_json::Map::new();
        object.insert("kind".to_string(), Json::String(kind.clone()));
        for field in std::iter::once(&"name").chain(required.iter()) {
            self.required(&f, at, &place.path, field);
        }
        for (field, shape) in table.iter() {
            let Some((k, n)) = f.get(field) else {
                continue;
            };
            let field_at = value_pos(n, k);
            place.fields.insert(field, field_at);
            let field_path = join(&place.path, field);
            if *shape == List {
                let items: Vec<Pos> = match n {
                    Node::Sequence(items) => {
                        items.iter().map(|item| value_pos(item, field_at)).collect()
                    }
                    _ => Vec::new(),
                };
                match *field {
                    "requires" => place.requires = items,
                    "notify" => place.notify = items,
                    _ => {}
                }
            }
            if let Some(value) = self.resource_field(n, k, &field_path, *shape) {
                object.insert(field.to_string(), value);
            }
        }
        if self.diagnostics.len() != before {
            return None;
        }
        match serde_json::from_value::<Resource>(Json::Object(object)) {
            Ok(resource) => Some((resource, place)),
            Err(e) => {
                // The checks above mirror the type; this names a gap between them.
                self.error(at, format!("{}: {e}", place.path));
                None
            }
        }
    }

    fn resource_field(&mut self, node: &Node, key: Pos, path: &str, shape: Shape) -> Option<Json> {
        match shape {
            Text => {
                let (at, text) = self.string(node, key, path)?;
                self.unreserved(at, path, text).map(Json::String)
            }
            SecretText => self.secret_text(node, key, path).map(Json::String),
            List => {
                let items = self.string_list(node, key, path)?;
                let mut out = Vec::new();
                for (at, text) in items {
                    out.push(Json::String(self.unreserved(at, path, text)?));
                }
                Some(Json::Array(out))
            }
            Bool => self.boolean(node, key, path).map(Json::Bool),
            Id => self
                .bounded(node, key, path, 0, i64::from(u32::MAX))
                .map(|(_, id)| Json::from(id)),
            Seconds => self.seconds(node, key, path).map(|(_, s)| Json::from(s)),
            Ensure => {
                let (at, text) = self.string(node, key, path)?;
                if text == "running" || text == "stopped" {
                    Some(Json::String(text))
                } else {
                    self.error_expected(
                        at,
                        format!("{path}: `{text}` is not a service state"),
                        Some("running or stopped"),
                    );
                    None
                }
            }
            Vars => {
                if !matches!(node, Node::Mapping(_)) {
                    self.error(
                        value_pos(node, key),
                        format!("{path}: expected a mapping, found {}", node_kind(node)),
                    );
                    return None;
                }
                self.vars_value(node, key, path)
            }
        }
    }

    /// Any YAML value under a template's `vars`, as JSON.
    fn vars_value(&mut self, node: &Node, key: Pos, path: &str) -> Option<Json> {
        match node {
            Node::Mapping(map) => {
                let mut out = serde_json::Map::new();
                let mut ok = true;
                for (k, v) in map.iter() {
                    let item_path = join(path, k.as_str());
                    match self.vars_value(v, scalar_pos(k), &item_path) {
                        Some(value) => {
                            out.insert(k.as_str().to_string(), value);
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(Json::Object(out))
            }
            Node::Sequence(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                let list_at = value_pos(node, key);
                for (i, item) in items.iter().enumerate() {
                    match self.vars_value(item, value_pos(item, list_at), &format!("{path}[{i}]")) {
                        Some(value) => out.push(value),
                        None => ok = false,
                    }
                }
                ok.then_some(Json::Array(out))
            }
            Node::Scalar(s) => {
                let at = value_pos(node, key);
                match self.resolve(s, at, true)? {
                    Resolved::Scalar(Scalar::Null) => Some(Json::Null),
                    Resolved::Scalar(Scalar::Bool(b)) => Some(Json::Bool(b)),
                    Resolved::Scalar(Scalar::Int(i)) => Some(Json::from(i)),
                    Resolved::Scalar(Scalar::Str(text)) => {
                        self.unreserved(at, path, text).map(Json::String)
                    }
                    Resolved::Parts(parts) => self.placeholders(at, path, &parts).map(Json::String),
                }
            }
        }
    }

    /// A string in which `${secret.NAME}` becomes a placeholder.
    fn secret_text(&mut self, node: &Node, key: Pos, path: &str) -> Option<String> {
        let at = value_pos(node, key);
        let Node::Scalar(s) = node else {
            self.error(
                at,
                format!("{path}: expected a string, found {}", node_kind(node)),
            );
            return None;
        };
        match self.resolve(s, at, true)? {
            Resolved::Scalar(Scalar::Null) => {
                self.error(at, format!("{path}: expected a string, found null"));
                None
            }
            Resolved::Scalar(scalar) => {
                let text = scalar.as_text().unwrap_or_default();
                self.unreserved(at, path, text)
            }
            Resolved::Parts(parts) => self.placeholders(at, path, &parts),
        }
    }

    /// Interpolated parts as one string, each secret a placeholder.
    fn placeholders(&mut self, at: Pos, path: &str, parts: &[UserDataPart]) -> Option<String> {
        let mut out = String::new();
        for part in parts {
            match part {
                UserDataPart::Text(text) => {
                    out.push_str(&self.unreserved(at, path, text.clone())?)
                }
                UserDataPart::Secret(secret) | UserDataPart::IndentedSecret { secret, .. } => {
                    let reference = secret.to_string();
                    if reference.contains('}') {
                        // A placeholder ends at the first `}`.
                        self.error_expected(
                            at,
                            format!("{path}: the secret's reference `{reference}` contains `}}`"),
                            Some("a secret file path without `}` for secrets used in roles"),
                        );
                        return None;
                    }
                    out.push_str(&placeholder(secret));
                }
            }
        }
        Some(out)
    }

    /// `text` unless it holds what would read as a secret placeholder.
    fn unreserved(&mut self, at: Pos, path: &str, text: String) -> Option<String> {
        if text.contains(PLACEHOLDER_PREFIX) {
            self.error_expected(
                at,
                format!(
                    "{path}: `{PLACEHOLDER_PREFIX}` is reserved for secret placeholders in roles"
                ),
                Some("${secret.NAME} for a secret declared under `secrets:`"),
            );
            return None;
        }
        Some(text)
    }

    /// A group's `roles:`: names under the spec's `roles:`, each once,
    /// whose resources' `requires` and `notify` stay inside the list.
    pub(super) fn group_roles(
        &mut self,
        node: &Node,
        key: Pos,
        group: &str,
    ) -> Option<Vec<String>> {
        let items = self.string_list(node, key, "roles")?;
        let mut names: Vec<String> = Vec::new();
        let mut ok = true;
        for (i, (at, name)) in items.into_iter().enumerate() {
            if !self.role_names.contains(&name) {
                let expected = self.known("roles", self.role_names.iter());
                self.error_expected(
                    at,
                    format!("roles[{i}]: unknown role `{name}`"),
                    Some(expected),
                );
                ok = false;
            } else if names.contains(&name) {
                self.error(at, format!("roles[{i}]: role `{name}` is listed twice"));
                ok = false;
            } else {
                names.push(name);
            }
        }
        if !ok {
            return None;
        }
        // Every role is valid with all the others; what a group applies is
        // only its own, so a target in a role it does not list is missing.
        if let Some(all) = &self.roles {
            let listed: Vec<Role> = names.iter().filter_map(|n| all.get(n).cloned()).collect();
            if let Err(errors) = validate(&listed) {
                let at = value_pos(node, key);
                for error in errors {
                    self.error_expected(
                        at,
                        format!("group `{group}`: roles: {error}"),
                        Some("the group also lists the role that declares it"),
                    );
                }
                return None;
            }
        }
        Some(names)
    }
}
