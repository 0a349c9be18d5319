//! One decision out of several policies' votes, with min and max honoured.
//!
//! AWS's rule for several target-tracking policies on one group: scale out
//! if *any* policy wants to (to the largest capacity asked for), scale in
//! only if *every* policy that may scale in wants to, and then by the least
//! (the largest capacity asked for). A policy with scale-in disabled does
//! not block the others' scale-in. The same rule serves step policies here.
//! Whatever the votes, the result lies in `[min, max]` of the capacity
//! passed in — which is the capacity after any scheduled action changed min
//! or max — and a desired capacity already outside the bounds is brought
//! inside even when no policy votes.
//!
//! Not here: evaluating policies (see [`crate::target`], [`crate::step`])
//! or choosing which instances go (see [`crate::select`]).

use crate::{Capacity, Decision};

/// One policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// The policy's name, for the reason.
    pub policy: String,
    /// What it wants; `None` holds the current capacity.
    pub decision: Option<Decision>,
    /// `false` for a policy with scale-in disabled: its hold does not block
    /// the others' scale-in.
    pub scale_in_enabled: bool,
}

/// The decision for the group, or `None` to leave the desired capacity.
pub fn combine(capacity: Capacity, votes: &[Vote]) -> Option<Decision> {
    let current = capacity.desired;
    let inside = capacity.clamp(current);
    fn wanted(capacity: Capacity, v: &Vote) -> Option<(u32, &Decision, &str)> {
        v.decision
            .as_ref()
            .map(|d| (capacity.clamp(d.new_desired), d, v.policy.as_str()))
    }

    let out = votes
        .iter()
        .filter_map(|v| wanted(capacity, v))
        .filter(|(n, _, _)| *n > inside)
        .max_by_key(|(n, _, _)| *n);
    if let Some((n, d, policy)) = out {
        return Some(Decision {
            new_desired: n,
            reason: format!("{policy}: {} (largest scale-out)", d.reason),
        });
    }

    let voters: Vec<&Vote> = votes.iter().filter(|v| v.scale_in_enabled).collect();
    let all_in = !voters.is_empty()
        && voters.iter().all(|v| {
            v.decision
                .as_ref()
                .is_some_and(|d| capacity.clamp(d.new_desired) < inside)
        });
    if all_in {
        let least = voters
            .iter()
            .filter_map(|v| wanted(capacity, v))
            .max_by_key(|(n, _, _)| *n);
        if let Some((n, d, policy)) = least {
            return Some(Decision {
                new_desired: n,
                reason: format!(
                    "{policy}: {} (every policy agrees to scale in; this one removes least)",
                    d.reason
                ),
            });
        }
    }

    capacity.out_of_bounds()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(policy: &str, new: Option<u32>) -> Vote {
        Vote {
            policy: policy.into(),
            decision: new.map(|n| Decision {
                new_desired: n,
                reason: format!("wants {n}"),
            }),
            scale_in_enabled: true,
        }
    }

    fn cap(min: u32, max: u32, desired: u32) -> Capacity {
        Capacity { min, max, desired }
    }

    #[test]
    fn largest_scale_out_wins() {
        let d = combine(
            cap(1, 10, 4),
            &[
                vote("cpu", Some(6)),
                vote("rps", Some(8)),
                vote("q", Some(2)),
            ],
        )
        .unwrap();
        assert_eq!(d.new_desired, 8);
        assert!(d.reason.starts_with("rps: wants 8"), "{}", d.reason);
        assert_eq!(
            combine(cap(1, 7, 4), &[vote("rps", Some(9))])
                .unwrap()
                .new_desired,
            7
        );
    }

    #[test]
    fn scale_in_needs_every_policy_and_removes_least() {
        assert_eq!(
            combine(cap(1, 10, 6), &[vote("cpu", Some(4)), vote("rps", None)]),
            None
        );
        let d = combine(cap(1, 10, 6), &[vote("cpu", Some(4)), vote("rps", Some(5))]).unwrap();
        assert_eq!(d.new_desired, 5);
        let mut no_in = vote("rps", None);
        no_in.scale_in_enabled = false;
        assert_eq!(
            combine(cap(1, 10, 6), &[vote("cpu", Some(4)), no_in.clone()])
                .unwrap()
                .new_desired,
            4
        );
        assert_eq!(
            combine(cap(1, 10, 6), &[no_in]),
            None,
            "nobody may scale in"
        );
        assert_eq!(
            combine(cap(5, 10, 6), &[vote("cpu", Some(2))])
                .unwrap()
                .new_desired,
            5,
            "min"
        );
        assert_eq!(combine(cap(6, 10, 6), &[vote("cpu", Some(2))]), None);
    }

    #[test]
    fn bounds_changed_by_a_schedule_are_honoured_without_votes() {
        assert_eq!(combine(cap(0, 0, 3), &[]).unwrap().new_desired, 0);
        assert_eq!(
            combine(cap(0, 0, 3), &[vote("cpu", Some(9))])
                .unwrap()
                .new_desired,
            0
        );
        assert_eq!(
            combine(cap(2, 4, 0), &[vote("cpu", None)])
                .unwrap()
                .new_desired,
            2
        );
        assert_eq!(combine(cap(2, 4, 3), &[]), None);
    }
}
