//! Which addresses a callback may reach: the guard against server-side request forgery.
//!
//! A `Callback-URL` makes the server send a request to wherever a client says. Left
//! unguarded, a client could aim it at the server's own host, its private network or a
//! cloud metadata service (`169.254.169.254`). So a callback's host is resolved and
//! every address it resolves to must reach only the public Internet
//! ([`special_purpose`](super::special_purpose): the IANA special-purpose registries,
//! and an IPv6 address that embeds an IPv4 one — 6to4, Teredo, NAT64, ISATAP and the
//! like — judged by the IPv4 address it leads to), unless the operator allowed its
//! network (`--allow-callback-network CIDR`). A refusal names the host, never what it
//! resolved to. The check is made when the
//! job is submitted (a refused URL is answered `400`) and again before each delivery,
//! and the delivery connects to the addresses that passed the check, never to a name
//! resolved anew (which a hostile DNS server could point elsewhere in between).

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// A network given as `address/prefix`, e.g. `127.0.0.0/8` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network's address (bits past the prefix are ignored).
    pub address: IpAddr,
    /// How many leading bits name the network.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address counts as its IPv4
    /// address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_matches(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_matches(net: u128, ip: u128, bits: u8, prefix: u8) -> bool {
    let shift = u32::from(bits.saturating_sub(prefix));
    if shift >= u32::from(bits) {
        return true;
    }
    (net >> shift) == (ip >> shift)
}

impl FromStr for Cidr {
    type Err = String;

    /// Reads `address/prefix`; a bare address is a network of one.
    ///
    /// ```
    /// use prime_server::jobs::ssrf::Cidr;
    /// let loopback: Cidr = "127.0.0.0/8".parse().unwrap();
    /// assert!(loopback.contains("127.1.2.3".parse().unwrap()));
    /// assert!(!loopback.contains("10.0.0.1".parse().unwrap()));
    /// assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = text.split_once('/').unwrap_or((text, ""));
        let address: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a network: expected ADDRESS/PREFIX"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            bits
        } else {
            prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {bits}"))?
        };
        Ok(Cidr { address, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it stands for.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub use super::special_purpose::is_global;

/// Why a callback URL is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallbackError {
    /// Not an absolute `http://` or `https://` URL with a host.
    BadUrl(String),
    /// The host could not be resolved.
    Unresolved {
        /// The host.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// The host is, or resolves to, an address callbacks may not reach. What it
    /// resolved to is not kept: a refusal must not tell a client where a name leads
    /// inside the server's networks.
    Forbidden {
        /// The host, as the URL gives it.
        host: String,
    },
}

impl fmt::Display for CallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallbackError::BadUrl(why) => write!(f, "Callback-URL: {why}"),
            CallbackError::Unresolved { host, reason } => {
                write!(f, "Callback-URL: the host {host} cannot be resolved: {reason}")
            }
            CallbackError::Forbidden { host } => write!(
                f,
                "Callback-URL: the host {host} is not allowed: callbacks go only to public addresses"
            ),
        }
    }
}

impl std::error::Error for CallbackError {}

/// A callback URL that passed the check, with the addresses to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedTarget {
    /// The URL as given.
    pub url: String,
    /// Its host (without brackets for IPv6).
    pub host: String,
    /// The addresses the host resolved to, every one allowed, with the port.
    pub addresses: Vec<SocketAddr>,
}

impl CheckedTarget {
    /// Where a delivery goes, as the per-destination limit counts it: the first
    /// address (the one connected to first) and the port, an IPv4-mapped address as
    /// its IPv4 address, however the URL spells the host.
    pub fn destination(&self) -> SocketAddr {
        let first = self
            .addresses
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        SocketAddr::new(canonical(first.ip()), first.port())
    }
}

/// Which callback addresses are allowed: global ones, and those in the operator's
/// networks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Networks allowed although they are not global (`--allow-callback-network`).
    pub allow: Vec<Cidr>,
}

impl AddressPolicy {
    /// Whether a callback may connect to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        is_global(ip) || self.allow.iter().any(|net| net.contains(ip))
    }

    /// Parses `url`, resolves its host (a blocking call: not for the front end's
    /// loop) and checks every address it resolves to.
    ///
    /// ```
    /// use prime_server::jobs::ssrf::{AddressPolicy, CallbackError};
    /// let policy = AddressPolicy::default();
    /// assert!(matches!(policy.check("http://10.0.0.1/hook"), Err(CallbackError::Forbidden { .. })));
    /// assert!(matches!(policy.check("ftp://example.com/"), Err(CallbackError::BadUrl(_))));
    /// let allowed = AddressPolicy { allow: vec!["127.0.0.0/8".parse().unwrap()] };
    /// assert_eq!(allowed.check("http://127.0.0.1:9/x").unwrap().addresses[0].port(), 9);
    /// ```
    pub fn check(&self, url: &str) -> Result<CheckedTarget, CallbackError> {
        let (host, port) = host_and_port(url)?;
        let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| CallbackError::Unresolved {
                    host: host.clone(),
                    reason: e.to_string(),
                })?
                .collect(),
        };
        if addresses.is_empty() {
            return Err(CallbackError::Unresolved {
                host,
                reason: "no address".into(),
            });
        }
        if addresses.iter().any(|a| !self.allows(a.ip())) {
            return Err(CallbackError::Forbidden { host });
        }
        Ok(CheckedTarget {
            url: url.to_string(),
            host,
            addresses,
        })
    }
}

