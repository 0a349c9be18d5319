//! The process backend with real processes and a real `cloud.db`, its
//! instances run by a stand-in init command (a shell script that writes
//! `status.json` as the instance runtime does, prints a boot line, leaves a
//! child behind and sleeps), so that these tests do not depend on
//! `crates/instance`. Volume-style bakes run under a stand-in too: it runs
//! the bake's user data against the bake's copied root and exits with its
//! status, as `boot: once` does.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use endstate_wire::{
    CreateImageRequest, DeregisterImageRequest, DescribeImagesRequest,
    DescribeInstanceStatusRequest, DescribeInstancesRequest, GetConsoleOutputRequest,
    InstanceMetadataOptions, ModifyInstanceMetadataOptionsRequest, RebootInstancesRequest,
    RunInstancesRequest, StartInstancesRequest, StopInstancesRequest, TerminateInstancesRequest,
    UserData,
};

use super::*;

/// The stand-in init: `$1` is the instance directory.
const FAKE_INIT: &str = r#"
dir="$1"
echo "Cloud-init v. fake running 'modules:final' in $dir"
printf '{"pid":%d,"boot":"booting","services":[],"updated":"now"}' $$ > "$dir/status.json.tmp"
mv "$dir/status.json.tmp" "$dir/status.json"
sleep 0.3
printf '{"pid":%d,"boot":"finished","services":[],"updated":"now"}' $$ > "$dir/status.json.tmp"
mv "$dir/status.json.tmp" "$dir/status.json"
sleep 100000 &
exec sleep 100000
"#;

