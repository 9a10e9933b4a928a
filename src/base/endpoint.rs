//! ZeroMQ endpoints checked before a socket sees them: libzmq reads some bad endpoints
//! as something else (`tcp://127.0.0.1:99999` binds a random port, since the port is
//! cut to 16 bits), and reports others only as a bare `errno`. Here each mistake gets
//! a [`Problem`] a user can act on.

use std::fmt;
use std::net::{IpAddr, ToSocketAddrs};

/// What a socket does with an endpoint: the rules differ (a bound TCP endpoint may use
/// port 0 or `*` for a free port, `*` for every interface, or an interface name; a
/// connected one needs a real host and port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// The socket binds the endpoint.
    Bind,
    /// The socket connects to the endpoint.
    Connect,
}

/// Why an endpoint was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No `TRANSPORT://` in front (e.g. `127.0.0.1:8002`).
    NoTransport,
    /// A transport other than tcp, ipc and inproc.
    UnknownTransport(String),
    /// Nothing after `://`.
    EmptyAddress,
    /// A tcp endpoint without `:PORT`.
    NoPort,
    /// A port that is not a number.
    PortNotNumeric(String),
    /// A port outside 1-65535 (0 and `*` are allowed when binding).
    PortOutOfRange(String),
    /// A host that is not an address, an interface or a name that resolves.
    UnknownHost(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NoTransport => write!(
                f,
                "no transport: expected TRANSPORT://ADDRESS, e.g. tcp://127.0.0.1:8002"
            ),
            Problem::UnknownTransport(t) => {
                write!(f, "unknown transport {t:?}: use tcp, ipc or inproc")
            }
            Problem::EmptyAddress => write!(f, "the address after :// is empty"),
            Problem::NoPort => write!(f, "a tcp endpoint needs HOST:PORT"),
            Problem::PortNotNumeric(p) => write!(f, "the port {p:?} is not a number"),
            Problem::PortOutOfRange(p) => write!(
                f,
                "the port {p} is outside 1-65535 (0 or * picks a free port, when binding)"
            ),
            Problem::UnknownHost(h) => write!(
                f,
                "the host {h:?} is not an IP address, a network interface or a name that resolves"
            ),
        }
    }
}

/// Checks `endpoint` for `usage`: its transport, and for tcp its host and port. A host
/// name is looked up (once, at start), so an unknown host is reported here rather than
/// as a connection that never happens.
pub fn check(endpoint: &str, usage: Use) -> Result<(), Problem> {
    let (transport, address) = endpoint.split_once("://").ok_or(Problem::NoTransport)?;
    if address.is_empty() {
        return Err(Problem::EmptyAddress);
    }
    match transport {
        "tcp" => check_tcp(address, usage),
        "ipc" | "inproc" => Ok(()),
        other => Err(Problem::UnknownTransport(other.to_string())),
    }
}

/// `HOST:PORT`, where a connect may name a source first (`SOURCE;HOST:PORT`).
fn check_tcp(address: &str, usage: Use) -> Result<(), Problem> {
    let address = address.rsplit(';').next().unwrap_or(address);
    let (host, port) = address.rsplit_once(':').ok_or(Problem::NoPort)?;
    let port = parse_port(port, usage)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(Problem::UnknownHost(host.to_string()));
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if usage == Use::Bind && (host == "*" || is_interface(host)) {
        return Ok(());
    }
    let resolves = (host, port.unwrap_or(1))
        .to_socket_addrs()
        .is_ok_and(|mut addrs| addrs.next().is_some());
    if resolves {
        Ok(())
    } else {
        Err(Problem::UnknownHost(host.to_string()))
    }
}

