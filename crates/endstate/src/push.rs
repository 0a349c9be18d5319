//! `endstate push ROLE --to TARGET,…`: configuration without an agent. For
//! each host, at most `--parallel` at a time, through the system's OpenSSH
//! client (`ssh`, BatchMode, the user's own keys, known hosts and
//! configuration): check whether the host has this very binary, cached by
//! its SHA-256 under the remote directory; upload it only when it does not;
//! send the role — secrets resolved here, sources inlined — on ssh's
//! standard input into a 0600 file that is removed when the run ends; run
//! `endstate-<sha256> config apply … --resolved --json` there and read its
//! report. Each host succeeds or fails on its own; the command fails when
//! any did, naming them.
//!
//! A target is a host name or address as `ssh` takes it (`user@host` too),
//! or `group:NAME` (`user@group:NAME` too): the private addresses of the
//! group's running instances, read from the spec's cloud by the project
//! and group tags the way `plan` observes (on the built-in cloud,
//! 127.100.x.y). The roles are checked and the groups resolved before any
//! host is contacted; an unknown group (an error naming the spec file) or
//! a group with no running instance stops the push before it starts. Which
//! hosts each group resolved to is printed (and in `--json`, `groups`); a
//! host named twice is pushed once. The spec is read without an
//! environment overlay; its provider is reached as `plan` reaches it (for
//! `provider: local`, a built-in cloud is started if none runs).
//!
//! Secret values travel only on standard input: never in an argument, a
//! log line or a file on this machine.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use endstate_clock::SystemClock;
use endstate_config::{Outcome, Report, Resource, Role};
use endstate_exec::{observe_group, Silent};
use endstate_model::Spec;
use endstate_provider::{InstanceState, Provider};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::args::{ApiArgs, PushArgs, RateLimitMode, SpecArgs};
use crate::config_cmd::{self, ResolvedRoles};

/// What `{host}` in `--root` and `--remote-dir` stands for.
const HOST_PLACEHOLDER: &str = "{host}";

/// How a `--to` target names a group of the spec.
const GROUP_PREFIX: &str = "group:";

/// One `--to` target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A host as ssh takes it.
    Host(String),
    /// `[USER@]group:NAME`: the group's running instances.
    Group { name: String, user: Option<String> },
}

/// The hosts one `group:NAME` target resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct ResolvedGroup {
    group: String,
    hosts: Vec<GroupHost>,
}

/// One running instance of a group, and the host ssh is given for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct GroupHost {
    instance: String,
    /// Its private address, with the target's `user@` if it had one.
    host: String,
}

/// How the binary got to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Binary {
    /// It was there already (same SHA-256).
    Cached,
    /// It was uploaded in this push.
    Uploaded,
}

/// One host's push.
#[derive(Debug, Serialize)]
struct HostResult {
    host: String,
    ok: bool,
    binary: Option<Binary>,
    /// The host's run, when it ran.
    report: Option<Report>,
    /// Why the host failed before or around its run (ssh, upload, a run
    /// that printed no report).
    error: Option<String>,
    duration_ms: u64,
}

/// What every host's push shares.
struct Push<'a> {
    args: &'a PushArgs,
    document: Vec<u8>,
    binary: PathBuf,
    sha256: String,
}

