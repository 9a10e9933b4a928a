//! The wall clock as the job store and its documents write it: milliseconds since the
//! Unix epoch, shown as RFC 3339 timestamps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock reads before it).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

/// `ms` (milliseconds since the Unix epoch) as an RFC 3339 timestamp with milliseconds
/// (`2026-12-05T13:30:00.000Z`); a time before the epoch reads as the epoch.
pub(crate) fn rfc3339(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}
