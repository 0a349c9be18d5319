//! Golden-image recipes as a loaded spec holds them (`recipes:`): what an
//! image is baked from (an image id, or another recipe — a lineage), its
//! steps, tags, channels, builder and retention; a group's
//! `image: RECIPE@CHANNEL` as a [`ChannelRef`]; and recipe *versions*,
//! the content hashes that say whether an image is already baked and
//! which prefix of a recipe's steps an incremental bake may reuse.
//!
//! Versions are a hash chain over the steps. Each step has a hash of its
//! canonical content ([`Recipe::step_hashes`]); the chain starts at the
//! parent's version (an image id, or the parent recipe's full version) and
//! folds in one step hash at a time ([`prefix_hashes`]). Changing only the
//! last step changes only the last prefix; changing the parent changes
//! every prefix. A step's name is a label, not content: renaming a step
//! leaves the version as it was.
//!
//! A role step's hash covers the role as the spec holds it and the
//! SHA-256 of each of its `source:` files, which the loader read
//! ([`Recipe::role_sources()`]), so that editing such a file is a new
//! version.
//!
//! It neither parses the spec (the loader does, with positions, in
//! `load::recipe_section`) nor bakes (the bake engine, later, uses these
//! types), and it holds no secret values: a role step names a role whose
//! values hold secret placeholders (see [`crate::roles`]), and its hash
//! covers those placeholders, never what they resolve to. File and shell
//! steps cannot use `${secret.*}` at all, so that no secret is baked into
//! an image.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Spec;

/// The longest lineage the loader accepts: a recipe, its parent recipe,
/// and so on, counting the recipe itself, up to the one baked from an
/// image id.
pub const MAX_LINEAGE_DEPTH: usize = 16;

/// How many hex digits of a version [`RecipeVersion::short`] keeps: for
/// tags and image names, where the full 64 would crowd out the rest.
pub const SHORT_VERSION_LEN: usize = 16;

/// One recipe of `recipes:`: an image baked by applying `steps`, in order,
/// to `from`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// Its key under `recipes:` (`[a-z0-9-]{1,40}`, like groups').
    pub name: String,
    pub from: Parent,
    /// At least one; names unique within the recipe.
    pub steps: Vec<Step>,
    /// User tags for the baked images (EC2's limits, no `aws:` or
    /// `endstate:` keys); the bake engine adds its own.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The channels (`stable`, `canary`, …) this recipe's bakes may be
    /// promoted to, and that groups may name as `RECIPE@CHANNEL`.
    #[serde(default)]
    pub channels: Vec<String>,
    /// How to bake; `None`: the backend decides (volume-style where the
    /// backend can, instance-style otherwise).
    #[serde(default)]
    pub builder: Option<Builder>,
    /// Which of its images to keep.
    #[serde(default)]
    pub keep: Retention,
    /// The `source:` files of the roles its role steps apply, read and
    /// hashed when the spec was loaded: role name → one [`SourceFile`] per
    /// file or template resource of the role that has a `source`, in
    /// resource order ([`SourceFile::written`] is that `source`). A role
    /// without such resources has no entry. The role steps' hashes cover
    /// them, so that editing a role's source file is a new version; a bake
    /// reads them with [`SourceFile::read_verified`]. Absent in JSON
    /// written before role sources were read, and left out when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub role_sources: BTreeMap<String, Vec<SourceFile>>,
}

/// What a recipe starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Parent {
    /// An existing image: `ami-` and 8 or 17 hex digits.
    Image(String),
    /// Another recipe of the spec, whose current version is the parent.
    Recipe(String),
}

/// One step of a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Unique within its recipe; what manifests and errors name. Not part
    /// of the step's hash.
    pub name: String,
    pub action: StepAction,
}

/// What a step does to the image being baked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepAction {
    /// Writes one file.
    File(FileStep),
    /// Runs this script with `/bin/sh` ([`SHELL`]).
    Shell(String),
    /// Applies the named role of the spec's `roles:` with the
    /// configuration engine.
    Role(String),
}

/// The interpreter of [`StepAction::Shell`] scripts.
pub const SHELL: &str = "/bin/sh";

/// A file a step writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileStep {
    /// Absolute, without `.` or `..` components.
    pub path: String,
    /// Octal permission bits as the roles' file resource spells them
    /// (`"0644"`); `None`: the builder's default for new files.
    pub mode: Option<String>,
    pub content: FileContent,
}

