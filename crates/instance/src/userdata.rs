//! User data to a boot plan, as cloud-init reads it: gzip (magic `1f 8b`)
//! decompressed; MIME multipart split into parts (`text/x-shellscript`,
//! `text/cloud-config`, `text/cloud-boothook`, nested multiparts; other types
//! become `unsupported` events); a `#!` script; a `#cloud-config` YAML with
//! `bootcmd`, `write_files` and `runcmd` (`hostname` and `fqdn` accepted as
//! no-ops, every other module an `unsupported` event).
//!
//! Pure: bytes in, a [`BootPlan`] or an [`Error`] naming what is wrong out. It
//! runs nothing and writes nothing; `boot` carries the plan out.

use std::fmt;
use std::io::Read;

use base64::Engine;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node};

/// Decompressed user data larger than this is refused (a gzip bomb guard;
/// EC2 caps the compressed bytes at 16 KiB).
pub const MAX_DECOMPRESSED: u64 = 16 * 1024 * 1024;

/// What the boot of one instance does, in cloud-init's order: boothooks,
/// `bootcmd`, `write_files`, deferred `write_files`, `runcmd` and scripts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootPlan {
    /// `#cloud-boothook` parts, run first.
    pub boothooks: Vec<Script>,
    /// `bootcmd`: the only step a later boot runs.
    pub bootcmd: Vec<CommandLine>,
    /// `write_files`, deferred ones included (see [`WriteFile::defer`]).
    pub write_files: Vec<WriteFile>,
    /// `runcmd`.
    pub runcmd: Vec<CommandLine>,
    /// `#!` scripts, in the order of the user data.
    pub scripts: Vec<Script>,
    /// What was skipped or ignored, for the console.
    pub events: Vec<Event>,
}

/// One entry of `bootcmd` or `runcmd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// A string: a line of shell.
    Shell(String),
    /// A list: an argv, each word passed as is.
    Argv(Vec<String>),
}

/// A script to be written to a file and executed (it starts with `#!`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// A file name for it: the part's `filename`, or `part-NNN`.
    pub name: String,
    /// Its bytes.
    pub content: Vec<u8>,
}

/// One `write_files` entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFile {
    /// An absolute path inside the instance.
    pub path: String,
    /// The decoded content.
    pub content: Vec<u8>,
    /// The mode, if given (else 0644).
    pub permissions: Option<u32>,
    /// Append instead of replacing.
    pub append: bool,
    /// Written after the others, just before `runcmd` (cloud-init's final stage).
    pub defer: bool,
}

/// Something in the user data that the boot does not honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A cloud-config module endstate does not run (`packages`, `users`, …).
    UnsupportedModule(String),
    /// A MIME part of a type endstate does not run.
    UnsupportedPart(String),
    /// User data in a format endstate does not know (`#include`, …).
    UnsupportedFormat(String),
    /// A `write_files` owner; files belong to the instance's uid.
    IgnoredOwner {
        /// The file.
        path: String,
        /// The owner asked for.
        owner: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::UnsupportedModule(module) => {
                write!(f, "unsupported: module '{module}' is not run by endstate; skipped")
            }
            Event::UnsupportedPart(kind) => {
                write!(f, "unsupported: user data part of type '{kind}'; skipped")
            }
            Event::UnsupportedFormat(start) => {
                write!(f, "unsupported: user data format '{start}'; skipped")
            }
            Event::IgnoredOwner { path, owner } => write!(
                f,
                "ignored: write_files owner '{owner}' for {path}: files belong to the instance's uid"
            ),
        }
    }
}

/// Why user data could not be turned into a boot plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The gzip stream is corrupt or too large.
    #[error("user data: gzip: {0}")]
    Gzip(String),
    /// A text part is not UTF-8.
    #[error("user data: {0} is not UTF-8")]
    NotUtf8(String),
    /// The MIME structure is broken.
    #[error("user data: MIME: {0}")]
    Mime(String),
    /// A `#cloud-config` is not valid YAML.
    #[error("cloud-config: YAML: {0}")]
    Yaml(String),
    /// A cloud-config module has the wrong shape.
    #[error("cloud-config: {module}: {message}")]
    Module {
        /// The module (`runcmd`, `write_files[2].permissions`, …).
        module: String,
        /// What is wrong, with its line and column.
        message: String,
    },
}

