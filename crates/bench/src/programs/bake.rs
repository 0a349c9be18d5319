//! Time of a full bake, a no-op bake and an incremental bake of a
//! three-level lineage (base → runtime → app) with the real `endstate
//! bake` on the built-in cloud's process backend (as root: build instances
//! really boot in their own namespaces). Instance-style: every image is a
//! build instance launched, provisioned through user data, stopped and
//! imaged; the process backend's images are layers, so each step is an
//! image of its own and the incremental bake (only the app step changed)
//! bakes one image. Volume-style (`--builder volume`): the same steps run
//! on a copy of the parent image's root with no instance (the cloud's
//! BakeImage), each step a layer too.
//!
//! The lineage: base (a file step and a shell step), runtime (a role step:
//! a directory and a file through the configuration engine), app (a shell
//! step). K rounds (default 3); each round bakes both ways, one after the
//! other, each on a fresh cloud, so that the two columns are measured side
//! by side. The figures are the wall time of each `endstate bake` command,
//! and the full bake's seconds per phase summed over its images (from the
//! manifests).
//!
//! ```text
//! cargo build --release -p endstate -p endstate-bench
//! sudo target/release/bench bake [K]
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

/// Runs `endstate bake --json --builder BUILDER`; its wall time and answer.
fn bake(project: &Project, builder: &str) -> Result<(Duration, Value)> {
    let started = Instant::now();
    let output = project
        .command(&[
            "bake",
            "--json",
            "--builder",
            builder,
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

/// One builder's figures over the rounds.
#[derive(Default)]
struct Column {
    full: Vec<Duration>,
    noop: Vec<Duration>,
    incremental: Vec<Duration>,
    phases: BTreeMap<String, Vec<f64>>,
    counts: (usize, usize, usize),
}

impl Column {
    /// One round: a full bake on a fresh cloud, again (no-op), then with
    /// only the app step changed.
    fn round(&mut self, builder: &str) -> Result<()> {
        let project = Project::new()?;
        project.write_spec(&spec("v1"))?;
        let (took, answer) = bake(&project, builder)?;
        self.full.push(took);
        self.counts.0 = images_made(&answer);
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
            self.phases.entry(phase).or_default().push(seconds);
        }
        let (took, answer) = bake(&project, builder)?;
        self.noop.push(took);
        self.counts.1 = images_made(&answer);
        project.write_spec(&spec("v2"))?;
        let (took, answer) = bake(&project, builder)?;
        self.incremental.push(took);
        self.counts.2 = images_made(&answer);
        eprintln!(
            "{builder}: full {:.2} s, no-op {:.2} s, incremental {:.2} s",
            took_s(&self.full),
            took_s(&self.noop),
            took_s(&self.incremental)
        );
        Ok(())
    }

    /// Medians in ms: full, no-op, incremental; and each phase's.
    fn medians(&mut self) -> ([f64; 3], BTreeMap<String, f64>) {
        let walls = [
            median_ms(&mut self.full),
            median_ms(&mut self.noop),
            median_ms(&mut self.incremental),
        ];
        let phases = self
            .phases
            .iter_mut()
            .map(|(phase, values)| {
                values.sort_by(f64::total_cmp);
                (phase.clone(), (values[values.len() / 2] * 1000.0).round())
            })
            .collect();
        (walls, phases)
    }
}

/// The last figure's seconds.
fn took_s(values: &[Duration]) -> f64 {
    values.last().map_or(0.0, Duration::as_secs_f64)
}

pub fn main() -> Result<()> {
    let rounds: usize = endstate_bench::number_arg(1, "K (rounds)", 3)?;
    endstate_bench::require_root("bake")?;
    let builders = ["instance", "volume"];
    let mut columns: Vec<Column> = builders.iter().map(|_| Column::default()).collect();
    for round in 1..=rounds {
        eprintln!("round {round}");
        for (builder, column) in builders.iter().zip(&mut columns) {
            column.round(builder)?;
        }
    }
    let figures: Vec<([f64; 3], BTreeMap<String, f64>)> =
        columns.iter_mut().map(Column::medians).collect();
    println!("bake, process backend, median of {rounds} (ms):");
    println!("  {:<30} {:>10} {:>10}", "", builders[0], builders[1]);
    for (row, label) in [
        "full bake (4 images)",
        "no-op bake",
        "incremental (app step only)",
    ]
    .iter()
    .enumerate()
    {
        println!(
            "  {label:<30} {:>10.0} {:>10.0}",
            figures[0].0[row], figures[1].0[row]
        );
    }
    for (builder, column) in builders.iter().zip(&columns) {
        println!(
            "  images made by {builder}: full {}, no-op {}, incremental {}",
            column.counts.0, column.counts.1, column.counts.2
        );
    }
    for (builder, (_, phases)) in builders.iter().zip(&figures) {
        let text: Vec<String> = phases
            .iter()
            .map(|(p, ms)| format!("{p} {ms:.0}"))
            .collect();
        println!(
            "  full bake by phase, {builder} (summed over its images): {}",
            text.join(", ")
        );
    }
    let json: BTreeMap<&str, Value> = builders
        .iter()
        .zip(columns.iter().zip(&figures))
        .map(|(builder, (column, (walls, phases)))| {
            (
                *builder,
                serde_json::json!({
                    "full_ms": walls[0].round(),
                    "noop_ms": walls[1].round(),
                    "incremental_ms": walls[2].round(),
                    "images": { "full": column.counts.0, "noop": column.counts.1, "incremental": column.counts.2 },
                    "full_phases_ms": phases,
                }),
            )
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({ "rounds": rounds, "builders": json })
    );
    Ok(())
}