/// Where a file step's bytes come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileContent {
    /// `content:` in the spec, after `${var.*}` interpolation.
    Inline(String),
    /// `source:`, a file read and hashed when the spec was loaded.
    Source(SourceFile),
}

/// A file step's `source:`, or a role resource's that a role step applies
/// ([`Recipe::role_sources()`]), as it was when the spec was loaded. The
/// bake engine reads it with [`SourceFile::read_verified`], so that what
/// it bakes is what the version names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// As the spec wrote it (relative to the spec's directory, or absolute).
    pub written: String,
    /// The file that was read: the spec's directory joined with `written`.
    pub path: PathBuf,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Why a source file could not be read as it was loaded.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file cannot be read any more.
    #[error("source file {}: cannot read it: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file changed since the spec was loaded: a bake would not match
    /// the version computed from the old bytes.
    #[error("source file {}: changed since the spec was loaded (sha256 {expected}, now {found}); load the spec again", .path.display())]
    Changed {
        path: PathBuf,
        expected: String,
        found: String,
    },
}

impl SourceFile {
    /// The file's bytes, provided they still hash to [`SourceFile::sha256`].
    pub fn read_verified(&self) -> Result<Vec<u8>, SourceError> {
        let bytes = std::fs::read(&self.path).map_err(|source| SourceError::Unreadable {
            path: self.path.clone(),
            source,
        })?;
        let found = sha256_hex(&bytes);
        if found != self.sha256 {
            return Err(SourceError::Changed {
                path: self.path.clone(),
                expected: self.sha256.clone(),
                found,
            });
        }
        Ok(bytes)
    }
}

/// How a recipe is baked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Builder {
    /// Apply the steps to a copy of the parent image's root without
    /// booting an instance (Aminator's way).
    Volume,
    /// Launch an instance from the parent, provision it through user data,
    /// stop it and create an image (Packer's way; the one AWS allows).
    Instance,
}

/// `keep:`, which of a recipe's images retention keeps. An image is kept
/// when any rule that is set keeps it; with neither set, every image is
/// kept. Images a group, a saved plan or a running instance use are kept
/// whatever these say (the bake engine's rule, not the spec's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// `versions: N`: the N newest versions per channel (at least 1).
    pub versions: Option<u32>,
    /// `younger_than: 14d`: images created less than this long ago.
    pub younger_than: Option<Duration>,
}

impl Retention {
    /// Whether no rule is set, so that every image is kept.
    pub fn keeps_everything(&self) -> bool {
        self.versions.is_none() && self.younger_than.is_none()
    }
}

/// A group's `image: RECIPE@CHANNEL`: the image at the head of `channel`
/// of `recipe`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChannelRef {
    pub recipe: String,
    pub channel: String,
}

impl fmt::Display for ChannelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.recipe, self.channel)
    }
}

/// A recipe's version and how it was computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeVersion {
    /// Where the chain starts: the image id of an image parent, or the
    /// parent recipe's full version.
    pub parent: String,
    /// [`Recipe::step_hashes`], in step order.
    pub step_hashes: Vec<String>,
    /// [`prefix_hashes`]`(parent, step_hashes)`: `prefixes[i]` is the
    /// version of the image after step `i`.
    pub prefixes: Vec<String>,
}

impl RecipeVersion {
    /// The full version, 64 hex digits: the last prefix. A recipe without
    /// steps (which the loader refuses) is its parent.
    pub fn full(&self) -> &str {
        self.prefixes.last().unwrap_or(&self.parent)
    }

    /// The first [`SHORT_VERSION_LEN`] hex digits of [`Self::full`], for
    /// tags and image names.
    pub fn short(&self) -> &str {
        let full = self.full();
        full.get(..SHORT_VERSION_LEN).unwrap_or(full)
    }
}

/// Why a recipe's lineage cannot be followed. A loaded spec has none of
/// these: the loader reports them with their positions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineageError {
    /// No recipe of this name.
    #[error("unknown recipe `{name}`")]
    UnknownRecipe { name: String },
    /// `recipe`'s `from` names a recipe that does not exist.
    #[error("recipe `{recipe}`: from: unknown recipe `{parent}`")]
    UnknownParent { recipe: String, parent: String },
    /// The lineage loops: `cycle` starts and ends with the same recipe.
    #[error("recipes form a cycle: {}", .cycle.join(" → "))]
    Cycle { cycle: Vec<String> },
    /// The lineage is longer than [`MAX_LINEAGE_DEPTH`]: `chain` holds its
    /// first `limit + 1` recipes, from the one asked about towards the
    /// image.
    #[error("the lineage {} is more than {limit} recipes deep", .chain.join(" → "))]
    TooDeep { chain: Vec<String>, limit: usize },
}

