//! The data an instance's metadata service answers with —
//! [`InstanceMetadata`] — and the [`MetadataSource`] trait through which the
//! cloud's backend hands the service the instance a caller belongs to.
//!
//! This module holds data and one lookup; it knows nothing of HTTP or of how
//! instances are stored. The identity document (the JSON the cloud signs) is
//! built here so that its bytes are defined in one place.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use crate::Caller;

/// Everything the metadata service tells one instance about itself.
#[derive(Clone, PartialEq, Eq)]
pub struct InstanceMetadata {
    /// `i-…`.
    pub instance_id: String,
    /// `ami-…`: the image the instance was launched from.
    pub ami_id: String,
    /// `t3.micro` and the like.
    pub instance_type: String,
    /// The instance's own address (a 127.x.y.z in the process backend).
    pub local_ipv4: Ipv4Addr,
    /// Served as both `hostname` and `local-hostname`.
    pub hostname: String,
    /// `us-east-1a` and the like.
    pub availability_zone: String,
    /// `us-east-1` and the like.
    pub region: String,
    /// The 12-digit account id of the identity document.
    pub account_id: String,
    /// `x86_64` or `arm64`, as the identity document spells it.
    pub architecture: String,
    /// When the instance was launched (the identity document's
    /// `pendingTime`, to the second, in UTC).
    pub pending_time: OffsetDateTime,
    /// The instance's tags. Served under `meta-data/tags/instance/` only
    /// when [`Self::tags_in_metadata`] is set (EC2's
    /// `InstanceMetadataTags=enabled`), and then only the keys EC2 allows
    /// there (see [`is_servable_tag_key`]).
    pub tags: BTreeMap<String, String>,
    /// Whether tags are served at all.
    pub tags_in_metadata: bool,
    /// The user data bytes, as launched (`/latest/user-data` is 404 when
    /// `None`). Never printed by `Debug`.
    pub user_data: Option<Vec<u8>>,
    /// `HttpTokens=required`: refuse requests without an IMDSv2 token.
    pub tokens_required: bool,
    /// `HttpPutResponseHopLimit`. Kept for the backend's bookkeeping and for
    /// `DescribeInstances`; not enforced, because every caller reaches this
    /// service over loopback where the IP TTL carries no hop information.
    pub hop_limit: u8,
}

impl fmt::Debug for InstanceMetadata {
    /// User data may hold secrets (see ARCHITECTURE.md, "secrets are
    /// references"): its length is shown, never its bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceMetadata")
            .field("instance_id", &self.instance_id)
            .field("ami_id", &self.ami_id)
            .field("instance_type", &self.instance_type)
            .field("local_ipv4", &self.local_ipv4)
            .field("hostname", &self.hostname)
            .field("availability_zone", &self.availability_zone)
            .field("region", &self.region)
            .field("account_id", &self.account_id)
            .field("architecture", &self.architecture)
            .field("pending_time", &self.pending_time)
            .field("tags", &self.tags)
            .field("tags_in_metadata", &self.tags_in_metadata)
            .field(
                "user_data",
                &self
                    .user_data
                    .as_ref()
                    .map(|bytes| format!("<{} bytes>", bytes.len())),
            )
            .field("tokens_required", &self.tokens_required)
            .field("hop_limit", &self.hop_limit)
            .finish()
    }
}

/// Whether EC2 would serve a tag under `meta-data/tags/instance/`: keys with
/// a space or a `/`, and the keys `.`, `..` and `_index`, are not served
/// (nor listed). An empty key is not a path segment either.
pub fn is_servable_tag_key(key: &str) -> bool {
    !key.is_empty()
        && !key.contains(' ')
        && !key.contains('/')
        && !matches!(key, "." | ".." | "_index")
}

/// The instance identity document, field for field as EC2 serves it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IdentityDocument<'a> {
    account_id: &'a str,
    architecture: &'a str,
    availability_zone: &'a str,
    billing_products: Option<()>,
    devpay_product_codes: Option<()>,
    marketplace_product_codes: Option<()>,
    image_id: &'a str,
    instance_id: &'a str,
    instance_type: &'a str,
    kernel_id: Option<()>,
    pending_time: String,
    private_ip: String,
    ramdisk_id: Option<()>,
    region: &'a str,
    version: &'a str,
}

