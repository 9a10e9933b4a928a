//! Closing a test client's connection with a reset (RST), as a client that goes away
//! abruptly does. A plain close sends a FIN, which says only that the client has
//! finished sending: the server still answers its requests (RFC 9293 §3.6).

use std::net::TcpStream;
use std::os::fd::AsRawFd;

/// Sets SO_LINGER to 0 and closes `stream`: the kernel sends a reset.
pub fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads one `linger` of the size given, from a live value, on a
    // descriptor `stream` owns.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}
