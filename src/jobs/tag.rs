//! Job ids in logs. A job id is a capability (whoever has it reads the job's result),
//! so logs carry a tag of it instead: `~` and the first 4 bytes of its SHA-256 in hex,
//! enough to follow one job through the lines and impossible to turn back into the id
//! (the id has 120 random bits of its own). An operator given an id finds its lines by computing
//! the tag: `printf %s ID | sha256sum | cut -c1-8`.

use sha2::Digest;
use std::fmt;

/// The tag of a job id, as written in logs: `~` and 8 hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct JobTag([u8; 9]);

impl JobTag {
    /// The tag's text, as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for JobTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only `~` and hex digits are ever written.
        f.write_str(std::str::from_utf8(&self.0).unwrap_or("~"))
    }
}

impl fmt::Debug for JobTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The tag of a job id (or of any text taken where an id goes).
///
/// ```
/// let tag = prime_server::jobs::tag::job_tag(b"Yx0rZ2D8Qw9n3hKq1LmN4A");
/// assert_eq!(tag.to_string().len(), 9);
/// assert!(!tag.to_string().contains("Yx0r"));
/// ```
pub fn job_tag(id: &[u8]) -> JobTag {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = sha2::Sha256::digest(id);
    let mut out = [b'~'; 9];
    for (i, byte) in digest.iter().take(4).enumerate() {
        out[1 + 2 * i] = HEX[usize::from(byte >> 4)];
        out[2 + 2 * i] = HEX[usize::from(byte & 15)];
    }
    JobTag(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tag_is_the_start_of_the_ids_sha256() {
        // printf %s abc | sha256sum: ba7816bf...
        assert_eq!(super::job_tag(b"abc").to_string(), "~ba7816bf");
    }
}