/// Kills every process of the instances `dir` records, and of the bakes
/// whose `process` file is still there, when a test ends, passed or
/// failed: tests leave nothing running.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(bakes) = fs::read_dir(self.0.join("bakes")) {
            for bake in bakes.flatten() {
                let tree = procfs::instance_tree(bake_process(&bake.path()));
                procfs::signal_all(&tree, nix::sys::signal::Signal::SIGKILL);
            }
        }
        let Ok(store) = Store::open(&self.0.join("cloud.db")) else {
            return;
        };
        for slot in store.slots().unwrap_or_default() {
            let tree = procfs::instance_tree(slot.process);
            procfs::signal_all(&tree, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn config(dir: &Path, port: u16) -> ProcessConfig {
    let mut config = ProcessConfig::new(dir);
    config.ec2.throttling = None;
    config.init_command = vec!["sh".into(), "-c".into(), FAKE_INIT.into(), "sh".into()];
    config.status_interval = Duration::from_millis(200);
    config.stop_grace = Duration::from_millis(500);
    config.imds_port = port;
    config.isolation = Some(Isolation::None);
    config
}

fn run(image: &str, count: u32, token: &str) -> RunInstancesRequest {
    RunInstancesRequest {
        image_id: image.to_string(),
        min_count: count,
        max_count: count,
        instance_type: Some("t3.micro".to_string()),
        client_token: Some(token.to_string()),
        user_data: Some(UserData(b"#!/bin/sh\necho hi\n".to_vec())),
        availability_zone: None,
        subnet_id: None,
        security_group_ids: vec![],
        key_name: None,
        iam_instance_profile_name: None,
        block_device_mappings: vec![],
        metadata_options: None,
        tag_specifications: vec![],
    }
}

fn ids(backend: &ProcessBackend) -> Vec<(String, String)> {
    backend
        .describe_instances(&DescribeInstancesRequest::default())
        .unwrap()
        .reservations
        .into_iter()
        .flat_map(|r| r.instances)
        .map(|i| (i.instance_id, i.state.name))
        .collect()
}

fn state(backend: &ProcessBackend, id: &str) -> (String, String) {
    let statuses = backend
        .describe_instance_status(&DescribeInstanceStatusRequest {
            instance_ids: vec![id.to_string()],
            include_all_instances: Some(true),
            ..Default::default()
        })
        .unwrap()
        .statuses;
    let s = &statuses[0];
    (s.state.name.clone(), s.instance_status.clone())
}

async fn wait_for(backend: &ProcessBackend, id: &str, want: (&str, &str)) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        backend.probe_now();
        let now = state(backend, id);
        if now.0 == want.0 && now.1 == want.1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: {now:?}, waiting for {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn terminate_all(backend: &ProcessBackend) {
    let live: Vec<String> = ids(backend)
        .into_iter()
        .filter(|(_, s)| s != "terminated")
        .map(|(id, _)| id)
        .collect();
    if live.is_empty() {
        return;
    }
    backend
        .terminate_instances(&TerminateInstancesRequest {
            instance_ids: live.clone(),
        })
        .unwrap();
    for id in &live {
        wait_for(backend, id, ("terminated", "not-applicable")).await;
    }
}

fn kinds(backend: &ProcessBackend, id: &str) -> Vec<String> {
    backend
        .events(id)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

async fn imds_get(addr: Ipv4Addr, port: u16, path: &str) -> (u16, String) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = http
        .get(format!("http://{addr}:{port}{path}"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_run_stop_start_image_survive_a_restart_and_terminate() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let port = 21_169;
    let backend = ProcessBackend::open(config(dir.path(), port)).unwrap();
    assert_eq!(backend.isolation(), Isolation::None);
    let base = backend.base_image_id().to_string();
    let images = backend
        .describe_images(&DescribeImagesRequest::default())
        .unwrap()
        .images;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].name.as_deref(), Some(BASE_IMAGE_NAME));

    // Launch two; the same token again gives the same two.
    let launched = backend.run_instances(&run(&base, 2, "tok-1")).unwrap();
    let again = backend.run_instances(&run(&base, 2, "tok-1")).unwrap();
    let a = launched.reservation.instances[0].instance_id.clone();
    let b = launched.reservation.instances[1].instance_id.clone();
    assert_eq!(
        again
            .reservation
            .instances
            .iter()
            .map(|i| &i.instance_id)
            .collect::<Vec<_>>(),
        [&a, &b]
    );
    // Addresses from 127.100.0.0/16, one each (which ones depends on what
    // other clouds on this host hold).
    let addr_a = backend.address(&a).unwrap();
    let addr_b = backend.address(&b).unwrap();
    assert_ne!(addr_a, addr_b);
    for (instance, addr) in launched.reservation.instances.iter().zip([addr_a, addr_b]) {
        assert_eq!(addr.octets()[..2], [127, 100]);
        assert_eq!(
            instance.private_ip_address.as_deref(),
            Some(addr.to_string().as_str())
        );
    }
    wait_for(&backend, &a, ("running", "ok")).await;
    wait_for(&backend, &b, ("running", "ok")).await;

    // The root is a copy of the base image; the console has the boot line;
    // the user data is there, 0600.
    let root_a = backend.instance_dir(&a).join("root");
    assert_eq!(
        fs::read_to_string(root_a.join("etc/hostname")).unwrap(),
        "localhost\n"
    );
    let console = backend
        .get_console_output(&GetConsoleOutputRequest {
            instance_id: a.clone(),
            latest: None,
        })
        .unwrap()
        .output
        .unwrap();
    let console = String::from_utf8(UserData::from_base64(&console).unwrap().0).unwrap();
    assert!(console.contains("Cloud-init v. fake"), "{console}");
    let init: serde_json::Value =
        serde_json::from_slice(&fs::read(backend.instance_dir(&a).join("init.json")).unwrap())
            .unwrap();
    assert_eq!(init["address"], addr_a.to_string());
    assert_eq!(init["isolation"], "none");
    assert_eq!(init["boot"], "first");
    assert_eq!(
        init["env"]["AWS_EC2_METADATA_SERVICE_ENDPOINT"],
        format!("http://{addr_a}:{port}/")
    );

    // Each listener answers with its own instance.
    assert_eq!(
        imds_get(addr_a, port, "/latest/meta-data/instance-id").await,
        (200, a.clone())
    );
    assert_eq!(
        imds_get(addr_b, port, "/latest/meta-data/local-ipv4").await,
        (200, addr_b.to_string())
    );
    assert_eq!(
        imds_get(addr_a, port, "/latest/user-data").await,
        (200, "#!/bin/sh\necho hi\n".to_string())
    );
    // Tokens required, live.
    backend
        .modify_instance_metadata_options(&ModifyInstanceMetadataOptionsRequest {
            instance_id: a.clone(),
            options: InstanceMetadataOptions {
                http_tokens: Some("required".to_string()),
                ..Default::default()
            },
        })
        .unwrap();
    assert_eq!(
        imds_get(addr_a, port, "/latest/meta-data/instance-id")
            .await
            .0,
        401
    );

    // kill -9 of A's top process: impaired on a later probe.
    let top_a = backend.top_process(&a).unwrap();
    procfs::signal_all(&BTreeSet::from([top_a]), nix::sys::signal::Signal::SIGKILL);
    wait_for(&backend, &a, ("running", "impaired")).await;
    let events_a = kinds(&backend, &a);
    assert_eq!(
        events_a,
        [
            "spawned",
            "running",
            "status:initializing",
            "status:ok",
            "status:impaired"
        ]
        .iter()
        .filter(|k| events_a.contains(&k.to_string()))
        .map(|k| k.to_string())
        .collect::<Vec<_>>(),
        "in order"
    );
    assert!(events_a.starts_with(&["spawned".to_string(), "running".to_string()]));
    assert_eq!(events_a.last().map(String::as_str), Some("status:impaired"));

    // Stop and start B: its root stays, it boots again.
    fs::write(
        backend.instance_dir(&b).join("root/srv/marker"),
        "made on b\n",
    )
    .unwrap();
    let top_b = backend.top_process(&b).unwrap();
    backend
        .stop_instances(&StopInstancesRequest {
            instance_ids: vec![b.clone()],
            force: None,
        })
        .unwrap();
    wait_for(&backend, &b, ("stopped", "not-applicable")).await;
    assert!(
        !procfs::alive(top_b, procfs::start_time(top_b).unwrap_or(0))
            || procfs::start_time(top_b).is_none()
    );
    backend
        .start_instances(&StartInstancesRequest {
            instance_ids: vec![b.clone()],
        })
        .unwrap();
    wait_for(&backend, &b, ("running", "ok")).await;
    let init: serde_json::Value =
        serde_json::from_slice(&fs::read(backend.instance_dir(&b).join("init.json")).unwrap())
            .unwrap();
    assert_eq!(init["boot"], "again");
    assert!(backend.instance_dir(&b).join("root/srv/marker").exists());
    let top_b = backend.top_process(&b).unwrap();
    backend
        .reboot_instances(&RebootInstancesRequest {
            instance_ids: vec![b.clone()],
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.top_process(&b).is_none_or(|p| p == top_b) {
        assert!(Instant::now() < deadline, "reboot did not respawn");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for(&backend, &b, ("running", "ok")).await;

    // An image of B; an instance of it has the file.
    let image = backend
        .create_image(&CreateImageRequest {
            instance_id: b.clone(),
            name: "from-b".to_string(),
            ..Default::default()
        })
        .unwrap()
        .image_id;
    let c = backend
        .run_instances(&run(&image, 1, "tok-2"))
        .unwrap()
        .reservation
        .instances[0]
        .instance_id
        .clone();
    wait_for(&backend, &c, ("running", "ok")).await;
    assert_eq!(
        fs::read_to_string(backend.instance_dir(&c).join("root/srv/marker")).unwrap(),
        "made on b\n"
    );

    // Restart: drop the backend, open the directory again.
    let before = ids(&backend);
    let top_b = backend.top_process(&b).unwrap();
    drop(backend);
    let backend = ProcessBackend::open(config(dir.path(), port)).unwrap();
    let after = ids(&backend);
    assert_eq!(before, after, "none forgotten, none doubled");
    assert_eq!(backend.top_process(&b), Some(top_b), "re-adopted");
    assert_eq!(
        state(&backend, &a),
        ("running".to_string(), "impaired".to_string())
    );
    assert!(kinds(&backend, &b).contains(&"adopted".to_string()));
    assert!(kinds(&backend, &a).contains(&"lost".to_string()));
    wait_for(&backend, &b, ("running", "ok")).await;
    let retried = backend.run_instances(&run(&base, 2, "tok-1")).unwrap();
    assert_eq!(
        retried
            .reservation
            .instances
            .iter()
            .map(|i| &i.instance_id)
            .collect::<Vec<_>>(),
        [&a, &b]
    );
    assert_eq!(ids(&backend).len(), 3);
    let images = backend
        .describe_images(&DescribeImagesRequest::default())
        .unwrap()
        .images;
    assert_eq!(images.len(), 2);
    assert_eq!(
        imds_get(addr_b, port, "/latest/meta-data/instance-id").await,
        (200, b.clone())
    );

    // Terminate: processes gone, directories gone, addresses reusable.
    let tree_c = procfs::instance_tree(
        backend
            .top_process(&c)
            .map(|p| (p, procfs::start_time(p).unwrap())),
    );
    assert!(tree_c.len() >= 2, "the init and its child: {tree_c:?}");
    terminate_all(&backend).await;
    for pid in tree_c {
        assert!(
            procfs::start_time(pid).is_none_or(|_| {
                fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(" Z "))
            }),
            "pid {pid} survived"
        );
    }
    for id in [&a, &b, &c] {
        assert!(!backend.instance_dir(id).exists());
    }
    // Deregistering the image frees its layer (no live instance uses it).
    backend
        .deregister_image(&DeregisterImageRequest { image_id: image })
        .unwrap();
    assert_eq!(
        fs::read_dir(dir.path().join("layers")).unwrap().count(),
        1,
        "only the base layer is left"
    );
    let d = backend.run_instances(&run(&base, 1, "tok-3")).unwrap();
    // The lowest usable slot is taken: a released one, or one below them
    // that another cloud on this host (a parallel test) held when a and b
    // were launched and has freed since. Never a new slot above them: that
    // would mean the released ones leaked.
    let reused: std::net::Ipv4Addr = d.reservation.instances[0]
        .private_ip_address
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        reused == addr_a || reused == addr_b || reused < addr_a.min(addr_b),
        "released addresses are reused: {reused} is neither {addr_a}, {addr_b} nor below them"
    );
    wait_for(
        &backend,
        &d.reservation.instances[0].instance_id,
        ("running", "ok"),
    )
    .await;
    terminate_all(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_journaled_but_never_made_is_made_at_restore() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let port = 21_170;
    let backend = ProcessBackend::open(config(dir.path(), port)).unwrap();
    let base = backend.base_image_id().to_string();
    let id = backend
        .run_instances(&run(&base, 1, "tok"))
        .unwrap()
        .reservation
        .instances[0]
        .instance_id
        .clone();
    wait_for(&backend, &id, ("running", "ok")).await;
    // As if the cloud died between journaling the launch and making it:
    // its slot and process are not recorded, its phase is pending.
    let top = backend.top_process(&id).unwrap();
    drop(backend);
    procfs::signal_all(
        &procfs::instance_tree(Some((top, procfs::start_time(top).unwrap()))),
        nix::sys::signal::Signal::SIGKILL,
    );
    {
        let store = Store::open(&dir.path().join("cloud.db")).unwrap();
        store.release_slot(&id).unwrap();
        let conn = store.lock();
        conn.execute(
            "UPDATE instances SET phase = 'pending', private_ip = NULL",
            [],
        )
        .unwrap();
    }
    let backend = ProcessBackend::open(config(dir.path(), port)).unwrap();
    wait_for(&backend, &id, ("running", "ok")).await;
    assert_eq!(ids(&backend).len(), 1);
    assert!(kinds(&backend, &id).contains(&"relaunch".to_string()));
    assert!(backend.top_process(&id).is_some_and(|p| p != top));
    terminate_all(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_command_that_cannot_start_leaves_an_impaired_instance_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let mut config = config(dir.path(), 21_171);
    config.init_command = vec!["/nonexistent/endstate-init".into()];
    let backend = ProcessBackend::open(config).unwrap();
    let base = backend.base_image_id().to_string();
    let id = backend
        .run_instances(&run(&base, 1, "tok"))
        .unwrap()
        .reservation
        .instances[0]
        .instance_id
        .clone();
    wait_for(&backend, &id, ("running", "impaired")).await;
    let events = backend.events(&id).unwrap();
    let failed = events.iter().find(|e| e.kind == "launch-failed").unwrap();
    assert!(
        failed.detail.contains("/nonexistent/endstate-init"),
        "{failed:?}"
    );
    terminate_all(&backend).await;
    assert!(!backend.instance_dir(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_tags_are_journaled_and_the_private_address_filter_sees_the_runtime_address() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let port = 21_172;
    let backend = ProcessBackend::open(config(dir.path(), port)).unwrap();
    let base = backend.base_image_id().to_string();
    let instance = backend
        .run_instances(&run(&base, 1, "tok"))
        .unwrap()
        .reservation
        .instances
        .remove(0);
    let id = instance.instance_id.clone();
    let address = instance.private_ip_address.clone().unwrap();
    assert!(address.starts_with("127.100."), "{address}");
    let by_address = |backend: &ProcessBackend, address: &str| -> Vec<String> {
        backend
            .describe_instances(&DescribeInstancesRequest {
                filters: vec![endstate_wire::Filter {
                    name: "private-ip-address".to_string(),
                    values: vec![address.to_string()],
                }],
                ..Default::default()
            })
            .unwrap()
            .reservations
            .into_iter()
            .flat_map(|r| r.instances)
            .map(|i| i.instance_id)
            .collect()
    };
    assert_eq!(by_address(&backend, &address), std::slice::from_ref(&id));
    assert!(by_address(&backend, "10.0.0.1").is_empty());

    let image_tags = |backend: &ProcessBackend| {
        backend
            .describe_images(&DescribeImagesRequest {
                image_ids: vec![base.clone()],
                ..Default::default()
            })
            .unwrap()
            .images
            .remove(0)
            .tags
    };
    backend
        .create_tags(&CreateTagsRequest {
            resource_ids: vec![base.clone(), id.clone()],
            tags: vec![
                endstate_wire::Tag::new("label", "golden"),
                endstate_wire::Tag::new("team", "web"),
            ],
        })
        .unwrap();
    assert_eq!(image_tags(&backend).len(), 2);

    // The tags are in cloud.db: a restart (which puts the base image again)
    // keeps them.
    drop(backend);
    let backend = ProcessBackend::open(config(dir.path(), port)).unwrap();
    let mut tags = image_tags(&backend);
    tags.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        tags,
        [
            endstate_wire::Tag::new("label", "golden"),
            endstate_wire::Tag::new("team", "web"),
        ]
    );
    backend
        .delete_tags(&DeleteTagsRequest {
            resource_ids: vec![base.clone()],
            tags: vec![endstate_wire::DeleteTag {
                key: "label".to_string(),
                value: None,
            }],
        })
        .unwrap();
    drop(backend);
    let backend = ProcessBackend::open(config(dir.path(), port)).unwrap();
    assert_eq!(
        image_tags(&backend),
        [endstate_wire::Tag::new("team", "web")]
    );
    assert_eq!(by_address(&backend, &address), std::slice::from_ref(&id));
    wait_for(&backend, &id, ("running", "ok")).await;
    terminate_all(&backend).await;
}

/// The stand-in init, also running the user data in the background as
/// the instance runtime's boot does.
const BOOTING_INIT: &str = r#"
dir="$1"
sh "$dir/user-data" </dev/null >/dev/null 2>&1 &
printf '{"pid":%d,"boot":"finished","services":[],"updated":"now"}' $$ > "$dir/status.json.tmp"
mv "$dir/status.json.tmp" "$dir/status.json"
exec sleep 100000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utilization_of_a_busy_and_an_idle_instance_through_the_api() {
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let mut config = config(dir.path(), 21_173);
    config.init_command = vec!["sh".into(), "-c".into(), BOOTING_INIT.into(), "sh".into()];
    config.status_interval = Duration::from_millis(500);
    let backend = ProcessBackend::open(config).unwrap();
    let base = backend.base_image_id().to_string();
    let launch = |token: &str, user_data: &[u8]| RunInstancesRequest {
        user_data: Some(UserData(user_data.to_vec())),
        ..run(&base, 1, token)
    };
    // The loop outlives the user data script: an orphan that only its
    // process group ties to the instance.
    let busy = backend
        .run_instances(&launch(
            "busy",
            b"#!/bin/sh\nsh -c 'while :; do :; done' &\n",
        ))
        .unwrap()
        .reservation
        .instances[0]
        .instance_id
        .clone();
    let idle = backend
        .run_instances(&launch("idle", b"#!/bin/sh\nexit 0\n"))
        .unwrap()
        .reservation
        .instances[0]
        .instance_id
        .clone();
    wait_for(&backend, &busy, ("running", "ok")).await;
    wait_for(&backend, &idle, ("running", "ok")).await;

    let (key, secret) = ("AKIDPROCESSTEST", "process-test-secret");
    let server = crate::serve_state(
        0,
        crate::CloudState::new(backend.clone(), crate::Credentials::new().with(key, secret)),
    )
    .await
    .unwrap();
    let client = endstate_provider::ec2::Ec2Client::with_static_credentials(
        endstate_provider::ec2::Ec2Config::new("us-east-1").with_endpoint(server.url()),
        key,
        secret,
        None,
    )
    .unwrap();
    use endstate_provider::Provider as _;

    // A few ticks: the first sample of an instance has no window yet.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (busy_now, idle_now) = loop {
        let all = client.instance_utilization(&[]).await.unwrap();
        let find = |id: &str| all.iter().find(|u| u.instance_id == id).cloned();
        if let (Some(b), Some(i)) = (find(&busy), find(&idle)) {
            if b.cpu_utilization > 50.0 && i.cpu_utilization < 10.0 {
                break (b, i);
            }
            assert!(
                Instant::now() < deadline,
                "busy {b:?}, idle {i:?}: not apart after 20 s"
            );
        }
        assert!(Instant::now() < deadline, "not sampled after 20 s: {all:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(busy_now.cpu_utilization < 150.0, "one loop: {busy_now:?}");
    assert!(
        busy_now.cpu_seconds > 0.2 && busy_now.cpu_seconds > idle_now.cpu_seconds,
        "{busy_now:?} {idle_now:?}"
    );
    assert!(
        (0.3..5.0).contains(&busy_now.window_seconds),
        "about the status interval: {busy_now:?}"
    );
    assert!(
        busy_now.sampled_at.starts_with("20") && busy_now.sampled_at.ends_with('Z'),
        "{busy_now:?}"
    );
    // By id; an id that names nothing is EC2's NotFound.
    let only = client
        .instance_utilization(std::slice::from_ref(&idle))
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].instance_id, idle);
    let err = client
        .instance_utilization(&["i-0123456789abcdef0".to_string()])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidInstanceID.NotFound"), "{err}");
    // CPU seconds only grow.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = client
        .instance_utilization(std::slice::from_ref(&busy))
        .await
        .unwrap();
    assert!(
        later[0].cpu_seconds > busy_now.cpu_seconds,
        "{later:?} after {busy_now:?}"
    );

    // Terminated: the loop is gone with the instance, and so is its sample.
    let tree = procfs::instance_tree(
        backend
            .top_process(&busy)
            .map(|p| (p, procfs::start_time(p).unwrap())),
    );
    assert!(tree.len() >= 2, "the init and the loop: {tree:?}");
    terminate_all(&backend).await;
    for pid in tree {
        assert!(
            procfs::start_time(pid).is_none_or(|_| {
                fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(" Z "))
            }),
            "pid {pid} survived"
        );
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(client.instance_utilization(&[]).await.unwrap().is_empty());
    server.shutdown().await.unwrap();
}

/// As root: an init that makes a PID namespace for the instance, as the
/// instance runtime's top process does (`unshare --pid --fork`), so that
/// the sampler finds the instance's processes by that namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utilization_of_an_instance_in_its_own_pid_namespace() {
    if procfs::effective_uid() != Some(0) {
        eprintln!("skipped: making a PID namespace needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let mut config = config(dir.path(), 21_174);
    config.init_command = vec![
        "unshare".into(),
        "--pid".into(),
        "--fork".into(),
        "sh".into(),
        "-c".into(),
        BOOTING_INIT.into(),
        "sh".into(),
    ];
    config.status_interval = Duration::from_millis(500);
    let backend = ProcessBackend::open(config).unwrap();
    let base = backend.base_image_id().to_string();
    let id = backend
        .run_instances(&RunInstancesRequest {
            user_data: Some(UserData(
                b"#!/bin/sh\nsetsid sh -c 'while :; do :; done' &\n".to_vec(),
            )),
            ..run(&base, 1, "ns")
        })
        .unwrap()
        .reservation
        .instances[0]
        .instance_id
        .clone();
    wait_for(&backend, &id, ("running", "ok")).await;
    let top = backend.top_process(&id).unwrap();
    assert_ne!(
        procfs::pid_namespace(top, true),
        procfs::pid_namespace(top, false),
        "the top process made a namespace"
    );
    let request = DescribeInstanceUtilizationRequest {
        instance_ids: vec![id.clone()],
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = backend.describe_instance_utilization(&request).unwrap();
        if answer
            .instances
            .first()
            .is_some_and(|u| u.cpu_utilization > 50.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "not busy after 20 s: {answer:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    terminate_all(&backend).await;
}

// ---- volume-style bakes ----

/// The stand-in init for bakes and instances. A bake (`boot: once` in its
/// `init.json`) reports a boot, runs its user data with `$ROOT` naming its
/// copied root and exits with the user data's status; an instance reports
/// a finished boot and sleeps.
const BAKING_INIT: &str = r#"
dir="$1"
printf '{"pid":%d,"boot":"booting","services":[],"updated":"now"}' $$ > "$dir/status.json.tmp"
mv "$dir/status.json.tmp" "$dir/status.json"
if grep -q '"boot": "once"' "$dir/init.json"; then
  echo "fake bake in $dir"
  ROOT="$dir/root" sh "$dir/user-data" </dev/null
  exit $?
fi
printf '{"pid":%d,"boot":"finished","services":[],"updated":"now"}' $$ > "$dir/status.json.tmp"
mv "$dir/status.json.tmp" "$dir/status.json"
exec sleep 100000
"#;

fn baking_config(dir: &Path, port: u16) -> ProcessConfig {
    let mut config = config(dir, port);
    config.init_command = vec!["sh".into(), "-c".into(), BAKING_INIT.into(), "sh".into()];
    config
}

/// User data that waits (20 s at most, then fails) until the file
/// `release` exists, so that a test sees its bake pending for as long as
/// it needs, then runs `then`.
fn gated(release: &Path, then: &str) -> String {
    format!(
        "#!/bin/sh\necho waiting\ni=0\nwhile [ ! -e '{}' ]; do\n  i=$((i+1)); [ $i -gt 400 ] && exit 9\n  sleep 0.05\ndone\n{then}",
        release.display()
    )
}

fn bake_request(source: &str, name: &str, user_data: &str) -> BakeImageRequest {
    BakeImageRequest {
        source_image_id: source.to_string(),
        name: name.to_string(),
        description: Some("a test bake".to_string()),
        user_data: UserData(user_data.as_bytes().to_vec()),
    }
}

/// The image's state, or `None` when DescribeImages does not list it.
fn image_state(backend: &ProcessBackend, id: &str) -> Option<String> {
    backend
        .describe_images(&DescribeImagesRequest::default())
        .unwrap()
        .images
        .into_iter()
        .find(|i| i.image_id == id)
        .map(|i| i.state)
}

async fn wait_for_image(backend: &ProcessBackend, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = image_state(backend, id);
        if now.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: {now:?}, waiting for {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GetBakeOutput's output, decoded (empty when there is none).
fn bake_output(backend: &ProcessBackend, id: &str) -> String {
    let answer = backend
        .get_bake_output(&GetBakeOutputRequest {
            image_id: id.to_string(),
        })
        .unwrap();
    assert_eq!(answer.image_id, id);
    String::from_utf8(answer.decoded_output().unwrap()).unwrap()
}

async fn wait_for_output(backend: &ProcessBackend, id: &str, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = bake_output(backend, id);
        if output.lines().any(|l| l == line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: no line {line:?} in {output:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bake's top process (`PID START`) its directory's `process` file
/// names.
fn bake_process(bake_dir: &Path) -> Option<(u32, u64)> {
    let text = fs::read_to_string(bake_dir.join("process")).ok()?;
    let mut fields = text.split_whitespace();
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// Waits until none of `pids` runs (a zombie waiting for its reaper counts
/// as gone: it runs nothing).
async fn wait_until_gone(pids: &BTreeSet<u32>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|pid| {
                fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| procfs::parse_stat(&s).is_some_and(|st| !st.is_dead()))
            })
            .collect();
        if running.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still running: {running:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn file_names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn layer_count(backend: &ProcessBackend) -> usize {
    fs::read_dir(backend.dir().join("layers")).unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bake_that_succeeds_makes_an_available_image_without_an_instance() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let backend = ProcessBackend::open(baking_config(dir.path(), 21_175)).unwrap();
    let base = backend.base_image_id().to_string();
    let layers_before = layer_count(&backend);
    let release = dir.path().join("release");
    let script = gated(
        &release,
        "echo 'baked by the test' > \"$ROOT/srv/baked\"\necho step one\necho step two\n",
    );

    // The answer comes while the script still waits: the image is pending.
    let started = Instant::now();
    let image = backend
        .bake_image(&bake_request(&base, "baked-web", &script))
        .unwrap()
        .image_id;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "BakeImage took {:?}",
        started.elapsed()
    );
    assert_eq!(image_state(&backend, &image).as_deref(), Some("pending"));
    let bake_dir = backend.dir().join("bakes").join(&image);
    let init: serde_json::Value =
        serde_json::from_slice(&fs::read(bake_dir.join("init.json")).unwrap()).unwrap();
    assert_eq!(init["boot"], "once");
    assert_eq!(init["hostname"], "bake");
    assert!(
        init["env"]["AWS_EC2_METADATA_SERVICE_ENDPOINT"].is_null(),
        "a bake has no metadata service: {init}"
    );
    wait_for_output(&backend, &image, "waiting").await;
    assert_eq!(image_state(&backend, &image).as_deref(), Some("pending"));
    assert!(ids(&backend).is_empty(), "a bake is no instance");
    let err = backend.run_instances(&run(&image, 1, "early")).unwrap_err();
    assert_eq!(err.code(), "InvalidAMIID.Unavailable", "{err}");

    fs::write(&release, "").unwrap();
    wait_for_image(&backend, &image, "available").await;
    let output = bake_output(&backend, &image);
    let lines: Vec<&str> = output.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("fake bake in ")),
        "{output}"
    );
    assert!(
        lines.ends_with(&["waiting", "step one", "step two"]),
        "{output}"
    );
    // What is left of the bake is its output.
    assert_eq!(
        file_names(&bake_dir),
        BTreeSet::from(["console.log".to_string()])
    );
    assert_eq!(layer_count(&backend), layers_before + 1, "one new layer");
    let described = backend
        .describe_images(&DescribeImagesRequest {
            image_ids: vec![image.clone()],
            ..Default::default()
        })
        .unwrap()
        .images;
    assert_eq!(described[0].name.as_deref(), Some("baked-web"));

    // An instance of the image has what the script wrote, on the base.
    let instance = backend
        .run_instances(&run(&image, 1, "from-bake"))
        .unwrap()
        .reservation
        .instances[0]
        .instance_id
        .clone();
    wait_for(&backend, &instance, ("running", "ok")).await;
    let root = backend.instance_dir(&instance).join("root");
    assert_eq!(
        fs::read_to_string(root.join("srv/baked")).unwrap(),
        "baked by the test\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "localhost\n"
    );
    assert_eq!(
        ids(&backend),
        [(instance.clone(), "running".to_string())],
        "only the instance launched from the image"
    );
    terminate_all(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bake_that_fails_leaves_a_failed_image_until_it_is_deregistered() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let backend = ProcessBackend::open(baking_config(dir.path(), 21_176)).unwrap();
    let base = backend.base_image_id().to_string();
    let layers_before = layer_count(&backend);
    let image = backend
        .bake_image(&bake_request(
            &base,
            "broken-bake",
            "#!/bin/sh\necho 'installing'\necho 'no such package' >&2\nexit 3\n",
        ))
        .unwrap()
        .image_id;
    wait_for_image(&backend, &image, "failed").await;
    assert_eq!(
        layer_count(&backend),
        layers_before,
        "no layer of a failed bake"
    );
    let err = backend.run_instances(&run(&image, 1, "tok")).unwrap_err();
    assert_eq!(err.code(), "InvalidAMIID.Unavailable", "{err}");
    assert!(err.to_string().contains("failed"), "{err}");
    let output = bake_output(&backend, &image);
    assert!(output.contains("installing\n"), "{output}");
    assert!(output.contains("no such package\n"), "stderr too: {output}");
    let bake_dir = backend.dir().join("bakes").join(&image);
    assert_eq!(
        file_names(&bake_dir),
        BTreeSet::from(["console.log".to_string()])
    );
    assert!(ids(&backend).is_empty());

    backend
        .deregister_image(&DeregisterImageRequest {
            image_id: image.clone(),
        })
        .unwrap();
    assert_eq!(image_state(&backend, &image), None);
    assert!(!bake_dir.exists(), "its output goes with it");
    let err = backend
        .get_bake_output(&GetBakeOutputRequest {
            image_id: image.clone(),
        })
        .unwrap_err();
    assert_eq!(err.code(), "InvalidAMIID.NotFound", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bake_image_refuses_what_it_cannot_bake() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let backend = ProcessBackend::open(baking_config(dir.path(), 21_177)).unwrap();
    let base = backend.base_image_id().to_string();
    let code = |request: &BakeImageRequest| backend.bake_image(request).unwrap_err().code();
    let script = "#!/bin/sh\nexit 0\n";

    assert_eq!(
        code(&bake_request(
            "ami-0123456789abcdef0",
            "from-nothing",
            script
        )),
        "InvalidAMIID.NotFound"
    );
    assert_eq!(
        code(&bake_request("ami-nothex", "from-nothing", script)),
        "InvalidAMIID.Malformed"
    );
    assert_eq!(
        code(&bake_request(&base, "ab", script)),
        "InvalidParameterValue"
    );
    assert_eq!(
        code(&bake_request(&base, BASE_IMAGE_NAME, script)),
        "InvalidAMIName.Duplicate"
    );

    // A pending image is no source, and its name is taken.
    let release = dir.path().join("release");
    let pending = backend
        .bake_image(&bake_request(&base, "still-baking", &gated(&release, "")))
        .unwrap()
        .image_id;
    assert_eq!(image_state(&backend, &pending).as_deref(), Some("pending"));
    assert_eq!(
        code(&bake_request(&pending, "on-a-pending-one", script)),
        "InvalidAMIID.Unavailable"
    );
    assert_eq!(
        code(&bake_request(&base, "still-baking", script)),
        "InvalidAMIName.Duplicate"
    );
    let err = backend
        .get_bake_output(&GetBakeOutputRequest {
            image_id: "ami-0123456789abcdef0".to_string(),
        })
        .unwrap_err();
    assert_eq!(err.code(), "InvalidAMIID.NotFound", "{err}");
    // None of the refused requests left an image or a bake behind.
    let images: BTreeSet<String> = backend
        .describe_images(&DescribeImagesRequest::default())
        .unwrap()
        .images
        .into_iter()
        .map(|i| i.image_id)
        .collect();
    assert_eq!(images, BTreeSet::from([base.clone(), pending.clone()]));
    assert_eq!(
        file_names(&backend.dir().join("bakes")),
        BTreeSet::from([pending.clone()])
    );
    fs::write(&release, "").unwrap();
    wait_for_image(&backend, &pending, "available").await;

    // Without a runtime there is no root to bake in.
    let clock = Arc::new(endstate_clock::ManualClock::new(Duration::from_secs(
        1_795_780_800,
    )));
    let simulated = SimulatedBackend::new(SimulatedConfig::new("us-east-1"), clock);
    let source = simulated.config().images[0].image_id.clone();
    let request = bake_request(&source, "simulated-bake", script);
    assert_eq!(
        simulated.bake_image(&request).unwrap_err().code(),
        "UnsupportedOperation"
    );
    let as_served: &dyn Backend = &simulated;
    assert_eq!(
        as_served.bake_image(&request).unwrap_err().code(),
        "UnsupportedOperation"
    );
    assert_eq!(
        as_served
            .get_bake_output(&GetBakeOutputRequest { image_id: source })
            .unwrap_err()
            .code(),
        "UnsupportedOperation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistering_a_pending_bake_kills_it_and_keeps_no_layer() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let backend = ProcessBackend::open(baking_config(dir.path(), 21_178)).unwrap();
    let base = backend.base_image_id().to_string();
    let layers_before = layer_count(&backend);
    let image = backend
        .bake_image(&bake_request(
            &base,
            "never-done",
            "#!/bin/sh\necho started\nsleep 30\necho 'not killed' > \"$ROOT/srv/late\"\n",
        ))
        .unwrap()
        .image_id;
    wait_for_output(&backend, &image, "started").await;
    let bake_dir = backend.dir().join("bakes").join(&image);
    let top = bake_process(&bake_dir).unwrap();
    let tree = procfs::instance_tree(Some(top));
    assert!(
        tree.contains(&top.0) && tree.len() >= 3,
        "the init, the user data's shell and its sleep: {tree:?}"
    );

    backend
        .deregister_image(&DeregisterImageRequest {
            image_id: image.clone(),
        })
        .unwrap();
    assert_eq!(image_state(&backend, &image), None);
    wait_until_gone(&tree).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while bake_dir.exists() {
        assert!(
            Instant::now() < deadline,
            "{} still there: {:?}",
            bake_dir.display(),
            file_names(&bake_dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(layer_count(&backend), layers_before, "no layer was added");
    assert!(ids(&backend).is_empty());
    // The name is free again.
    let again = backend
        .bake_image(&bake_request(&base, "never-done", "#!/bin/sh\nexit 0\n"))
        .unwrap()
        .image_id;
    wait_for_image(&backend, &again, "available").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bake_running_when_the_cloud_restarts_is_failed_and_killed() {
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(dir.path().to_path_buf());
    let port = 21_179;
    let backend = ProcessBackend::open(baking_config(dir.path(), port)).unwrap();
    let base = backend.base_image_id().to_string();
    let image = backend
        .bake_image(&bake_request(
            &base,
            "cut-short",
            "#!/bin/sh\necho started\nsleep 60\n",
        ))
        .unwrap()
        .image_id;
    wait_for_output(&backend, &image, "started").await;
    let bake_dir = backend.dir().join("bakes").join(&image);
    let top = bake_process(&bake_dir).unwrap();
    let tree = procfs::instance_tree(Some(top));
    assert!(tree.len() >= 3, "{tree:?}");

    // As if the cloud died: nothing ends the bake before it starts again.
    drop(backend);
    assert!(procfs::alive(top.0, top.1), "the bake outlives its cloud");
    let backend = ProcessBackend::open(baking_config(dir.path(), port)).unwrap();
    assert_eq!(image_state(&backend, &image).as_deref(), Some("failed"));
    wait_until_gone(&tree).await;
    // The old cloud's waiter sees its bake die too; the output must stay.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let output = bake_output(&backend, &image);
    assert!(
        output.starts_with("fake bake in "),
        "{output:?}; {} exists: {}",
        bake_dir.display(),
        bake_dir.exists()
    );
    assert_eq!(
        output.lines().last(),
        Some("endstate cloud: the cloud restarted during the bake; the bake was ended"),
        "{output}"
    );
    assert_eq!(
        file_names(&bake_dir),
        BTreeSet::from(["console.log".to_string()])
    );
    let err = backend.run_instances(&run(&image, 1, "tok")).unwrap_err();
    assert_eq!(err.code(), "InvalidAMIID.Unavailable", "{err}");

    // Failed for good: another restart changes nothing.
    drop(backend);
    let backend = ProcessBackend::open(baking_config(dir.path(), port)).unwrap();
    assert_eq!(image_state(&backend, &image).as_deref(), Some("failed"));
    assert_eq!(
        bake_output(&backend, &image)
            .matches("the cloud restarted")
            .count(),
        1
    );
    backend
        .deregister_image(&DeregisterImageRequest { image_id: image })
        .unwrap();
    assert!(!bake_dir.exists());
}
