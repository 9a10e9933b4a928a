//! The broker protocol between a proxy and its peers (the zguide's load-balancing
//! broker, extended): the one-byte tags of the messages workers, worker pools and the
//! front end send a proxy, and the READY frame. The proxy ([`super::proxy`]), the
//! workers ([`super::worker`]), the census ([`super::census`]) and the front end all
//! speak it, so it lives below them all; what each message means is told in
//! [`super::proxy`]'s documentation.

/// Tag of a worker's readiness message.
pub const READY: &[u8] = b"\x01";
/// The size of a READY frame: the tag, the completed count (u64 LE) and the credit (u32
/// LE).
pub const READY_LEN: usize = 13;

/// A worker's READY frame.
pub fn ready_frame(completed: u64, credit: u32) -> [u8; READY_LEN] {
    let mut frame = [0u8; READY_LEN];
    frame[0] = READY[0];
    frame[1..9].copy_from_slice(&completed.to_le_bytes());
    frame[9..].copy_from_slice(&credit.to_le_bytes());
    frame
}

/// Reads a READY frame: the completed count and the credit.
pub fn read_ready(frame: &[u8]) -> Option<(u64, u32)> {
    let frame: &[u8; READY_LEN] = frame.try_into().ok()?;
    let completed = u64::from_le_bytes(frame[1..9].try_into().ok()?);
    let credit = u32::from_le_bytes(frame[9..].try_into().ok()?);
    (frame[0] == READY[0]).then_some((completed, credit))
}

/// Tag of a pool's message listing its busy workers.
pub const BUSY: &[u8] = b"\x02";
/// Tag of a worker's farewell.
pub const GOODBYE: &[u8] = b"\x03";
/// Tag of an upstream peer's status request.
pub const PROBE: &[u8] = b"\x04";
/// Tag of the proxy's status answer.
pub const STATUS: &[u8] = b"\x05";
/// Tag of a job a pool hands back because its worker is stuck in a long job.
pub const RETURN: &[u8] = b"\x06";
/// Tag of a census call (see [`crate::pipeline::census`]), from the front end or a worker pool.
pub const CENSUS: &[u8] = b"\x07";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_frames_round_trip() {
        let frame = ready_frame(u64::MAX - 3, 4);
        assert_eq!(read_ready(&frame), Some((u64::MAX - 3, 4)));
        assert_eq!(read_ready(&frame[..12]), None);
        assert_eq!(read_ready(GOODBYE), None);
        let mut other = frame;
        other[0] = BUSY[0];
        assert_eq!(read_ready(&other), None);
    }
}