/// Runs `endstate push`.
pub fn run(args: &PushArgs) -> Result<ExitCode> {
    let targets = check_arguments(args)?;
    let declared = config_cmd::load_roles(&args.spec)?;
    let selected =
        config_cmd::select_roles(&args.spec, declared, std::slice::from_ref(&args.role))?;
    let spec_dir = match args.spec.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (roles, secrets) = config_cmd::resolve_secrets(&selected)?;
    let roles = roles
        .into_iter()
        .map(|role| inline_sources(role, &spec_dir))
        .collect::<Result<Vec<_>>>()?;
    let document = serde_json::to_vec(&ResolvedRoles { roles, secrets })
        .context("cannot serialize the role for the hosts")?;
    let binary = running_binary();
    let sha256 = sha256_file(&binary)
        .with_context(|| format!("cannot read this endstate binary ({})", binary.display()))?;
    let groups = resolve_groups(args, &targets)?;
    let hosts = hosts(&targets, &groups);
    if !args.json {
        for group in &groups {
            println!("{}", group_line(group));
        }
    }
    let push = Push {
        args,
        document,
        binary,
        sha256,
    };

    let results = run_bounded(&hosts, args.parallel, |host| push.host(host));
    let failed: Vec<&str> = results
        .iter()
        .filter(|result| !result.ok)
        .map(|result| result.host.as_str())
        .collect();
    if args.json {
        let out = serde_json::json!({
            "role": args.role,
            "groups": groups,
            "hosts": results,
            "failed": failed,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for result in &results {
            print!("{}", host_summary(result));
        }
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        bail!(
            "push of role {}: {} of {} host{} failed: {}",
            args.role,
            failed.len(),
            results.len(),
            if results.len() == 1 { "" } else { "s" },
            failed.join(", ")
        )
    }
}

/// Checks the arguments and parses the targets; nothing is read yet.
fn check_arguments(args: &PushArgs) -> Result<Vec<Target>> {
    if args.parallel == 0 {
        bail!("--parallel 0: at least one host must be pushed at a time");
    }
    let targets = args
        .to
        .iter()
        .map(|target| parse_target(target))
        .collect::<Result<Vec<_>>>()?;
    for option in &args.ssh_options {
        match option.split_once('=') {
            Some((key, _)) if !key.trim().is_empty() => {}
            _ => bail!("--ssh-option `{option}`: expected KEY=VALUE, as in ssh's -o"),
        }
    }
    for (flag, value) in [("--root", &args.root), ("--remote-dir", &args.remote_dir)] {
        if value.is_empty() || value.contains('\n') {
            bail!("{flag}: `{value}` is not a path");
        }
    }
    if !args.root.starts_with('/') {
        bail!("--root {}: must be an absolute path", args.root);
    }
    Ok(targets)
}

/// `host`, `user@host`, `group:NAME` or `user@group:NAME`.
fn parse_target(text: &str) -> Result<Target> {
    let (user, rest) = match text.split_once('@') {
        Some((user, rest)) => (Some(user), rest),
        None => (None, text),
    };
    let Some(name) = rest.strip_prefix(GROUP_PREFIX) else {
        if text.is_empty() || text.starts_with('-') || text.contains(char::is_whitespace) {
            bail!("--to: `{text}` is not a host name or address");
        }
        return Ok(Target::Host(text.to_string()));
    };
    if let Some(user) = user {
        if user.is_empty() || user.starts_with('-') || user.contains(char::is_whitespace) {
            bail!("--to {text}: `{user}` is not a user name");
        }
    }
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!("--to {text}: `{name}` is not a group name (letters, digits, `-` and `_`)");
    }
    Ok(Target::Group {
        name: name.to_string(),
        user: user.map(str::to_string),
    })
}

/// Every `group:` target resolved from the spec's cloud, in the targets'
/// order; none read (nor the spec loaded) when there is none.
fn resolve_groups(args: &PushArgs, targets: &[Target]) -> Result<Vec<ResolvedGroup>> {
    let wanted: Vec<(&str, Option<&str>)> = targets
        .iter()
        .filter_map(|target| match target {
            Target::Group { name, user } => Some((name.as_str(), user.as_deref())),
            Target::Host(_) => None,
        })
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let spec = crate::commands::load_spec(&SpecArgs {
        file: args.spec.clone(),
        environment: None,
    })?;
    // Push itself is synchronous (threads and ssh processes); the provider
    // is async, so a small runtime of its own serves these few reads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime to read the groups")?;
    runtime.block_on(async {
        let api = ApiArgs {
            rate_limits: RateLimitMode::Ec2,
            poll_interval: 2.0,
        };
        let provider = crate::commands::provider(
            &spec,
            &args.spec,
            &api,
            Arc::new(Silent),
            SystemClock::shared(),
        )
        .await?;
        let mut groups = Vec::with_capacity(wanted.len());
        for (name, user) in wanted {
            groups.push(group_hosts(provider.as_ref(), &spec, &args.spec, name, user).await?);
        }
        Ok(groups)
    })
}

/// Group `name` of `spec` (read from `spec_file`): its running instances'
/// private addresses, by instance id, each prefixed with `user@` if given.
async fn group_hosts(
    provider: &dyn Provider,
    spec: &Spec,
    spec_file: &Path,
    name: &str,
    user: Option<&str>,
) -> Result<ResolvedGroup> {
    if !spec.groups.iter().any(|group| group.name == name) {
        let declared: Vec<&str> = spec.groups.iter().map(|g| g.name.as_str()).collect();
        bail!(
            "--to group:{name}: {} declares no group `{name}` (it declares {})",
            spec_file.display(),
            if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join(", ")
            }
        );
    }
    let instances = observe_group(provider, &spec.project, name)
        .await
        .with_context(|| format!("--to group:{name}: cannot read the group's instances"))?;
    let mut hosts = Vec::new();
    for instance in instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
    {
        let Some(address) = &instance.private_ip else {
            bail!(
                "--to group:{name}: instance {} is running without a private address",
                instance.id
            );
        };
        hosts.push(GroupHost {
            instance: instance.id.clone(),
            host: match user {
                Some(user) => format!("{user}@{address}"),
                None => address.clone(),
            },
        });
    }
    if hosts.is_empty() {
        bail!(
            "--to group:{name}: group `{name}` of project {} has no running instance{}; nothing was pushed",
            spec.project,
            match instances.len() {
                0 => String::new(),
                n => format!(" ({n} in other states)"),
            }
        );
    }
    Ok(ResolvedGroup {
        group: name.to_string(),
        hosts,
    })
}

