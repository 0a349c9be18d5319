//! The declared configuration: a [`Role`] is a named list of [`Resource`]s,
//! each one of eight kinds, identified as `kind:name`, ordered by `requires`
//! and able to `notify` a service. These are plain serde types (the spec's
//! `roles:` section will reuse them); checking them is `validate`'s job and
//! carrying them out is `engine`'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A named set of resources, applied together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// The role's name.
    pub name: String,
    /// Its resources, in declaration order (the tie-break of the dependency order).
    #[serde(default)]
    pub resources: Vec<Resource>,
}

/// One resource, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Resource {
    /// A file with literal content or the bytes of a source file.
    File(FileResource),
    /// A directory.
    Directory(DirectoryResource),
    /// A file rendered from a minijinja template.
    Template(TemplateResource),
    /// A Debian package, installed with apt.
    Package(PackageResource),
    /// A service, run by systemd or by the instance's supervisor.
    Service(ServiceResource),
    /// A user account.
    User(UserResource),
    /// A group.
    Group(GroupResource),
    /// A command, run when its guards say so.
    Exec(ExecResource),
}

/// The kind of a resource, the first half of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// [`FileResource`].
    File,
    /// [`DirectoryResource`].
    Directory,
    /// [`TemplateResource`].
    Template,
    /// [`PackageResource`].
    Package,
    /// [`ServiceResource`].
    Service,
    /// [`UserResource`].
    User,
    /// [`GroupResource`].
    Group,
    /// [`ExecResource`].
    Exec,
}

impl Kind {
    /// The kind as written in a spec and in ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Directory => "directory",
            Kind::Template => "template",
            Kind::Package => "package",
            Kind::Service => "service",
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Exec => "exec",
        }
    }
}

/// A file whose content is given literally (`content`) or copied from a
/// file on the machine running the engine (`source`, relative paths
/// resolved against `Options::source_dir`). Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileResource {
    /// The resource's name, unique among files.
    pub name: String,
    /// The absolute path, inside the root.
    pub path: String,
    /// The content, as written.
    #[serde(default)]
    pub content: Option<String>,
    /// A file whose bytes are the content.
    #[serde(default)]
    pub source: Option<String>,
    /// Octal permission bits, such as `"0644"`; kept as they are when absent
    /// (new files get 0644).
    #[serde(default)]
    pub mode: Option<String>,
    /// The owning user's name, resolved in the root's `/etc/passwd`.
    #[serde(default)]
    pub owner: Option<String>,
    /// The owning group's name, resolved in the root's `/etc/group`.
    #[serde(default)]
    pub group: Option<String>,
    /// Resources (ids) converged before this one.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Services (ids) restarted when this resource changes.
    #[serde(default)]
    pub notify: Vec<String>,
}

/// A directory (its parent must exist).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryResource {
    /// The resource's name.
    pub name: String,
    /// The absolute path, inside the root.
    pub path: String,
    /// Octal permission bits; new directories get 0755.
    #[serde(default)]
    pub mode: Option<String>,
    /// The owning user's name.
    #[serde(default)]
    pub owner: Option<String>,
    /// The owning group's name.
    #[serde(default)]
    pub group: Option<String>,
    /// Resources (ids) converged before this one.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Services (ids) restarted when this resource changes.
    #[serde(default)]
    pub notify: Vec<String>,
}

/// A file rendered from a minijinja template given inline (`template`) or
/// read from `source`; exactly one of the two. The template sees `facts`,
/// `tags`, `metadata` and `vars` (the run's variables overlaid with this
/// resource's); an undefined variable is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateResource {
    /// The resource's name.
    pub name: String,
    /// The absolute path of the rendered file, inside the root.
    pub path: String,
    /// The template text.
    #[serde(default)]
    pub template: Option<String>,
    /// A file holding the template text.
    #[serde(default)]
    pub source: Option<String>,
    /// Variables for this template, over the run's.
    #[serde(default)]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Octal permission bits.
    #[serde(default)]
    pub mode: Option<String>,
    /// The owning user's name.
    #[serde(default)]
    pub owner: Option<String>,
    /// The owning group's name.
    #[serde(default)]
    pub group: Option<String>,
    /// Resources (ids) converged before this one.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Services (ids) restarted when this resource changes.
    #[serde(default)]
    pub notify: Vec<String>,
}

/// A Debian package, present (at `version` when given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageResource {
    /// The resource's name, and the package's unless `package` is given.
    pub name: String,
    /// The package's name.
    #[serde(default)]
    pub package: Option<String>,
    /// An exact version.
    #[serde(default)]
    pub version: Option<String>,
    /// Resources (ids) converged before this one.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Services (ids) restarted when this resource changes.
    #[serde(default)]
    pub notify: Vec<String>,
}

/// Whether a service should run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceEnsure {
    /// Running (the default).
    #[default]
    Running,
    /// Stopped.
    Stopped,
}

