//! `endstate deploy GROUP --image AMI` and `endstate rollback GROUP`: the
//! commands that ask the running controller (`endstate serve`) to roll a
//! group out or back, then follow the rollout's events, one line per phase,
//! until it completes, fails or is rolled back.
//!
//! Not here: the rollout itself (the controller's), finding the spec's
//! groups (the controller names unknown ones in its refusal), or acting
//! without a controller — a rollout needs one owner of the group's capacity,
//! so these commands refuse to run without `endstate serve`.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use endstate_controller::client::Client;
use endstate_controller::view::{EventView, RolloutView};

use crate::args::{FollowArgs, RolloutCommand};
use crate::commands::state_path;

/// How long a followed rollout may take before the command gives up
/// following it (the rollout goes on in the controller).
const FOLLOW_LIMIT: Duration = Duration::from_secs(3_600);
/// Between reads of the controller's event log.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// Until a rollout shows, how often its view is read to tell a request that
/// changed nothing (phase `idle`) from one still pending.
const IDLE_LOOK_EVERY: Duration = Duration::from_secs(2);

pub async fn run(command: RolloutCommand) -> Result<ExitCode> {
    match command {
        RolloutCommand::Deploy {
            group,
            image,
            follow,
            spec,
            state,
        } => {
            let client = controller(&state_path(&spec, &state))?;
            let after = crate::serve::latest_seq(&client).await?;
            let accepted = client
                .deploy(&group, &image)
                .await
                .map_err(|e| anyhow::anyhow!("the controller refused the deploy: {e}"))?;
            if follow.no_wait {
                return accepted_only(&accepted, follow, &format!("deploy of {group} to {image}"));
            }
            eprintln!("Deploying {image} to group {group}:");
            follow_rollout(&client, &group, after, Goal::Deploy, follow).await
        }
        RolloutCommand::Rollback {
            group,
            follow,
            spec,
            state,
        } => {
            let client = controller(&state_path(&spec, &state))?;
            let after = crate::serve::latest_seq(&client).await?;
            let accepted = client
                .rollback(&group)
                .await
                .map_err(|e| anyhow::anyhow!("the controller refused the rollback: {e}"))?;
            if follow.no_wait {
                return accepted_only(&accepted, follow, &format!("rollback of {group}"));
            }
            eprintln!("Rolling group {group} back:");
            follow_rollout(&client, &group, after, Goal::Rollback, follow).await
        }
    }
}

/// What the command asked for, which decides what counts as its success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    Deploy,
    Rollback,
}

/// Where a followed rollout stands after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Not over yet.
    Going,
    /// Over, as asked.
    Succeeded,
    /// Over, not as asked: why.
    Failed(String),
}

/// The pure part of following: what an event means for the goal.
/// `failure` keeps the reason of a `rollout_failed` seen before: a failed
/// rollout is over only when its rollback is, or when the controller holds
/// it in phase `failed` (automatic rollback off).
fn judge(goal: Goal, event: &EventView, failure: &mut Option<String>) -> Outcome {
    let failed = |failure: &Option<String>| failure.clone().unwrap_or_else(|| event.reason.clone());
    match (goal, event.kind.as_str()) {
        // After a rollout, a rollback is a rollout back to the previous
        // generation: its completion is the rollback's success too.
        (_, "rollout_completed") => Outcome::Succeeded,
        (_, "rollout_failed") => {
            *failure = Some(event.reason.clone());
            Outcome::Going
        }
        (_, "rollout_phase") if event.data["phase"] == "failed" => Outcome::Failed(format!(
            "the rollout failed and is held (automatic rollback is off): {}",
            failed(failure)
        )),
        (Goal::Deploy, "rollback_completed") => {
            Outcome::Failed(format!("the rollout was rolled back: {}", failed(failure)))
        }
        (Goal::Rollback, "rollback_completed") => Outcome::Succeeded,
        (_, "rollback_failed") => Outcome::Failed(format!("the rollback failed: {}", event.reason)),
        _ => Outcome::Going,
    }
}

/// Events printed as progress: the rollout's phases, and failed reconciles
/// (which hold it up), not every probe.
fn is_progress(kind: &str) -> bool {
    kind == "reconcile_failed"
        || ["rollout_", "traffic_", "rollback_", "deploy_", "targets_"]
            .iter()
            .any(|prefix| kind.starts_with(prefix))
}

