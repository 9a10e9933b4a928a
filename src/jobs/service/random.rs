//! Random bytes for job ids, taken from the operating system a kilobyte at a time.
//!
//! A job id needs 18 random bytes; asking the kernel for each (`getrandom(2)`) cost the
//! job thread one system call per submit. The bytes are the kernel's all the same, read
//! ahead into a buffer of the thread's own; each is handed out once and zeroed as it
//! leaves, so what is left in the buffer is only what no id has used yet.

use std::cell::RefCell;

/// How many bytes one `getrandom(2)` reads ahead: 56 job ids' worth.
const POOL: usize = 1008;

thread_local! {
    /// Bytes read ahead and the first one not handed out yet.
    static AHEAD: RefCell<([u8; POOL], usize)> = const { RefCell::new(([0; POOL], POOL)) };
}

/// Fills `out` (at most [`POOL`] bytes) with random bytes from the operating system.
///
/// Errors: the random source's, when the buffer had to be filled again.
pub(super) fn fill(out: &mut [u8]) -> Result<(), getrandom::Error> {
    if out.len() > POOL {
        return getrandom::getrandom(out);
    }
    AHEAD.with_borrow_mut(|(pool, next)| {
        if *next + out.len() > POOL {
            getrandom::getrandom(pool)?;
            *next = 0;
        }
        let taken = &mut pool[*next..*next + out.len()];
        out.copy_from_slice(taken);
        taken.fill(0);
        *next += out.len();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_bytes_are_handed_out_twice_across_refills() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut id = [0u8; 18];
            fill(&mut id).expect("random bytes");
            assert!(seen.insert(id), "the same 18 bytes twice");
        }
        let mut big = [0u8; POOL + 1];
        fill(&mut big).expect("random bytes");
        assert!(big.iter().any(|&b| b != 0));
    }
}
