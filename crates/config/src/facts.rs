//! Facts about the machine a run configures, the variables templates see
//! as `facts` (and `tags`, `metadata`): the OS from the root's
//! `/etc/os-release`, the kernel's hostname, CPU count, memory and
//! addresses, and — only when an endpoint is given — the instance's id,
//! metadata and tags from an instance metadata service (IMDSv2: a token
//! first). It never contacts 169.254.169.254 by itself; the endpoint comes
//! from the caller (see [`imds_endpoint_from_env`]). The metadata client is
//! plain HTTP/1.1 over TCP, which is all IMDS speaks.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a run knows about its machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// The operating system.
    pub os: Os,
    /// The kernel's hostname.
    pub hostname: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// Total memory, in bytes.
    pub memory_bytes: u64,
    /// Every address of every interface.
    pub addresses: Vec<Address>,
    /// The instance, when a metadata service was asked.
    pub instance: Option<Instance>,
}

/// The fields of `/etc/os-release` templates use most.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Os {
    /// `ID`, such as `debian`.
    pub id: String,
    /// `ID_LIKE`, split on spaces.
    pub id_like: Vec<String>,
    /// `VERSION_ID`, such as `13`.
    pub version_id: String,
    /// `VERSION_CODENAME`, such as `trixie`.
    pub version_codename: String,
    /// `PRETTY_NAME`.
    pub pretty_name: String,
}

/// One interface address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// The interface, such as `eth0`.
    pub interface: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// The address.
    pub address: String,
}

/// What the instance metadata service said.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `meta-data/instance-id`.
    pub id: String,
    /// Other metadata: `instance-type`, `ami-id`, `local-ipv4`, `hostname`,
    /// `availability-zone`, `region` (those the service answered).
    pub metadata: BTreeMap<String, String>,
    /// The instance's tags (empty when the service does not serve them).
    pub tags: BTreeMap<String, String>,
}

/// Where facts come from.
#[derive(Debug, Clone)]
pub struct FactsOptions {
    /// The root whose `/etc/os-release` is read.
    pub root: PathBuf,
    /// The metadata service's base URL (`http://host:port`), or none.
    pub imds_endpoint: Option<String>,
    /// How long each metadata request may take.
    pub imds_timeout: Duration,
}

impl FactsOptions {
    /// Facts of `root`, without a metadata service.
    pub fn new(root: impl Into<PathBuf>) -> FactsOptions {
        FactsOptions {
            root: root.into(),
            imds_endpoint: None,
            imds_timeout: Duration::from_secs(2),
        }
    }
}

/// Why facts could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// Neither os-release file could be read.
    #[error("{path}: {source} (and no /usr/lib/os-release either)")]
    OsRelease {
        /// The first path tried.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A file of the kernel could not be read or parsed.
    #[error("{path}: {message}")]
    System {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The metadata service could not be used.
    #[error("instance metadata service {endpoint}: {message}")]
    Imds {
        /// Its base URL.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
}

/// The metadata endpoint the AWS SDKs would use when told explicitly:
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, unless `AWS_EC2_METADATA_DISABLED`
/// is `true`. Unlike the SDKs there is no default address.
pub fn imds_endpoint_from_env() -> Option<String> {
    let disabled = std::env::var("AWS_EC2_METADATA_DISABLED")
        .is_ok_and(|value| value.eq_ignore_ascii_case("true"));
    if disabled {
        return None;
    }
    std::env::var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .ok()
        .filter(|value| !value.is_empty())
}

/// Gathers every fact.
pub fn gather(options: &FactsOptions) -> Result<Facts, FactsError> {
    let os = read_os_release(&options.root)?;
    let hostname = nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().to_string())
        .map_err(|errno| FactsError::System {
            path: PathBuf::from("gethostname"),
            message: errno.to_string(),
        })?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let memory_bytes = read_memory(Path::new("/proc/meminfo"))?;
    let addresses = read_addresses()?;
    let instance = match &options.imds_endpoint {
        Some(endpoint) => Some(read_instance(endpoint, options.imds_timeout)?),
        None => None,
    };
    Ok(Facts {
        os,
        hostname,
        cpus,
        memory_bytes,
        addresses,
        instance,
    })
}

/// Parses the root's `/etc/os-release` (or `/usr/lib/os-release`).
pub fn read_os_release(root: &Path) -> Result<Os, FactsError> {
    let primary = root.join("etc/os-release");
    let text = match std::fs::read_to_string(&primary) {
        Ok(text) => text,
        Err(source) => std::fs::read_to_string(root.join("usr/lib/os-release")).map_err(|_| {
            FactsError::OsRelease {
                path: primary,
                source,
            }
        })?,
    };
    Ok(parse_os_release(&text))
}

fn parse_os_release(text: &str) -> Os {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            fields.insert(key.trim().to_string(), unquoted.replace("\\\"", "\""));
        }
    }
    let field = |key: &str| fields.get(key).cloned().unwrap_or_default();
    Os {
        id: field("ID"),
        id_like: field("ID_LIKE")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        version_id: field("VERSION_ID"),
        version_codename: field("VERSION_CODENAME"),
        pretty_name: field("PRETTY_NAME"),
    }
}

