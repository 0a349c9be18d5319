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
    pub command: AnyCommand,

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

/// Every subcommand: the core ones, and those of rollouts (kept apart so
/// that each is dispatched by its own module).
#[derive(Debug, Subcommand)]
pub enum AnyCommand {
    #[command(flatten)]
    Core(Command),
    #[command(flatten)]
    Rollout(RolloutCommand),
    #[command(flatten)]
    Configuration(ConfigurationCommand),
    #[command(flatten)]
    Agent(AgentCommand),
    #[command(flatten)]
    Images(ImagesCommand),
}

/// Golden images: `endstate bake` and `endstate images`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Bake the spec's recipes (all, or those named, each after its
    /// parents) into images; a recipe whose version exists is not baked
    /// again.
    Bake(BakeArgs),
    /// The recipes' lineage, versions and channel heads, and which groups
    /// and instances run which version; `images prune` applies retention.
    Images(ImagesArgs),
}

#[derive(Debug, Args)]
pub struct BakeArgs {
    /// The recipes to bake (default: every recipe of the spec).
    pub recipes: Vec<String>,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// The build instance's type.
    #[arg(long, default_value = "t3.micro")]
    pub instance_type: String,
    /// The build instance's availability zone (default: the region's first).
    #[arg(long)]
    pub zone: Option<String>,
    /// The build instance's subnet.
    #[arg(long)]
    pub subnet: Option<String>,
    /// The build instance's security groups (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub security_groups: Vec<String>,
    /// How to bake, for every recipe (default: each recipe's `builder:`,
    /// else `instance`): `instance` launches, provisions and images a
    /// build instance; `volume` runs the steps on a copy of the parent's
    /// root with no instance (the built-in cloud only).
    #[arg(long, value_enum)]
    pub builder: Option<BuilderArg>,
    /// How long the steps of one image may take, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Seconds between looks at the build instance and the image.
    #[arg(long, default_value_t = 2.0)]
    pub poll_interval: f64,
    /// Print the manifests as JSON (progress goes nowhere).
    #[arg(long)]
    pub json: bool,
}

/// `endstate bake --builder`: the spec's `builder:` as clap reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BuilderArg {
    Instance,
    Volume,
}

impl From<BuilderArg> for endstate_model::recipe::Builder {
    fn from(arg: BuilderArg) -> Self {
        match arg {
            BuilderArg::Instance => Self::Instance,
            BuilderArg::Volume => Self::Volume,
        }
    }
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    #[command(subcommand)]
    pub action: Option<ImagesAction>,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImagesAction {
    /// Deregister the images each recipe's `keep:` does not keep, with
    /// their storage; never one that a group, a saved plan or an instance
    /// that is not terminated uses.
    Prune {
        /// List what would go; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// A saved plan whose images must stay (repeatable).
        #[arg(long = "plan", value_name = "FILE")]
        plans: Vec<PathBuf>,
    },
}

/// `endstate agent`, the pull model of configuration management.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run on an instance: prove its identity to `endstate serve`, watch its
    /// group's roles, converge them and report; keep converging the last
    /// ones received while the server is away.
    Agent {
        /// `endstate serve`'s API (http://127.0.0.1:7311).
        #[arg(long, env = "ENDSTATE_SERVER")]
        server: String,
        /// The instance metadata service (default:
        /// AWS_EC2_METADATA_SERVICE_ENDPOINT).
        #[arg(long)]
        imds_endpoint: Option<String>,
        /// The root the roles configure.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Where the agent keeps its key and last configuration (0600).
        #[arg(long, default_value = "/var/lib/endstate/agent")]
        state_dir: PathBuf,
        /// Converge once and exit (0 when the run converged).
        #[arg(long)]
        once: bool,
    },
}

/// Rollouts of a group behind a load balancer, carried out by the running
/// controller (`endstate serve`).
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Roll a group out to a new image: the group's rollout strategy
    /// (rolling or blue-green), with progress per phase until it completes,
    /// fails or is rolled back.
    Deploy {
        /// The group.
        group: String,
        /// The image to roll out (an AMI id).
        #[arg(long, value_name = "AMI")]
        image: String,
        #[command(flatten)]
        follow: FollowArgs,
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Return a group's traffic to its previous generation and scale the
    /// new one down (during a rollout, or while the old generation is kept).
    Rollback {
        /// The group.
        group: String,
        #[command(flatten)]
        follow: FollowArgs,
        #[command(flatten)]
        spec: SpecArgs,
        #[command(flatten)]
        state: StateArgs,
    },
}