/// The hosts to push, in the targets' order, each once.
fn hosts(targets: &[Target], groups: &[ResolvedGroup]) -> Vec<String> {
    let mut groups = groups.iter();
    let mut hosts: Vec<String> = Vec::new();
    let mut add = |host: &str| {
        if !hosts.iter().any(|known| known == host) {
            hosts.push(host.to_string());
        }
    };
    for target in targets {
        match target {
            Target::Host(host) => add(host),
            Target::Group { .. } => {
                // `groups` holds one entry per group target, in order.
                for host in groups.next().into_iter().flat_map(|g| &g.hosts) {
                    add(&host.host);
                }
            }
        }
    }
    hosts
}

/// "group web: 127.100.0.1 (i-…), 127.100.0.2 (i-…)".
fn group_line(group: &ResolvedGroup) -> String {
    let hosts: Vec<String> = group
        .hosts
        .iter()
        .map(|host| format!("{} ({})", host.host, host.instance))
        .collect();
    format!("group {}: {}", group.group, hosts.join(", "))
}

/// Runs `work` on each of `items`, at most `bound` at a time, and returns
/// the results in the items' order.
fn run_bounded<T: Send>(items: &[String], bound: usize, work: impl Fn(&str) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let (sender, receiver) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..bound.min(items.len()) {
            let sender = sender.clone();
            let (next, work) = (&next, &work);
            scope.spawn(move || loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(item) = items.get(index) else { break };
                if sender.send((index, work(item))).is_err() {
                    break;
                }
            });
        }
    });
    drop(sender);
    let mut results: Vec<(usize, T)> = receiver.into_iter().collect();
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

