//! A thin main around [`endstate_instance::init_main`]: `endstate-instance-init
//! DIR`. The `endstate` binary offers the same as `endstate cloud
//! instance-init DIR`; this one exists so that tests can run a real instance.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: endstate-instance-init INSTANCE_DIR");
        return ExitCode::from(2);
    };
    match endstate_instance::init_main(std::path::Path::new(&dir)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("endstate-instance-init: error: {error}");
            ExitCode::FAILURE
        }
    }
}
