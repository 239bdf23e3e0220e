//! Addresses as usher compares them: an IPv4-mapped IPv6 address is the
//! IPv4 address it carries, so one CIDR list (trusted proxies, PROXY
//! protocol senders, bypass networks, per-address limits) covers both.

use std::net::IpAddr;

use ipnet::IpNet;

/// Whether `ip` is in one of the networks `trusted`.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

/// An IPv4-mapped IPv6 address as plain IPv4, so `10.0.0.0/8` matches it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