fn read_memory(path: &Path) -> Result<u64, FactsError> {
    let text = std::fs::read_to_string(path).map_err(|error| FactsError::System {
        path: path.to_path_buf(),
        message: error.to_string(),
    })?;
    text.lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| FactsError::System {
            path: path.to_path_buf(),
            message: "no MemTotal line in kB".to_string(),
        })
}

fn read_addresses() -> Result<Vec<Address>, FactsError> {
    let interfaces = nix::ifaddrs::getifaddrs().map_err(|errno| FactsError::System {
        path: PathBuf::from("getifaddrs"),
        message: errno.to_string(),
    })?;
    let mut addresses = Vec::new();
    for interface in interfaces {
        let Some(address) = interface.address else {
            continue;
        };
        let (family, text) = if let Some(v4) = address.as_sockaddr_in() {
            ("ipv4", v4.ip().to_string())
        } else if let Some(v6) = address.as_sockaddr_in6() {
            ("ipv6", v6.ip().to_string())
        } else {
            continue;
        };
        addresses.push(Address {
            interface: interface.interface_name,
            family: family.to_string(),
            address: text,
        });
    }
    Ok(addresses)
}

/// The metadata paths read into [`Instance::metadata`], with their keys.
const METADATA: [(&str, &str); 6] = [
    ("instance-type", "instance-type"),
    ("ami-id", "ami-id"),
    ("local-ipv4", "local-ipv4"),
    ("hostname", "hostname"),
    ("placement/availability-zone", "availability-zone"),
    ("placement/region", "region"),
];

fn read_instance(endpoint: &str, timeout: Duration) -> Result<Instance, FactsError> {
    let fail = |message: String| FactsError::Imds {
        endpoint: endpoint.to_string(),
        message,
    };
    let client = ImdsClient::new(endpoint, timeout).map_err(fail)?;
    let token = match client
        .request("PUT", "/latest/api/token", None)
        .map_err(fail)?
    {
        (200, body) => body,
        (status, _) => return Err(fail(format!("PUT /latest/api/token answered {status}"))),
    };
    let get = |path: &str| -> Result<Option<String>, FactsError> {
        let full = format!("/latest/meta-data/{path}");
        match client.request("GET", &full, Some(&token)).map_err(fail)? {
            (200, body) => Ok(Some(body)),
            (404, _) => Ok(None),
            (status, _) => Err(fail(format!("GET {full} answered {status}"))),
        }
    };
    let id = get("instance-id")?
        .ok_or_else(|| fail("GET /latest/meta-data/instance-id answered 404".to_string()))?;
    let mut metadata = BTreeMap::new();
    for (path, key) in METADATA {
        if let Some(value) = get(path)? {
            metadata.insert(key.to_string(), value);
        }
    }
    // Tags are served only when the instance allows it; a 404 means none.
    let mut tags = BTreeMap::new();
    if let Some(keys) = get("tags/instance/")? {
        for key in keys.lines().filter(|key| !key.is_empty()) {
            if let Some(value) = get(&format!("tags/instance/{key}"))? {
                tags.insert(key.to_string(), value);
            }
        }
    }
    Ok(Instance { id, metadata, tags })
}

