//! Properties of the planner over thousands of generated worlds (a seeded
//! generator, so a failure repeats): carrying out a plan's phases in order
//! (every launch runs, every termination lands)
//! - never takes a group's live instances below min(what it had, the
//!   budget's floor), nor above max(what it had, the budget's ceiling);
//! - ends with exactly the desired instances of each group, all current,
//!   and nothing of groups gone from the spec — unless the plan says, in a
//!   note, that the budget blocks a replacement;
//! - so that planning again finds nothing to do.

use std::collections::BTreeMap;

use endstate_model::{
    tags, Capacity, DisruptionBudget, Group, MetadataOptions, Provider, Spec, Zone,
};
use endstate_plan::{
    desired_tags, plan, BudgetLimits, Instance, InstanceState, Observed, Phase, PlanOptions,
};

/// xorshift64*: small, seeded, good enough to spread test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

fn group(rng: &mut Rng, name: &str) -> Group {
    let min = rng.below(6) as u32;
    let desired = min + rng.below(8) as u32;
    let max = desired + rng.below(4) as u32;
    let zones = 1 + rng.below(3) as usize;
    Group {
        name: name.into(),
        image_id: "ami-22222222".into(),
        image_channel: None,
        instance_types: vec!["m5.large".into(), "m5a.large".into()],
        capacity: Capacity { min, desired, max },
        zones: ZONES[..zones]
            .iter()
            .map(|z| Zone {
                name: (*z).into(),
                subnet_ids: vec![],
            })
            .collect(),
        security_group_ids: vec![],
        key_name: None,
        iam_instance_profile: None,
        root_volume: None,
        metadata: MetadataOptions::default(),
        tags: BTreeMap::from([("team".to_string(), name.to_string())]),
        user_data: None,
        budget: DisruptionBudget {
            min_healthy_share: *rng.pick(&[0.0, 0.5, 0.9, 1.0]),
            max_surge: *rng.pick(&[None, Some(0), Some(1), Some(3)]),
        },
        health_check: None,
        brake: Default::default(),
        scaling: Default::default(),
        load_balancer: None,
        rollout: None,
        roles: Vec::new(),
    }
}

fn instance(
    id: usize,
    spec: &Spec,
    group: &Group,
    zone: &str,
    image: &str,
    state: InstanceState,
) -> Instance {
    Instance {
        id: format!("i-{id:017x}"),
        image_id: image.into(),
        instance_type: group.instance_types[0].clone(),
        zone: zone.into(),
        subnet_id: None,
        state,
        launch_time: format!("2026-01-01T00:{:02}:00Z", id % 60),
        private_ip: None,
        client_token: None,
        tags: desired_tags(spec, group),
    }
}

fn world(seed: u64) -> (Spec, Observed) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let groups: Vec<Group> = (0..1 + rng.below(3))
        .map(|g| group(&mut rng, &format!("g{g}")))
        .collect();
    let spec = Spec {
        load_balancers: Vec::new(),
        project: "prop".into(),
        environment: "default".into(),
        provider: Provider::Aws {
            region: "us-east-1".into(),
            endpoint: None,
            profile: None,
        },
        groups: groups.clone(),
        hash: "h".into(),
        roles: Default::default(),
        recipes: Default::default(),
    };
    let mut instances = Vec::new();
    let gone = {
        let mut g = group(&mut rng, "gone");
        g.zones.truncate(1);
        g
    };
    for g in groups.iter().chain(std::iter::once(&gone)) {
        for _ in 0..rng.below(14) {
            let id = instances.len();
            let zone = if rng.below(10) == 0 {
                "us-east-1z"
            } else {
                *rng.pick(&ZONES)
            };
            let image = if rng.below(2) == 0 {
                "ami-11111111"
            } else {
                "ami-22222222"
            };
            let state = *rng.pick(&[
                InstanceState::Running,
                InstanceState::Running,
                InstanceState::Running,
                InstanceState::Pending,
                InstanceState::Stopped,
                InstanceState::Terminated,
            ]);
            let mut i = instance(id, &spec, g, zone, image, state);
            if rng.below(8) == 0 {
                i.instance_type = "t2.nano".into();
            }
            if rng.below(8) == 0 {
                i.tags.insert(tags::LAUNCH_HASH.into(), "stale".into());
            }
            if rng.below(8) == 0 {
                i.tags.insert("team".into(), "someone-else".into());
            }
            instances.push(i);
        }
    }
    (spec, Observed { instances })
}

