//! The metadata tree: which paths exist for an instance and what each
//! answers. A path is either a directory (listed one entry per line,
//! sub-directories with a trailing `/`) or a leaf (its bytes).
//!
//! Pure: no HTTP, no tokens, no identity — the service decides *whether* to
//! answer, this module decides *what*. Both `dir/` and `dir` list a
//! directory, and `leaf/` answers like `leaf` (botocore asks for
//! `placement/availability-zone/`).

use crate::metadata::is_servable_tag_key;
use crate::{InstanceMetadata, Signer};

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// A directory's entries, sub-directories ending in `/`.
    Dir(Vec<String>),
    /// A value.
    Leaf(Vec<u8>),
}

impl Node {
    /// The response body: a listing's entries joined by newlines (no
    /// trailing newline, as EC2 does), or the value's bytes.
    pub(crate) fn into_body(self) -> Vec<u8> {
        match self {
            Node::Dir(entries) => entries.join("\n").into_bytes(),
            Node::Leaf(bytes) => bytes,
        }
    }
}

fn dir(entries: &[&str]) -> Option<Node> {
    Some(Node::Dir(entries.iter().map(|e| (*e).to_owned()).collect()))
}

fn leaf(value: impl Into<Vec<u8>>) -> Option<Node> {
    Some(Node::Leaf(value.into()))
}

/// The node at `path` (a request's path, e.g. `/latest/meta-data/ami-id`)
/// for `instance`, or `None` if there is none (404).
pub(crate) fn resolve(path: &str, instance: &InstanceMetadata, signer: &Signer) -> Option<Node> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return dir(&["latest/"]);
    }
    let mut segments = trimmed.strip_prefix('/')?.split('/');
    if segments.next()? != "latest" {
        return None;
    }
    let segments: Vec<&str> = segments.collect();
    match segments.as_slice() {
        [] => {
            let mut entries = vec!["dynamic/", "meta-data/"];
            if instance.user_data.is_some() {
                entries.push("user-data");
            }
            dir(&entries)
        }
        ["meta-data", rest @ ..] => meta_data(rest, instance),
        ["dynamic", rest @ ..] => dynamic(rest, instance, signer),
        ["user-data"] => instance.user_data.clone().map(Node::Leaf),
        _ => None,
    }
}

fn meta_data(segments: &[&str], instance: &InstanceMetadata) -> Option<Node> {
    match segments {
        [] => {
            let mut entries = vec![
                "ami-id",
                "hostname",
                "instance-id",
                "instance-type",
                "local-hostname",
                "local-ipv4",
                "placement/",
            ];
            if instance.tags_in_metadata {
                entries.push("tags/");
            }
            dir(&entries)
        }
        ["ami-id"] => leaf(instance.ami_id.as_str()),
        ["hostname"] | ["local-hostname"] => leaf(instance.hostname.as_str()),
        ["instance-id"] => leaf(instance.instance_id.as_str()),
        ["instance-type"] => leaf(instance.instance_type.as_str()),
        ["local-ipv4"] => leaf(instance.local_ipv4.to_string()),
        ["placement"] => dir(&["availability-zone", "region"]),
        ["placement", "availability-zone"] => leaf(instance.availability_zone.as_str()),
        ["placement", "region"] => leaf(instance.region.as_str()),
        ["tags", rest @ ..] if instance.tags_in_metadata => tags(rest, instance),
        _ => None,
    }
}

fn tags(segments: &[&str], instance: &InstanceMetadata) -> Option<Node> {
    match segments {
        [] => dir(&["instance/"]),
        ["instance"] => Some(Node::Dir(
            instance
                .tags
                .keys()
                .filter(|key| is_servable_tag_key(key))
                .cloned()
                .collect(),
        )),
        ["instance", key] if is_servable_tag_key(key) => instance
            .tags
            .get(*key)
            .map(|v| Node::Leaf(v.clone().into())),
        _ => None,
    }
}

