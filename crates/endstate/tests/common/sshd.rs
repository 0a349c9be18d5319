//! OpenSSH servers for the push tests, and the throwaway roots pushes
//! configure: `sshd -D` on loopback addresses
//! (127.x, one port free on all of them), host and client keys generated
//! with `ssh-keygen` into the test's temporary directory, a known_hosts
//! file naming each address, and the `endstate push` options that use
//! them — never the user's own `~/.ssh`. Each server is killed by its PID
//! when the fixture is dropped. Not a general SSH harness: sshd logs in
//! as the user running it (root, in CI), with the generated key only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An `sshd -D` on one loopback address, killed (by PID) when dropped.
pub struct Sshd {
    child: Child,
    log: PathBuf,
}

impl Sshd {
    /// Starts sshd on `address:port` with the keys in `keys` (as
    /// [`Sshds::start`] writes them) and waits until it listens.
    pub fn start(keys: &Path, address: &str, port: u16) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "/usr/sbin/sshd is missing: run scripts/setup-tools (it installs openssh-server without starting it)"
        );
        assert!(
            Path::new("/run/sshd").is_dir(),
            "/run/sshd (sshd's privilege separation directory) is missing: run scripts/setup-tools"
        );
        let config = keys.join(format!("sshd-{address}.conf"));
        std::fs::write(
            &config,
            format!(
                "ListenAddress {address}:{port}\n\
                 HostKey {keys}/host_key\n\
                 AuthorizedKeysFile {keys}/authorized_keys\n\
                 PidFile {keys}/sshd-{address}.pid\n\
                 UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUseDNS no\nPrintMotd no\n\
                 PrintLastLog no\nLogLevel VERBOSE\n",
                keys = keys.display()
            ),
        )
        .unwrap();
        let log = keys.join(format!("sshd-{address}.log"));
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Sshd { child, log };
        let target: SocketAddr = format!("{address}:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("sshd exited ({status}): {}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new ed25519 key pair without a passphrase at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "endstate-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen is missing: run scripts/setup-tools");
    assert!(status.success());
}

/// A port free on every one of `addresses`.
pub fn free_port(addresses: &[&str]) -> u16 {
    loop {
        let first = TcpListener::bind((addresses[0], 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        if addresses[1..]
            .iter()
            .all(|address| TcpListener::bind((*address, port)).is_ok())
        {
            return port;
        }
    }
}

/// Panics unless the OpenSSH client is installed.
pub fn require_ssh_client() {
    assert!(
        Command::new("ssh").arg("-V").output().is_ok(),
        "ssh is missing: run scripts/setup-tools"
    );
}

/// sshd on each of several loopback addresses, one port, one host key and
/// one client key, all under `dir`.
pub struct Sshds {
    /// Where the keys, known_hosts, configs and logs are.
    pub dir: PathBuf,
    /// The port every server listens on.
    pub port: u16,
    /// The addresses, in the order given.
    pub hosts: Vec<String>,
    servers: Vec<Sshd>,
}

impl Sshds {
    /// Generates the keys into `dir` and starts sshd on each of `hosts`.
    pub fn start(dir: &Path, hosts: &[&str]) -> Sshds {
        require_ssh_client();
        keygen(&dir.join("host_key"));
        keygen(&dir.join("client_key"));
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port(hosts);
        let host_key = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        let known: String = hosts
            .iter()
            .map(|host| format!("[{host}]:{port} {}\n", host_key.join(" ")))
            .collect();
        std::fs::write(dir.join("known_hosts"), known).unwrap();
        let servers = hosts.iter().map(|h| Sshd::start(dir, h, port)).collect();
        Sshds {
            dir: dir.to_path_buf(),
            port,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            servers,
        }
    }

    /// The `endstate push` options that reach these servers with the
    /// generated key and known_hosts only (no ~/.ssh/config either).
    pub fn push_args(&self) -> Vec<OsString> {
        vec![
            "--port".into(),
            self.port.to_string().into(),
            "--identity".into(),
            self.dir.join("client_key").into(),
            "--ssh-config".into(),
            "/dev/null".into(),
            "--ssh-option".into(),
            format!(
                "UserKnownHostsFile={}",
                self.dir.join("known_hosts").display()
            )
            .into(),
            "--ssh-option".into(),
            "StrictHostKeyChecking=yes".into(),
        ]
    }

    /// Every server's log, for a failure message.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(Sshd::log)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A machine's root as a role finds it: `/etc/os-release` (the host's),
/// `/srv`, `/tmp`, and `/bin/sh` (dash) with its libraries for the
/// engine's commands, which it runs through `chroot`.
pub fn machine_root(root: &Path) {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("srv")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::copy("/etc/os-release", root.join("etc/os-release")).unwrap();
    let dash = std::fs::canonicalize("/bin/dash").unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(&dash, root.join("bin/sh")).unwrap();
    let ldd = Command::new("ldd").arg(&dash).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(library) = line.split_whitespace().find(|word| word.starts_with('/')) {
            let copy = root.join(library.trim_start_matches('/'));
            std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
            std::fs::copy(library, &copy).unwrap();
        }
    }
}
