//! The open-file limit: a front end holds a descriptor per client, and the usual soft
//! limit (1024) is far below what a server needs, while the hard limit is usually much
//! higher. Daemons raise the soft limit to the hard one at start.

use std::io;

/// The soft and hard `RLIMIT_NOFILE`, before and after [`raise_to_hard`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The soft limit found at start.
    pub was: u64,
    /// The soft limit now.
    pub now: u64,
    /// The hard limit, which only a privileged process may raise.
    pub hard: u64,
}

/// Raises the soft limit on open files to the hard limit (`RLIM_INFINITY` stands for
/// unlimited, reported as `u64::MAX`).
// rlim_t is u64 on the Linux targets we build, not on every target.
#[allow(clippy::unnecessary_cast)]
pub fn raise_to_hard() -> io::Result<OpenFileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a pointer to a live, writable one.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let was = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one rlimit through a pointer to a live one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(OpenFileLimit {
        was: was as u64,
        now: limit.rlim_cur as u64,
        hard: limit.rlim_max as u64,
    })
}

/// [`raise_to_hard`], logged: a daemon calls this once its configuration is checked.
pub fn raise_and_log() {
    match raise_to_hard() {
        Ok(limit) if limit.now > limit.was => log::info!(
            "open files: soft limit raised from {} to the hard limit, {}",
            limit.was,
            limit.now
        ),
        Ok(limit) => log::info!(
            "open files: limit {} (the hard limit; raise it with LimitNOFILE= or ulimit -Hn)",
            limit.now
        ),
        Err(e) => log::warn!("open files: the limit could not be raised: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let limit = raise_to_hard().expect("getrlimit");
        assert_eq!(limit.now, limit.hard);
        assert!(limit.was <= limit.now);
    }
}