impl Push<'_> {
    /// Pushes to one host; every failure ends up in the result.
    fn host(&self, host: &str) -> HostResult {
        let started = Instant::now();
        let mut result = HostResult {
            host: host.to_string(),
            ok: false,
            binary: None,
            report: None,
            error: None,
            duration_ms: 0,
        };
        match self.converge(host, &mut result) {
            Ok(report) => {
                result.ok = report.outcome == Outcome::Ok;
                result.report = Some(report);
            }
            Err(error) => result.error = Some(format!("{error:#}")),
        }
        result.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        result
    }

    fn converge(&self, host: &str, result: &mut HostResult) -> Result<Report> {
        let remote_dir = self.args.remote_dir.replace(HOST_PLACEHOLDER, host);
        let root = self.args.root.replace(HOST_PLACEHOLDER, host);
        let bin_dir = format!("{remote_dir}/bin");
        let binary = format!("{bin_dir}/endstate-{}", self.sha256);

        let probe = format!(
            "uname -sm; if [ -x {bin} ]; then echo cached; else echo missing; fi",
            bin = quote(&binary)
        );
        let output = self.ssh(host, &probe, Input::None)?;
        let answer = String::from_utf8_lossy(&output.stdout);
        let mut lines = answer.lines();
        let system = lines.next().unwrap_or_default().trim().to_lowercase();
        let here = format!("{} {}", std::env::consts::OS, std::env::consts::ARCH);
        if system != here {
            bail!("the host runs `{system}`, this endstate binary is for `{here}`");
        }
        if lines.next().map(str::trim) == Some("cached") {
            result.binary = Some(Binary::Cached);
        } else {
            // A temporary name, checked and renamed, so that an interrupted
            // upload never passes for the cached binary.
            let upload = format!(
                "set -e; umask 077; mkdir -p {bin_dir}; tmp={bin_dir}/.upload.$$; \
                 trap 'rm -f \"$tmp\"' EXIT; cat > \"$tmp\"; sum=$(sha256sum \"$tmp\"); \
                 if [ \"${{sum%% *}}\" != {sha} ]; then \
                 echo \"the uploaded binary's SHA-256 is ${{sum%% *}}, not {sha}\" >&2; exit 1; fi; \
                 chmod 0700 \"$tmp\"; mv -f \"$tmp\" {bin}",
                bin_dir = quote(&bin_dir),
                sha = self.sha256,
                bin = quote(&binary)
            );
            let file = std::fs::File::open(&self.binary)
                .with_context(|| format!("cannot open {}", self.binary.display()))?;
            self.ssh(host, &upload, Input::File(file))
                .context("uploading the endstate binary")?;
            result.binary = Some(Binary::Uploaded);
        }

        // mktemp makes the document 0600; the umask is left as the login
        // set it, since the role's commands inherit it.
        let run_dir = format!("{remote_dir}/run");
        let apply = format!(
            "set -e; (umask 077; mkdir -p {run_dir}); doc=$(mktemp {run_dir}/role.XXXXXX); \
             trap 'rm -f \"$doc\"' EXIT; trap 'exit 129' HUP; trap 'exit 130' INT; \
             trap 'exit 143' TERM; cat > \"$doc\"; set +e; \
             {bin} config apply \"$doc\" --resolved --json --root {root}{noop}",
            run_dir = quote(&run_dir),
            bin = quote(&binary),
            root = quote(&root),
            noop = if self.args.noop { " --noop" } else { "" },
        );
        let output = self.run_ssh(host, &apply, Input::Bytes(&self.document))?;
        match serde_json::from_slice::<Report>(&output.stdout) {
            Ok(report) => Ok(report),
            Err(_) => Err(anyhow!(
                "config apply on the host printed no report ({})",
                describe(&output)
            )),
        }
    }

    /// Runs `script` on `host`; an error unless it exits 0.
    fn ssh(&self, host: &str, script: &str, input: Input<'_>) -> Result<std::process::Output> {
        let output = self.run_ssh(host, script, input)?;
        if output.status.success() {
            Ok(output)
        } else {
            bail!("{}", describe(&output))
        }
    }

    /// Runs `script` on `host` through `ssh` with `input` on its standard
    /// input, whatever its exit status.
    fn run_ssh(&self, host: &str, script: &str, input: Input<'_>) -> Result<std::process::Output> {
        let mut command = Command::new("ssh");
        // ssh keeps the first value it is given for an option: BatchMode
        // comes first so that it holds; the user's options come before our
        // defaults so that theirs win.
        command.args(["-o", "BatchMode=yes"]);
        if let Some(config) = &self.args.ssh_config {
            command.arg("-F").arg(config);
        }
        for option in &self.args.ssh_options {
            command.arg("-o").arg(option);
        }
        command.args(["-o", "ConnectTimeout=30"]);
        if let Some(port) = self.args.port {
            command.arg("-p").arg(port.to_string());
        }
        if let Some(user) = &self.args.user {
            command.arg("-l").arg(user);
        }
        if let Some(identity) = &self.args.identity {
            command.arg("-i").arg(identity);
        }
        command.arg("--").arg(host).arg(script);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let bytes = match input {
            Input::None => {
                command.stdin(Stdio::null());
                None
            }
            Input::File(file) => {
                command.stdin(Stdio::from(file));
                None
            }
            Input::Bytes(bytes) => {
                command.stdin(Stdio::piped());
                Some(bytes)
            }
        };
        let mut child = command
            .spawn()
            .context("cannot run ssh (is the OpenSSH client installed?)")?;
        let writer = match (bytes, child.stdin.take()) {
            (Some(bytes), Some(mut stdin)) => {
                let bytes = bytes.to_vec();
                // A thread of its own, so that a full output pipe cannot
                // block the input; an early exit of the remote side shows
                // as its status, not as this write's error.
                Some(std::thread::spawn(move || {
                    let _ = stdin.write_all(&bytes);
                }))
            }
            _ => None,
        };
        let output = child.wait_with_output().context("waiting for ssh")?;
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        Ok(output)
    }
}