fn live(observed: &Observed, group: &str) -> u32 {
    observed
        .instances
        .iter()
        .filter(|i| i.state.is_live() && i.tag(tags::GROUP) == Some(group))
        .count() as u32
}

/// Carries out the phases on `observed`, checking the bounds after each.
fn carry_out(spec: &Spec, observed: &mut Observed, phases: &[Phase], seed: u64) {
    let start: BTreeMap<String, u32> = spec
        .groups
        .iter()
        .map(|g| (g.name.clone(), live(observed, &g.name)))
        .collect();
    let mut next_id = 1_000_000;
    for (index, phase) in phases.iter().enumerate() {
        match phase {
            Phase::Launch(launches) => {
                for l in launches {
                    let g = spec
                        .groups
                        .iter()
                        .find(|g| g.name == l.group)
                        .expect("group of a launch");
                    for _ in 0..l.count {
                        next_id += 1;
                        observed.instances.push(instance(
                            next_id,
                            spec,
                            g,
                            &l.zone,
                            &g.image_id,
                            InstanceState::Running,
                        ));
                    }
                }
            }
            Phase::Terminate(terminations) => {
                for t in terminations {
                    let i = observed
                        .instances
                        .iter_mut()
                        .find(|i| i.id == t.instance_id)
                        .expect("terminated instance exists");
                    assert!(
                        !i.state.is_gone(),
                        "seed {seed}: {} terminated twice",
                        t.instance_id
                    );
                    i.state = InstanceState::Terminated;
                }
            }
            Phase::Retag(retags) => {
                for r in retags {
                    for id in &r.instance_ids {
                        let i = observed
                            .instances
                            .iter_mut()
                            .find(|i| &i.id == id)
                            .expect("retagged");
                        i.tags.extend(r.set.clone());
                        for key in &r.remove {
                            i.tags.remove(key);
                        }
                    }
                }
            }
        }
        for g in &spec.groups {
            let limits = BudgetLimits::new(&g.capacity, &g.budget);
            let now = live(observed, &g.name);
            let had = start[&g.name];
            assert!(
                now >= had.min(limits.floor),
                "seed {seed}: after phase {index}, group {} has {now} live (had {had}, floor {})",
                g.name,
                limits.floor
            );
            assert!(
                now <= had.max(limits.ceiling),
                "seed {seed}: after phase {index}, group {} has {now} live (had {had}, ceiling {})",
                g.name,
                limits.ceiling
            );
        }
    }
}

#[test]
fn plans_respect_the_budget_and_converge_in_one_apply() {
    let mut blocked = 0;
    let mut replaced = 0;
    for seed in 0..3_000 {
        let (spec, mut observed) = world(seed);
        let first = plan(&spec, &observed, &PlanOptions::default());
        carry_out(&spec, &mut observed, &first.phases, seed);
        if first.totals().0 > 0 && first.totals().1 > 0 {
            replaced += 1;
        }
        let again = plan(&spec, &observed, &PlanOptions::default());
        if !first.notes.is_empty() {
            // A blocked replacement: the plan did what it could and said why.
            blocked += 1;
            continue;
        }
        assert!(
            again.is_empty(),
            "seed {seed}: a second plan still has work: {:?}\nfirst: {:?}",
            again.phases,
            first.phases
        );
        for g in &spec.groups {
            assert_eq!(
                live(&observed, &g.name),
                g.capacity.desired,
                "seed {seed}: group {}",
                g.name
            );
        }
        assert_eq!(
            live(&observed, "gone"),
            0,
            "seed {seed}: a vanished group survived"
        );
    }
    // The generator must exercise both paths, or the property says little.
    assert!(
        replaced > 500,
        "only {replaced} worlds mixed launches and terminations"
    );
    assert!(
        blocked > 10,
        "only {blocked} worlds had a blocked replacement"
    );
}
