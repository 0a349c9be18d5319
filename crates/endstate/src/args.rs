//! The command line, parsed (no I/O here): what the user asked for, before
//! anything is read or resolved.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Declare the end state of a fleet of cloud instances; endstate converges
/// reality to it.
#[derive(Debug, Parser)]
#[command(name = "endstate", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Never color the output (also: NO_COLOR in the environment).
    #[arg(long, global = true)]
    pub no_color: bool,
}

#[derive(Debug, Args, Clone)]
pub struct SpecArgs {
    /// The spec file.
    #[arg(
        short = 'f',
        long = "file",
        default_value = "endstate.yaml",
        env = "ENDSTATE_SPEC"
    )]
    pub file: PathBuf,

    /// An environment overlay from the spec's `environments`.
    #[arg(short = 'e', long = "env")]
    pub environment: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct StateArgs {
    /// The state file (SQLite). Default: .endstate/state.db beside the spec.
    #[arg(long = "state", env = "ENDSTATE_STATE")]
    pub state: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RateLimitMode {
    /// Client-side token buckets with EC2's documented default limits.
    Ec2,
    /// No client-side limits (EC2's own throttling is still absorbed by retries).
    Off,
}

#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Client-side rate limits.
    #[arg(long, value_enum, default_value = "ec2", env = "ENDSTATE_RATE_LIMITS")]
    pub rate_limits: RateLimitMode,

    /// Seconds between reads while waiting for instances to run.
    #[arg(long, default_value_t = 2.0)]
    pub poll_interval: f64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a starter spec.
    Init {
        /// Where to write it.
        #[arg(default_value = "endstate.yaml")]
        path: PathBuf,
        /// The project name.
        #[arg(long, default_value = "demo")]
        project: String,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Check the spec and report every error, with file:line:column.
    Validate {
        #[command(flatten)]
        spec: SpecArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the spec's JSON Schema (for editors, e.g. yaml-language-server).
    Schema,
    /// Show what apply would change, and why.
    Plan {
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        api: ApiArgs,
        /// Save the plan, for `endstate apply FILE`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Converge: plan, then carry the plan out (or carry out a saved plan).
    Apply {
        /// A plan saved by `endstate plan --out`: applied exactly, or refused
        /// if the spec or the instances changed since.
        plan: Option<PathBuf>,
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        api: ApiArgs,
        /// Allow a plan that removes more than half of a group, or a whole
        /// group gone from the spec.
        #[arg(long)]
        allow_mass_terminate: bool,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Terminate every instance of the project (found by its tags).
    Destroy {
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        api: ApiArgs,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Groups and instances as they are now.
    Status {
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        api: ApiArgs,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read this instance's metadata (run on an instance: EC2, or the
    /// built-in cloud's, where AWS_EC2_METADATA_SERVICE_ENDPOINT names its
    /// service). IMDSv2 tokens, through the AWS SDK's metadata client.
    Metadata {
        /// What to read: a path under /latest/meta-data/ (`instance-id`,
        /// `placement/region`, `tags/instance/Name`, …), or `user-data`, or
        /// `identity` (the signed identity document). None: a summary.
        paths: Vec<String>,
        /// Print as JSON (an object of path → value).
        #[arg(long)]
        json: bool,
    },
    /// Keep the project at its end state continuously: reconcile every
    /// group, replace unhealthy instances, scale; serve the HTTP API.
    Serve {
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        state: StateArgs,
        #[command(flatten)]
        api: ApiArgs,
        /// Where the HTTP API listens (loopback); port 0 picks a free one
        /// (written to serve.json beside the state).
        #[arg(long, default_value = "127.0.0.1:7311")]
        listen: String,
        /// Seconds between full reconciles of every group.
        #[arg(long, default_value_t = 60.0)]
        period: f64,
        /// Seconds between reads of the instances, status checks and CPU.
        #[arg(long, default_value_t = 5.0)]
        observe_interval: f64,
        /// Allow plans that remove more than half of a group, or a whole group.
        #[arg(long)]
        allow_mass_terminate: bool,
    },
    /// API tokens of `endstate serve` (stored hashed in the state).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Send a metric sample to the running controller (for scaling policies).
    Metric {
        #[command(subcommand)]
        command: MetricCommand,
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Pause or resume a group under the running controller.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        state: StateArgs,
    },
    /// The built-in cloud: an EC2-compatible endpoint on this machine whose
    /// instances really run.
    Cloud {
        #[command(subcommand)]
        command: CloudCommand,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CloudBackend {
    /// Instances are real processes, each with its own address, root and
    /// metadata service.
    Process,
    /// Instances are records with EC2's lifecycle; nothing runs.
    Simulated,
}

impl CloudBackend {
    pub fn name(self) -> &'static str {
        match self {
            CloudBackend::Process => "process",
            CloudBackend::Simulated => "simulated",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CloudCommand {
    /// Run the built-in cloud in the foreground (until SIGTERM or Ctrl-C).
    Serve {
        /// The cloud's directory (see `cloud status --help`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Port on 127.0.0.1; 0 picks a free one (written to server.json).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// The region the cloud calls itself.
        #[arg(long, default_value = "us-east-1")]
        region: String,
        #[arg(long, value_enum, default_value = "process")]
        backend: CloudBackend,
        /// Bind a host directory or file read-only into every instance of
        /// the process backend, as HOST_PATH:INSTANCE_PATH (repeatable).
        #[arg(long = "bind", value_name = "HOST_PATH:INSTANCE_PATH")]
        binds: Vec<String>,
    },
    /// Start the built-in cloud in the background unless it runs; print its URL.
    Start {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// Print the server's description as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Whether it runs, where, how instances are isolated, instance counts.
    Status {
        /// The cloud's directory. Default: $ENDSTATE_CLOUD_DIR, else
        /// $XDG_DATA_HOME/endstate/cloud, else ~/.local/share/endstate/cloud.
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Stop the server (its instances keep running and are re-adopted at
    /// the next start; `endstate destroy` terminates a project's).
    Stop {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Terminate every instance of the cloud first (all projects).
        #[arg(long)]
        terminate_instances: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print an instance's console output (its boot log).
    ConsoleOutput {
        /// The instance id.
        id: String,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run as an instance (the process backend starts this; not for people).
    #[command(hide = true)]
    InstanceInit {
        /// The instance's directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (once: only its hash is kept).
    Create {
        /// A name to tell tokens apart.
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List tokens (names and times, never the tokens).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke { id: i64 },
}

#[derive(Debug, Subcommand)]
pub enum MetricCommand {
    /// `endstate metric put GROUP METRIC VALUE [--instance ID]`
    Put {
        group: String,
        metric: String,
        value: f64,
        /// The instance it was measured on; none means group-wide.
        #[arg(long)]
        instance: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Stop acting on the group until it is resumed.
    Pause {
        group: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume the group (also releases the correlated-failure brake).
    Resume { group: String },
}