/// What a remote command reads on its standard input.
enum Input<'a> {
    None,
    File(std::fs::File),
    Bytes(&'a [u8]),
}

/// The exit status and the end of what a failed ssh command printed.
fn describe(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = stderr.trim();
    let tail: String = {
        let count = text.chars().count();
        if count > 1500 {
            format!("…{}", text.chars().skip(count - 1500).collect::<String>())
        } else {
            text.to_string()
        }
    };
    let status = match output.status.code() {
        // ssh's own failures (connection, authentication) exit 255.
        Some(255) => "ssh failed".to_string(),
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_string(),
    };
    if tail.is_empty() {
        status
    } else {
        format!("{status}: {tail}")
    }
}

/// `text` as one word for the remote POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The binary this process runs: `/proc/self/exe` on Linux, which stays
/// this very file even if the path it was started from was rebuilt since.
fn running_binary() -> PathBuf {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return proc_exe;
    }
    std::env::current_exe().unwrap_or(proc_exe)
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// `role` with each file's and template's `source` read (relative to
/// `spec_dir`) into its content, since the host does not have the files.
pub(crate) fn inline_sources(mut role: Role, spec_dir: &Path) -> Result<Role> {
    for resource in &mut role.resources {
        let id = resource.id();
        let read = |source: &str| -> Result<String> {
            let path = spec_dir.join(source);
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "role {}: {id}: source {}: cannot read it",
                    role.name,
                    path.display()
                )
            })?;
            String::from_utf8(bytes).map_err(|_| {
                anyhow!(
                    "role {}: {id}: source {}: not UTF-8 text, which push cannot carry",
                    role.name,
                    path.display()
                )
            })
        };
        match resource {
            Resource::File(file) => {
                if let Some(source) = file.source.take() {
                    file.content = Some(read(&source)?);
                }
            }
            Resource::Template(template) => {
                if let Some(source) = template.source.take() {
                    template.template = Some(read(&source)?);
                }
            }
            _ => {}
        }
    }
    Ok(role)
}

