//! `FakeBuildCloud`, for the unit tests of the builder and the recipe
//! bake (the layer above the EC2 calls): `launch` really runs the user
//! data with `sh` against a throwaway root, so the console is the script's
//! own; images are remembered with their tags, so a second bake sees the
//! first one's; every call is recorded in order. Knobs make a later call
//! fail. Not a cloud: one root for every instance, no concurrency.

#![allow(clippy::unwrap_used)] // Test code: a panic is the failure report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::builder::BuildCloud;
use crate::catalog::ImageRecord;

#[derive(Default)]
pub(crate) struct FakeBuildCloud {
    pub root: Option<PathBuf>,
    pub image_ends: Option<&'static str>,
    pub terminate_fails: bool,
    pub never_provisions: bool,
    pub console: Mutex<String>,
    pub calls: Mutex<Vec<String>>,
    pub stopped: Mutex<Vec<String>>,
    pub images: Mutex<Vec<ImageRecord>>,
    pub launches: Mutex<usize>,
}

impl FakeBuildCloud {
    /// A fake whose instances run their scripts against `root`.
    pub fn running_in(root: &Path) -> Self {
        FakeBuildCloud {
            root: Some(root.to_path_buf()),
            ..FakeBuildCloud::default()
        }
    }

    fn record(&self, call: impl Into<String>) {
        self.calls.lock().unwrap().push(call.into());
    }

    /// The calls so far, repeated polls counted once.
    pub fn calls(&self) -> Vec<String> {
        let mut calls = self.calls.lock().unwrap().clone();
        calls.dedup();
        calls
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        self.calls.lock().unwrap().clear();
    }

    /// Runs a script with `sh` against the root; the console becomes
    /// `banner` and its output. Whether it exited 0.
    fn run_script(&self, user_data: &[u8], banner: &str) -> bool {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(String::from_utf8_lossy(user_data).as_ref())
            .env("ENDSTATE_BAKE_ROOT", self.root.as_ref().unwrap())
            .output()
            .unwrap();
        *self.console.lock().unwrap() = format!(
            "{banner}{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output.status.success()
    }

    /// The images made so far, as DescribeImages would list them.
    pub fn images(&self) -> Vec<ImageRecord> {
        self.images.lock().unwrap().clone()
    }
}

#[async_trait]
impl BuildCloud for FakeBuildCloud {
    async fn launch(
        &self,
        image: &str,
        user_data: &[u8],
        _: &BTreeMap<String, String>,
        _: &str,
    ) -> Result<String, String> {
        self.record(format!("launch {image}"));
        if !self.never_provisions {
            self.run_script(user_data, "[boot] starting\n");
        }
        let mut launches = self.launches.lock().unwrap();
        *launches += 1;
        Ok(match *launches {
            1 => "i-build".to_string(),
            n => format!("i-build{n}"),
        })
    }
    async fn instance_state(&self, instance: &str) -> Result<Option<String>, String> {
        let stopped = self.stopped.lock().unwrap().iter().any(|i| i == instance);
        Ok(Some(
            if stopped { "stopped" } else { "running" }.to_string(),
        ))
    }
    async fn console(&self, _: &str) -> Result<String, String> {
        self.record("console");
        Ok(self.console.lock().unwrap().clone())
    }
    async fn stop(&self, instance: &str) -> Result<(), String> {
        self.record("stop");
        self.stopped.lock().unwrap().push(instance.to_string());
        Ok(())
    }
    async fn create_image(&self, instance: &str, name: &str, _: &str) -> Result<String, String> {
        self.record(format!("create_image {instance} {name}"));
        let mut images = self.images.lock().unwrap();
        let n = images.len();
        let id = format!("ami-{:017x}", 0x1234_5678_9abc_def0_u64 + n as u64);
        images.push(ImageRecord {
            id: id.clone(),
            name: Some(name.to_string()),
            state: self.image_ends.unwrap_or("available").to_string(),
            created: Some(format!("2026-11-28T00:00:{n:02}.000Z")),
            tags: BTreeMap::new(),
        });
        Ok(id)
    }
    async fn image_state(&self, image: &str) -> Result<Option<String>, String> {
        let images = self.images.lock().unwrap();
        Ok(images
            .iter()
            .find(|i| i.id == image)
            .map(|i| i.state.clone()))
    }
    async fn tag(&self, image: &str, tags: &BTreeMap<String, String>) -> Result<(), String> {
        self.record(format!("tag {image} {}", tags.len()));
        let mut images = self.images.lock().unwrap();
        if let Some(found) = images.iter_mut().find(|i| i.id == image) {
            found.tags.extend(tags.clone());
        }
        Ok(())
    }
    async fn terminate(&self, instance: &str) -> Result<(), String> {
        self.record(format!("terminate {instance}"));
        if self.terminate_fails {
            return Err("throttled".to_string());
        }
        Ok(())
    }
    async fn deregister(&self, image: &str) -> Result<(), String> {
        self.record(format!("deregister {image}"));
        self.images.lock().unwrap().retain(|i| i.id != image);
        Ok(())
    }
    /// Runs the script at once against the root, as `launch` does; the
    /// image is `available` when it exited 0, `failed` otherwise (or
    /// what `image_ends` says).
    async fn bake_volume(
        &self,
        image: &str,
        user_data: &[u8],
        name: &str,
        _: &str,
    ) -> Result<String, String> {
        self.record(format!("bake_volume {image} {name}"));
        let succeeded = self.run_script(user_data, "");
        let mut images = self.images.lock().unwrap();
        let n = images.len();
        let id = format!("ami-{:017x}", 0x1234_5678_9abc_def0_u64 + n as u64);
        let state = match self.image_ends {
            Some(state) => state,
            None if succeeded => "available",
            None => "failed",
        };
        images.push(ImageRecord {
            id: id.clone(),
            name: Some(name.to_string()),
            state: state.to_string(),
            created: Some(format!("2026-11-28T00:00:{n:02}.000Z")),
            tags: BTreeMap::new(),
        });
        Ok(id)
    }
    async fn bake_output(&self, _: &str) -> Result<String, String> {
        self.record("bake_output");
        Ok(self.console.lock().unwrap().clone())
    }
}
