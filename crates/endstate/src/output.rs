//! What people see: plans with colors and a summary line, status tables,
//! and progress while an apply runs — bars per group on a terminal, plain
//! lines otherwise. Scripts use `--json` instead; nothing here is parsed.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use endstate_exec::{Event, Reporter};
use endstate_plan::{Phase, Plan};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use owo_colors::{OwoColorize, Stream};

/// Colors only where stdout is a terminal and nobody said no.
pub fn init_color(no_color: bool) {
    if no_color || std::env::var_os("NO_COLOR").is_some() {
        owo_colors::set_override(false);
    }
}

/// A plan for people: one line per action (grouped per phase), then the
/// consent it needs, notes, and a summary line.
pub fn render_plan(plan: &Plan) -> String {
    let mut out = String::new();
    let green = |s: String| {
        s.if_supports_color(Stream::Stdout, |t| t.green())
            .to_string()
    };
    let red = |s: String| s.if_supports_color(Stream::Stdout, |t| t.red()).to_string();
    let yellow = |s: String| {
        s.if_supports_color(Stream::Stdout, |t| t.yellow())
            .to_string()
    };
    for (index, phase) in plan.phases.iter().enumerate() {
        let title = match phase {
            Phase::Launch(_) => "launch",
            Phase::Terminate(_) => "terminate",
            Phase::Retag(_) => "retag",
        };
        out.push_str(&format!("phase {} ({title}):\n", index + 1));
        match phase {
            Phase::Launch(launches) => {
                for launch in launches {
                    out.push_str(&format!("  {} {launch}\n", green("+".into())));
                }
            }
            Phase::Terminate(terminations) => {
                // Long lists of identical reasons read better folded.
                let mut folded: BTreeMap<(String, String, String), Vec<&str>> = BTreeMap::new();
                for t in terminations {
                    folded
                        .entry((t.group.clone(), t.zone.clone(), t.reason.to_string()))
                        .or_default()
                        .push(&t.instance_id);
                }
                for ((group, zone, reason), ids) in folded {
                    let shown = if ids.len() <= 3 {
                        ids.join(", ")
                    } else {
                        format!("{}, {} and {} more", ids[0], ids[1], ids.len() - 2)
                    };
                    out.push_str(&format!(
                        "  {} group {group}: terminate {} in {zone} ({shown}): {reason}\n",
                        red("-".into()),
                        ids.len()
                    ));
                }
            }
            Phase::Retag(retags) => {
                for retag in retags {
                    out.push_str(&format!("  {} {retag}\n", yellow("~".into())));
                }
            }
        }
    }
    for consent in &plan.consent {
        out.push_str(&format!(
            "{} {consent} (needs --allow-mass-terminate)\n",
            red("!".into())
        ));
    }
    for note in &plan.notes {
        out.push_str(&format!("{} {note}\n", yellow("note:".into())));
    }
    out.push_str(&summary_line(plan));
    out.push('\n');
    out
}

/// "Plan: 50 to launch, 0 to terminate, 0 to retag." or "No changes."
pub fn summary_line(plan: &Plan) -> String {
    let (launch, terminate, retag) = plan.totals();
    if plan.is_empty() {
        let live: u32 = plan.groups.iter().map(|g| g.running + g.pending).sum();
        return format!(
            "No changes: {}, {} at their end state.",
            count(plan.groups.len(), "group"),
            count(live as usize, "instance")
        );
    }
    format!(
        "Plan: {launch} to launch, {terminate} to terminate, {retag} to retag, in {}.",
        count(plan.phases.len(), "phase")
    )
}

/// "1 group", "3 groups".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Progress for an apply: bars per group on a terminal, lines otherwise.
pub struct Progress {
    bars: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    groups: Mutex<BTreeMap<String, GroupBar>>,
    throttle: ProgressBar,
}

#[derive(Default)]
struct Counts {
    requested: u32,
    pending: u32,
    running: u32,
    terminated: u32,
}

struct GroupBar {
    bar: ProgressBar,
    counts: Counts,
}