/// A service: systemd's where the root runs systemd, else the instance
/// supervisor's (its file under `/etc/endstate/services/`, which a file
/// resource writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceResource {
    /// The resource's name, and the service's unless `service` is given.
    pub name: String,
    /// The service's name (systemd unit or supervisor service).
    #[serde(default)]
    pub service: Option<String>,
    /// Running or stopped.
    #[serde(default)]
    pub ensure: ServiceEnsure,
    /// Whether it starts at boot (systemd only: a supervisor service starts
    /// at boot when its file exists).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Resources (ids) converged before this one.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Services (ids) restarted when this resource changes.
    #[serde(default)]
    pub notify: Vec<String>,
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserResource {
    /// The user's name.
    pub name: String,
    /// Its uid.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Its primary group, by name.
    #[serde(default)]
    pub group: Option<String>,
    /// Supplementary groups it belongs to (others are left alone).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Its home directory.
    #[serde(default)]
    pub home: Option<String>,
    /// Its login shell.
    #[serde(default)]
    pub shell: Option<String>,
    /// A system account (uid from the system range).
    #[serde(default)]
    pub system: bool,
    /// Resources (ids) converged before this one.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Services (ids) restarted when this resource changes.
    #[serde(default)]
    pub notify: Vec<String>,
}

/// A group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupResource {
    /// The group's name.
    pub name: String,
    /// Its gid.
    #[serde(default)]
    pub gid: Option<u32>,
    /// A system group.
    #[serde(default)]
    pub system: bool,
    /// Resources (ids) converged before this one.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Services (ids) restarted when this resource changes.
    #[serde(default)]
    pub notify: Vec<String>,
}

/// A shell command (`/bin/sh -c`), run inside the root. It runs when every
/// guard allows: `creates` names a path that must not exist yet, `onlyif`
/// a command that must succeed, `unless` one that must fail. Without a
/// guard it runs on every run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecResource {
    /// The resource's name.
    pub name: String,
    /// The command.
    pub command: String,
    /// An absolute path inside the root whose existence means "done".
    #[serde(default)]
    pub creates: Option<String>,
    /// Run only if this command exits 0.
    #[serde(default)]
    pub onlyif: Option<String>,
    /// Run only if this command exits non-zero.
    #[serde(default)]
    pub unless: Option<String>,
    /// Seconds the command (and each guard) may take; 300 when absent.
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Resources (ids) converged before this one.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Services (ids) restarted when this resource changes.
    #[serde(default)]
    pub notify: Vec<String>,
}

impl Resource {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Resource::File(_) => Kind::File,
            Resource::Directory(_) => Kind::Directory,
            Resource::Template(_) => Kind::Template,
            Resource::Package(_) => Kind::Package,
            Resource::Service(_) => Kind::Service,
            Resource::User(_) => Kind::User,
            Resource::Group(_) => Kind::Group,
            Resource::Exec(_) => Kind::Exec,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        match self {
            Resource::File(r) => &r.name,
            Resource::Directory(r) => &r.name,
            Resource::Template(r) => &r.name,
            Resource::Package(r) => &r.name,
            Resource::Service(r) => &r.name,
            Resource::User(r) => &r.name,
            Resource::Group(r) => &r.name,
            Resource::Exec(r) => &r.name,
        }
    }

    /// Its id, `kind:name`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.kind().as_str(), self.name())
    }

    /// The ids it requires.
    pub fn requires(&self) -> &[String] {
        match self {
            Resource::File(r) => &r.requires,
            Resource::Directory(r) => &r.requires,
            Resource::Template(r) => &r.requires,
            Resource::Package(r) => &r.requires,
            Resource::Service(r) => &r.requires,
            Resource::User(r) => &r.requires,
            Resource::Group(r) => &r.requires,
            Resource::Exec(r) => &r.requires,
        }
    }

    /// The services (ids) it notifies.
    pub fn notify(&self) -> &[String] {
        match self {
            Resource::File(r) => &r.notify,
            Resource::Directory(r) => &r.notify,
            Resource::Template(r) => &r.notify,
            Resource::Package(r) => &r.notify,
            Resource::Service(r) => &r.notify,
            Resource::User(r) => &r.notify,
            Resource::Group(r) => &r.notify,
            Resource::Exec(r) => &r.notify,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use super::*;

    #[test]
    fn resources_are_tagged_by_kind_and_refuse_unknown_fields() {
        let resource: Resource = serde_json::from_value(serde_json::json!({
            "kind": "exec", "name": "migrate", "command": "true", "creates": "/done",
            "requires": ["package:app"], "notify": ["service:app"]
        }))
        .unwrap();
        assert_eq!(resource.id(), "exec:migrate");
        assert_eq!(resource.requires(), ["package:app"]);
        assert_eq!(resource.notify(), ["service:app"]);
        let error = serde_json::from_value::<Resource>(serde_json::json!({
            "kind": "file", "name": "a", "path": "/a", "content": "x", "owner_name": "root"
        }))
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `owner_name`"),
            "{error}"
        );
        assert!(serde_json::from_value::<Resource>(
            serde_json::json!({"kind": "mount", "name": "a"})
        )
        .is_err());
    }
}