async fn follow_rollout(
    client: &Client,
    group: &str,
    after: i64,
    goal: Goal,
    follow: FollowArgs,
) -> Result<ExitCode> {
    let started = Instant::now();
    let mut seen = after;
    let mut failure = None;
    let mut begun = false;
    let mut last_look = Instant::now();
    let outcome = 'follow: loop {
        let events = client.events_after(seen, 1_000, Some(group)).await?;
        for event in &events {
            seen = seen.max(event.seq);
            if !is_progress(&event.kind) {
                continue;
            }
            begun |= event.kind.starts_with("rollout_") || event.kind == "rollback_started";
            // Progress goes to stderr with --json, so stdout is the view alone.
            let line = format!(
                "{:>7.1}s  {:<20} {}",
                started.elapsed().as_secs_f64(),
                event.kind,
                event.reason
            );
            if follow.json {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
            match judge(goal, event, &mut failure) {
                Outcome::Going => {}
                done => break 'follow done,
            }
        }
        // A request that changes nothing (the group is at that generation
        // already) starts no rollout: the view says `idle`, not `pending`.
        if !begun && last_look.elapsed() >= IDLE_LOOK_EVERY {
            last_look = Instant::now();
            let view = client.rollout(group).await?;
            if view.phase == "idle" {
                let line = format!(
                    "nothing to roll out: group {group} is at generation {}",
                    view.to
                );
                if follow.json {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
                break 'follow Outcome::Succeeded;
            }
        }
        if started.elapsed() > FOLLOW_LIMIT {
            bail!(
                "gave up following after {} minutes; the rollout goes on in the controller (GET /v1/groups/{group}/rollout)",
                FOLLOW_LIMIT.as_secs() / 60
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    if follow.json {
        let view = client
            .rollout(group)
            .await
            .with_context(|| format!("reading group {group}'s rollout"))?;
        println!("{}", serde_json::to_string_pretty(&view)?);
    }
    match outcome {
        Outcome::Succeeded => Ok(ExitCode::SUCCESS),
        Outcome::Failed(why) => {
            eprintln!("error: {why}");
            Ok(ExitCode::FAILURE)
        }
        Outcome::Going => bail!("internal: the follow loop ended while the rollout goes on"),
    }
}

fn accepted_only(accepted: &RolloutView, follow: FollowArgs, what: &str) -> Result<ExitCode> {
    if follow.json {
        println!("{}", serde_json::to_string_pretty(accepted)?);
    } else {
        println!(
            "The controller accepted the {what}: group {} {} ({} strategy), {} → {}.",
            accepted.group,
            accepted.phase,
            accepted.strategy,
            accepted.from.as_deref().unwrap_or("-"),
            accepted.to
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The client of the controller that owns this state.
fn controller(state: &Path) -> Result<Client> {
    let Some(info) = crate::serve::running(state) else {
        bail!(
            "no controller runs for the state {}: rollouts are carried out by `endstate serve`; start it (in this directory) first",
            state.display()
        );
    };
    crate::serve::client_of(info, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> EventView {
        EventView {
            seq: 1,
            at: "2026-11-28T00:00:00Z".into(),
            group: "web".into(),
            kind: kind.into(),
            subject: "web".into(),
            reason: format!("{kind} because"),
            data: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_deploy_succeeds_on_completion_and_fails_after_its_rollback() {
        let mut failure = None;
        for kind in ["rollout_started", "traffic_shifted", "traffic_switched"] {
            assert_eq!(
                judge(Goal::Deploy, &event(kind), &mut failure),
                Outcome::Going
            );
        }
        assert_eq!(
            judge(Goal::Deploy, &event("rollout_completed"), &mut failure),
            Outcome::Succeeded
        );
        // Rolled back by itself: over once the rollback is, for the
        // rollout's reason.
        assert_eq!(
            judge(Goal::Deploy, &event("rollout_failed"), &mut failure),
            Outcome::Going
        );
        assert_eq!(
            judge(Goal::Deploy, &event("rollback_started"), &mut failure),
            Outcome::Going
        );
        assert_eq!(
            judge(Goal::Deploy, &event("rollback_completed"), &mut failure),
            Outcome::Failed("the rollout was rolled back: rollout_failed because".into())
        );
        // Without automatic rollback: held in phase `failed`.
        let mut failure = None;
        judge(Goal::Deploy, &event("rollout_failed"), &mut failure);
        let mut held = event("rollout_phase");
        held.data = serde_json::json!({ "phase": "failed" });
        assert!(matches!(
            judge(Goal::Deploy, &held, &mut failure),
            Outcome::Failed(why) if why.ends_with("rollout_failed because")
        ));
        held.data = serde_json::json!({ "phase": "canary" });
        assert_eq!(judge(Goal::Deploy, &held, &mut failure), Outcome::Going);
    }

    #[test]
    fn a_rollback_succeeds_when_it_or_the_rollout_back_completes() {
        let mut failure = None;
        for (kind, outcome) in [
            ("rollback_started", Outcome::Going),
            ("rollback_completed", Outcome::Succeeded),
            ("rollout_completed", Outcome::Succeeded),
        ] {
            assert_eq!(judge(Goal::Rollback, &event(kind), &mut failure), outcome);
        }
        assert!(matches!(
            judge(Goal::Rollback, &event("rollback_failed"), &mut failure),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn progress_is_the_rollout_events_only() {
        for kind in [
            "rollout_started",
            "traffic_shifted",
            "rollback_started",
            "targets_healthy",
            "reconcile_failed",
        ] {
            assert!(is_progress(kind), "{kind}");
        }
        for kind in [
            "probe_failed",
            "scaled",
            "reconcile_started",
            "instance_healthy",
        ] {
            assert!(!is_progress(kind), "{kind}");
        }
    }
}
