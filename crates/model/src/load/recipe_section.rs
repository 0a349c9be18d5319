//! The `recipes:` section and a group's `image: RECIPE@CHANNEL`: YAML with
//! positions to [`Recipe`]s and [`ChannelRef`]s. Each recipe's fields are
//! checked where they were written — `from` (an AMI id or another
//! recipe), steps (a name unique in the recipe and exactly one of `file`,
//! `shell`, `role`), tags (EC2's limits), channels, builder and `keep` —
//! and then the lineages together: an unknown parent, a cycle and a
//! lineage deeper than [`MAX_LINEAGE_DEPTH`] are errors at the `from` that
//! causes them. A file step's `source` is read and hashed here, relative to
//! the spec's directory, and so are the `source`s of the file and template
//! resources of every role a step applies (roles only groups list are not
//! read: nothing versions them).
//!
//! `${var.*}` is interpolated as everywhere; `${secret.*}` is refused in
//! file and shell steps (a baked image would keep the value): a role step
//! is the way to a secret. It computes no versions (see [`crate::recipe`])
//! and bakes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use endstate_config::validate::{check_path, parse_mode};
use endstate_config::Resource;
use marked_yaml::Node;

use super::{
    is_ami_id, is_dns_name, join, node_kind, scalar_pos, value_pos, Loader, Pos, Scalar,
    IDENT_RULE, NAME_RULE, START,
};
use crate::interpolate;
use crate::recipe::{
    lineage_names, sha256_hex, Builder, ChannelRef, FileContent, FileStep, LineageError, Parent,
    Recipe, Retention, SourceFile, Step, StepAction, MAX_LINEAGE_DEPTH,
};

const RECIPE_FIELDS: &[&str] = &["from", "steps", "tags", "channels", "builder", "keep"];
const STEP_FIELDS: &[&str] = &["name", "file", "shell", "role"];
/// The kinds of step: exactly one per step.
const STEP_KINDS: &[&str] = &["file", "shell", "role"];
const FILE_STEP_FIELDS: &[&str] = &["path", "content", "source", "mode"];
const FILE_CONTENT: &[&str] = &["content", "source"];
const KEEP_FIELDS: &[&str] = &["versions", "younger_than"];
/// The builders, as the spec spells them.
pub(crate) const BUILDERS: &[(&str, Builder)] =
    &[("volume", Builder::Volume), ("instance", Builder::Instance)];
/// The most versions `keep.versions` may ask for.
pub(crate) const MAX_KEEP_VERSIONS: i64 = 10_000;
/// The units of a duration like `14d`, in seconds.
const DURATION_UNITS: &[(char, u64)] = &[
    ('s', 1),
    ('m', 60),
    ('h', 3_600),
    ('d', 86_400),
    ('w', 604_800),
];
const DURATION_RULE: &str =
    "whole seconds like 3600, or a whole number and a unit (s, m, h, d, w) like 90m, 12h or 14d";
/// A duration as the schema spells it.
pub(crate) const DURATION_PATTERN: &str = "^[0-9]+[smhdw]?$";
const IMAGE_RULE: &str =
    "ami- followed by 8 or 17 hex digits, like ami-0123456789abcdef0, or RECIPE@CHANNEL";

/// What the lineage pass needs of one recipe.
struct Link {
    name: String,
    /// Its `from`'s value.
    at: Pos,
    /// `Some(parent)` for a recipe parent; `None` for an image, or a
    /// `from` that did not load (reported already).
    parent: Option<String>,
}