/// The largest metadata answer read.
const MAX_RESPONSE: u64 = 1024 * 1024;

struct ImdsClient {
    host: String,
    address: SocketAddr,
    timeout: Duration,
}

impl ImdsClient {
    fn new(endpoint: &str, timeout: Duration) -> Result<ImdsClient, String> {
        let rest = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| "the endpoint must be an http:// URL".to_string())?;
        let host = rest.split('/').next().unwrap_or_default().to_string();
        if host.is_empty() {
            return Err("the endpoint names no host".to_string());
        }
        let with_port = if host.starts_with('[') {
            if host.contains("]:") {
                host.clone()
            } else {
                format!("{host}:80")
            }
        } else if host.contains(':') {
            host.clone()
        } else {
            format!("{host}:80")
        };
        let address = with_port
            .to_socket_addrs()
            .map_err(|error| format!("{with_port}: {error}"))?
            .next()
            .ok_or_else(|| format!("{with_port}: no address"))?;
        Ok(ImdsClient {
            host,
            address,
            timeout,
        })
    }

    /// One request on its own connection: (status, body).
    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> Result<(u16, String), String> {
        let mut stream = TcpStream::connect_timeout(&self.address, self.timeout)
            .map_err(|error| format!("{method} {path}: {error}"))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|error| format!("{method} {path}: {error}"))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: */*\r\n",
            self.host
        );
        match token {
            Some(token) => head.push_str(&format!("X-aws-ec2-metadata-token: {token}\r\n")),
            None => head.push_str("X-aws-ec2-metadata-token-ttl-seconds: 300\r\n"),
        }
        if method == "PUT" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .map_err(|error| format!("{method} {path}: {error}"))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .map_err(|error| format!("{method} {path}: {error}"))?;
        parse_response(&raw).map_err(|message| format!("{method} {path}: {message}"))
    }
}

fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or("the response has no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or("no status line")?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            }
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else {
        match length {
            Some(length) if length <= body.len() => body[..length].to_vec(),
            Some(_) => return Err("the body is shorter than its Content-Length".to_string()),
            None => body.to_vec(),
        }
    };
    let text = String::from_utf8(body).map_err(|_| "the body is not UTF-8")?;
    Ok((status, text))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let end = body
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or("a chunk has no size line")?;
        let size_text = std::str::from_utf8(&body[..end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size '{size_text}'"))?;
        body = &body[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size {
            return Err("a chunk is cut short".to_string());
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

    use super::*;

    #[test]
    fn parses_os_release() {
        let os = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nID=debian\nVERSION_ID=\"13\"\n# comment\nVERSION_CODENAME=trixie\nID_LIKE='a b'\n",
        );
        assert_eq!(os.id, "debian");
        assert_eq!(os.version_id, "13");
        assert_eq!(os.version_codename, "trixie");
        assert_eq!(os.pretty_name, "Debian GNU/Linux 13 (trixie)");
        assert_eq!(os.id_like, ["a", "b"]);
    }

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse_response(plain).unwrap(), (200, "hello".to_string()));
        let chunked = b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (404, "abcde".to_string()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
    }

    #[test]
    fn reads_memory_and_addresses_of_this_machine() {
        assert!(read_memory(Path::new("/proc/meminfo")).unwrap() > 0);
        let addresses = read_addresses().unwrap();
        assert!(addresses.iter().any(|a| a.address == "127.0.0.1"));
    }
}
