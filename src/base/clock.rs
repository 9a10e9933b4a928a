//! The clocks in whole microseconds, for timing on the hot path: the monotonic one for
//! durations, the real-time one for deadlines that cross processes.
//!
//! `Instant::now` and `Instant::duration_since` cost a worker about 110 instructions a
//! job for the two reads and the subtraction of its work-time histogram (the
//! subtraction normalizes seconds and nanoseconds and checks for underflow); a count of
//! microseconds is one subtraction.

/// Microseconds on the monotonic clock (`CLOCK_MONOTONIC`): only differences between
/// two readings mean anything. 0 if the clock cannot be read.
#[inline]
pub fn monotonic_us() -> u64 {
    read_us(libc::CLOCK_MONOTONIC)
}

/// Microseconds since the Unix epoch (`CLOCK_REALTIME`), the clock that processes on
/// different hosts can compare. 0 if the clock cannot be read or reads before the epoch.
#[inline]
pub fn realtime_us() -> u64 {
    read_us(libc::CLOCK_REALTIME)
}

/// One reading of `clock` (clock_gettime(2)) in whole microseconds; 0 if it fails or
/// reads below 0.
#[inline]
fn read_us(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one timespec, which outlives the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut now) };
    if rc != 0 || now.tv_sec < 0 {
        return 0;
    }
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_goes_back_and_follows_instant() {
        let (first, since) = (monotonic_us(), std::time::Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let (second, elapsed) = (monotonic_us(), since.elapsed());
        assert!(second >= first + 2_000, "{first} then {second}");
        // Both read CLOCK_MONOTONIC: the instant read after the first reading and
        // before the second cannot have seen more time pass than the two readings.
        assert!(elapsed.as_micros() as u64 <= second - first + 1);
    }
}
