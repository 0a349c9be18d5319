//! What endstate refuses, and that refusing changes nothing: malformed specs
//! (each a located, readable error, and not one API call — read from the
//! proxy's log), the blast-radius guard, saved plans applied against a
//! world that moved, and secrets that never reach output or state.

use crate::common;

use common::{group, World, SECRET_VALUE};

/// A valid spec; each case below breaks one line of it.
fn base(endpoint: &str) -> Vec<String> {
    [
        "project: guards",                              // 1
        "provider:",                                    // 2
        "  aws:",                                       // 3
        "    region: us-east-1",                        // 4
        &format!("    endpoint: {endpoint}"),           // 5
        "variables:",                                   // 6
        "  ami: ami-0123456789abcdef0",                 // 7
        "secrets:",                                     // 8
        "  token: env:ENDSTATE_TEST_SECRET",            // 9
        "groups:",                                      // 10
        "  web:",                                       // 11
        "    image: ${var.ami}",                        // 12
        "    instance_types: [t3.micro]",               // 13
        "    capacity: { min: 1, desired: 2, max: 3 }", // 14
        "    zones:",                                   // 15
        "      us-east-1a: []",                         // 16
        "    tags: { team: web }",                      // 17
        "    user_data:",                               // 18
        "      script: |",                              // 19
        "        #!/bin/sh",                            // 20
        "        echo ${secret.token} > /etc/token",    // 21
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

struct Case {
    what: &'static str,
    /// (line to replace, its new text); line 0 appends.
    edits: Vec<(usize, &'static str)>,
    env: Option<&'static str>,
    line: usize,
    message: &'static str,
}

fn case(
    what: &'static str,
    edits: Vec<(usize, &'static str)>,
    line: usize,
    message: &'static str,
) -> Case {
    Case {
        what,
        edits,
        env: None,
        line,
        message,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "syntax error",
            vec![(14, "    capacity: { min: 1, desired: 2, max: 3")],
            15,
            "invalid YAML",
        ),
        case(
            "unknown field",
            vec![(17, "    tagz: { team: web }")],
            17,
            "unknown field `tagz`",
        ),
        case(
            "wrong type",
            vec![(14, "    capacity: { min: 1, desired: two, max: 3 }")],
            14,
            "expected an integer",
        ),
        case(
            "unknown variable",
            vec![(12, "    image: ${var.nope}")],
            12,
            "unknown variable `nope`",
        ),
        case(
            "min greater than max",
            vec![(14, "    capacity: { min: 4, desired: 2, max: 3 }")],
            14,
            "greater than capacity.max",
        ),
        case(
            "oversize user data",
            vec![(19, "      file: big.sh"), (20, ""), (21, "")],
            18,
            "over EC2's limit of 16,384 bytes",
        ),
        Case {
            env: Some("nope"),
            ..case(
                "unknown environment",
                vec![],
                1,
                "unknown environment `nope`",
            )
        },
        case(
            "unresolvable secret",
            vec![(9, "  token: env:ENDSTATE_UNSET_VARIABLE")],
            21,
            "cannot be resolved",
        ),
        case(
            "not an AMI id",
            vec![(12, "    image: centos7")],
            12,
            "is not an AMI id",
        ),
        case(
            "no instance types",
            vec![(13, "    instance_types: []")],
            13,
            "instance_types",
        ),
        case(
            "missing image",
            vec![(12, "    # no image")],
            11,
            "missing required field",
        ),
        case(
            "reserved tag prefix",
            vec![(17, "    tags: { \"endstate:team\": web }")],
            17,
            "reserved for endstate",
        ),
        case(
            "hop limit out of range",
            vec![(0, "    metadata: { hop_limit: 99 }")],
            22,
            "hop_limit",
        ),
        case(
            "missing user data file",
            vec![(19, "      file: nowhere.sh"), (20, ""), (21, "")],
            19,
            "cannot read user data file",
        ),
        case(
            "secret outside user data",
            vec![(17, "    tags: { team: \"${secret.token}\" }")],
            17,
            "only allowed in user data",
        ),
        case(
            "bad secret reference",
            vec![(9, "  token: vault:db/token")],
            9,
            "invalid secret reference",
        ),
        case(
            "invalid project name",
            vec![(1, "project: Guards Project")],
            1,
            "invalid project name",
        ),
        case(
            "zone of another region",
            vec![(16, "      us-west-2a: []")],
            16,
            "not in region",
        ),
        case(
            "unknown volume type",
            vec![(0, "    root_volume: { size_gib: 10, type: gp9 }")],
            22,
            "unknown volume type",
        ),
        case(
            "duplicate key",
            vec![(13, "    image: ami-0123456789abcdef1")],
            13,
            "duplicate",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_specs_give_located_errors_and_make_no_call() {
    let world = World::new("guards").await;
    // 40 KB that gzip cannot shrink below 16 KB: a pseudo-random hex stream.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut big = String::from("#!/bin/sh\n# ");
    for _ in 0..40_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        big.push(char::from(b"0123456789abcdef"[(state % 16) as usize]));
    }
    std::fs::write(world.dir.path().join("big.sh"), big).expect("big user data");

    let cases = cases();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        let mut lines = base(&world.proxy.url());
        for (line, text) in &case.edits {
            if *line == 0 {
                lines.push(text.to_string());
            } else {
                lines[line - 1] = text.to_string();
            }
        }
        std::fs::write(world.spec_path(), lines.join("\n") + "\n").expect("spec");
        let mut args_by_command: Vec<Vec<&str>> =
            vec![vec!["validate"], vec!["plan"], vec!["apply"]];
        if let Some(env) = case.env {
            for args in &mut args_by_command {
                args.extend(["-e", env]);
            }
        }
        for args in args_by_command {
            let output = world.run(&args).await;
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            let location = format!("endstate.yaml:{}:", case.line);
            let located = stderr
                .lines()
                .any(|l| l.contains(&location) && l.contains(case.message));
            if output.status.success() || !located {
                failures.push(format!(
                    "{} ({}): expected failure with `{location}… {}`, got {:?}:\n{stderr}",
                    case.what, args[0], case.message, output.status
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let calls: Vec<_> = world.requests().iter().map(|r| r.action.clone()).collect();
    assert!(calls.is_empty(), "bad input made API calls: {calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_a_group_needs_consent_to_terminate_the_old_one() {
    let world = World::new("rename").await;
    world.write_spec(&[group("web", 2, 4, 8)]);
    world.ok(&["apply", "--poll-interval", "0.1"]).await;

    world.write_spec(&[group("frontend", 2, 4, 8)]);
    world.proxy.clear();
    let plan = world.ok(&["plan"]).await;
    assert!(plan.contains("group web is gone from the spec"), "{plan}");
    let refused = world.run(&["apply", "--poll-interval", "0.1"]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("--allow-mass-terminate"), "{stderr}");
    let mutating: Vec<_> = world
        .requests()
        .into_iter()
        .filter(|r| r.action.as_deref() != Some("DescribeInstances"))
        .map(|r| r.action)
        .collect();
    assert!(mutating.is_empty(), "a refused apply called {mutating:?}");
    assert_eq!(world.live_by_group().await["web"].len(), 4);

    world
        .ok(&["apply", "--allow-mass-terminate", "--poll-interval", "0.1"])
        .await;
    let live = world.live_by_group().await;
    assert_eq!(live.get("frontend").map(Vec::len), Some(4));
    assert_eq!(live.get("web").map(Vec::len).unwrap_or(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_applies_exactly_or_refuses_a_changed_world() {
    let world = World::new("saved").await;
    let mut web = group("web", 1, 3, 6);
    world.write_spec(&[web.clone()]);

    world.ok(&["plan", "--out", "first.plan"]).await;
    world
        .ok(&["apply", "first.plan", "--poll-interval", "0.1"])
        .await;
    assert_eq!(world.live_by_group().await["web"].len(), 3);

    // The world moves after the plan was saved: apply refuses it.
    web.desired = 5;
    world.write_spec(&[web.clone()]);
    world.ok(&["plan", "--out", "second.plan"]).await;
    world.write_spec(&[group("web", 1, 4, 6)]);
    world.ok(&["apply", "--poll-interval", "0.1"]).await;
    world.write_spec(&[web.clone()]);
    let refused = world.run(&["apply", "second.plan"]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("instances changed since this plan was made"),
        "{stderr}"
    );
    assert_eq!(
        world.live_by_group().await["web"].len(),
        4,
        "a refused plan changed something"
    );

    // So does a spec that changed.
    world.ok(&["plan", "--out", "third.plan"]).await;
    web.desired = 6;
    world.write_spec(&[web.clone()]);
    let refused = world.run(&["apply", "third.plan"]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("spec changed since this plan was made"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_output_or_state() {
    let world = World::new("secrets").await;
    let mut web = group("web", 1, 2, 4);
    web.extra = "    user_data:\n      script: |\n        #!/bin/sh\n        echo ${secret.token} > /etc/token\n".into();
    world.write_spec(&[web]);
    let spec = std::fs::read_to_string(world.spec_path()).expect("spec");
    let spec = spec.replace(
        "groups:\n",
        "secrets:\n  token: env:ENDSTATE_TEST_SECRET\ngroups:\n",
    );
    std::fs::write(world.spec_path(), spec).expect("spec");

    let mut seen = String::new();
    for args in [
        vec!["validate"],
        vec!["plan", "--json", "--out", "saved.plan"],
        vec!["apply", "--json"],
        vec!["status", "--json"],
    ] {
        let output = world.run(&args).await;
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        seen.push_str(&String::from_utf8_lossy(&output.stdout));
        seen.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    assert!(
        !seen.contains(SECRET_VALUE),
        "the secret reached endstate's output"
    );
    for file in ["saved.plan", ".endstate/state.db", ".endstate/state.db-wal"] {
        let path = world.dir.path().join(file);
        if let Ok(bytes) = std::fs::read(&path) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(SECRET_VALUE), "the secret reached {file}");
        }
    }
    // It did reach EC2, as user data: the secret is resolved at apply time.
    let run = world.proxy.requests_of("RunInstances");
    let user_data = run[0].param("UserData").expect("user data sent");
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(user_data)
        .expect("base64 user data");
    assert!(String::from_utf8_lossy(&decoded).contains(SECRET_VALUE));
}