/// One host's lines: its name and outcome, then its run's summary.
fn host_summary(result: &HostResult) -> String {
    let binary = match result.binary {
        Some(Binary::Uploaded) => "binary uploaded",
        Some(Binary::Cached) => "binary cached",
        None => "binary not checked",
    };
    let mut out = format!(
        "{}: {} ({binary}, {:.1} s)\n",
        result.host,
        if result.ok { "ok" } else { "FAILED" },
        result.duration_ms as f64 / 1000.0
    );
    if let Some(report) = &result.report {
        for line in config_cmd::summary(report).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if let Some(error) = &result.error {
        out.push_str(&format!("  error: {error}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use super::*;
    use endstate_provider::fake::FakeProvider;

    #[test]
    fn quoted_words_reach_the_shell_as_written() {
        for word in ["plain", "it's", "$HOME `id` \"x\" \\ *", "", "a\tb c"] {
            let output = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(word)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(output.stdout).unwrap(), word);
        }
    }

    #[test]
    fn targets_are_hosts_or_groups_with_an_optional_user() {
        let host = |h: &str| Target::Host(h.to_string());
        let group = |name: &str, user: Option<&str>| Target::Group {
            name: name.to_string(),
            user: user.map(str::to_string),
        };
        assert_eq!(parse_target("web1").unwrap(), host("web1"));
        assert_eq!(parse_target("ops@10.0.0.5").unwrap(), host("ops@10.0.0.5"));
        assert_eq!(parse_target("group:web").unwrap(), group("web", None));
        assert_eq!(
            parse_target("ops@group:web-2").unwrap(),
            group("web-2", Some("ops"))
        );
        for (bad, message) in [
            ("", "`` is not a host name or address"),
            ("-oProxyCommand=x", "is not a host name or address"),
            ("group:", "`` is not a group name"),
            ("group:we b", "`we b` is not a group name"),
            ("group:a.b", "`a.b` is not a group name"),
            ("@group:web", "`` is not a user name"),
        ] {
            let error = parse_target(bad).unwrap_err().to_string();
            assert!(error.contains(message), "{bad}: {error}");
        }
    }

    #[test]
    fn hosts_keep_the_targets_order_and_come_once() {
        let targets = vec![
            Target::Host("a".into()),
            Target::Group {
                name: "web".into(),
                user: None,
            },
            Target::Host("10.0.0.2".into()),
            Target::Group {
                name: "db".into(),
                user: Some("ops".into()),
            },
        ];
        let group = |name: &str, hosts: &[&str]| ResolvedGroup {
            group: name.into(),
            hosts: hosts
                .iter()
                .enumerate()
                .map(|(i, host)| GroupHost {
                    instance: format!("i-{name}{i}"),
                    host: host.to_string(),
                })
                .collect(),
        };
        let groups = [
            group("web", &["10.0.0.1", "10.0.0.2"]),
            group("db", &["ops@10.0.0.3"]),
        ];
        assert_eq!(
            hosts(&targets, &groups),
            ["a", "10.0.0.1", "10.0.0.2", "ops@10.0.0.3"]
        );
        assert_eq!(
            group_line(&groups[0]),
            "group web: 10.0.0.1 (i-web0), 10.0.0.2 (i-web1)"
        );
    }

    const SPEC: &str = "\
project: shop
provider:
  aws:
    region: us-east-1
groups:
  web:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 0, desired: 2, max: 3 }
    zones: [us-east-1a]
  db:
    image: ami-12345678
    instance_type: t3.micro
    capacity: { min: 0, desired: 0, max: 1 }
    zones: [us-east-1a]
";

    /// Launches `count` instances tagged as `project`'s `group`.
    async fn launch(fake: &FakeProvider, project: &str, group: &str, count: u32) -> Vec<String> {
        let request = endstate_provider::LaunchRequest {
            image_id: "ami-12345678".into(),
            instance_type: "t3.micro".into(),
            count,
            zone: "us-east-1a".into(),
            subnet_id: None,
            security_group_ids: Vec::new(),
            key_name: None,
            iam_instance_profile: None,
            root_volume: None,
            metadata: Default::default(),
            user_data: None,
            tags: [
                (
                    endstate_model::tags::PROJECT.to_string(),
                    project.to_string(),
                ),
                (endstate_model::tags::GROUP.to_string(), group.to_string()),
            ]
            .into(),
            client_token: format!("{project}-{group}-{count}"),
        };
        let launched = fake.run_instances(&request).await.unwrap();
        launched.into_iter().map(|i| i.id).collect()
    }

    #[tokio::test]
    async fn a_group_resolves_to_its_running_instances_private_addresses() {
        let spec = endstate_model::load_str(
            SPEC,
            Path::new("spec.yaml"),
            Path::new("/nonexistent"),
            None,
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let fake = FakeProvider::new();
        let web = launch(&fake, "shop", "web", 3).await;
        launch(&fake, "other", "web", 1).await;
        for id in &web[..2] {
            assert!(fake.set_state(id, InstanceState::Running));
        }
        assert!(fake.set_state(&web[2], InstanceState::Stopped));
        let address = |id: &str| {
            fake.instances()
                .into_iter()
                .find(|i| i.id == id)
                .and_then(|i| i.private_ip)
                .unwrap()
        };
        let file = Path::new("/specs/shop.yaml");

        let resolved = group_hosts(&fake, &spec, file, "web", None).await.unwrap();
        assert_eq!(resolved.group, "web");
        let expected: Vec<GroupHost> = web[..2]
            .iter()
            .map(|id| GroupHost {
                instance: id.clone(),
                host: address(id),
            })
            .collect();
        assert_eq!(resolved.hosts, expected);
        let with_user = group_hosts(&fake, &spec, file, "web", Some("ops"))
            .await
            .unwrap();
        assert_eq!(with_user.hosts[0].host, format!("ops@{}", address(&web[0])));

        let empty = group_hosts(&fake, &spec, file, "db", None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            empty.contains("group `db` of project shop has no running instance"),
            "{empty}"
        );
        let unknown = group_hosts(&fake, &spec, file, "cache", None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("/specs/shop.yaml declares no group `cache` (it declares db, web)"),
            "{unknown}"
        );
    }

    #[test]
    fn hosts_run_within_the_bound_and_results_keep_their_order() {
        let hosts: Vec<String> = (0..7).map(|i| format!("host{i}")).collect();
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let results = run_bounded(&hosts, 3, |host| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20));
            running.fetch_sub(1, Ordering::SeqCst);
            host.to_uppercase()
        });
        let expected: Vec<String> = (0..7).map(|i| format!("HOST{i}")).collect();
        assert_eq!(results, expected);
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }
}