/// The lineage of `name`: its name first, then its parent recipe's, and so
/// on up to the recipe baked from an image. `parent_of(r)` is `None` for
/// an unknown recipe, `Some(None)` for one baked from an image, and
/// `Some(Some(p))` for one baked from recipe `p`. The loader and
/// [`Spec::lineage`] both walk lineages with it.
pub(crate) fn lineage_names<'a>(
    name: &'a str,
    parent_of: impl Fn(&str) -> Option<Option<&'a str>>,
) -> Result<Vec<&'a str>, LineageError> {
    let mut chain: Vec<&'a str> = vec![name];
    let mut current = name;
    loop {
        let parent = match parent_of(current) {
            None if chain.len() == 1 => {
                return Err(LineageError::UnknownRecipe {
                    name: name.to_string(),
                })
            }
            // `current` came from its child's `from`, so the child is the culprit.
            None => {
                return Err(LineageError::UnknownParent {
                    recipe: chain[chain.len() - 2].to_string(),
                    parent: current.to_string(),
                })
            }
            Some(None) => return Ok(chain),
            Some(Some(parent)) => parent,
        };
        if let Some(start) = chain.iter().position(|r| *r == parent) {
            let mut cycle: Vec<String> = chain[start..].iter().map(|r| r.to_string()).collect();
            cycle.push(parent.to_string());
            return Err(LineageError::Cycle { cycle });
        }
        if parent_of(parent).is_some() && chain.len() == MAX_LINEAGE_DEPTH {
            chain.push(parent);
            return Err(LineageError::TooDeep {
                chain: chain.into_iter().map(str::to_string).collect(),
                limit: MAX_LINEAGE_DEPTH,
            });
        }
        chain.push(parent);
        current = parent;
    }
}

impl Spec {
    /// The channels the groups name, each once.
    pub fn image_channels(&self) -> Vec<ChannelRef> {
        let mut channels: Vec<ChannelRef> = self
            .groups
            .iter()
            .filter_map(|g| g.image_channel.clone())
            .collect();
        channels.sort();
        channels.dedup();
        channels
    }

    /// Sets the image of each group that names a channel to that channel's
    /// image in `heads`, and the spec's hash to match (the image a group
    /// runs is part of what the spec says). The first channel without a
    /// head is the error, and then nothing changed.
    pub fn resolve_channels(
        &mut self,
        heads: &BTreeMap<ChannelRef, String>,
    ) -> Result<(), ChannelRef> {
        if let Some(missing) = self
            .image_channels()
            .into_iter()
            .find(|c| !heads.contains_key(c))
        {
            return Err(missing);
        }
        for group in &mut self.groups {
            if let Some(image) = group.image_channel.as_ref().and_then(|c| heads.get(c)) {
                group.image_id = image.clone();
            }
        }
        self.hash = crate::load::spec_hash(self);
        Ok(())
    }

    /// The recipe called `name`.
    pub fn recipe(&self, name: &str) -> Option<&Recipe> {
        self.recipes.get(name)
    }

    /// The source files of `role`'s file and template resources, in
    /// resource order, as the loader read them for the recipes whose steps
    /// apply it (see [`Recipe::role_sources()`]). Empty for a role without
    /// sources, and for one no recipe step names: the loader reads only
    /// the sources a bake needs.
    pub fn role_sources(&self, role: &str) -> &[SourceFile] {
        self.recipes
            .values()
            .find_map(|recipe| recipe.role_sources.get(role))
            .map_or(&[], Vec::as_slice)
    }

    /// The lineage of recipe `name`, from the recipe baked from an image
    /// down to `name` itself: the order in which to bake them.
    pub fn lineage(&self, name: &str) -> Result<Vec<&Recipe>, LineageError> {
        let parent_of = |r: &str| {
            self.recipes.get(r).map(|recipe| match &recipe.from {
                Parent::Image(_) => None,
                Parent::Recipe(parent) => Some(parent.as_str()),
            })
        };
        let names = lineage_names(name, parent_of)?;
        Ok(names
            .into_iter()
            .rev()
            .filter_map(|n| self.recipes.get(n))
            .collect())
    }
}