/// The longest callback URL taken.
pub const MAX_URL: usize = 2048;

/// A callback URL as logs may show it: its origin (RFC 6454 §4: scheme, host and port,
/// e.g. `https://hooks.example:443`), never its path or query, which often carry the
/// receiver's credential. A URL that cannot be read is `(not a callback URL)`.
///
/// ```
/// use prime_server::jobs::ssrf::origin;
/// assert_eq!(origin("https://h.example/hook/SECRET?token=T"), "https://h.example:443");
/// assert_eq!(origin("http://[::1]:8080/x"), "http://[::1]:8080");
/// assert_eq!(origin("nonsense"), "(not a callback URL)");
/// ```
pub fn origin(url: &str) -> String {
    let Ok((scheme, host, port)) = parts(url) else {
        return "(not a callback URL)".to_string();
    };
    if host.contains(':') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// The host (IPv6 without brackets) and port of an `http` or `https` URL. A port must
/// be 1 to 65535 (RFC 3986 §3.2.3 allows any digits; TCP has no port 0); an empty one
/// is the scheme's default.
fn host_and_port(url: &str) -> Result<(String, u16), CallbackError> {
    parts(url).map(|(_, host, port)| (host, port))
}

/// The scheme (lowercase), host and port of an `http` or `https` URL.
fn parts(url: &str) -> Result<(&'static str, String, u16), CallbackError> {
    let bad = |why: &str| CallbackError::BadUrl(why.to_string());
    if url.len() > MAX_URL {
        return Err(bad("longer than 2048 characters"));
    }
    let uri: ureq::http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let (scheme, default_port) = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => ("http", 80),
        Some(s) if s.eq_ignore_ascii_case("https") => ("https", 443),
        _ => return Err(bad("only http:// and https:// URLs are taken")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user information is not taken in a callback URL"));
    }
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad("no host"));
    }
    // The port as written: after the bracketed IPv6 literal, or after the one colon.
    let after_host = match authority.as_str().rfind(']') {
        Some(end) => &authority.as_str()[end + 1..],
        None => authority.as_str(),
    };
    let port = match after_host.rsplit_once(':').map(|(_, port)| port) {
        None | Some("") => default_port,
        Some(digits) => digits
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0 && digits.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| bad("the port must be 1 to 65535"))?,
    };
    Ok((scheme, host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_purpose_addresses_are_not_global() {
        for refused in [
            "0.0.0.0",
            "127.0.0.1",
            "10.1.2.3",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_global(refused.parse().unwrap()), "{refused}");
        }
        for allowed in [
            "1.1.1.1",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
        ] {
            assert!(is_global(allowed.parse().unwrap()), "{allowed}");
        }
    }

    #[test]
    fn urls_are_read_strictly() {
        assert_eq!(
            host_and_port("http://[::1]:8080/x").unwrap(),
            ("::1".to_string(), 8080)
        );
        assert_eq!(
            host_and_port("HTTPS://Example.com/").unwrap(),
            ("Example.com".to_string(), 443)
        );
        for bad in [
            "/relative",
            "file:///etc/passwd",
            "http://user:pw@1.1.1.1/",
            "gopher://x/",
        ] {
            assert!(host_and_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_outside_1_to_65535_are_refused() {
        for bad in [
            "http://1.1.1.1:65536/",
            "http://1.1.1.1:99999/",
            "http://1.1.1.1:0/",
            "http://[2606:4700::1111]:70000/x",
            "https://example.com:18446744073709551696/",
        ] {
            match host_and_port(bad) {
                Err(CallbackError::BadUrl(why)) => assert!(why.contains("port"), "{bad}: {why}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(host_and_port("http://1.1.1.1:65535/").unwrap().1, 65535);
        assert_eq!(host_and_port("http://1.1.1.1:1/").unwrap().1, 1);
        assert_eq!(host_and_port("https://[2606:4700::1111]/").unwrap().1, 443);
    }

    #[test]
    fn a_refusal_names_the_host_and_not_an_address() {
        let refused = AddressPolicy::default()
            .check("http://[2002:7f00:1::1]:8080/hook")
            .unwrap_err();
        assert_eq!(
            refused,
            CallbackError::Forbidden {
                host: "2002:7f00:1::1".into()
            }
        );
        assert!(refused.to_string().contains("not allowed"), "{refused}");
    }

    #[test]
    fn the_origin_leaves_out_path_query_and_user() {
        assert_eq!(
            origin("HTTPS://Hooks.Example/t/SECRET?key=K#f"),
            "https://Hooks.Example:443"
        );
        assert_eq!(
            origin("http://10.0.0.1:8080/SECRET"),
            "http://10.0.0.1:8080"
        );
        assert_eq!(
            origin("http://user:SECRET@h.example/"),
            "(not a callback URL)"
        );
    }

    #[test]
    fn an_allowed_network_opens_only_itself() {
        let policy = AddressPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
        };
        assert!(policy.allows("127.0.0.1".parse().unwrap()));
        assert!(!policy.allows("10.0.0.1".parse().unwrap()));
        assert!(!policy.allows("::1".parse().unwrap()));
        let everything: Cidr = "::/0".parse().unwrap();
        assert!(everything.contains("::1".parse().unwrap()));
    }
}