/// How `deploy` and `rollback` report.
#[derive(Debug, Args, Clone, Copy)]
pub struct FollowArgs {
    /// Print the final rollout as JSON (progress lines go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Return once the controller accepted the request, without following it.
    #[arg(long)]
    pub no_wait: bool,
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

/// Configuration management: roles applied on this machine, or pushed to
/// hosts over SSH.
#[derive(Debug, Subcommand)]
pub enum ConfigurationCommand {
    /// Configure this machine with roles, with no server.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Apply a role on hosts over SSH, without an agent.
    ///
    /// The endstate binary is uploaded once per host (cached by its
    /// SHA-256) and runs `config apply` there. Fails when any host failed,
    /// naming them.
    Push(PushArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Converge this machine (or the directory --root names) to FILE's roles.
    ///
    /// Exit status 0 when the run is ok (a --noop run that found changes
    /// too), 1 when a resource failed, the roles are invalid or nothing
    /// could be run.
    Apply(ConfigApplyArgs),
}

#[derive(Debug, Args)]
pub struct ConfigApplyArgs {
    /// A roles file (`roles:`, with `variables:` and `secrets:`), or a spec.
    pub file: PathBuf,
    /// Only this role (repeatable); all of the file's roles by default.
    #[arg(long = "role", value_name = "NAME")]
    pub roles: Vec<String>,
    /// Change nothing: report what a run would change.
    #[arg(long)]
    pub noop: bool,
    /// The root every path is under.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Also write the JSON report here (atomically).
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Print the JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// An instance metadata service for the instance's facts and tags
    /// (default: AWS_EC2_METADATA_SERVICE_ENDPOINT; never the link-local
    /// address unless given).
    #[arg(long, value_name = "URL")]
    pub imds_endpoint: Option<String>,
    /// FILE is the JSON document `endstate push` sends: roles with secrets
    /// resolved and the values to redact.
    #[arg(long, hide = true)]
    pub resolved: bool,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The role, from the spec's (or roles file's) `roles:`.
    pub role: String,
    /// The targets, comma-separated: hosts as ssh takes them (`host`,
    /// `user@host`), or `group:NAME` (`user@group:NAME`) for the private
    /// addresses of a spec group's running instances, read from its cloud.
    #[arg(
        long,
        value_name = "TARGET[,TARGET…]",
        value_delimiter = ',',
        required = true
    )]
    pub to: Vec<String>,
    /// The spec or roles file declaring the role.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "endstate.yaml",
        env = "ENDSTATE_SPEC"
    )]
    pub spec: PathBuf,
    /// How many hosts are pushed at a time.
    #[arg(long, default_value_t = 10)]
    pub parallel: usize,
    /// An ssh option (`ssh -o KEY=VALUE`; repeatable). BatchMode is always yes.
    #[arg(long = "ssh-option", value_name = "KEY=VALUE")]
    pub ssh_options: Vec<String>,
    /// An ssh_config file instead of ~/.ssh/config (`ssh -F`).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// The private key (`ssh -i`).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// The remote user (`ssh -l`).
    #[arg(long)]
    pub user: Option<String>,
    /// The remote port (`ssh -p`).
    #[arg(long)]
    pub port: Option<u16>,
    /// The root the role configures on each host; `{host}` stands for the
    /// host's name (several targets on one machine, as in tests).
    #[arg(long, default_value = "/")]
    pub root: String,
    /// Where on each host the binary is cached and the role's document is
    /// kept during the run; relative to the remote user's home; `{host}`
    /// as in --root.
    #[arg(long, value_name = "DIR", default_value = ".cache/endstate")]
    pub remote_dir: String,
    /// Change nothing: report what a run would change on each host.
    #[arg(long)]
    pub noop: bool,
    /// Print every host's result and report as JSON.
    #[arg(long)]
    pub json: bool,
}
