//! The `endstate` binary: parses arguments, installs tracing, wires the
//! libraries together and prints their results. No logic of its own lives
//! here — planning, applying, state and the EC2 protocol are in `crates/`.

mod agent;
mod args;
mod bake_cmd;
mod cloud;
mod commands;
mod config_cmd;
mod output;
mod push;
mod rollout;
mod serve;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = args::Cli::parse();
    // An instance's init runs before any thread exists: it enters new
    // namespaces, which a multi-threaded process cannot do for all of them.
    if let args::AnyCommand::Core(args::Command::Cloud {
        command: args::CloudCommand::InstanceInit { dir },
    }) = &cli.command
    {
        return match endstate_instance::init_main(dir) {
            Ok(code) => code,
            Err(error) => {
                eprintln!("error: instance init: {error:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    output::init_color(cli.no_color);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ENDSTATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        args::AnyCommand::Core(command) => runtime.block_on(commands::run(command)),
        args::AnyCommand::Rollout(command) => runtime.block_on(rollout::run(command)),
        args::AnyCommand::Configuration(command) => config_cmd::run(command),
        args::AnyCommand::Agent(command) => runtime.block_on(agent::run_command(command)),
        args::AnyCommand::Images(args::ImagesCommand::Bake(args)) => {
            runtime.block_on(bake_cmd::bake(args))
        }
        args::AnyCommand::Images(args::ImagesCommand::Images(args)) => {
            runtime.block_on(bake_cmd::images(args))
        }
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