impl Recipe {
    /// The SHA-256 (hex) of each step's canonical content, in step order:
    /// a file's path, mode and the SHA-256 of its bytes (inline or read
    /// from its source: the same bytes hash the same); a shell step's
    /// interpreter and script; a role step's name, the role as `spec`
    /// holds it — its secrets as placeholders, never values — and then
    /// each of the role's source files ([`Self::role_sources()`]) as its
    /// `source` as written and the SHA-256 of its bytes, so that editing a
    /// source file is a new version and rewriting the same bytes is not.
    /// A role without source files hashes as it did before they were
    /// read. A role the spec does not declare (impossible in a loaded
    /// spec) hashes as undeclared.
    pub fn step_hashes(&self, spec: &Spec) -> Vec<String> {
        self.steps
            .iter()
            .map(|step| step_hash(&step.action, spec, self))
            .collect()
    }

    /// The source files of `role` as the loader read them for this
    /// recipe's role steps, in resource order; empty for a role without
    /// sources or one no step of this recipe applies.
    pub fn role_sources(&self, role: &str) -> &[SourceFile] {
        self.role_sources.get(role).map_or(&[], Vec::as_slice)
    }

    /// This recipe's version: its parent's version (recursively, for a
    /// recipe parent) chained with its step hashes.
    pub fn version(&self, spec: &Spec) -> Result<RecipeVersion, LineageError> {
        let mut parent_version: Option<String> = None;
        let mut version = None;
        let lineage = match &self.from {
            Parent::Image(_) => vec![self],
            Parent::Recipe(parent) => {
                let mut above = spec.lineage(parent).map_err(|e| match e {
                    LineageError::UnknownRecipe { name } => LineageError::UnknownParent {
                        recipe: self.name.clone(),
                        parent: name,
                    },
                    other => other,
                })?;
                above.push(self);
                above
            }
        };
        for recipe in lineage {
            let parent = match (&recipe.from, &parent_version) {
                (Parent::Image(image), _) => image.clone(),
                (Parent::Recipe(_), Some(version)) => version.clone(),
                // The lineage starts with a recipe baked from an image.
                (Parent::Recipe(name), None) => {
                    return Err(LineageError::UnknownRecipe { name: name.clone() })
                }
            };
            let step_hashes = recipe.step_hashes(spec);
            let prefixes = prefix_hashes(&parent, &step_hashes);
            let current = RecipeVersion {
                parent,
                step_hashes,
                prefixes,
            };
            parent_version = Some(current.full().to_string());
            version = Some(current);
        }
        version.ok_or(LineageError::UnknownRecipe {
            name: self.name.clone(),
        })
    }
}

/// The hash chain over a recipe's steps: `prefix[i] = sha256(prefix[i-1]
/// || step_hashes[i])`, with `prefix[-1] = parent_version` (an image id, or
/// the parent recipe's full version), over the UTF-8 text of both (hex
/// digests are of fixed length, so the concatenation is unambiguous).
/// `prefix[i]` is the version of the image after step `i`: a bake may reuse
/// the longest prefix it already has.
pub fn prefix_hashes(parent_version: &str, step_hashes: &[String]) -> Vec<String> {
    let mut previous = parent_version.to_string();
    step_hashes
        .iter()
        .map(|step| {
            let mut hasher = Sha256::new();
            hasher.update(previous.as_bytes());
            hasher.update(step.as_bytes());
            previous = hex::encode(hasher.finalize());
            previous.clone()
        })
        .collect()
}

/// SHA-256 of `bytes` as lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The hash of one step's canonical content: a kind tag, then named
/// fields, each as its length and bytes, so that no two different steps
/// encode the same. `recipe` is the step's, for its role sources.
fn step_hash(action: &StepAction, spec: &Spec, recipe: &Recipe) -> String {
    let mut canonical = Canonical(Sha256::new());
    match action {
        StepAction::File(file) => {
            canonical.field("step", b"file/v1");
            canonical.field("path", file.path.as_bytes());
            if let Some(mode) = &file.mode {
                canonical.field("mode", mode.as_bytes());
            }
            let content = match &file.content {
                FileContent::Inline(text) => sha256_hex(text.as_bytes()),
                FileContent::Source(source) => source.sha256.clone(),
            };
            canonical.field("content_sha256", content.as_bytes());
        }
        StepAction::Shell(script) => {
            canonical.field("step", b"shell/v1");
            canonical.field("interpreter", SHELL.as_bytes());
            canonical.field("script", script.as_bytes());
        }
        StepAction::Role(name) => {
            canonical.field("step", b"role/v1");
            canonical.field("role", name.as_bytes());
            // Placeholders, not values: `Role` holds nothing else.
            let definition = spec
                .roles
                .get(name)
                .and_then(|role| serde_json::to_vec(role).ok())
                .unwrap_or_else(|| b"undeclared".to_vec());
            canonical.field("definition", &definition);
            // The path as written, not the absolute one: the same spec
            // and files checked out elsewhere are the same version. No
            // fields at all for a role without sources, so that its hash
            // is the one it had before sources were read.
            for source in recipe.role_sources(name) {
                canonical.field("source", source.written.as_bytes());
                canonical.field("source_sha256", source.sha256.as_bytes());
            }
        }
    }
    hex::encode(canonical.0.finalize())
}

