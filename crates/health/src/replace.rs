//! Which unhealthy instances of a group to replace now, under the group's
//! disruption budget.
//!
//! The budget's numbers come from [`endstate_plan::BudgetLimits`], the one
//! type every replacement path asks. A replacement is launched first while
//! live instances stay within the ceiling (desired + surge, capped by max);
//! otherwise the unhealthy instance is terminated first, and only as many as
//! keep the instances launched and judged (healthy or unhealthy: running in
//! EC2's sense) at or above the floor. Healthy instances are never chosen, so
//! healthy capacity never drops. Oldest failure first. Instances still being
//! judged (`Initial`, e.g. replacements already launched) count as live but
//! not as running, so replacements in flight use up the budget until they are
//! judged. When the brake is engaged nothing is decided.
//!
//! Pure: it neither launches nor terminates, and reads no clock.

use std::time::Duration;

use endstate_model::{Capacity, DisruptionBudget};
use endstate_plan::BudgetLimits;
use serde::{Deserialize, Serialize};

use crate::machine::HealthStatus;

/// One instance of the group as the health layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub health: HealthStatus,
    pub launched_at: Duration,
    /// When it turned unhealthy, if it is.
    pub unhealthy_since: Option<Duration>,
    /// A replacement for it is already under way.
    pub being_replaced: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplaceOrder {
    /// Launch the replacement; terminate this one once it is healthy.
    LaunchFirst,
    /// Terminate this one; then launch its replacement.
    TerminateFirst,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    pub instance: String,
    pub order: ReplaceOrder,
    pub reason: String,
}

/// What to do now, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacementDecision {
    pub limits: BudgetLimits,
    pub replace: Vec<Replacement>,
    /// Unhealthy instances left for later, each with the reason.
    pub deferred: Vec<(String, String)>,
    /// Why nothing is replaced at all, when the brake holds.
    pub paused: Option<String>,
}

/// Decides which unhealthy `members` to replace now. `brake` is the brake's
/// reason when it is engaged.
pub fn select_replacements(
    members: &[Member],
    capacity: &Capacity,
    budget: &DisruptionBudget,
    brake: Option<&str>,
) -> ReplacementDecision {
    let limits = BudgetLimits::new(capacity, budget);
    let mut unhealthy: Vec<&Member> = members
        .iter()
        .filter(|m| m.health == HealthStatus::Unhealthy && !m.being_replaced)
        .collect();
    unhealthy.sort_by(|a, b| {
        (
            a.unhealthy_since.unwrap_or(a.launched_at),
            a.launched_at,
            &a.id,
        )
            .cmp(&(
                b.unhealthy_since.unwrap_or(b.launched_at),
                b.launched_at,
                &b.id,
            ))
    });
    let mut decision = ReplacementDecision {
        limits,
        replace: Vec::new(),
        deferred: Vec::new(),
        paused: None,
    };
    if let Some(reason) = brake {
        decision.paused = Some(reason.to_string());
        decision.deferred = unhealthy
            .iter()
            .map(|m| (m.id.clone(), format!("not replaced: {reason}")))
            .collect();
        return decision;
    }

    let mut live = count(members.len());
    let mut running = count(
        members
            .iter()
            .filter(|m| m.health != HealthStatus::Initial)
            .count(),
    );
    for member in unhealthy {
        let since = member
            .unhealthy_since
            .map(|s| {
                format!(
                    "unhealthy since {} s after launch",
                    s.saturating_sub(member.launched_at).as_secs()
                )
            })
            .unwrap_or_else(|| "unhealthy".to_string());
        if limits.may_add(live) > 0 {
            live += 1;
            decision.replace.push(Replacement {
                instance: member.id.clone(),
                order: ReplaceOrder::LaunchFirst,
                reason: format!(
                    "{since}: launch its replacement first ({live} live of ceiling {})",
                    limits.ceiling
                ),
            });
        } else if limits.may_remove(running) > 0 {
            // Its replacement takes its place once it is gone, so live
            // instances do not change: only running ones drop, until the
            // replacement is judged.
            running -= 1;
            decision.replace.push(Replacement {
                instance: member.id.clone(),
                order: ReplaceOrder::TerminateFirst,
                reason: format!(
                    "{since}: terminate first, the ceiling {} leaves no room to launch \
                     ({running} running, floor {})",
                    limits.ceiling, limits.floor
                ),
            });
        } else {
            decision.deferred.push((
                member.id.clone(),
                format!(
                    "{since}: waits, the budget allows no more at once ({live} live of ceiling {}, \
                     {running} running at floor {})",
                    limits.ceiling, limits.floor
                ),
            ));
        }
    }
    decision
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
