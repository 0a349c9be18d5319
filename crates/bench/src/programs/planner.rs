//! Planner time in process: `plan(desired, observed)` over 10,000 and
//! 100,000 instances, for a no-op (everything converged), a scale-up of 10%,
//! and a replacement of every instance (new image). Run it in release mode:
//!
//!     cargo run --release -p endstate-bench -- planner

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use endstate_bench::median_ms;
use endstate_model::{Capacity, DisruptionBudget, Group, MetadataOptions, Provider, Spec, Zone};
use endstate_plan::{desired_tags, plan, Instance, InstanceState, Observed, PlanOptions};

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

fn spec(groups: usize, per_group: u32) -> Spec {
    Spec {
        load_balancers: Vec::new(),
        project: "bench".into(),
        environment: "default".into(),
        provider: Provider::Aws {
            region: "us-east-1".into(),
            endpoint: None,
            profile: None,
        },
        groups: (0..groups)
            .map(|g| Group {
                name: format!("group-{g:03}"),
                image_id: "ami-11111111".into(),
                image_channel: None,
                instance_types: vec!["m5.large".into(), "m5a.large".into()],
                capacity: Capacity {
                    min: per_group / 2,
                    desired: per_group,
                    max: per_group * 2,
                },
                zones: ZONES
                    .iter()
                    .map(|z| Zone {
                        name: (*z).into(),
                        subnet_ids: vec![format!("subnet-{z}")],
                    })
                    .collect(),
                security_group_ids: vec!["sg-1".into()],
                key_name: None,
                iam_instance_profile: None,
                root_volume: None,
                metadata: MetadataOptions::default(),
                tags: BTreeMap::from([("team".to_string(), format!("team-{g}"))]),
                user_data: None,
                budget: DisruptionBudget::default(),
                health_check: None,
                brake: Default::default(),
                scaling: Default::default(),
                load_balancer: None,
                rollout: None,
                roles: Vec::new(),
            })
            .collect(),
        hash: "bench".into(),
        roles: Default::default(),
        recipes: Default::default(),
    }
}

fn converged(spec: &Spec) -> Observed {
    let mut instances = Vec::new();
    for group in &spec.groups {
        let tags = desired_tags(spec, group);
        for k in 0..group.capacity.desired {
            instances.push(Instance {
                id: format!("i-{:017x}", instances.len()),
                image_id: group.image_id.clone(),
                instance_type: group.instance_types[0].clone(),
                zone: ZONES[k as usize % ZONES.len()].into(),
                subnet_id: None,
                state: InstanceState::Running,
                launch_time: "2026-01-01T00:00:00Z".into(),
                private_ip: None,
                client_token: None,
                tags: tags.clone(),
            });
        }
    }
    Observed { instances }
}

fn time(spec: &Spec, observed: &Observed, runs: usize) -> (f64, usize) {
    let mut samples: Vec<Duration> = Vec::new();
    let mut actions = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let p = plan(spec, observed, &PlanOptions::default());
        samples.push(started.elapsed());
        let (launch, terminate, retag) = p.totals();
        actions = (launch + terminate + retag) as usize;
    }
    (median_ms(&mut samples), actions)
}

pub fn main() {
    println!("| instances | groups | case | plan time (median of 5) | instances touched |");
    println!("|---|---|---|---|---|");
    let mut json = Vec::new();
    for (total, groups) in [(10_000u32, 10usize), (100_000, 100)] {
        let per_group = total / groups as u32;
        let desired = spec(groups, per_group);
        let observed = converged(&desired);

        let mut scaled = desired.clone();
        for g in &mut scaled.groups {
            g.capacity.desired += per_group / 10;
        }
        let mut replaced = desired.clone();
        for g in &mut replaced.groups {
            g.image_id = "ami-22222222".into();
        }
        for (case, spec) in [
            ("no-op", &desired),
            ("scale up 10%", &scaled),
            ("new image: replace all", &replaced),
        ] {
            let (ms, touched) = time(spec, &observed, 5);
            println!("| {total} | {groups} | {case} | {ms:.1} ms | {touched} |");
            json.push(serde_json::json!({ "instances": total, "groups": groups, "case": case, "median_ms": ms, "touched": touched }));
        }
    }
    println!("{}", serde_json::Value::Array(json));
}