impl Loader<'_> {
    /// `recipes:`, name → recipe, with every lineage checked. Before the
    /// groups, which name recipes' channels, and after the roles, which
    /// role steps name.
    pub(super) fn recipes_section(
        &mut self,
        node: &Node,
        key: Pos,
    ) -> Option<BTreeMap<String, Recipe>> {
        let Node::Mapping(map) = node else {
            self.error(
                value_pos(node, key),
                format!("recipes: expected a mapping, found {}", node_kind(node)),
            );
            return None;
        };
        // Every name, valid or not, so that a group naming a bad recipe is
        // not told it does not exist.
        for name in map.keys() {
            self.recipe_channels.insert(name.as_str().to_string(), None);
        }
        let mut recipes = BTreeMap::new();
        let mut links = Vec::new();
        let mut ok = true;
        for (name_node, value) in map.iter() {
            let at = scalar_pos(name_node);
            let name = name_node.as_str().to_string();
            if !is_dns_name(&name) {
                self.error_expected(at, format!("invalid recipe name `{name}`"), Some(NAME_RULE));
                ok = false;
            }
            let (recipe, link) = self.recipe(&name, at, value);
            links.extend(link);
            match recipe {
                Some(recipe) => {
                    self.recipe_channels
                        .insert(name.clone(), Some(recipe.channels.clone()));
                    recipes.insert(name, recipe);
                }
                None => ok = false,
            }
        }
        ok &= self.lineages(&links);
        ok &= self.recipe_role_sources(&mut recipes);
        ok.then_some(recipes)
    }

    /// One recipe; its lineage link whenever its `from` loaded, even when
    /// the rest did not, so that its lineage is checked too.
    fn recipe(&mut self, name: &str, at: Pos, node: &Node) -> (Option<Recipe>, Option<Link>) {
        let path = format!("recipes.{name}");
        let before = self.diagnostics.len();
        let Some(f) = self.fields(node, at, &path, RECIPE_FIELDS) else {
            return (None, None);
        };
        let mut link = None;
        let from = self.required(&f, at, &path, "from").and_then(|(k, n)| {
            let (from_at, text) = self.string(n, k, &join(&path, "from"))?;
            let parent = if text.starts_with("ami-") {
                if !is_ami_id(&text) {
                    self.error_expected(
                        from_at,
                        format!("{path}.from: `{text}` is not an AMI id"),
                        Some("ami- followed by 8 or 17 hex digits, or the name of another recipe"),
                    );
                    return None;
                }
                Parent::Image(text)
            } else {
                Parent::Recipe(text)
            };
            link = Some(Link {
                name: name.to_string(),
                at: from_at,
                parent: match &parent {
                    Parent::Recipe(parent) => Some(parent.clone()),
                    Parent::Image(_) => None,
                },
            });
            Some(parent)
        });
        let steps = self
            .required(&f, at, &path, "steps")
            .and_then(|(k, n)| self.steps(n, k, &join(&path, "steps")));
        let tags = match f.get("tags") {
            Some((k, n)) => self.tags(n, k, "recipe"),
            None => Some(BTreeMap::new()),
        };
        let channels = match f.get("channels") {
            Some((k, n)) => self.channels(n, k, &join(&path, "channels")),
            None => Some(Vec::new()),
        };
        let builder = match f.get("builder") {
            Some((k, n)) => self.builder(n, k, &join(&path, "builder")).map(Some),
            None => Some(None),
        };
        let keep = match f.get("keep") {
            Some((k, n)) => self.keep(n, k, &join(&path, "keep")),
            None => Some(Retention::default()),
        };
        let recipe = (|| {
            Some(Recipe {
                name: name.to_string(),
                from: from?,
                steps: steps?,
                tags: tags?,
                channels: channels?,
                builder: builder?,
                keep: keep?,
                // Read once every recipe loaded: `recipe_role_sources`.
                role_sources: BTreeMap::new(),
            })
        })();
        // An unknown field is reported by `fields` without failing it.
        let recipe = recipe.filter(|_| self.diagnostics.len() == before);
        (recipe, link)
    }

    fn steps(&mut self, node: &Node, key: Pos, path: &str) -> Option<Vec<Step>> {
        let items = self.list(node, key, path)?;
        let list_at = value_pos(node, key);
        if items.is_empty() {
            self.error_expected(
                list_at,
                format!("{path} is empty"),
                Some("at least one step: { name: NAME, file: {...} | shell: SCRIPT | role: ROLE }"),
            );
            return None;
        }
        let mut steps = Vec::new();
        let mut first_line: BTreeMap<String, usize> = BTreeMap::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let at = value_pos(item, list_at);
            match self.recipe_step(item, at, &item_path) {
                Some((name_at, step)) => {
                    if let Some(line) = first_line.get(&step.name) {
                        self.error(
                            name_at,
                            format!(
                                "{item_path}.name: duplicate step name `{}` (first on line {line})",
                                step.name
                            ),
                        );
                        ok = false;
                    } else {
                        first_line.insert(step.name.clone(), name_at.line);
                    }
                    steps.push(step);
                }
                None => ok = false,
            }
        }
        ok.then_some(steps)
    }

    /// One step and where its name was written.
    fn recipe_step(&mut self, node: &Node, at: Pos, path: &str) -> Option<(Pos, Step)> {
        let before = self.diagnostics.len();
        let f = self.fields(node, at, path, STEP_FIELDS)?;
        let name = self.required(&f, at, path, "name").and_then(|(k, n)| {
            let (name_at, name) = self.string(n, k, &join(path, "name"))?;
            if !interpolate::is_name(&name) {
                self.error_expected(
                    name_at,
                    format!("{path}.name: invalid step name `{name}`"),
                    Some(IDENT_RULE),
                );
                return None;
            }
            Some((name_at, name))
        });
        let set: Vec<(&str, Pos, &Node)> = STEP_KINDS
            .iter()
            .filter_map(|kind| f.get(kind).map(|(k, n)| (*kind, k, n)))
            .collect();
        let action = match set.as_slice() {
            [(kind, k, n)] => match *kind {
                "file" => self
                    .file_step(n, *k, &join(path, "file"))
                    .map(StepAction::File),
                "shell" => self.shell_step(n, *k, &join(path, "shell")),
                _ => self.role_step(n, *k, &join(path, "role")),
            },
            [] => {
                self.error_expected(
                    at,
                    format!("{path} sets none of file, shell, role"),
                    Some("exactly one of file, shell, role"),
                );
                None
            }
            [first, second, ..] => {
                self.error_expected(
                    second.1,
                    format!("{path} sets both `{}` and `{}`", first.0, second.0),
                    Some("exactly one of file, shell, role"),
                );
                None
            }
        };
        let ((name_at, name), action) = (name?, action?);
        (self.diagnostics.len() == before).then_some((name_at, Step { name, action }))
    }

    fn file_step(&mut self, node: &Node, key: Pos, path: &str) -> Option<FileStep> {
        let at = value_pos(node, key);
        let f = self.fields(node, key, path, FILE_STEP_FIELDS)?;
        let file_path = self.required(&f, at, path, "path").and_then(|(k, n)| {
            let (path_at, text) = self.string(n, k, &join(path, "path"))?;
            match check_path(&text) {
                Ok(()) => Some(text),
                Err(why) => {
                    self.error_expected(
                        path_at,
                        format!("{path}.path: {why}"),
                        Some("an absolute path without . or .. components, like /etc/motd"),
                    );
                    None
                }
            }
        });
        let mode = match f.get("mode") {
            Some((k, n)) => self
                .string(n, k, &join(path, "mode"))
                .and_then(|(mode_at, mode)| match parse_mode(&mode) {
                    Ok(_) => Some(Some(mode)),
                    Err(why) => {
                        self.error(mode_at, format!("{path}.mode: {why}"));
                        None
                    }
                }),
            None => Some(None),
        };
        let set: Vec<(&str, Pos, &Node)> = FILE_CONTENT
            .iter()
            .filter_map(|field| f.get(field).map(|(k, n)| (*field, k, n)))
            .collect();
        let content = match set.as_slice() {
            [("content", k, n)] => self
                .string(n, *k, &join(path, "content"))
                .map(|(_, text)| FileContent::Inline(text)),
            [(_, k, n)] => self.source_file(n, *k, &join(path, "source")),
            [] => {
                self.error_expected(
                    at,
                    format!("{path} sets neither `content` nor `source`"),
                    Some("exactly one of content, source"),
                );
                None
            }
            [first, second, ..] => {
                self.error_expected(
                    second.1,
                    format!("{path} sets both `{}` and `{}`", first.0, second.0),
                    Some("exactly one of content, source"),
                );
                None
            }
        };
        Some(FileStep {
            path: file_path?,
            mode: mode?,
            content: content?,
        })
    }

    /// A file step's `source:`, read and hashed now.
    fn source_file(&mut self, node: &Node, key: Pos, path: &str) -> Option<FileContent> {
        let (at, written) = self.string(node, key, path)?;
        match self.read_source(&written) {
            Ok(source) => Some(FileContent::Source(source)),
            Err(e) => {
                self.error_expected(
                    at,
                    format!("{path}: cannot read `{written}`: {e}"),
                    Some("a file relative to the spec's directory"),
                );
                None
            }
        }
    }

    /// `written` (relative to the spec's directory, or absolute) read and
    /// hashed: a file step's source and a role resource's alike.
    fn read_source(&self, written: &str) -> std::io::Result<SourceFile> {
        let full = self.base_dir.join(written);
        let full = std::path::absolute(&full).unwrap_or(full);
        let bytes = std::fs::read(&full)?;
        Ok(SourceFile {
            written: written.to_string(),
            sha256: sha256_hex(&bytes),
            size: bytes.len() as u64,
            path: full,
        })
    }

    /// Reads the sources of every role a recipe step applies, each role
    /// once, into the `role_sources` of the recipes that apply it. An
    /// unreadable source is an error at the resource's `source:`, naming
    /// the role, the resource and the first step that applies it. Whether
    /// every source was read.
    fn recipe_role_sources(&mut self, recipes: &mut BTreeMap<String, Recipe>) -> bool {
        // Role → its sources, or `None` when one could not be read.
        let mut read: BTreeMap<String, Option<Vec<SourceFile>>> = BTreeMap::new();
        for recipe in recipes.values() {
            for step in &recipe.steps {
                let StepAction::Role(role) = &step.action else {
                    continue;
                };
                if !read.contains_key(role) {
                    let sources = self.role_source_files(role, &recipe.name, &step.name);
                    read.insert(role.clone(), sources);
                }
            }
        }
        for recipe in recipes.values_mut() {
            for step in &recipe.steps {
                let StepAction::Role(role) = &step.action else {
                    continue;
                };
                match read.get(role) {
                    // A role without sources has no entry (`Recipe::role_sources`).
                    Some(Some(sources)) if !sources.is_empty() => {
                        recipe.role_sources.insert(role.clone(), sources.clone());
                    }
                    _ => {}
                }
            }
        }
        read.values().all(Option::is_some)
    }

    /// The `source:` files of `role`'s file and template resources, in
    /// resource order; `None` after reporting each one that cannot be
    /// read. `recipe` and `step` name the first step that applies it.
    fn role_source_files(
        &mut self,
        role: &str,
        recipe: &str,
        step: &str,
    ) -> Option<Vec<SourceFile>> {
        let Some(resources) = self.roles.as_ref().and_then(|roles| roles.get(role)) else {
            // A role that did not load has had its errors reported.
            return Some(Vec::new());
        };
        let resources = resources.resources.clone();
        let mut sources = Vec::new();
        let mut ok = true;
        for (i, resource) in resources.iter().enumerate() {
            let written = match resource {
                Resource::File(file) => file.source.as_deref(),
                Resource::Template(template) => template.source.as_deref(),
                _ => None,
            };
            let Some(written) = written else {
                continue;
            };
            match self.read_source(written) {
                Ok(source) => sources.push(source),
                Err(e) => {
                    let at = self
                        .role_source_at
                        .get(role)
                        .and_then(|places| places.get(i).copied().flatten())
                        .unwrap_or(START);
                    self.error_expected(
                        at,
                        format!(
                            "roles.{role}.resources[{i}].source: cannot read `{written}` (role `{role}`, resource {}, applied by recipes.{recipe} step `{step}`): {e}",
                            resource.id()
                        ),
                        Some("a file relative to the spec's directory"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(sources)
    }

    fn shell_step(&mut self, node: &Node, key: Pos, path: &str) -> Option<StepAction> {
        let (at, script) = self.string(node, key, path)?;
        if script.trim().is_empty() {
            self.error_expected(
                at,
                format!("{path}: the script is empty"),
                Some("commands for /bin/sh"),
            );
            return None;
        }
        Some(StepAction::Shell(script))
    }

    fn role_step(&mut self, node: &Node, key: Pos, path: &str) -> Option<StepAction> {
        let (at, role) = self.string(node, key, path)?;
        if !self.role_names.contains(&role) {
            let expected = self.known("roles", self.role_names.iter());
            self.error_expected(at, format!("{path}: unknown role `{role}`"), Some(expected));
            return None;
        }
        Some(StepAction::Role(role))
    }

    fn channels(&mut self, node: &Node, key: Pos, path: &str) -> Option<Vec<String>> {
        let items = self.string_list(node, key, path)?;
        let mut channels: Vec<String> = Vec::new();
        let mut ok = true;
        for (i, (at, channel)) in items.into_iter().enumerate() {
            if !is_dns_name(&channel) {
                self.error_expected(
                    at,
                    format!("{path}[{i}]: invalid channel name `{channel}`"),
                    Some(NAME_RULE),
                );
                ok = false;
            } else if channels.contains(&channel) {
                self.error(
                    at,
                    format!("{path}[{i}]: channel `{channel}` is listed twice"),
                );
                ok = false;
            } else {
                channels.push(channel);
            }
        }
        ok.then_some(channels)
    }

    fn builder(&mut self, node: &Node, key: Pos, path: &str) -> Option<Builder> {
        let (at, text) = self.string(node, key, path)?;
        match BUILDERS.iter().find(|(name, _)| *name == text) {
            Some((_, builder)) => Some(*builder),
            None => {
                self.error_expected(
                    at,
                    format!("{path}: `{text}` is not a builder"),
                    Some("volume or instance (or no builder: the backend decides)"),
                );
                None
            }
        }
    }

    fn keep(&mut self, node: &Node, key: Pos, path: &str) -> Option<Retention> {
        let f = self.fields(node, key, path, KEEP_FIELDS)?;
        let versions = match f.get("versions") {
            Some((k, n)) => self
                .bounded(n, k, &join(path, "versions"), 1, MAX_KEEP_VERSIONS)
                .map(|(_, v)| Some(v)),
            None => Some(None),
        };
        let younger_than = match f.get("younger_than") {
            Some((k, n)) => self.duration(n, k, &join(path, "younger_than")).map(Some),
            None => Some(None),
        };
        let keep = Retention {
            versions: versions?,
            younger_than: younger_than?,
        };
        if keep.keeps_everything() {
            self.error_expected(
                value_pos(node, key),
                format!("{path} sets neither `versions` nor `younger_than`"),
                Some("versions: N, younger_than: DURATION, or both"),
            );
            return None;
        }
        Some(keep)
    }

    /// A duration longer than zero: whole seconds like every other duration
    /// of the spec, or a number and a unit (`14d`), which retention periods
    /// read better in.
    fn duration(&mut self, node: &Node, key: Pos, path: &str) -> Option<Duration> {
        let (at, value) = self.scalar(node, key, path, "a duration")?;
        let seconds = match &value {
            Scalar::Int(seconds) => u64::try_from(*seconds).ok(),
            Scalar::Str(text) => duration_seconds(text),
            Scalar::Null | Scalar::Bool(_) => None,
        };
        match seconds {
            Some(seconds) if seconds > 0 => Some(Duration::from_secs(seconds)),
            _ => {
                let shown = value.as_text().unwrap_or_else(|| "null".to_string());
                self.error_expected(
                    at,
                    format!("{path}: `{shown}` is not a duration longer than zero"),
                    Some(DURATION_RULE),
                );
                None
            }
        }
    }

    /// Checks every lineage: reports an unknown parent at the `from` that
    /// names it, a cycle once at the `from` of its first recipe in the
    /// file, and a lineage past [`MAX_LINEAGE_DEPTH`] at the `from` of the
    /// first recipe past it. Whether every one was fine.
    fn lineages(&mut self, links: &[Link]) -> bool {
        let parent_of = |name: &str| {
            if let Some(link) = links.iter().find(|l| l.name == name) {
                return Some(link.parent.as_deref());
            }
            // A recipe whose `from` did not load has had its error.
            self.recipe_channels.contains_key(name).then_some(None)
        };
        let mut errors = Vec::new();
        for link in links {
            let Some(parent) = &link.parent else {
                continue;
            };
            let problem = match lineage_names(&link.name, parent_of) {
                Ok(_) => continue,
                Err(LineageError::UnknownParent { recipe, parent }) if recipe == link.name => {
                    let names: Vec<&String> = self.recipe_channels.keys().collect();
                    let known = self.known("recipes", names.into_iter());
                    (
                        format!("recipes.{recipe}.from: unknown recipe `{parent}`"),
                        format!("an AMI id, or {known}"),
                    )
                }
                Err(LineageError::Cycle { cycle }) if cycle[0] == link.name => {
                    let first = links
                        .iter()
                        .filter(|l| cycle.contains(&l.name))
                        .min_by_key(|l| (l.at.line, l.at.col));
                    if first.is_some_and(|l| l.name != link.name) {
                        continue;
                    }
                    (
                        format!(
                            "recipes.{}.from: the lineage is a cycle: {}",
                            link.name,
                            cycle.join(" → ")
                        ),
                        "a lineage that ends at a recipe baked from an AMI id".to_string(),
                    )
                }
                // Past the limit here, not because the parent is.
                Err(LineageError::TooDeep { chain, limit })
                    if lineage_names(parent, parent_of).is_ok() =>
                {
                    (
                        format!(
                            "recipes.{}.from: the lineage {} is {} recipes deep, over the limit of {limit}",
                            link.name,
                            chain.join(" → "),
                            chain.len()
                        ),
                        format!("at most {MAX_LINEAGE_DEPTH} recipes from a recipe to its image"),
                    )
                }
                // Reported at the recipe that causes it.
                Err(_) => continue,
            };
            errors.push((link.at, problem));
        }
        let ok = errors.is_empty();
        for (at, (message, expected)) in errors {
            self.error_expected(at, message, Some(expected));
        }
        ok
    }

    /// A group's `image:` after interpolation: an AMI id, or
    /// `RECIPE@CHANNEL` naming a channel of one of the spec's recipes.
    pub(super) fn group_image(
        &mut self,
        at: Pos,
        image: String,
    ) -> Option<(String, Option<ChannelRef>)> {
        if is_ami_id(&image) {
            return Some((image, None));
        }
        let Some((recipe, channel)) = image.split_once('@') else {
            self.error_expected(
                at,
                format!("image `{image}` is not an AMI id"),
                Some(IMAGE_RULE),
            );
            return None;
        };
        if recipe.is_empty() || channel.is_empty() || channel.contains('@') {
            self.error_expected(
                at,
                format!("image `{image}` is neither an AMI id nor RECIPE@CHANNEL"),
                Some(IMAGE_RULE),
            );
            return None;
        }
        let channel_at = self.locate(at, &image, recipe.len() + 1);
        match self.recipe_channels.get(recipe) {
            None => {
                let known = self.known("recipes", self.recipe_channels.keys());
                self.error_expected(
                    at,
                    format!("image `{image}`: unknown recipe `{recipe}`"),
                    Some(known),
                );
                None
            }
            // The recipe's own error is reported.
            Some(None) => None,
            Some(Some(channels)) if !channels.iter().any(|c| c == channel) => {
                let expected = if channels.is_empty() {
                    format!("a channel listed under recipes.{recipe}.channels (none are)")
                } else {
                    format!("one of {}", channels.join(", "))
                };
                self.error_expected(
                    channel_at,
                    format!("image `{image}`: recipe `{recipe}` has no channel `{channel}`"),
                    Some(expected),
                );
                None
            }
            Some(Some(_)) => {
                let reference = ChannelRef {
                    recipe: recipe.to_string(),
                    channel: channel.to_string(),
                };
                Some((image, Some(reference)))
            }
        }
    }
}

/// `90m`, `12h`, `14d`: a whole number and one unit of [`DURATION_UNITS`],
/// in seconds; a number alone (quoted) is seconds.
fn duration_seconds(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(seconds);
    }
    let unit = text.chars().last()?;
    let (_, scale) = DURATION_UNITS.iter().find(|(u, _)| *u == unit)?;
    let number = &text[..text.len() - unit.len_utf8()];
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    number.parse::<u64>().ok()?.checked_mul(*scale)
}

#[cfg(test)]
mod tests {
    use super::duration_seconds;

    #[test]
    fn durations_take_one_unit() {
        assert_eq!(duration_seconds("14d"), Some(14 * 86_400));
        assert_eq!(duration_seconds("90m"), Some(5_400));
        assert_eq!(duration_seconds("2w"), Some(1_209_600));
        assert_eq!(duration_seconds("3600"), Some(3_600));
        for bad in ["", "d", "14x", "1.5d", "-1d", "1d2h", "14 d"] {
            assert_eq!(duration_seconds(bad), None, "{bad}");
        }
    }
}