fn dynamic(segments: &[&str], instance: &InstanceMetadata, signer: &Signer) -> Option<Node> {
    match segments {
        [] => dir(&["instance-identity/"]),
        ["instance-identity"] => dir(&["document", "pkcs7", "signature"]),
        ["instance-identity", "document"] => leaf(instance.identity_document()),
        ["instance-identity", "signature"] => leaf(signer.sign(&instance.identity_document())),
        ["instance-identity", "pkcs7"] => leaf(signer.seal(&instance.identity_document())),
        // endstate's own leaf, not EC2's: the caller's nonce signed with the
        // instance id, which only a process of the instance can obtain.
        ["instance-identity", "nonce", nonce] if crate::signer::is_valid_nonce(nonce) => {
            leaf(signer.sign_nonce(&instance.instance_id, nonce))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::tests::sample;

    fn body(path: &str, instance: &InstanceMetadata) -> Option<String> {
        let signer = Signer::from_bytes(&[3u8; 32]);
        resolve(path, instance, &signer).map(|n| String::from_utf8(n.into_body()).unwrap())
    }

    #[test]
    fn the_tree() {
        let mut instance = sample();
        instance.tags = [
            ("Name", "web-1"),
            ("with space", "x"),
            ("_index", "x"),
            (".", "x"),
            ("..", "x"),
            ("team", "a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let cases: &[(&str, Option<&str>)] = &[
            ("/", Some("latest/")),
            ("/latest", Some("dynamic/\nmeta-data/\nuser-data")),
            ("/latest/", Some("dynamic/\nmeta-data/\nuser-data")),
            (
                "/latest/meta-data/",
                Some(
                    "ami-id\nhostname\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nplacement/\ntags/",
                ),
            ),
            ("/latest/meta-data/instance-id", Some("i-0123456789abcdef0")),
            ("/latest/meta-data/ami-id", Some("ami-0abcdef1234567890")),
            ("/latest/meta-data/instance-type", Some("t3.micro")),
            ("/latest/meta-data/local-ipv4", Some("127.0.10.2")),
            ("/latest/meta-data/hostname", Some("ip-127-0-10-2.ec2.internal")),
            ("/latest/meta-data/local-hostname", Some("ip-127-0-10-2.ec2.internal")),
            ("/latest/meta-data/placement/", Some("availability-zone\nregion")),
            ("/latest/meta-data/placement/availability-zone", Some("us-east-1a")),
            ("/latest/meta-data/placement/availability-zone/", Some("us-east-1a")),
            ("/latest/meta-data/placement/region", Some("us-east-1")),
            ("/latest/meta-data/tags/", Some("instance/")),
            ("/latest/meta-data/tags/instance/", Some("Name\nteam")),
            ("/latest/meta-data/tags/instance/Name", Some("web-1")),
            ("/latest/meta-data/tags/instance/_index", None),
            ("/latest/meta-data/tags/instance/missing", None),
            ("/latest/meta-data/nothing", None),
            ("/latest/meta-data/instance-id/more", None),
            ("/latest/user-data", Some("password=hunter2")),
            ("/latest/dynamic/", Some("instance-identity/")),
            (
                "/latest/dynamic/instance-identity/",
                Some("document\npkcs7\nsignature"),
            ),
            ("/latest/nothing", None),
            ("/2009-04-04/meta-data/", None),
            ("latest", None),
        ];
        for (path, expected) in cases {
            assert_eq!(body(path, &instance).as_deref(), *expected, "{path}");
        }
    }

    #[test]
    fn a_nonce_is_signed_with_the_instance_id() {
        let instance = sample();
        let signer = Signer::from_bytes(&[3u8; 32]);
        let nonce = "0123456789abcdef-_";
        let body = body(
            &format!("/latest/dynamic/instance-identity/nonce/{nonce}"),
            &instance,
        )
        .unwrap();
        crate::verify_nonce(
            &instance.instance_id,
            nonce,
            &body,
            &signer.public_key_bytes(),
        )
        .unwrap();
        assert_eq!(
            body_of("/latest/dynamic/instance-identity/nonce/short", &instance),
            None
        );
    }

    fn body_of(path: &str, instance: &InstanceMetadata) -> Option<String> {
        body(path, instance)
    }

    #[test]
    fn no_user_data_no_entry() {
        let mut instance = sample();
        instance.user_data = None;
        assert_eq!(body("/latest/user-data", &instance), None);
        assert_eq!(
            body("/latest/", &instance).as_deref(),
            Some("dynamic/\nmeta-data/")
        );
    }

    #[test]
    fn tags_off_no_tags() {
        let mut instance = sample();
        instance.tags_in_metadata = false;
        instance.tags.insert("Name".into(), "web-1".into());
        assert_eq!(
            body("/latest/meta-data/tags/instance/Name", &instance),
            None
        );
        assert!(!body("/latest/meta-data/", &instance)
            .unwrap()
            .contains("tags/"));
    }
}
