//! The disruption budget in numbers: given a group's capacity and its
//! [`DisruptionBudget`], how few instances may run (the floor) and how many
//! may run at once (the ceiling) while instances are being replaced.
//!
//! Every replacement path — apply, healing, rollouts, rollback — asks this
//! one type, and the tests that replay a request log check against it too.

use endstate_model::{Capacity, DisruptionBudget};

/// The live-instance bounds a group must stay within during a replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimits {
    /// Running instances never go below this.
    pub floor: u32,
    /// Live (pending or running) instances never go above this.
    pub ceiling: u32,
}

impl BudgetLimits {
    /// The limits for a group of `capacity` under `budget`.
    ///
    /// floor = max(min, ceil(min_healthy_share × desired)), never above
    /// desired; ceiling = desired + surge, where surge defaults to 10% of
    /// desired (at least 1) and never lifts the ceiling above max.
    pub fn new(capacity: &Capacity, budget: &DisruptionBudget) -> Self {
        let desired = capacity.desired;
        let share = budget.min_healthy_share.clamp(0.0, 1.0);
        let healthy = (share * f64::from(desired) - 1e-9).ceil().max(0.0) as u32;
        let floor = healthy.max(capacity.min).min(desired);
        let default_surge = (f64::from(desired) * 0.1).ceil().max(1.0) as u32;
        let surge = budget.max_surge.unwrap_or(default_surge);
        let ceiling = desired.saturating_add(surge).min(capacity.max.max(desired));
        Self { floor, ceiling }
    }

    /// Instances that may be taken out of service at once from `live`.
    pub fn may_remove(&self, live: u32) -> u32 {
        live.saturating_sub(self.floor)
    }

    /// Instances that may be added at once to `live`.
    pub fn may_add(&self, live: u32) -> u32 {
        self.ceiling.saturating_sub(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(min: u32, desired: u32, max: u32, share: f64, surge: Option<u32>) -> BudgetLimits {
        BudgetLimits::new(
            &Capacity { min, desired, max },
            &DisruptionBudget {
                min_healthy_share: share,
                max_surge: surge,
            },
        )
    }

    #[test]
    fn default_budget_keeps_ninety_percent_and_surges_ten() {
        assert_eq!(
            limits(0, 200, 300, 0.9, None),
            BudgetLimits {
                floor: 180,
                ceiling: 220
            }
        );
    }

    #[test]
    fn min_capacity_raises_the_floor_and_max_caps_the_ceiling() {
        assert_eq!(
            limits(195, 200, 205, 0.9, None),
            BudgetLimits {
                floor: 195,
                ceiling: 205
            }
        );
    }

    #[test]
    fn small_groups_still_surge_by_one() {
        assert_eq!(
            limits(1, 3, 6, 0.9, None),
            BudgetLimits {
                floor: 3,
                ceiling: 4
            }
        );
    }

    #[test]
    fn exact_shares_do_not_round_up() {
        // 0.9 × 10 is 9.000000000000002 in floating point; the floor is 9.
        assert_eq!(limits(0, 10, 10, 0.9, Some(0)).floor, 9);
    }
}
