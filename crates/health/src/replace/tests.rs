//! Replacement decisions: worked cases, and a seeded property run over many
//! random groups.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn member(id: &str, health: HealthStatus, unhealthy_since: Option<u64>) -> Member {
    Member {
        id: id.into(),
        health,
        launched_at: secs(0),
        unhealthy_since: unhealthy_since.map(secs),
        being_replaced: false,
    }
}

fn group(unhealthy: &[(&str, u64)], healthy: usize) -> Vec<Member> {
    let mut members: Vec<Member> = (0..healthy)
        .map(|i| member(&format!("i-h{i}"), HealthStatus::Healthy, None))
        .collect();
    members.extend(
        unhealthy
            .iter()
            .map(|(id, since)| member(id, HealthStatus::Unhealthy, Some(*since))),
    );
    members
}

fn capacity(min: u32, desired: u32, max: u32) -> Capacity {
    Capacity { min, desired, max }
}

#[test]
fn one_unhealthy_of_five_is_replaced_launch_first_when_max_allows() {
    let members = group(&[("i-bad", 400)], 4);
    let decision = select_replacements(
        &members,
        &capacity(1, 5, 6),
        &DisruptionBudget::default(),
        None,
    );
    assert_eq!(
        decision.limits,
        BudgetLimits {
            floor: 5,
            ceiling: 6
        }
    );
    assert_eq!(decision.replace.len(), 1);
    assert_eq!(decision.replace[0].instance, "i-bad");
    assert_eq!(decision.replace[0].order, ReplaceOrder::LaunchFirst);
    assert_eq!(
        decision.replace[0].reason,
        "unhealthy since 400 s after launch: launch its replacement first (6 live of ceiling 6)"
    );
    assert!(decision.deferred.is_empty());
}

#[test]
fn no_more_at_once_than_the_budget_oldest_failure_first() {
    let members = group(&[("i-c", 300), ("i-a", 100), ("i-b", 200)], 2);
    let decision = select_replacements(
        &members,
        &capacity(1, 5, 6),
        &DisruptionBudget::default(),
        None,
    );
    let chosen: Vec<_> = decision
        .replace
        .iter()
        .map(|r| r.instance.as_str())
        .collect();
    assert_eq!(chosen, ["i-a"]);
    let deferred: Vec<_> = decision
        .deferred
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(deferred, ["i-b", "i-c"]);
    assert!(decision.deferred[0]
        .1
        .contains("waits, the budget allows no more at once"));
}

#[test]
fn terminate_first_when_max_leaves_no_room_never_below_the_floor() {
    let members = group(&[("i-a", 100), ("i-b", 200), ("i-c", 300)], 2);
    let budget = DisruptionBudget {
        min_healthy_share: 0.6,
        max_surge: None,
    };
    let decision = select_replacements(&members, &capacity(0, 5, 5), &budget, None);
    assert_eq!(
        decision.limits,
        BudgetLimits {
            floor: 3,
            ceiling: 5
        }
    );
    let chosen: Vec<_> = decision
        .replace
        .iter()
        .map(|r| (r.instance.as_str(), r.order))
        .collect();
    assert_eq!(
        chosen,
        [
            ("i-a", ReplaceOrder::TerminateFirst),
            ("i-b", ReplaceOrder::TerminateFirst)
        ]
    );
    assert_eq!(decision.deferred.len(), 1);
}

#[test]
fn replacements_in_flight_use_up_the_budget() {
    let mut members = group(&[("i-a", 100), ("i-b", 200)], 3);
    members[3].being_replaced = true;
    members.push(member("i-new", HealthStatus::Initial, None));
    let decision = select_replacements(
        &members,
        &capacity(1, 5, 6),
        &DisruptionBudget::default(),
        None,
    );
    assert!(decision.replace.is_empty(), "{decision:?}");
    assert_eq!(decision.deferred.len(), 1);
    assert_eq!(decision.deferred[0].0, "i-b");
}

