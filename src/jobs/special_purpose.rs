//! What an IP address reaches: the IANA special-purpose address registries (IPv4 and
//! IPv6, RFC 6890 and the RFCs each entry names) and the IPv6 forms that carry an IPv4
//! address inside (IPv4-mapped and -compatible, NAT64, 6to4, Teredo, ISATAP), as one
//! table per family. The SSRF guard ([`ssrf`](super::ssrf)) asks [`is_global`].
//!
//! No kept crate covers this: `ip_network` judges neither the embedded forms nor the
//! newer registry entries, `ipnet` and `iprange` classify nothing. So the registries
//! are copied here, an entry a line, with its RFC; the most specific entry holding an
//! address decides (e.g. `2001:3::/32`, AMT, is global inside `2001::/23`, which is
//! not). An address that embeds IPv4 addresses is judged by those addresses: it is
//! global only when every one of them is, since a relay or translator carries the
//! connection there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What the addresses of a range reach.
#[derive(Clone, Copy, Debug)]
pub enum Reach {
    /// Only this host, its link, its site, or nothing ("Globally Reachable: False"):
    /// never a callback's destination.
    Local,
    /// The Internet: a special-purpose range the registry marks globally reachable
    /// (anycast services, AS112, AMT).
    Global,
    /// Wherever the IPv4 addresses embedded in it lead (the function finds them).
    Embeds(fn(Ipv6Addr) -> Vec<Ipv4Addr>),
}

/// One range of a registry.
#[derive(Clone, Copy, Debug)]
pub struct Range<A> {
    /// The range's first address.
    pub network: A,
    /// Its prefix length, in bits.
    pub prefix: u8,
    /// The registry's name for it.
    pub name: &'static str,
    /// The RFC that defines it.
    pub rfc: &'static str,
    /// What its addresses reach.
    pub reach: Reach,
}

const fn v4(
    network: [u8; 4],
    prefix: u8,
    name: &'static str,
    rfc: &'static str,
    reach: Reach,
) -> Range<Ipv4Addr> {
    Range {
        network: Ipv4Addr::new(network[0], network[1], network[2], network[3]),
        prefix,
        name,
        rfc,
        reach,
    }
}

const fn v6(
    network: [u16; 8],
    prefix: u8,
    name: &'static str,
    rfc: &'static str,
    reach: Reach,
) -> Range<Ipv6Addr> {
    let [a, b, c, d, e, f, g, h] = network;
    Range {
        network: Ipv6Addr::new(a, b, c, d, e, f, g, h),
        prefix,
        name,
        rfc,
        reach,
    }
}

use Reach::{Embeds, Global, Local};

/// The IPv4 special-purpose registry, with multicast (RFC 5771) and the reserved
/// `240.0.0.0/4`. An address in none of them is global.
#[rustfmt::skip]
pub const IPV4: &[Range<Ipv4Addr>] = &[
    v4([0, 0, 0, 0], 8, "this network", "RFC 791 §3.2", Local),
    v4([0, 0, 0, 0], 32, "this host on this network", "RFC 1122 §3.2.1.3", Local),
    v4([10, 0, 0, 0], 8, "private use", "RFC 1918", Local),
    v4([100, 64, 0, 0], 10, "shared address space", "RFC 6598", Local),
    v4([127, 0, 0, 0], 8, "loopback", "RFC 1122 §3.2.1.3", Local),
    v4([169, 254, 0, 0], 16, "link local", "RFC 3927", Local),
    v4([172, 16, 0, 0], 12, "private use", "RFC 1918", Local),
    v4([192, 0, 0, 0], 24, "IETF protocol assignments", "RFC 6890 §2.1", Local),
    v4([192, 0, 0, 0], 29, "IPv4 service continuity prefix", "RFC 7335", Local),
    v4([192, 0, 0, 8], 32, "IPv4 dummy address", "RFC 7600", Local),
    v4([192, 0, 0, 9], 32, "Port Control Protocol anycast", "RFC 7723", Global),
    v4([192, 0, 0, 10], 32, "Traversal Using Relays around NAT anycast", "RFC 8155", Global),
    v4([192, 0, 0, 170], 32, "NAT64/DNS64 discovery", "RFC 8880 §7.2", Local),
    v4([192, 0, 0, 171], 32, "NAT64/DNS64 discovery", "RFC 8880 §7.2", Local),
    v4([192, 0, 2, 0], 24, "documentation (TEST-NET-1)", "RFC 5737", Local),
    v4([192, 31, 196, 0], 24, "AS112-v4", "RFC 7535", Global),
    v4([192, 52, 193, 0], 24, "AMT", "RFC 7450", Global),
    v4([192, 88, 99, 0], 24, "deprecated 6to4 relay anycast", "RFC 7526", Local),
    v4([192, 168, 0, 0], 16, "private use", "RFC 1918", Local),
    v4([192, 175, 48, 0], 24, "direct delegation AS112 service", "RFC 7534", Global),
    v4([198, 18, 0, 0], 15, "benchmarking", "RFC 2544", Local),
    v4([198, 51, 100, 0], 24, "documentation (TEST-NET-2)", "RFC 5737", Local),
    v4([203, 0, 113, 0], 24, "documentation (TEST-NET-3)", "RFC 5737", Local),
    v4([224, 0, 0, 0], 4, "multicast", "RFC 5771", Local),
    v4([240, 0, 0, 0], 4, "reserved", "RFC 1112 §4", Local),
    v4([255, 255, 255, 255], 32, "limited broadcast", "RFC 8190, RFC 919 §7", Local),
];