/// Parses user data bytes into a boot plan.
pub fn parse(bytes: &[u8]) -> Result<BootPlan, Error> {
    let mut plan = BootPlan::default();
    let mut config = CloudConfig::default();
    let mut parts = 0;
    parse_into(bytes, None, &mut plan, &mut config, &mut parts, 0)?;
    plan.bootcmd = config.bootcmd.unwrap_or_default();
    plan.write_files = config.write_files.unwrap_or_default();
    plan.runcmd = config.runcmd.unwrap_or_default();
    Ok(plan)
}

/// The modules of all the cloud-configs seen so far; a later cloud-config's
/// module replaces an earlier one's, as cloud-init's default merge does.
#[derive(Default)]
struct CloudConfig {
    bootcmd: Option<Vec<CommandLine>>,
    write_files: Option<Vec<WriteFile>>,
    runcmd: Option<Vec<CommandLine>>,
}

const MAX_NESTING: usize = 8;

fn parse_into(
    bytes: &[u8],
    name: Option<String>,
    plan: &mut BootPlan,
    config: &mut CloudConfig,
    parts: &mut usize,
    depth: usize,
) -> Result<(), Error> {
    if depth > MAX_NESTING {
        return Err(Error::Mime(format!(
            "parts nested more than {MAX_NESTING} deep"
        )));
    }
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let inflated = gunzip(bytes)?;
        return parse_into(&inflated, name, plan, config, parts, depth + 1);
    }
    let start = leading_text(bytes);
    if start.trim().is_empty() {
        return Ok(());
    }
    if start.starts_with("#cloud-config") && !start.starts_with("#cloud-config-archive") {
        let text = utf8(bytes, "the cloud-config")?;
        return parse_cloud_config(text, plan, config);
    }
    if start.starts_with("#cloud-boothook") {
        let text = utf8(bytes, "the boothook")?;
        let body = text.split_once('\n').map(|(_, rest)| rest).unwrap_or("");
        *parts += 1;
        plan.boothooks.push(Script {
            name: name.unwrap_or_else(|| format!("boothook-{:03}", *parts)),
            content: body.as_bytes().to_vec(),
        });
        return Ok(());
    }
    if start.starts_with("#!") {
        *parts += 1;
        plan.scripts.push(Script {
            name: name.unwrap_or_else(|| format!("part-{:03}", *parts)),
            content: bytes.to_vec(),
        });
        return Ok(());
    }
    let lower = start.to_ascii_lowercase();
    if lower.starts_with("content-type:") || lower.starts_with("mime-version:") {
        let text = utf8(bytes, "the MIME message")?;
        return parse_mime(text, plan, config, parts, depth);
    }
    let first_line = start.lines().next().unwrap_or("").trim();
    plan.events.push(Event::UnsupportedFormat(
        first_line.chars().take(40).collect(),
    ));
    Ok(())
}

fn leading_text(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(256)];
    String::from_utf8_lossy(head).trim_start().to_string()
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, Error> {
    std::str::from_utf8(bytes).map_err(|_| Error::NotUtf8(what.to_string()))
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut inflated)
        .map_err(|error| Error::Gzip(error.to_string()))?;
    if inflated.len() as u64 > MAX_DECOMPRESSED {
        return Err(Error::Gzip(format!(
            "more than {MAX_DECOMPRESSED} bytes once decompressed"
        )));
    }
    Ok(inflated)
}

/// A MIME entity: lower-cased header names with their unfolded values, and a body.
struct Entity<'a> {
    headers: Vec<(String, String)>,
    body: &'a str,
}

impl Entity<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The media type, lower-cased, and its parameters.
    fn content_type(&self) -> (String, Vec<(String, String)>) {
        match self.header("content-type") {
            Some(value) => media_type(value),
            None => ("text/plain".to_string(), Vec::new()),
        }
    }
}

fn split_entity(text: &str) -> Result<Entity<'_>, Error> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut rest = text;
    loop {
        let (line, after) = match rest.find('\n') {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, ""),
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        rest = after;
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            match headers.last_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                None => return Err(Error::Mime("a continuation line before any header".into())),
            }
        } else {
            let Some((name, value)) = line.split_once(':') else {
                return Err(Error::Mime(format!("'{line}' is not a header line")));
            };
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        if rest.is_empty() {
            break;
        }
    }
    Ok(Entity {
        headers,
        body: rest,
    })
}

