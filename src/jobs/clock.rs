//! The wall clock as the job store and its documents write it: milliseconds since the
//! Unix epoch, shown as RFC 3339 timestamps.

use crate::base::calendar::{civil_date, put_digits};
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
    match rfc3339_bytes(ms) {
        Some(bytes) => bytes.iter().map(|&b| char::from(b)).collect(),
        None => {
            let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
            humantime::format_rfc3339_millis(time).to_string()
        }
    }
}

/// The first millisecond of the year 10000, which four digits of year cannot show.
const YEAR_10000_MS: i64 = 253_402_300_800_000;

/// [`rfc3339`]'s text as bytes, written without a formatter (a job's document has two
/// or three of them, about 600 instructions each through `humantime`); `None` from the
/// year 10000 on.
pub(crate) fn rfc3339_bytes(ms: i64) -> Option<[u8; 24]> {
    let ms = ms.max(0);
    if ms >= YEAR_10000_MS {
        return None;
    }
    let second = ms / 1000;
    let days = second / 86_400;
    let in_day = second % 86_400;
    let (year, month, day) = civil_date(days);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put =
        |at: usize, width: usize, value: i64| put_digits(&mut out, at, width, value as u64);
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, in_day / 3600);
    put(14, 2, in_day % 3600 / 60);
    put(17, 2, in_day % 60);
    put(20, 3, ms % 1000);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_humantime_s_to_the_byte() {
        let humantime = |ms: i64| {
            let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
            humantime::format_rfc3339_millis(time).to_string()
        };
        let mut samples = vec![
            -5,
            0,
            1,
            999,
            951_782_399_999,
            951_782_400_000,
            951_868_800_000,
            4_102_444_799_999,
            1_765_000_000_123,
            YEAR_10000_MS - 1,
        ];
        // A day's worth of steps over four centuries, leap days and all.
        let mut ms = 0i64;
        while ms < 13_000_000_000_000 {
            samples.push(ms);
            ms += 86_399_937;
        }
        for ms in samples {
            assert_eq!(rfc3339(ms), humantime(ms), "{ms}");
        }
    }
}