/// For a bind: `endpoint` with a tcp host *name* replaced by the address it resolves
/// to (`tcp://localhost:8002` becomes `tcp://127.0.0.1:8002`), since libzmq reads a
/// bare name in a bind as a network interface and fails with "No such device". An IPv4
/// address is preferred (ZeroMQ sockets speak IPv4 unless told otherwise); an IPv6 one
/// comes in brackets. `None` when there is nothing to resolve (not tcp, an address, `*`
/// or an interface name, which libzmq binds as such) or the name does not resolve
/// ([`check`] reports that as [`Problem::UnknownHost`]).
///
/// ```
/// use prime_server::base::endpoint::bind_address;
/// assert_eq!(bind_address("tcp://localhost:0").as_deref(), Some("tcp://127.0.0.1:0"));
/// assert_eq!(bind_address("tcp://127.0.0.1:8002"), None);
/// assert_eq!(bind_address("tcp://*:*"), None);
/// ```
pub fn bind_address(endpoint: &str) -> Option<String> {
    let address = endpoint.strip_prefix("tcp://")?;
    let (host, port) = address.rsplit_once(':')?;
    if host.is_empty()
        || host == "*"
        || host.contains(['[', ';'])
        || host.parse::<IpAddr>().is_ok()
        || is_interface(host)
    {
        return None;
    }
    let number = match port {
        "*" => 0,
        port => port.parse::<u16>().ok()?,
    };
    let addresses: Vec<IpAddr> = (host, number)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .collect();
    let ip = addresses
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| addresses.first())?;
    Some(match ip {
        IpAddr::V4(ip) => format!("tcp://{ip}:{port}"),
        IpAddr::V6(ip) => format!("tcp://[{ip}]:{port}"),
    })
}

/// The port, or `None` for `*` (a free port, when binding).
fn parse_port(port: &str, usage: Use) -> Result<Option<u16>, Problem> {
    if port == "*" && usage == Use::Bind {
        return Ok(None);
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::PortNotNumeric(port.to_string()));
    }
    let lowest = match usage {
        Use::Bind => 0,
        Use::Connect => 1,
    };
    match port.parse::<u16>() {
        Ok(n) if n >= lowest => Ok(Some(n)),
        _ => Err(Problem::PortOutOfRange(port.to_string())),
    }
}

/// Whether `name` is a network interface of this host (libzmq binds to one by name).
fn is_interface(name: &str) -> bool {
    !name.contains('/') && std::path::Path::new("/sys/class/net").join(name).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_endpoints_pass() {
        for (endpoint, usage) in [
            ("tcp://127.0.0.1:8002", Use::Connect),
            ("tcp://127.0.0.1:0", Use::Bind),
            ("tcp://*:*", Use::Bind),
            ("tcp://lo:8002", Use::Bind),
            ("tcp://[::1]:8002", Use::Connect),
            ("tcp://localhost:8002", Use::Connect),
            ("tcp://127.0.0.1:5000;127.0.0.1:8002", Use::Connect),
            ("ipc:///tmp/x.sock", Use::Bind),
            ("inproc://a", Use::Connect),
        ] {
            assert_eq!(check(endpoint, usage), Ok(()), "{endpoint}");
        }
    }

    #[test]
    fn a_host_name_is_resolved_for_a_bind() {
        assert_eq!(
            bind_address("tcp://localhost:8002").as_deref(),
            Some("tcp://127.0.0.1:8002")
        );
        assert_eq!(
            bind_address("tcp://localhost:*").as_deref(),
            Some("tcp://127.0.0.1:*")
        );
        for unchanged in [
            "tcp://127.0.0.1:1",
            "tcp://[::1]:1",
            "tcp://lo:1",
            "ipc:///x",
        ] {
            assert_eq!(bind_address(unchanged), None, "{unchanged}");
        }
    }

    #[test]
    fn each_mistake_is_named() {
        for (endpoint, usage, problem) in [
            ("127.0.0.1:8002", Use::Bind, Problem::NoTransport),
            (
                "udp://127.0.0.1:8002",
                Use::Bind,
                Problem::UnknownTransport("udp".into()),
            ),
            ("tcp://", Use::Bind, Problem::EmptyAddress),
            ("tcp://127.0.0.1", Use::Bind, Problem::NoPort),
            (
                "tcp://127.0.0.1:99999",
                Use::Bind,
                Problem::PortOutOfRange("99999".into()),
            ),
            (
                "tcp://127.0.0.1:0",
                Use::Connect,
                Problem::PortOutOfRange("0".into()),
            ),
            (
                "tcp://127.0.0.1:http",
                Use::Connect,
                Problem::PortNotNumeric("http".into()),
            ),
            (
                "tcp://127.0.0.1:-1",
                Use::Bind,
                Problem::PortNotNumeric("-1".into()),
            ),
            (
                "tcp://no-such-host.invalid:8002",
                Use::Connect,
                Problem::UnknownHost("no-such-host.invalid".into()),
            ),
            (
                "tcp://*:8002",
                Use::Connect,
                Problem::UnknownHost("*".into()),
            ),
        ] {
            assert_eq!(check(endpoint, usage), Err(problem), "{endpoint}");
        }
    }
}
