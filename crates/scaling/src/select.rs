//! Which instances a scale-in terminates, each with its reason.
//!
//! After AWS's default termination policy, one instance at a time:
//! 1. never an instance protected from scale-in;
//! 2. from the zone with the most instances (protected ones count: balance
//!    is about what runs), ties to the zone name first alphabetically;
//! 3. within it, an instance with outdated launch settings (its
//!    `endstate:launch` hash differs from the group's current one) before a
//!    current one — AWS's "oldest launch template or configuration";
//! 4. then the oldest launch, then the smallest id, so the choice is
//!    deterministic where AWS picks at random.
//!
//! AWS's "closest to the next billing hour" is skipped: EC2 bills Linux
//! instances per second, and the built-in cloud bills nothing.
//!
//! If fewer unprotected instances exist than asked for, fewer are returned;
//! as on AWS the caller still lowers the desired capacity and the protected
//! instances stay until their protection is removed.
//!
//! Not here: lifecycle hooks, draining, or the health-driven replacement of
//! instances (that is the controller's).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::UnixSeconds;

/// What selection needs to know of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The instance id.
    pub id: String,
    /// Its availability zone.
    pub zone: String,
    /// When it was launched.
    pub launch_time: UnixSeconds,
    /// Its `endstate:launch` hash.
    pub launch_hash: String,
    /// Protected from scale-in.
    pub protected_from_scale_in: bool,
}

/// One instance chosen to terminate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    /// The instance id.
    pub id: String,
    /// Why this one.
    pub reason: String,
}

/// Chooses up to `count` instances to terminate, in order.
pub fn select_for_scale_in(
    instances: &[InstanceInfo],
    current_launch_hash: &str,
    count: usize,
) -> Vec<Termination> {
    let mut remaining: Vec<&InstanceInfo> = instances.iter().collect();
    let mut out = Vec::new();
    while out.len() < count {
        let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
        for i in &remaining {
            *per_zone.entry(i.zone.as_str()).or_default() += 1;
        }
        let candidate_zones: Vec<(&str, usize)> = per_zone
            .iter()
            .filter(|(z, _)| {
                remaining
                    .iter()
                    .any(|i| i.zone == **z && !i.protected_from_scale_in)
            })
            .map(|(z, n)| (*z, *n))
            .collect();
        // BTreeMap order makes the first of equal counts the alphabetical one.
        let Some(&(zone, zone_count)) =
            candidate_zones
                .iter()
                .fold(None, |best: Option<&(&str, usize)>, z| match best {
                    Some(b) if b.1 >= z.1 => Some(b),
                    _ => Some(z),
                })
        else {
            break;
        };
        let pick = remaining
            .iter()
            .enumerate()
            .filter(|(_, i)| i.zone == zone && !i.protected_from_scale_in)
            .min_by(|(_, a), (_, b)| {
                // `false` sorts first: outdated launch settings go before current ones.
                let is_current = |i: &InstanceInfo| i.launch_hash == current_launch_hash;
                (is_current(a), a.launch_time, &a.id).cmp(&(is_current(b), b.launch_time, &b.id))
            })
            .map(|(idx, _)| idx);
        let Some(idx) = pick else { break };
        let chosen = remaining.remove(idx);
        let settings = if chosen.launch_hash == current_launch_hash {
            "current launch settings"
        } else {
            "outdated launch settings"
        };
        out.push(Termination {
            id: chosen.id.clone(),
            reason: format!(
                "zone {zone} has the most instances ({zone_count}); {settings}; oldest launch there ({})",
                chosen.launch_time
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(
        id: &str,
        zone: &str,
        launch_time: UnixSeconds,
        hash: &str,
        protected: bool,
    ) -> InstanceInfo {
        InstanceInfo {
            id: id.into(),
            zone: zone.into(),
            launch_time,
            launch_hash: hash.into(),
            protected_from_scale_in: protected,
        }
    }

    fn ids(t: &[Termination]) -> Vec<&str> {
        t.iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn balances_zones_first() {
        let g = [
            inst("i-a1", "a", 100, "h", false),
            inst("i-a2", "a", 200, "h", false),
            inst("i-a3", "a", 300, "h", false),
            inst("i-b1", "b", 50, "old", false),
        ];
        // Zone a has 3: its oldest goes first though b holds an outdated one.
        let t = select_for_scale_in(&g, "h", 2);
        assert_eq!(ids(&t), ["i-a1", "i-a2"]);
        assert!(
            t[0].reason.contains("zone a has the most instances (3)"),
            "{}",
            t[0].reason
        );
        // Then a and b tie at 1; a is first alphabetically.
        assert_eq!(
            ids(&select_for_scale_in(&g, "h", 4)),
            ["i-a1", "i-a2", "i-a3", "i-b1"]
        );
    }

    #[test]
    fn outdated_launch_settings_before_oldest() {
        let g = [
            inst("i-1", "a", 100, "h", false),
            inst("i-2", "a", 900, "old", false),
        ];
        let t = select_for_scale_in(&g, "h", 1);
        assert_eq!(ids(&t), ["i-2"]);
        assert!(t[0].reason.contains("outdated launch settings"));
    }

    #[test]
    fn protected_instances_are_never_chosen_but_count_for_balance() {
        let g = [
            inst("i-a1", "a", 100, "h", true),
            inst("i-a2", "a", 200, "h", false),
            inst("i-b1", "b", 50, "h", false),
        ];
        assert_eq!(ids(&select_for_scale_in(&g, "h", 1)), ["i-a2"]);
        let t = select_for_scale_in(&g, "h", 3);
        assert_eq!(
            ids(&t),
            ["i-a2", "i-b1"],
            "the protected one stays; fewer than asked"
        );
        let all = [inst("i-1", "a", 1, "h", true)];
        assert!(select_for_scale_in(&all, "h", 1).is_empty());
    }

    #[test]
    fn ties_break_by_id() {
        let g = [
            inst("i-2", "a", 100, "h", false),
            inst("i-1", "a", 100, "h", false),
        ];
        assert_eq!(ids(&select_for_scale_in(&g, "h", 1)), ["i-1"]);
    }
}