impl Progress {
    /// Bars when stderr is a terminal (and `quiet` is false), else lines.
    pub fn new(quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self { bars: None };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let throttle = multi.add(ProgressBar::new_spinner());
        Self {
            bars: Some(Bars {
                multi,
                groups: Mutex::new(BTreeMap::new()),
                throttle,
            }),
        }
    }

    /// Clears the bars.
    pub fn finish(&self) {
        if let Some(bars) = &self.bars {
            bars.throttle.finish_and_clear();
            for group in lock(&bars.groups).values() {
                group.bar.finish();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only counters live behind this lock; a panic cannot tear them.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn plain_line(event: &Event) -> Option<String> {
    Some(match event {
        Event::PhaseStarted {
            index,
            of,
            kind,
            instances,
        } => {
            format!("phase {index}/{of}: {kind} {instances} instances")
        }
        Event::Launching {
            group,
            zone,
            instance_type,
            count,
            ..
        } => {
            format!("{group}: launching {count} {instance_type} in {zone}")
        }
        Event::Launched { group, zone, ids } => {
            format!("{group}: launched {} in {zone}", ids.len())
        }
        Event::FallingBack {
            group,
            from,
            to,
            reason,
        } => {
            format!("{group}: no capacity for {from}; trying {to} ({reason})")
        }
        Event::Resolved { intent, found } => {
            format!("launch {intent}: outcome was unknown; found {found} instances by tag")
        }
        Event::Terminated { group, ids } => format!("{group}: terminating {}", ids.len()),
        Event::Retagged { group, count } => format!("{group}: retagged {count}"),
        Event::Waiting {
            group,
            running,
            pending,
            expected,
        } => {
            format!("{group}: waiting for instances to run: {running} running, {pending} pending (of {expected} launched)")
        }
        Event::Throttled {
            action,
            wait,
            by_server,
        } => format!(
            "{action}: {} — waiting {:.1}s",
            if *by_server {
                "throttled by the endpoint"
            } else {
                "rate limit reached"
            },
            wait.as_secs_f64()
        ),
        Event::Retrying {
            action,
            attempt,
            wait,
            error,
        } => format!(
            "{action}: attempt {attempt} failed ({error}); retrying in {:.1}s",
            wait.as_secs_f64()
        ),
        Event::Interrupted => "interrupted: no new launches; finishing what is in flight".into(),
        Event::Recovered {
            intent,
            kind,
            outcome,
        } => {
            format!("earlier run's {kind} intent {intent}: {outcome}")
        }
    })
}

impl Reporter for Progress {
    fn event(&self, event: &Event) {
        let Some(bars) = &self.bars else {
            if let Some(line) = plain_line(event) {
                eprintln!("{line}");
            }
            return;
        };
        let group_of = |name: &str| -> String { name.to_string() };
        let update = |group: &str, f: &dyn Fn(&mut Counts)| {
            let mut groups = lock(&bars.groups);
            let entry = groups.entry(group_of(group)).or_insert_with(|| {
                let bar = bars.multi.add(ProgressBar::new(0));
                bar.set_style(
                    ProgressStyle::with_template("{prefix:>12} [{bar:30}] {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(group.to_string());
                GroupBar {
                    bar,
                    counts: Counts::default(),
                }
            });
            f(&mut entry.counts);
            let c = &entry.counts;
            entry.bar.set_length(u64::from(c.requested.max(1)));
            entry.bar.set_position(u64::from(c.running));
            entry.bar.set_message(format!(
                "requested {} · pending {} · running {} · terminated {}",
                c.requested, c.pending, c.running, c.terminated
            ));
        };
        match event {
            Event::Launching { group, count, .. } => update(group, &|c| c.requested += count),
            Event::Waiting {
                group,
                running,
                pending,
                ..
            } => update(group, &|c| {
                c.running = *running;
                c.pending = *pending;
            }),
            Event::Terminated { group, ids } => {
                update(group, &|c| c.terminated += ids.len() as u32)
            }
            Event::Throttled { .. } | Event::Retrying { .. } => {
                if let Some(line) = plain_line(event) {
                    bars.throttle.set_message(line);
                    bars.throttle.tick();
                }
            }
            other => {
                if let Some(line) = plain_line(other) {
                    let _ = bars.multi.println(line);
                }
            }
        }
    }
}
