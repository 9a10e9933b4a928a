//! Listening descriptors the front end opens itself, so that a drain can stop listening
//! and keep the connections it has.
//!
//! libzmq makes every connection accepted through an endpoint a child of that
//! endpoint's listener, so unbinding the endpoint closes them all. So for a TCP endpoint
//! whose host is an address (or `*`), the front end binds the listening socket itself,
//! hands it to libzmq with `ZMQ_USE_FD` and keeps its number. A drain shuts its
//! receiving side down (`shutdown(fd, SHUT_RD)`): Linux stops listening, so new
//! connections are refused (and those still in the backlog, never accepted, are
//! reset), and our libzmq patch (vendor/zeromq-src/PATCHES.md) has the listener stop
//! polling the descriptor and live on with the connections it accepted. Endpoints named
//! by a host or interface name are left to libzmq; a drain then closes their new
//! connections as they arrive.

use crate::base::error::{Error, Result};
use crate::base::sockets;
use socket2::{Domain, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{IntoRawFd, RawFd};

/// A listening descriptor the front end handed to libzmq (which owns and closes it).
pub(crate) struct ListenFd(RawFd);

/// Binds the listening socket of `endpoint` and has `socket`'s next bind use it;
/// `None` when libzmq should bind by itself (not a TCP endpoint with an address, or the
/// bind failed: libzmq then binds and reports the error in its words).
pub(crate) fn open(socket: &mut zmq::Socket, endpoint: &str) -> Option<ListenFd> {
    let address = address(endpoint)?;
    let listener = TcpListener::bind(address).ok()?;
    // libzmq accepts from its I/O thread, which must never block.
    listener.set_nonblocking(true).ok()?;
    let fd = listener.into_raw_fd();
    if let Err(e) = sockets::set_use_fd(socket, fd) {
        log::debug!("{endpoint}: libzmq binds by itself: {e}");
        // SAFETY: `fd` came from `into_raw_fd` just above and was handed to no one.
        unsafe { libc::close(fd) };
        return None;
    }
    Some(ListenFd(fd))
}

/// Like [`open`], but the port is shared with the other sockets bound to it with
/// `SO_REUSEPORT` (other front-end threads or processes on this host): the kernel
/// spreads new connections over them.
///
/// # Errors
/// [`Error::Config`] when `endpoint` is not a TCP endpoint whose host is an address or
/// `*`, or when the socket cannot be bound (the port is taken by a socket that does
/// not share it, or by another user).
pub(crate) fn open_shared(socket: &mut zmq::Socket, endpoint: &str) -> Result<ListenFd> {
    let Some(address) = address(endpoint) else {
        return Err(Error::Config(format!(
            "{endpoint}: a shared port (SO_REUSEPORT, several front ends) needs tcp://ADDRESS:PORT or tcp://*:PORT"
        )));
    };
    let fail = |e: std::io::Error| Error::Config(format!("{endpoint}: binding a shared port: {e}"));
    let listener = Socket::new(Domain::for_address(address), Type::STREAM, None).map_err(fail)?;
    listener.set_reuse_address(true).map_err(fail)?;
    listener.set_reuse_port(true).map_err(fail)?;
    // libzmq accepts from its I/O thread, which must never block.
    listener.set_nonblocking(true).map_err(fail)?;
    listener.bind(&address.into()).map_err(fail)?;
    listener.listen(libc::SOMAXCONN).map_err(fail)?;
    let fd = listener.into_raw_fd();
    if let Err(e) = sockets::set_use_fd(socket, fd) {
        // SAFETY: `fd` came from `into_raw_fd` just above and was handed to no one.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Ok(ListenFd(fd))
}

impl ListenFd {
    /// Stops listening: new connections are refused; the accepted ones live on.
    pub(crate) fn stop(&self, endpoint: &str) {
        // SAFETY: libzmq owns the descriptor and closes it only when the socket is
        // closed, after the drain; shutdown(2) does not free it.
        let rc = unsafe { libc::shutdown(self.0, libc::SHUT_RD) };
        if rc == 0 {
            log::info!("{endpoint}: no longer listening; new connections are refused");
        } else {
            let e = std::io::Error::last_os_error();
            log::warn!("{endpoint}: could not stop listening ({e}); new connections are closed as they arrive");
        }
    }
}

/// The address of `tcp://HOST:PORT` when HOST is an address or `*`.
fn address(endpoint: &str) -> Option<SocketAddr> {
    let (host, port) = endpoint.strip_prefix("tcp://")?.rsplit_once(':')?;
    let port = match port {
        "*" => 0,
        port => port.parse().ok()?,
    };
    let ip = match host {
        "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        host => host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse()
            .ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_wildcards_are_taken_names_are_left_to_libzmq() {
        let at = |s: &str| address(s).map(|a| a.to_string());
        assert_eq!(
            at("tcp://127.0.0.1:8002").as_deref(),
            Some("127.0.0.1:8002")
        );
        assert_eq!(at("tcp://*:*").as_deref(), Some("0.0.0.0:0"));
        assert_eq!(at("tcp://[::1]:80").as_deref(), Some("[::1]:80"));
        assert_eq!(at("tcp://localhost:80"), None);
        assert_eq!(at("tcp://eth0:80"), None);
        assert_eq!(at("ipc:///tmp/x"), None);
    }
}