/// The identity document's `version`, the one EC2 serves today.
const IDENTITY_DOCUMENT_VERSION: &str = "2017-09-30";

impl InstanceMetadata {
    /// The instance identity document's bytes: pretty-printed JSON like
    /// EC2's, with `null` for the fields endstate has no use for (billing
    /// and marketplace codes, kernel and ramdisk). These exact bytes are
    /// what [`Signer::sign`](crate::Signer::sign) signs.
    pub fn identity_document(&self) -> Vec<u8> {
        let document = IdentityDocument {
            account_id: &self.account_id,
            architecture: &self.architecture,
            availability_zone: &self.availability_zone,
            billing_products: None,
            devpay_product_codes: None,
            marketplace_product_codes: None,
            image_id: &self.ami_id,
            instance_id: &self.instance_id,
            instance_type: &self.instance_type,
            kernel_id: None,
            pending_time: format_pending_time(self.pending_time),
            private_ip: self.local_ipv4.to_string(),
            ramdisk_id: None,
            region: &self.region,
            version: IDENTITY_DOCUMENT_VERSION,
        };
        // Serializing a struct of strings and unit options into memory
        // cannot fail; an empty document would be refused by any verifier.
        serde_json::to_vec_pretty(&document).unwrap_or_default()
    }
}

/// `2016-11-19T16:32:11Z`: EC2's form, whole seconds in UTC.
fn format_pending_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Where the metadata service finds the instance a caller belongs to. The
/// process backend implements it over its instance table (by the uid the
/// instance runs as, and/or by the listener address allocated to it).
pub trait MetadataSource: Send + Sync + 'static {
    /// The instance `caller` belongs to, or `None` if it belongs to none.
    /// Called once per request: the answer reflects the instance as it is
    /// now (tags changed by CreateTags show at once).
    fn lookup(&self, caller: &Caller) -> Option<Arc<InstanceMetadata>>;
}

impl<F> MetadataSource for F
where
    F: Fn(&Caller) -> Option<Arc<InstanceMetadata>> + Send + Sync + 'static,
{
    fn lookup(&self, caller: &Caller) -> Option<Arc<InstanceMetadata>> {
        self(caller)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> InstanceMetadata {
        InstanceMetadata {
            instance_id: "i-0123456789abcdef0".into(),
            ami_id: "ami-0abcdef1234567890".into(),
            instance_type: "t3.micro".into(),
            local_ipv4: Ipv4Addr::new(127, 0, 10, 2),
            hostname: "ip-127-0-10-2.ec2.internal".into(),
            availability_zone: "us-east-1a".into(),
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            architecture: "x86_64".into(),
            pending_time: time::macros::datetime!(2026-11-27 16:32:11.250 UTC),
            tags: BTreeMap::new(),
            tags_in_metadata: true,
            user_data: Some(b"password=hunter2".to_vec()),
            tokens_required: false,
            hop_limit: 1,
        }
    }

    #[test]
    fn identity_document_has_ec2s_fields() {
        let bytes = sample().identity_document();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "accountId",
            "architecture",
            "availabilityZone",
            "billingProducts",
            "devpayProductCodes",
            "imageId",
            "instanceId",
            "instanceType",
            "kernelId",
            "marketplaceProductCodes",
            "pendingTime",
            "privateIp",
            "ramdiskId",
            "region",
            "version",
        ];
        let mut keys = keys;
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(value["pendingTime"], "2026-11-27T16:32:11Z");
        assert_eq!(value["privateIp"], "127.0.10.2");
        assert_eq!(value["imageId"], "ami-0abcdef1234567890");
        assert!(value["kernelId"].is_null());
    }

    #[test]
    fn debug_never_shows_user_data() {
        let shown = format!("{:?}", sample());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<16 bytes>"), "{shown}");
    }

    #[test]
    fn tag_keys_ec2_does_not_serve() {
        for key in ["Name", "team-a", "a.b", "x_index"] {
            assert!(is_servable_tag_key(key), "{key}");
        }
        for key in ["", "with space", "a/b", ".", "..", "_index"] {
            assert!(!is_servable_tag_key(key), "{key}");
        }
    }
}