/// The IPv6 special-purpose registry, with the deprecated forms still routed by some
/// stacks (IPv4-compatible, site-local) and multicast. An address in none of them is
/// global when it is in `2000::/3` (global unicast, RFC 4291 §2.4), else not (the
/// rest of the space is unassigned).
#[rustfmt::skip]
pub const IPV6: &[Range<Ipv6Addr>] = &[
    v6([0; 8], 128, "unspecified address", "RFC 4291 §2.5.2", Local),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback address", "RFC 4291 §2.5.3", Local),
    v6([0; 8], 96, "IPv4-compatible (deprecated)", "RFC 4291 §2.5.5.1", Embeds(last_32_bits)),
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96, "IPv4-mapped", "RFC 4291 §2.5.5.2", Embeds(last_32_bits)),
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "IPv4-IPv6 translation (NAT64)", "RFC 6052 §2.1", Embeds(last_32_bits)),
    // Local use (a translator of this site's own): not globally reachable, whatever the
    // IPv4 address inside. An operator who runs one allows it with
    // --allow-callback-network 64:ff9b:1::/48.
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "local-use IPv4/IPv6 translation", "RFC 8215", Local),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only", "RFC 6666", Local),
    v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64, "dummy IPv6 prefix", "RFC 9780", Local),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, "IETF protocol assignments", "RFC 2928", Local),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "Teredo", "RFC 4380 §4", Embeds(teredo)),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 1], 128, "Port Control Protocol anycast", "RFC 7723", Global),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 2], 128, "Traversal Using Relays around NAT anycast", "RFC 8155", Global),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 3], 128, "DNS-SD service registration protocol anycast", "RFC 9665", Global),
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, "benchmarking", "RFC 5180", Local),
    v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32, "AMT", "RFC 7450", Global),
    v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48, "AS112-v6", "RFC 7535", Global),
    v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, "ORCHID (deprecated)", "RFC 4843", Local),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, "ORCHIDv2", "RFC 7343", Global),
    v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28, "drone remote ID entity tags", "RFC 9374", Global),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation", "RFC 3849", Local),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4", "RFC 3056 §2", Embeds(six_to_four)),
    v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48, "direct delegation AS112 service", "RFC 7534", Global),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation", "RFC 9637", Local),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "segment routing (SRv6) SIDs", "RFC 9602", Local),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local", "RFC 4193", Local),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local unicast", "RFC 4291 §2.5.6", Local),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local unicast (deprecated)", "RFC 3879", Local),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast", "RFC 4291 §2.7", Local),
];

/// The last 32 bits as an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 `/96`).
fn last_32_bits(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let o = ip.octets();
    vec![Ipv4Addr::new(o[12], o[13], o[14], o[15])]
}

/// 6to4 (RFC 3056 §2): `2002:V4ADDR::/48`, the IPv4 address in bits 16 to 47.
fn six_to_four(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let o = ip.octets();
    vec![Ipv4Addr::new(o[2], o[3], o[4], o[5])]
}

/// Teredo (RFC 4380 §4): the server's IPv4 address in bits 32 to 63 and the client's
/// public one, every bit inverted, in the last 32; the connection goes to both.
fn teredo(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let o = ip.octets();
    vec![
        Ipv4Addr::new(o[4], o[5], o[6], o[7]),
        Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]),
    ]
}

