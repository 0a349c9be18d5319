//! Time of a full bake, a no-op bake and an incremental bake of a
//! three-level lineage (base → runtime → app) with the real `endstate
//! bake` on the built-in cloud's process backend (as root: build instances
//! really boot in their own namespaces). Instance-style: every image is a
//! build instance launched, provisioned through user data, stopped and
//! imaged; the process backend's images are layers, so each step is an
//! image of its own and the incremental bake (only the app step changed)
//! bakes one image. Volume-style baking is not built yet.
//!
//! The lineage: base (a file step and a shell step), runtime (a role step:
//! a directory and a file through the configuration engine), app (a shell
//! step). K rounds (default 3), each on a fresh cloud; the figures are the
//! wall time of each `endstate bake` command, and the full bake's seconds
//! per phase summed over its images (from the manifests).
//!
//! ```text
//! cargo build --release -p endstate -p endstate-bench
//! sudo target/release/bake [K]
//! ```
//!
//! Runs `target/<profile>/endstate` beside this program, or `$ENDSTATE_BIN`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use endstate_bench::median_ms;
use endstate_bench::serve::Project;
use serde_json::Value;

/// The process backend's starter image.
const BASE_IMAGE: &str = "ami-0e5c0f5d3b1e2a4f6";

fn spec(app: &str) -> String {
    format!(
        r#"project: bake-bench
provider:
  local: {{}}
roles:
  runtime:
    resources:
      - {{ kind: directory, name: dir, path: /opt/runtime, mode: "0755" }}
      - {{ kind: file, name: conf, path: /opt/runtime/runtime.conf, content: "runtime=1\n" }}
recipes:
  base:
    from: {BASE_IMAGE}
    steps:
      - {{ name: motd, file: {{ path: /etc/baked/base.txt, content: "base\n" }} }}
      - {{ name: tools, shell: "mkdir -p /opt/base && echo tools > /opt/base/tools.txt" }}
  runtime:
    from: base
    steps:
      - {{ name: runtime, role: runtime }}
  app:
    from: runtime
    channels: [stable]
    steps:
      - {{ name: app, shell: "mkdir -p /srv/app && echo {app} > /srv/app/version" }}
groups: {{}}
"#
    )
}

/// Runs `endstate bake --json`; its wall time and answer.
fn bake(project: &Project) -> Result<(Duration, Value)> {
    let started = Instant::now();
    let output = project
        .command(&[
            "bake",
            "--json",
            "--poll-interval",
            "0.2",
            "--timeout",
            "300",
        ])
        .output()
        .context("running endstate bake")?;
    let took = started.elapsed();
    let answer: Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "endstate bake printed no JSON: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    if !output.status.success() {
        bail!("endstate bake failed: {answer}");
    }
    Ok((took, answer))
}

/// How many images the bake made.
fn images_made(answer: &Value) -> usize {
    answer["recipes"]
        .as_array()
        .map(|recipes| {
            recipes
                .iter()
                .map(|r| r["images"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0)
}

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|k| k.parse())
        .transpose()
        .context("K is a number of rounds")?
        .unwrap_or(3);
    if !nix::unistd::geteuid().is_root() {
        bail!("run as root: the process backend's instances need namespaces");
    }
    let mut full = Vec::new();
    let mut noop = Vec::new();
    let mut incremental = Vec::new();
    let mut phases: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut counts = (0, 0, 0);
    for round in 1..=rounds {
        let project = Project::new()?;
        project.write_spec(&spec("v1"))?;
        let (took, answer) = bake(&project)?;
        full.push(took);
        counts.0 = images_made(&answer);
        let mut round_phases: BTreeMap<String, f64> = BTreeMap::new();
        for recipe in answer["recipes"].as_array().into_iter().flatten() {
            for image in recipe["images"].as_array().into_iter().flatten() {
                for (phase, seconds) in image["phases"].as_object().into_iter().flatten() {
                    *round_phases.entry(phase.clone()).or_default() +=
                        seconds.as_f64().unwrap_or(0.0);
                }
            }
        }
        for (phase, seconds) in round_phases {
            phases.entry(phase).or_default().push(seconds);
        }

        let (took, answer) = bake(&project)?;
        noop.push(took);
        counts.1 = images_made(&answer);

        project.write_spec(&spec("v2"))?;
        let (took, answer) = bake(&project)?;
        incremental.push(took);
        counts.2 = images_made(&answer);
        eprintln!(
            "round {round}: full {:.2} s, no-op {:.2} s, incremental {:.2} s",
            full[round - 1].as_secs_f64(),
            noop[round - 1].as_secs_f64(),
            incremental[round - 1].as_secs_f64()
        );
    }
    let (full_ms, noop_ms, incremental_ms) = (
        median_ms(&mut full),
        median_ms(&mut noop),
        median_ms(&mut incremental),
    );
    println!("bake, instance-style, process backend, median of {rounds}:");
    println!(
        "  full bake (4 images):        {full_ms:>8.0} ms ({} images made)",
        counts.0
    );
    println!(
        "  no-op bake:                  {noop_ms:>8.0} ms ({} images made)",
        counts.1
    );
    println!(
        "  incremental (app step only): {incremental_ms:>8.0} ms ({} images made)",
        counts.2
    );
    let mut phase_medians = BTreeMap::new();
    for (phase, mut values) in phases {
        values.sort_by(f64::total_cmp);
        let median = values[values.len() / 2];
        println!(
            "  full bake, {phase:<10} {:>8.0} ms (summed over its images)",
            median * 1000.0
        );
        phase_medians.insert(phase, (median * 1000.0).round());
    }
    println!(
        "{}",
        serde_json::json!({
            "rounds": rounds,
            "full_ms": full_ms.round(),
            "noop_ms": noop_ms.round(),
            "incremental_ms": incremental_ms.round(),
            "images": { "full": counts.0, "noop": counts.1, "incremental": counts.2 },
            "full_phases_ms": phase_medians,
        })
    );
    Ok(())
}
