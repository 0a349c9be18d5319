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
}
