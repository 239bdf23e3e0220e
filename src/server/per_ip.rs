//! Open connections per client address, for `server.max_connections_per_ip`:
//! one host (or one IPv6 /64, which a single subscriber usually holds) cannot
//! take every connection slot. A slot is an RAII guard; an address's entry
//! goes when its last connection closes, so memory follows open connections,
//! not every address ever seen.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use crate::net::canonical;

/// Connection counts per address.
#[derive(Debug, Default)]
pub struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection counted against its address; dropping it uncounts it.
#[derive(Debug)]
pub struct PerIpSlot {
    owner: Arc<PerIp>,
    key: IpAddr,
}

/// The address a connection is counted under: IPv4 (and IPv4-mapped IPv6)
/// as is, other IPv6 by its /64.
pub fn key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl PerIp {
    /// A new, empty table.
    pub fn new() -> Arc<PerIp> {
        Arc::new(PerIp::default())
    }

    /// Counts a connection from `ip`, unless `cap` are already open.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<PerIpSlot> {
        let key = key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(PerIpSlot {
            owner: self.clone(),
            key,
        })
    }

    /// Connections open from `ip`'s address (or /64).
    pub fn open(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&key(ip)).copied().unwrap_or(0)
    }

    /// Addresses with at least one open connection.
    pub fn addresses(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_forgets_closed_ones() {
        let t = PerIp::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = t.try_take(a, 2).unwrap();
        let second = t.try_take(a, 2).unwrap();
        assert!(t.try_take(a, 2).is_none(), "third from the same address");
        let other = t.try_take(b, 2).unwrap();
        assert_eq!(t.open(a), 2);
        drop(first);
        assert_eq!(t.open(a), 1);
        let again = t.try_take(a, 2).unwrap();
        drop((second, again, other));
        assert_eq!(t.addresses(), 0, "no entry outlives its connections");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let t = PerIp::new();
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let z: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _s = t.try_take(x, 1).unwrap();
        assert!(t.try_take(y, 1).is_none(), "same /64");
        let _u = t.try_take(z, 1).unwrap();
        let v4: IpAddr = "192.0.2.9".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        let _v = t.try_take(v4, 1).unwrap();
        assert!(t.try_take(mapped, 1).is_none());
    }
}