fn media_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut pieces = value.split(';');
    let kind = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
    let parameters = pieces
        .filter_map(|piece| {
            let (key, value) = piece.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            Some((key.trim().to_ascii_lowercase(), value.to_string()))
        })
        .collect();
    (kind, parameters)
}

fn parameter<'a>(parameters: &'a [(String, String)], name: &str) -> Option<&'a str> {
    parameters
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn parse_mime(
    text: &str,
    plan: &mut BootPlan,
    config: &mut CloudConfig,
    parts: &mut usize,
    depth: usize,
) -> Result<(), Error> {
    let entity = split_entity(text)?;
    dispatch_entity(&entity, plan, config, parts, depth)
}

fn dispatch_entity(
    entity: &Entity<'_>,
    plan: &mut BootPlan,
    config: &mut CloudConfig,
    parts: &mut usize,
    depth: usize,
) -> Result<(), Error> {
    let (kind, parameters) = entity.content_type();
    if kind.starts_with("multipart/") {
        let boundary = parameter(&parameters, "boundary")
            .ok_or_else(|| Error::Mime(format!("{kind} without a boundary parameter")))?;
        for part in split_multipart(entity.body, boundary)? {
            let part = split_entity(part)?;
            dispatch_entity(&part, plan, config, parts, depth + 1)?;
        }
        return Ok(());
    }
    let body = decode_transfer(entity)?;
    let name = entity
        .header("content-disposition")
        .map(media_type)
        .and_then(|(_, disposition)| parameter(&disposition, "filename").map(str::to_string))
        .or_else(|| parameter(&parameters, "name").map(str::to_string))
        .map(|name| sanitize_name(&name));
    match kind.as_str() {
        "text/cloud-config" | "text/x-shellscript" | "text/cloud-boothook" => {
            // The type decides, whatever the first line says.
            let header = match kind.as_str() {
                "text/cloud-config" => "#cloud-config\n",
                "text/cloud-boothook" => "#cloud-boothook\n",
                _ => "",
            };
            let start = leading_text(&body);
            let bytes = if header.is_empty() || start.starts_with(header.trim_end()) {
                body
            } else {
                [header.as_bytes(), &body].concat()
            };
            if kind == "text/x-shellscript" && !start.starts_with("#!") {
                *parts += 1;
                plan.scripts.push(Script {
                    name: name.unwrap_or_else(|| format!("part-{:03}", *parts)),
                    content: [b"#!/bin/sh\n".as_slice(), &bytes].concat(),
                });
                return Ok(());
            }
            parse_into(&bytes, name, plan, config, parts, depth + 1)
        }
        // Untyped text and gzip are sniffed, as cloud-init does.
        "text/plain" | "application/gzip" | "application/x-gzip" | "application/octet-stream" => {
            parse_into(&body, name, plan, config, parts, depth + 1)
        }
        other => {
            plan.events.push(Event::UnsupportedPart(other.to_string()));
            Ok(())
        }
    }
}

fn sanitize_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    clean.trim_start_matches('.').to_string()
}

fn decode_transfer(entity: &Entity<'_>) -> Result<Vec<u8>, Error> {
    let encoding = entity
        .header("content-transfer-encoding")
        .unwrap_or("7bit")
        .to_ascii_lowercase();
    match encoding.as_str() {
        "base64" => {
            let compact: String = entity.body.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|error| Error::Mime(format!("a base64 part does not decode: {error}")))
        }
        "7bit" | "8bit" | "binary" => Ok(entity.body.as_bytes().to_vec()),
        other => Err(Error::Mime(format!(
            "Content-Transfer-Encoding '{other}' is not supported (use base64 or 7bit)"
        ))),
    }
}

