//! `bench NAME [ARGS…]`: endstate's benchmark programs, one binary (one
//! link of the dependency graph instead of one per program). Each program
//! is a module of `programs`, documented there with its arguments, and
//! sees its arguments as a program of its own would
//! ([`endstate_bench::program_args`]).

use std::process::ExitCode;

mod programs;

fn main() -> ExitCode {
    let Some(name) = std::env::args().nth(1) else {
        return usage();
    };
    let ran: anyhow::Result<()> = match name.as_str() {
        "agents" => programs::agents::main(),
        "apply_moto" => programs::apply_moto::main(),
        "bake" => programs::bake::main(),
        "converge_simulated" => programs::converge_simulated::main(),
        "planner" => {
            programs::planner::main();
            Ok(())
        }
        "process_fleet" => programs::process_fleet::main(),
        "rollout" => programs::rollout::main(),
        "serve_heal" => programs::serve_heal::main(),
        "serve_reconcile" => programs::serve_reconcile::main(),
        _ => return usage(),
    };
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: bench PROGRAM [ARGS…]; programs: {}",
        programs::NAMES.join(", ")
    );
    ExitCode::from(2)
}
