//! Wall-clock timestamps in the two formats the runtime writes: RFC 3339
//! (status.json) and RFC 2822 (cloud-init's console banners). Nothing else.

use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::OffsetDateTime;

/// Now, UTC, as `2026-11-27T18:00:00.123Z`.
pub fn now_rfc3339() -> String {
    // Formatting a UTC time with a well-known format cannot fail for years 0..=9999.
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Now, UTC, as `Fri, 27 Nov 2026 18:00:00 +0000`.
pub fn now_rfc2822() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc2822)
        .unwrap_or_default()
}