#[test]
fn the_brake_decides_nothing_and_says_why() {
    let members = group(&[("i-a", 100), ("i-b", 100), ("i-c", 100)], 2);
    let decision = select_replacements(
        &members,
        &capacity(1, 5, 10),
        &DisruptionBudget::default(),
        Some("replacement paused: 3 of 5 instances turned unhealthy within 300 s"),
    );
    assert!(decision.replace.is_empty());
    assert_eq!(decision.deferred.len(), 3);
    assert_eq!(
        decision.paused.as_deref(),
        Some("replacement paused: 3 of 5 instances turned unhealthy within 300 s")
    );
}

/// Over many random groups: healthy instances are never chosen (so healthy
/// capacity never drops), live instances never go above the ceiling (or
/// above where they already were), running ones never below the floor (or
/// below where they already were), and the chosen are the oldest failures.
#[test]
fn property_budget_always_holds() {
    let mut rng = StdRng::seed_from_u64(0x004e_a17e);
    for case in 0..20_000 {
        let max = rng.random_range(0..=20u32);
        let desired = rng.random_range(0..=max);
        let min = rng.random_range(0..=desired);
        let budget = DisruptionBudget {
            min_healthy_share: rng.random_range(0.0..=1.0),
            max_surge: rng.random_bool(0.5).then(|| rng.random_range(0..=4)),
        };
        let n = rng.random_range(0..=max + 3);
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let health = match rng.random_range(0..3) {
                    0 => HealthStatus::Initial,
                    1 => HealthStatus::Healthy,
                    _ => HealthStatus::Unhealthy,
                };
                Member {
                    id: format!("i-{i}"),
                    health,
                    launched_at: secs(rng.random_range(0..1000)),
                    unhealthy_since: (health == HealthStatus::Unhealthy)
                        .then(|| secs(1000 + rng.random_range(0..1000))),
                    being_replaced: rng.random_bool(0.1),
                }
            })
            .collect();
        let cap = capacity(min, desired, max);
        let decision = select_replacements(&members, &cap, &budget, None);
        let limits = BudgetLimits::new(&cap, &budget);
        let find = |id: &str| members.iter().find(|m| m.id == id).expect("member");

        let live = members.len() as u32;
        let running = members
            .iter()
            .filter(|m| m.health != HealthStatus::Initial)
            .count() as u32;
        let launches = decision
            .replace
            .iter()
            .filter(|r| r.order == ReplaceOrder::LaunchFirst)
            .count() as u32;
        let terminations = decision.replace.len() as u32 - launches;
        for r in &decision.replace {
            let m = find(&r.instance);
            assert_eq!(
                m.health,
                HealthStatus::Unhealthy,
                "case {case}: chose {m:?}"
            );
            assert!(!m.being_replaced, "case {case}: chose {m:?} twice");
        }
        assert!(
            live + launches <= limits.ceiling.max(live),
            "case {case}: live {live} + {launches} above ceiling {}",
            limits.ceiling
        );
        assert!(
            running - terminations >= limits.floor.min(running),
            "case {case}: running {running} - {terminations} below floor {}",
            limits.floor
        );
        let chosen_since: Vec<_> = decision
            .replace
            .iter()
            .map(|r| find(&r.instance).unhealthy_since)
            .collect();
        let oldest_deferred = decision
            .deferred
            .iter()
            .map(|(id, _)| find(id).unhealthy_since)
            .min();
        if let (Some(newest_chosen), Some(oldest_deferred)) =
            (chosen_since.iter().max(), oldest_deferred)
        {
            assert!(
                *newest_chosen <= oldest_deferred,
                "case {case}: not oldest first"
            );
        }
        let unhealthy = members
            .iter()
            .filter(|m| m.health == HealthStatus::Unhealthy && !m.being_replaced)
            .count();
        assert_eq!(decision.replace.len() + decision.deferred.len(), unhealthy);
    }
}
