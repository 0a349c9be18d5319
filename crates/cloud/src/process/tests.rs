//! The process backend with real processes and a real `cloud.db`, its
//! instances run by a stand-in init command (a shell script that writes
//! `status.json` as the instance runtime does, prints a boot line, leaves a
//! child behind and sleeps), so that these tests do not depend on
//! `crates/instance`.

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

/// Kills every process of the instances `dir` records when a test ends,
/// passed or failed: tests leave nothing running.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
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