struct Canonical(Sha256);

impl Canonical {
    fn field(&mut self, name: &str, value: &[u8]) {
        for bytes in [name.as_bytes(), value] {
            self.0.update((bytes.len() as u64).to_be_bytes());
            self.0.update(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use super::*;

    fn parents<'a>(
        pairs: &'a [(&'a str, Option<&'a str>)],
    ) -> impl Fn(&str) -> Option<Option<&'a str>> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    #[test]
    fn lineages_are_walked_to_the_image() {
        let pairs = [
            ("app", Some("runtime")),
            ("runtime", Some("base")),
            ("base", None),
        ];
        assert_eq!(
            lineage_names("app", parents(&pairs)).unwrap(),
            ["app", "runtime", "base"]
        );
        assert_eq!(
            lineage_names("nope", parents(&pairs)).unwrap_err(),
            LineageError::UnknownRecipe {
                name: "nope".into()
            }
        );
    }

    #[test]
    fn broken_lineages_name_the_fault() {
        let unknown = [("app", Some("runtime")), ("runtime", Some("bsae"))];
        assert_eq!(
            lineage_names("app", parents(&unknown)).unwrap_err(),
            LineageError::UnknownParent {
                recipe: "runtime".into(),
                parent: "bsae".into()
            }
        );
        let cycle = [("x", Some("a")), ("a", Some("b")), ("b", Some("a"))];
        let error = lineage_names("x", parents(&cycle)).unwrap_err();
        assert_eq!(error.to_string(), "recipes form a cycle: a → b → a");
        let own = [("a", Some("a"))];
        assert_eq!(
            lineage_names("a", parents(&own)).unwrap_err().to_string(),
            "recipes form a cycle: a → a"
        );
    }

    #[test]
    fn the_depth_limit_counts_recipes() {
        let names: Vec<String> = (0..=MAX_LINEAGE_DEPTH).map(|i| format!("r{i}")).collect();
        let pairs: Vec<(&str, Option<&str>)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), names.get(i + 1).map(String::as_str)))
            .collect();
        // r1 … r16 is 16 recipes deep: at the limit.
        assert_eq!(
            lineage_names("r1", parents(&pairs)).unwrap().len(),
            MAX_LINEAGE_DEPTH
        );
        let LineageError::TooDeep { chain, limit } =
            lineage_names("r0", parents(&pairs)).unwrap_err()
        else {
            panic!("not TooDeep");
        };
        assert_eq!(
            (chain.len(), limit),
            (MAX_LINEAGE_DEPTH + 1, MAX_LINEAGE_DEPTH)
        );
    }

    #[test]
    fn prefixes_chain_from_the_parent() {
        let steps = vec![sha256_hex(b"one"), sha256_hex(b"two")];
        let prefixes = prefix_hashes("ami-12345678", &steps);
        let first = sha256_hex(format!("ami-12345678{}", steps[0]).as_bytes());
        let second = sha256_hex(format!("{first}{}", steps[1]).as_bytes());
        assert_eq!(prefixes, [first, second]);
        let version = RecipeVersion {
            parent: "ami-12345678".into(),
            step_hashes: steps,
            prefixes: prefixes.clone(),
        };
        assert_eq!(version.full(), prefixes[1]);
        assert_eq!(version.short(), &prefixes[1][..SHORT_VERSION_LEN]);
    }

    #[test]
    fn a_source_file_that_changed_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("motd");
        std::fs::write(&path, "hello\n").unwrap();
        let source = SourceFile {
            written: "motd".into(),
            path: path.clone(),
            sha256: sha256_hex(b"hello\n"),
            size: 6,
        };
        assert_eq!(source.read_verified().unwrap(), b"hello\n");
        std::fs::write(&path, "changed\n").unwrap();
        let error = source.read_verified().unwrap_err().to_string();
        assert!(
            error.contains("changed since the spec was loaded"),
            "{error}"
        );
    }
}