/// The parts of a multipart body, each without the line break that belongs
/// to the delimiter after it.
fn split_multipart<'a>(body: &'a str, boundary: &str) -> Result<Vec<&'a str>, Error> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut offset = 0;
    let mut closed = false;
    for line in body.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        let is_delimiter = bare.trim_end() == delimiter;
        let is_close = bare.trim_end() == format!("{delimiter}--");
        if is_delimiter || is_close {
            if let Some(start) = current.take() {
                let part = &body[start..offset];
                let part = part.strip_suffix('\n').unwrap_or(part);
                parts.push(part.strip_suffix('\r').unwrap_or(part));
            }
            if is_close {
                closed = true;
                break;
            }
            current = Some(offset + line.len());
        }
        offset += line.len();
    }
    if !closed {
        return Err(Error::Mime(format!(
            "the multipart has no closing delimiter '{delimiter}--'"
        )));
    }
    Ok(parts)
}

fn parse_cloud_config(
    text: &str,
    plan: &mut BootPlan,
    config: &mut CloudConfig,
) -> Result<(), Error> {
    let has_content = text
        .lines()
        .any(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'));
    if !has_content {
        return Ok(());
    }
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let root = marked_yaml::parse_yaml_with_options(0, text, options)
        .map_err(|error| Error::Yaml(error.to_string()))?;
    let Node::Mapping(root) = root else {
        return Err(Error::Yaml(format!(
            "the document must be a mapping of module names, found {} at {}",
            kind_of(&root),
            position(&root)
        )));
    };
    for (key, value) in root.iter() {
        let module = key.as_str();
        match module {
            "bootcmd" => config.bootcmd = Some(commands(module, value)?),
            "runcmd" => config.runcmd = Some(commands(module, value)?),
            "write_files" => config.write_files = Some(write_files(value, &mut plan.events)?),
            // The instance's hostname is the cloud's to set (init.json).
            "hostname" | "fqdn" | "preserve_hostname" | "prefer_fqdn_over_hostname" => {}
            other => plan
                .events
                .push(Event::UnsupportedModule(other.to_string())),
        }
    }
    Ok(())
}

fn kind_of(node: &Node) -> &'static str {
    match node {
        Node::Scalar(_) => "a scalar",
        Node::Mapping(_) => "a mapping",
        Node::Sequence(_) => "a list",
    }
}

fn position(node: &Node) -> String {
    match node.span().start() {
        Some(marker) => format!("line {} column {}", marker.line(), marker.column()),
        None => "an unknown position".to_string(),
    }
}

fn module_error(module: &str, node: &Node, message: &str) -> Error {
    Error::Module {
        module: module.to_string(),
        message: format!(
            "{message} (line {})",
            position(node).trim_start_matches("line ")
        ),
    }
}