/// ISATAP (RFC 5214 §6.1): an interface identifier `0000:5efe` or `0200:5efe` (the
/// u/l and group bits may be set) followed by an IPv4 address, under any prefix.
fn isatap(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    (s[4] & 0xfcff == 0 && s[5] == 0x5efe).then(|| {
        let o = ip.octets();
        Ipv4Addr::new(o[12], o[13], o[14], o[15])
    })
}

/// The most specific range of `table` holding `ip` (`bits` turns an address into a
/// number of `width` bits).
fn most_specific<A: Copy>(
    table: &'static [Range<A>],
    ip: A,
    width: u32,
    bits: impl Fn(A) -> u128,
) -> Option<&'static Range<A>> {
    let ip = bits(ip);
    table
        .iter()
        .filter(|range| {
            let shift = width - u32::from(range.prefix);
            shift >= width || (bits(range.network) >> shift) == (ip >> shift)
        })
        .max_by_key(|range| range.prefix)
}

fn v4_bits(ip: Ipv4Addr) -> u128 {
    u128::from(u32::from(ip))
}

/// Whether connecting to `ip` reaches only the public Internet: not this host, its
/// networks, documentation or reserved space, nor (through an embedded IPv4 address)
/// any of those.
///
/// ```
/// use prime_server::jobs::special_purpose::is_global;
/// assert!(is_global("1.1.1.1".parse().unwrap()));
/// assert!(is_global("2606:4700::1111".parse().unwrap()));
/// // 6to4, Teredo and NAT64 forms of 127.0.0.1 reach 127.0.0.1.
/// for refused in ["2002:7f00:1::1", "2001:0:4136:e378:8000:63bf:80ff:fffe", "64:ff9b::7f00:1"] {
///     assert!(!is_global(refused.parse().unwrap()), "{refused}");
/// }
/// ```
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    match most_specific(IPV4, ip, 32, v4_bits) {
        None | Some(Range { reach: Global, .. }) => true,
        Some(_) => false,
    }
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let by_range = match most_specific(IPV6, ip, 128, u128::from) {
        Some(Range { reach: Local, .. }) => false,
        Some(Range { reach: Global, .. }) => true,
        Some(Range {
            reach: Embeds(embedded),
            ..
        }) => embedded(ip).into_iter().all(is_global_v4),
        None => ip.segments()[0] & 0xe000 == 0x2000,
    };
    by_range && isatap(ip).is_none_or(is_global_v4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_and_last<A: Copy>(
        range: &Range<A>,
        bits: impl Fn(A) -> u128,
        width: u32,
    ) -> (u128, u128) {
        let first = bits(range.network);
        let host_bits = width - u32::from(range.prefix);
        let mask = if host_bits == 0 {
            0
        } else {
            (1u128 << host_bits) - 1
        };
        (first, first | mask)
    }

    /// Every local range refuses its first and last address, every global range takes
    /// them (the embedding ranges have their own test).
    #[test]
    fn each_range_judges_its_first_and_last_address() {
        for range in IPV4 {
            let (first, last) = first_and_last(range, v4_bits, 32);
            for ip in [first, last] {
                let ip = IpAddr::V4(Ipv4Addr::from(ip as u32));
                let global = matches!(range.reach, Global);
                assert_eq!(
                    is_global(ip),
                    global,
                    "{ip} in {} ({})",
                    range.name,
                    range.rfc
                );
            }
        }
        for range in IPV6 {
            if matches!(range.reach, Embeds(_)) {
                continue;
            }
            let (first, last) = first_and_last(range, u128::from, 128);
            for ip in [first, last] {
                let ip = IpAddr::V6(Ipv6Addr::from(ip));
                let global = matches!(range.reach, Global);
                assert_eq!(
                    is_global(ip),
                    global,
                    "{ip} in {} ({})",
                    range.name,
                    range.rfc
                );
            }
        }
    }

    fn judged(cases: &[(&str, bool)]) {
        for (ip, global) in cases {
            let parsed: IpAddr = ip.parse().expect("an address");
            assert_eq!(is_global(parsed), *global, "{ip}");
        }
    }

    #[test]
    fn ipv4_special_purpose_ranges() {
        judged(&[
            ("0.1.2.3", false),         // RFC 791
            ("10.255.0.1", false),      // RFC 1918
            ("100.64.0.1", false),      // RFC 6598
            ("100.127.255.255", false), // RFC 6598
            ("100.128.0.1", true),      // just past it
            ("127.0.0.1", false),       // RFC 1122
            ("169.254.169.254", false), // RFC 3927, the cloud metadata service
            ("172.16.0.1", false),      // RFC 1918
            ("172.32.0.1", true),       // just past it
            ("192.0.0.1", false),       // RFC 7335
            ("192.0.0.8", false),       // RFC 7600
            ("192.0.0.9", true),        // RFC 7723
            ("192.0.0.10", true),       // RFC 8155
            ("192.0.0.170", false),     // RFC 8880
            ("192.0.0.200", false),     // RFC 6890
            ("192.0.2.10", false),      // RFC 5737
            ("192.31.196.1", true),     // RFC 7535
            ("192.52.193.1", true),     // RFC 7450
            ("192.88.99.1", false),     // RFC 7526
            ("192.168.1.1", false),     // RFC 1918
            ("192.175.48.1", true),     // RFC 7534
            ("198.19.255.255", false),  // RFC 2544
            ("198.51.100.7", false),    // RFC 5737
            ("203.0.113.7", false),     // RFC 5737
            ("224.0.0.1", false),       // RFC 5771
            ("239.255.255.250", false), // RFC 5771
            ("240.0.0.1", false),       // RFC 1112
            ("255.255.255.255", false), // RFC 919
            ("1.1.1.1", true),
            ("8.8.8.8", true),
        ]);
    }

    #[test]
    fn ipv6_special_purpose_ranges() {
        judged(&[
            ("::", false),                 // RFC 4291
            ("::1", false),                // RFC 4291
            ("100::1", false),             // RFC 6666
            ("100:0:0:1::1", false),       // RFC 9780
            ("2001:1::1", true),           // RFC 7723
            ("2001:1::2", true),           // RFC 8155
            ("2001:1::3", true),           // RFC 9665
            ("2001:1::4", false),          // RFC 2928
            ("2001:2::1", false),          // RFC 5180
            ("2001:3::1", true),           // RFC 7450
            ("2001:4:112::1", true),       // RFC 7535
            ("2001:10::1", false),         // RFC 4843
            ("2001:20::1", true),          // RFC 7343
            ("2001:30::1", true),          // RFC 9374
            ("2001:db8::1", false),        // RFC 3849
            ("2620:4f:8000::1", true),     // RFC 7534
            ("3fff::1", false),            // RFC 9637
            ("5f00::1", false),            // RFC 9602
            ("fc00::1", false),            // RFC 4193
            ("fd12:3456::1", false),       // RFC 4193
            ("fe80::1", false),            // RFC 4291
            ("fec0::1", false),            // RFC 3879
            ("ff02::1", false),            // RFC 4291
            ("ff0e::1", false),            // RFC 4291, even global scope
            ("64:ff9b:1::101:101", false), // RFC 8215
            ("4000::1", false),            // outside 2000::/3
            ("2606:4700::1111", true),
            ("2a00:1450:4001::200e", true),
        ]);
    }

    #[test]
    fn addresses_that_embed_ipv4_are_judged_by_it() {
        judged(&[
            // IPv4-mapped, RFC 4291 §2.5.5.2
            ("::ffff:127.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("::ffff:1.1.1.1", true),
            // IPv4-compatible, RFC 4291 §2.5.5.1
            ("::127.0.0.1", false),
            ("::169.254.169.254", false),
            ("::1.1.1.1", true),
            // NAT64, RFC 6052
            ("64:ff9b::7f00:1", false),
            ("64:ff9b::a9fe:a9fe", false),
            ("64:ff9b::101:101", true),
            // 6to4, RFC 3056
            ("2002:7f00:1::1", false),
            ("2002:a9fe:a9fe::1", false),
            ("2002:c0a8:101::1", false),
            ("2002:101:101::1", true),
            // Teredo, RFC 4380: server 65.54.227.120; client 127.0.0.1, 1.1.1.1
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", false),
            ("2001:0:4136:e378:8000:63bf:fefe:fefe", true),
            // ... and server 10.0.0.1 with client 1.1.1.1
            ("2001:0:a00:1:8000:63bf:fefe:fefe", false),
            // ISATAP, RFC 5214, under a global prefix and a link-local one
            ("2606:4700::5efe:a00:1", false),
            ("2606:4700::200:5efe:7f00:1", false),
            ("2606:4700::200:5efe:101:101", true),
            ("fe80::5efe:101:101", false),
        ]);
    }
}
