//! Packages, on Debian roots only: `dpkg-query` inside the root says what
//! is installed, `apt-get install -y` inside the root installs. A root
//! without dpkg's database is an error naming what is missing; there is no
//! other package manager.

use std::time::Duration;

use super::Outcome;
use crate::command::{self, Place};
use crate::engine::Context;
use crate::report::Change;
use crate::types::PackageResource;

/// How long `dpkg-query` may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `apt-get install` may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(1800);

pub(crate) fn converge(context: &Context<'_>, package: &PackageResource) -> Outcome {
    let name = package.package.as_deref().unwrap_or(&package.name);
    let database = context.host_path("/var/lib/dpkg/status");
    if !database.is_file() {
        return Outcome::Failed(format!(
            "no package manager applies to this root: {} does not exist (packages are installed with apt on Debian roots only)",
            database.display()
        ));
    }
    let root = Place::InRoot(context.root);
    let query = [
        "dpkg-query",
        "--show",
        "--showformat=${db:Status-Status} ${Version}",
        name,
    ];
    let installed = match command::run(root, &query, &[], QUERY_TIMEOUT) {
        Ok(output) if output.success() => {
            let text = output.stdout.trim();
            match text.split_once(' ') {
                Some(("installed", version)) => Some(version.to_string()),
                _ => None,
            }
        }
        // dpkg-query exits 1 for a package it has never heard of.
        Ok(output) if output.code == 1 => None,
        Ok(output) => return Outcome::Failed(format!("dpkg-query: {}", output.describe())),
        Err(message) => return Outcome::Failed(format!("dpkg-query: {message}")),
    };
    let satisfied = match (&installed, &package.version) {
        (Some(current), Some(wanted)) => current == wanted,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if satisfied {
        return Outcome::Done(Vec::new());
    }
    let changes = vec![Change::new(
        "version",
        installed,
        Some(
            package
                .version
                .clone()
                .unwrap_or_else(|| "installed".to_string()),
        ),
    )];
    if context.noop {
        return Outcome::Done(changes);
    }
    if !context.host_path("/usr/bin/apt-get").exists() {
        return Outcome::Failed(format!(
            "{} does not exist: cannot install {name}",
            context.host_path("/usr/bin/apt-get").display()
        ));
    }
    let target = match &package.version {
        Some(version) => format!("{name}={version}"),
        None => name.to_string(),
    };
    let install = [
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        target.as_str(),
    ];
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    match command::run(root, &install, &env, INSTALL_TIMEOUT) {
        Ok(output) if output.success() => Outcome::Done(changes),
        Ok(output) => Outcome::Failed(format!("apt-get install {target}: {}", output.describe())),
        Err(message) => Outcome::Failed(format!("apt-get install {target}: {message}")),
    }
}