fn commands(module: &str, node: &Node) -> Result<Vec<CommandLine>, Error> {
    let Node::Sequence(items) = node else {
        if let Node::Scalar(scalar) = node {
            if scalar.as_str().is_empty() || scalar.as_str() == "null" {
                return Ok(Vec::new());
            }
        }
        return Err(module_error(
            module,
            node,
            &format!("expected a list of commands, found {}", kind_of(node)),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let name = format!("{module}[{index}]");
            match item {
                Node::Scalar(line) => Ok(CommandLine::Shell(line.as_str().to_string())),
                Node::Sequence(words) => {
                    let argv = words
                        .iter()
                        .map(|word| match word {
                            Node::Scalar(word) => Ok(word.as_str().to_string()),
                            other => Err(module_error(
                                &name,
                                other,
                                &format!("an argv word must be a string, found {}", kind_of(other)),
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if argv.is_empty() {
                        return Err(module_error(&name, item, "an argv list must not be empty"));
                    }
                    Ok(CommandLine::Argv(argv))
                }
                Node::Mapping(_) => Err(module_error(
                    &name,
                    item,
                    "expected a string or a list of strings, found a mapping",
                )),
            }
        })
        .collect()
}

fn write_files(node: &Node, events: &mut Vec<Event>) -> Result<Vec<WriteFile>, Error> {
    let Node::Sequence(items) = node else {
        return Err(module_error(
            "write_files",
            node,
            &format!("expected a list of files, found {}", kind_of(node)),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let name = format!("write_files[{index}]");
            let Node::Mapping(entry) = item else {
                return Err(module_error(
                    &name,
                    item,
                    &format!("expected a mapping with a path, found {}", kind_of(item)),
                ));
            };
            write_file(&name, item, entry, events)
        })
        .collect()
}

fn scalar<'a>(
    name: &str,
    entry: &'a MarkedMappingNode,
    key: &str,
) -> Result<Option<&'a MarkedScalarNode>, Error> {
    match entry.get_node(key) {
        None => Ok(None),
        Some(Node::Scalar(scalar)) => Ok(Some(scalar)),
        Some(other) => Err(module_error(
            &format!("{name}.{key}"),
            other,
            &format!("expected a string, found {}", kind_of(other)),
        )),
    }
}

fn boolean(name: &str, entry: &MarkedMappingNode, key: &str) -> Result<bool, Error> {
    let Some(value) = scalar(name, entry, key)? else {
        return Ok(false);
    };
    // YAML 1.1's booleans, as cloud-init's PyYAML reads them.
    match value.as_str().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "y" => Ok(true),
        "false" | "no" | "off" | "n" | "" | "null" | "~" => Ok(false),
        other => Err(module_error(
            &format!("{name}.{key}"),
            &Node::Scalar(value.clone()),
            &format!("'{other}' is not a boolean (true or false)"),
        )),
    }
}

fn write_file(
    name: &str,
    item: &Node,
    entry: &MarkedMappingNode,
    events: &mut Vec<Event>,
) -> Result<WriteFile, Error> {
    for key in entry.keys() {
        if !matches!(
            key.as_str(),
            "path" | "content" | "encoding" | "permissions" | "append" | "defer" | "owner"
        ) {
            return Err(module_error(
                name,
                &Node::Scalar(key.clone()),
                &format!(
                    "unknown key '{}' (known: path, content, encoding, permissions, append, defer, owner)",
                    key.as_str()
                ),
            ));
        }
    }
    let path = scalar(name, entry, "path")?
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| module_error(name, item, "every file needs a path"))?;
    if !path.starts_with('/') {
        return Err(module_error(
            &format!("{name}.path"),
            item,
            &format!("'{path}' is not an absolute path"),
        ));
    }
    if path.split('/').any(|component| component == "..") {
        return Err(module_error(
            &format!("{name}.path"),
            item,
            &format!("'{path}' contains '..'"),
        ));
    }
    let content = scalar(name, entry, "content")?
        .map(|c| c.as_str().to_string())
        .unwrap_or_default();
    let encoding = scalar(name, entry, "encoding")?
        .map(|e| e.as_str().to_ascii_lowercase())
        .unwrap_or_default();
    let decoded = decode_content(&content, &encoding).map_err(|message| {
        module_error(
            &format!("{name}.content"),
            item,
            &format!("{message} ({path})"),
        )
    })?;
    let permissions = match scalar(name, entry, "permissions")? {
        None => None,
        Some(mode) => Some(parse_mode(mode.as_str()).ok_or_else(|| {
            module_error(
                &format!("{name}.permissions"),
                &Node::Scalar(mode.clone()),
                &format!("'{}' is not an octal mode such as '0644'", mode.as_str()),
            )
        })?),
    };
    if let Some(owner) = scalar(name, entry, "owner")? {
        events.push(Event::IgnoredOwner {
            path: path.clone(),
            owner: owner.as_str().to_string(),
        });
    }
    Ok(WriteFile {
        path,
        content: decoded,
        permissions,
        append: boolean(name, entry, "append")?,
        defer: boolean(name, entry, "defer")?,
    })
}

fn decode_content(content: &str, encoding: &str) -> Result<Vec<u8>, String> {
    let base64 = |text: &str| {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|error| format!("content is not valid base64: {error}"))
    };
    let gunzip = |bytes: &[u8]| gunzip(bytes).map_err(|error| error.to_string());
    match encoding {
        "" | "text/plain" => Ok(content.as_bytes().to_vec()),
        "b64" | "base64" => base64(content),
        "gz" | "gzip" => gunzip(content.as_bytes()),
        "gz+base64" | "gzip+base64" | "gz+b64" | "gzip+b64" => gunzip(&base64(content)?),
        other => Err(format!(
            "encoding '{other}' is not one of b64, base64, gzip, gz, gz+base64, gzip+base64"
        )),
    }
}

/// An octal mode: `0644`, `644`, `0o644`; at most `07777`.
fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.trim();
    let digits = digits.strip_prefix("0o").unwrap_or(digits);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
}

/// `bootcmd` or `runcmd` as one `sh` script, as cloud-init runs them: a
/// string is a line of shell, a list an argv with each word single-quoted.
pub fn shell_script(commands: &[CommandLine]) -> String {
    let mut script = String::from("#!/bin/sh\n");
    for command in commands {
        match command {
            CommandLine::Shell(line) => script.push_str(line),
            CommandLine::Argv(argv) => {
                let words: Vec<String> = argv.iter().map(|word| shell_quote(word)).collect();
                script.push_str(&words.join(" "));
            }
        }
        script.push('\n');
    }
    script
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn empty_user_data_is_an_empty_plan() {
        assert_eq!(parse(b"").unwrap(), BootPlan::default());
        assert_eq!(parse(b"  \n").unwrap(), BootPlan::default());
        assert_eq!(parse(b"#cloud-config\n").unwrap(), BootPlan::default());
    }

    #[test]
    fn a_shebang_script_is_one_script() {
        let plan = parse(b"#!/bin/bash\necho hi\n").unwrap();
        assert_eq!(plan.scripts.len(), 1);
        assert_eq!(plan.scripts[0].name, "part-001");
        assert_eq!(plan.scripts[0].content, b"#!/bin/bash\necho hi\n");
    }

    #[test]
    fn gzip_is_decompressed_first() {
        let plan = parse(&gzip(b"#cloud-config\nruncmd: [echo zipped]\n")).unwrap();
        assert_eq!(plan.runcmd, vec![CommandLine::Shell("echo zipped".into())]);
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut bytes = gzip(b"#!/bin/sh\necho\n");
        bytes.truncate(8);
        let error = parse(&bytes).unwrap_err();
        assert!(matches!(error, Error::Gzip(_)), "{error}");
    }

    #[test]
    fn bootcmd_and_runcmd_take_strings_and_argv_lists() {
        let plan = parse(
            b"#cloud-config\nbootcmd:\n  - echo boot\nruncmd:\n  - echo one && echo two\n  - [sh, -c, \"echo it's\"]\n",
        )
        .unwrap();
        assert_eq!(plan.bootcmd, vec![CommandLine::Shell("echo boot".into())]);
        assert_eq!(
            plan.runcmd,
            vec![
                CommandLine::Shell("echo one && echo two".into()),
                CommandLine::Argv(vec!["sh".into(), "-c".into(), "echo it's".into()]),
            ]
        );
        assert_eq!(
            shell_script(&plan.runcmd),
            "#!/bin/sh\necho one && echo two\n'sh' '-c' 'echo it'\\''s'\n"
        );
    }

    #[test]
    fn runcmd_that_is_not_a_list_names_the_module_and_line() {
        let error = parse(b"#cloud-config\nruncmd:\n  cmd: echo\n").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("runcmd"), "{text}");
        assert!(
            text.contains("expected a list of commands, found a mapping"),
            "{text}"
        );
        assert!(text.contains("line 3"), "{text}");
        let error = parse(b"#cloud-config\nbootcmd:\n  - {a: b}\n").unwrap_err();
        assert!(error.to_string().contains("bootcmd[0]"), "{error}");
        let error = parse(b"#cloud-config\nruncmd:\n  - []\n").unwrap_err();
        assert!(error.to_string().contains("must not be empty"), "{error}");
    }

    #[test]
    fn write_files_decodes_every_encoding() {
        let text = b"hello\n";
        let yaml = format!(
            "#cloud-config\nwrite_files:\n  - path: /a\n    content: hello\n  - path: /b\n    encoding: b64\n    content: {}\n  - path: /c\n    encoding: base64\n    content: {}\n  - path: /d\n    encoding: gz+base64\n    content: {}\n  - path: /e\n    encoding: gzip+b64\n    content: {}\n",
            b64(text),
            b64(text),
            b64(&gzip(text)),
            b64(&gzip(text)),
        );
        let plan = parse(yaml.as_bytes()).unwrap();
        let contents: Vec<&[u8]> = plan
            .write_files
            .iter()
            .map(|f| f.content.as_slice())
            .collect();
        assert_eq!(contents, vec![b"hello".as_slice(), text, text, text, text]);
    }

    #[test]
    fn write_files_permissions_append_defer_and_owner() {
        let plan = parse(
            b"#cloud-config\nwrite_files:\n  - path: /etc/x\n    content: x\n    permissions: '0600'\n    append: true\n    defer: yes\n    owner: nginx:nginx\n  - path: /etc/y\n    permissions: 0755\n",
        )
        .unwrap();
        let first = &plan.write_files[0];
        assert_eq!(first.permissions, Some(0o600));
        assert!(first.append && first.defer);
        assert_eq!(plan.write_files[1].permissions, Some(0o755));
        assert!(!plan.write_files[1].append && !plan.write_files[1].defer);
        assert_eq!(
            plan.events,
            vec![Event::IgnoredOwner {
                path: "/etc/x".into(),
                owner: "nginx:nginx".into()
            }]
        );
        assert!(plan.events[0]
            .to_string()
            .starts_with("ignored: write_files owner"));
    }

    #[test]
    fn write_files_bad_input_names_what_is_wrong() {
        let cases: [(&str, &str); 7] = [
            (
                "  - content: x\n",
                "write_files[0]: every file needs a path",
            ),
            ("  - path: etc/x\n", "'etc/x' is not an absolute path"),
            ("  - path: /x/../y\n", "contains '..'"),
            (
                "  - path: /x\n    permissions: '0999'\n",
                "'0999' is not an octal mode",
            ),
            (
                "  - path: /x\n    encoding: b64\n    content: '!!!'\n",
                "content is not valid base64",
            ),
            (
                "  - path: /x\n    encoding: rot13\n",
                "encoding 'rot13' is not one of",
            ),
            (
                "  - path: /x\n    permission: '0644'\n",
                "unknown key 'permission'",
            ),
        ];
        for (entry, expected) in cases {
            let yaml = format!("#cloud-config\nwrite_files:\n{entry}");
            let error = parse(yaml.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(expected), "{entry:?}: {error}");
            assert!(error.contains("write_files[0]"), "{entry:?}: {error}");
        }
        let error =
            parse(b"#cloud-config\nwrite_files:\n  - path: /x\n    append: maybe\n").unwrap_err();
        assert!(
            error.to_string().contains("'maybe' is not a boolean"),
            "{error}"
        );
        let error = parse(b"#cloud-config\nwrite_files: /x\n").unwrap_err();
        assert!(
            error.to_string().contains("expected a list of files"),
            "{error}"
        );
    }

    #[test]
    fn other_modules_are_unsupported_events_and_hostname_is_accepted() {
        let plan = parse(
            b"#cloud-config\nhostname: web\nfqdn: web.example\npackages: [nginx]\nusers: [default]\napt: {}\n",
        )
        .unwrap();
        assert_eq!(
            plan.events,
            vec![
                Event::UnsupportedModule("packages".into()),
                Event::UnsupportedModule("users".into()),
                Event::UnsupportedModule("apt".into()),
            ]
        );
        assert_eq!(
            plan.events[0].to_string(),
            "unsupported: module 'packages' is not run by endstate; skipped"
        );
    }

    #[test]
    fn bad_yaml_is_an_error() {
        let error = parse(b"#cloud-config\nruncmd: [echo\n").unwrap_err();
        assert!(matches!(error, Error::Yaml(_)), "{error}");
        let error = parse(b"#cloud-config\n- echo\n").unwrap_err();
        assert!(error.to_string().contains("must be a mapping"), "{error}");
        let error = parse(b"#cloud-config\nruncmd: []\nruncmd: []\n").unwrap_err();
        assert!(error.to_string().contains("Duplicate key"), "{error}");
    }

    #[test]
    fn unknown_formats_are_unsupported_events() {
        let plan = parse(b"#include\nhttp://example.com/x\n").unwrap();
        assert_eq!(
            plan.events,
            vec![Event::UnsupportedFormat("#include".into())]
        );
        let plan = parse(b"#cloud-config-archive\n- type: foo\n").unwrap();
        assert_eq!(
            plan.events,
            vec![Event::UnsupportedFormat("#cloud-config-archive".into())]
        );
    }

    fn multipart(parts: &[(&str, &str, &str)]) -> String {
        let mut text = String::from(
            "Content-Type: multipart/mixed; boundary=\"==BOUNDARY==\"\r\nMIME-Version: 1.0\r\n\r\n",
        );
        for (kind, extra, body) in parts {
            text.push_str(&format!(
                "--==BOUNDARY==\r\nContent-Type: {kind}; charset=\"us-ascii\"\r\n{extra}\r\n{body}\r\n"
            ));
        }
        text.push_str("--==BOUNDARY==--\r\n");
        text
    }

    #[test]
    fn mime_multipart_runs_scripts_configs_and_boothooks() {
        let text = multipart(&[
            ("text/cloud-config", "", "#cloud-config\nruncmd: [echo a]\n"),
            (
                "text/x-shellscript",
                "Content-Disposition: attachment; filename=\"setup.sh\"\r\n",
                "#!/bin/sh\necho script",
            ),
            ("text/cloud-boothook", "", "#cloud-boothook\necho early"),
            (
                "text/x-shellscript",
                "Content-Transfer-Encoding: base64\r\n",
                &b64(b"#!/bin/sh\necho encoded\n"),
            ),
            ("text/x-include-url", "", "http://example.com/"),
        ]);
        let plan = parse(text.as_bytes()).unwrap();
        assert_eq!(plan.runcmd, vec![CommandLine::Shell("echo a".into())]);
        assert_eq!(plan.scripts[0].name, "setup.sh");
        assert_eq!(plan.scripts[0].content, b"#!/bin/sh\necho script");
        assert_eq!(plan.scripts[1].content, b"#!/bin/sh\necho encoded\n");
        assert_eq!(plan.boothooks[0].content, b"echo early");
        assert_eq!(
            plan.events,
            vec![Event::UnsupportedPart("text/x-include-url".into())]
        );
    }

    #[test]
    fn a_later_cloud_config_replaces_a_module() {
        let text = multipart(&[
            (
                "text/cloud-config",
                "",
                "#cloud-config\nruncmd: [echo a]\nbootcmd: [echo b]\n",
            ),
            ("text/cloud-config", "", "runcmd: [echo c]\n"),
        ]);
        let plan = parse(text.as_bytes()).unwrap();
        assert_eq!(plan.runcmd, vec![CommandLine::Shell("echo c".into())]);
        assert_eq!(plan.bootcmd, vec![CommandLine::Shell("echo b".into())]);
    }

    #[test]
    fn broken_mime_is_an_error() {
        let error = parse(b"Content-Type: multipart/mixed\n\nbody\n").unwrap_err();
        assert!(error.to_string().contains("without a boundary"), "{error}");
        let error =
            parse(b"Content-Type: multipart/mixed; boundary=x\n\n--x\n\n#!/bin/sh\n").unwrap_err();
        assert!(
            error.to_string().contains("no closing delimiter"),
            "{error}"
        );
        let text = multipart(&[(
            "text/x-shellscript",
            "Content-Transfer-Encoding: quoted-printable\r\n",
            "x",
        )]);
        let error = parse(text.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("quoted-printable"), "{error}");
    }

    #[test]
    fn gzip_inside_a_part_and_nested_multipart() {
        let inner = "Content-Type: multipart/mixed; boundary=inner\n\n--inner\nContent-Type: text/x-shellscript\n\n#!/bin/sh\necho nested\n--inner--\n";
        let text = multipart(&[
            (
                "multipart/mixed; boundary=inner",
                "",
                inner.split_once("\n\n").unwrap().1,
            ),
            (
                "application/gzip",
                "Content-Transfer-Encoding: base64\r\n",
                &b64(&gzip(b"#!/bin/sh\necho zipped\n")),
            ),
        ]);
        let plan = parse(text.as_bytes()).unwrap();
        let contents: Vec<&[u8]> = plan.scripts.iter().map(|s| s.content.as_slice()).collect();
        assert_eq!(
            contents,
            vec![
                b"#!/bin/sh\necho nested".as_slice(),
                b"#!/bin/sh\necho zipped\n"
            ]
        );
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("0644"), Some(0o644));
        assert_eq!(parse_mode("755"), Some(0o755));
        assert_eq!(parse_mode("0o4755"), Some(0o4755));
        assert_eq!(parse_mode("rw"), None);
        assert_eq!(parse_mode("017777"), None);
    }
}
