//! Where the simulated visitors connect from. With a scenario's
//! `[addresses]` table a share of the crowd sits behind a few carrier
//! addresses (CGNAT: many phones, one address) and everyone else has an
//! address of their own, so usher's per-address limits meet a realistic
//! mix. Every address is in 127.0.0.0/8, which the loopback interface
//! carries without any setup, and none is 127.0.0.1, so a bypass rule for
//! localhost cannot let the crowd through.
//!
//! The rule is a pure function of the seed and the visitor's id: both
//! runs, and every rerun, put the same visitor behind the same address.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The most carrier addresses: they are 127.1.0.1 to 127.1.255.255.
pub const MAX_SHARED: u32 = 65_535;
/// Carrier `k` (0-based) is this plus `k + 1`: 127.1.0.1, 127.1.0.2, ….
const SHARED_BASE: u32 = u32::from_be_bytes([127, 1, 0, 0]);
/// Visitor `id`'s own address is this plus `id + 1`: 127.2.0.1, … (a
/// million visitors end at 127.17.66.65).
const OWN_BASE: u32 = u32::from_be_bytes([127, 2, 0, 0]);
/// Own addresses wrap before 127.255.255.255, the loopback broadcast.
const OWN_SPAN: u32 = u32::from_be_bytes([127, 255, 255, 254]) - OWN_BASE;

/// The `[addresses]` table: how the crowd shares source addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addresses {
    /// Carrier addresses (CGNAT) shared by many visitors.
    pub shared: u32,
    /// Share of visitors behind the carrier addresses (0 to 1); the rest
    /// have one address each.
    pub shared_share: f64,
}

/// splitmix64: a well-mixed 64-bit value from any input.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Addresses {
    /// Carrier address `k` (0-based, below [`MAX_SHARED`]).
    pub fn carrier(k: u32) -> Ipv4Addr {
        Ipv4Addr::from(SHARED_BASE + k.min(MAX_SHARED - 1) + 1)
    }

    /// Every carrier address of this table.
    pub fn carriers(&self) -> Vec<Ipv4Addr> {
        (0..self.shared.min(MAX_SHARED))
            .map(Self::carrier)
            .collect()
    }

    /// Visitor `id`'s source address under `seed`: a carrier's with
    /// probability `shared_share` (the carrier drawn evenly), else its own.
    pub fn source(&self, seed: u64, id: u32) -> Ipv4Addr {
        let h = mix(seed ^ mix(u64::from(id)));
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        if self.shared > 0 && u < self.shared_share {
            let k = mix(h) % u64::from(self.shared.min(MAX_SHARED));
            return Self::carrier(k as u32);
        }
        Ipv4Addr::from(OWN_BASE + id % OWN_SPAN + 1)
    }

    /// Mistakes, as `key: message`. `connections` is the client's bound:
    /// each carrier keeps at least one pooled connection within it.
    pub fn problems(&self, connections: usize) -> Vec<String> {
        let mut p = Vec::new();
        if !(0.0..=1.0).contains(&self.shared_share) {
            p.push(format!(
                "addresses.shared_share: {} is outside 0 to 1",
                self.shared_share
            ));
        }
        let most = MAX_SHARED.min(u32::try_from(connections).unwrap_or(u32::MAX));
        if self.shared > most {
            p.push(format!(
                "addresses.shared: {} is more than {most} (at most {MAX_SHARED}, and no more than client.connections: each carrier address keeps a connection)",
                self.shared
            ));
        }
        if self.shared == 0 && self.shared_share > 0.0 {
            p.push("addresses.shared: give at least one address for shared_share".into());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(shared: u32, shared_share: f64) -> Addresses {
        Addresses {
            shared,
            shared_share,
        }
    }

    fn is_fair_loopback(a: Ipv4Addr) -> bool {
        a.is_loopback() && a != Ipv4Addr::LOCALHOST && a != Ipv4Addr::new(127, 255, 255, 255)
    }

    #[test]
    fn a_share_of_the_crowd_sits_behind_the_carriers() {
        let t = table(50, 0.3);
        let carriers = t.carriers();
        assert_eq!(carriers.len(), 50);
        assert_eq!(carriers[0], Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(carriers[49], Ipv4Addr::new(127, 1, 0, 50));
        let n = 100_000u32;
        let mut per_carrier = std::collections::HashMap::new();
        let mut own = std::collections::HashSet::new();
        for id in 0..n {
            let a = t.source(2024, id);
            assert!(is_fair_loopback(a), "{a}");
            if carriers.contains(&a) {
                *per_carrier.entry(a).or_insert(0u32) += 1;
            } else {
                assert!(a.octets()[1] >= 2, "beside the carriers: {a}");
                assert!(own.insert(a), "own addresses are not shared: {a}");
            }
        }
        let shared: u32 = per_carrier.values().sum();
        let share = f64::from(shared) / f64::from(n);
        assert!((0.29..0.31).contains(&share), "{share}");
        // Every carrier is used, roughly evenly (600 each on average).
        assert_eq!(per_carrier.len(), 50);
        assert!(per_carrier.values().all(|&c| (450..750).contains(&c)));
    }

    #[test]
    fn the_rule_is_fixed_by_the_seed() {
        let t = table(5, 0.5);
        let a: Vec<Ipv4Addr> = (0..100).map(|id| t.source(7, id)).collect();
        let b: Vec<Ipv4Addr> = (0..100).map(|id| t.source(7, id)).collect();
        let c: Vec<Ipv4Addr> = (0..100).map(|id| t.source(8, id)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn the_extremes_stay_in_loopback() {
        assert!((0..1000).all(|id| table(0, 0.0).source(1, id).octets()[1] >= 2));
        assert!((0..1000).all(|id| table(3, 1.0).source(1, id).octets()[1] == 1));
        for id in [0, 1_000_000, u32::MAX - 1, u32::MAX] {
            assert!(is_fair_loopback(table(0, 0.0).source(1, id)), "{id}");
        }
        assert!(is_fair_loopback(Addresses::carrier(MAX_SHARED)));
        assert_eq!(
            Addresses::carrier(MAX_SHARED - 1),
            Ipv4Addr::new(127, 1, 255, 255)
        );
    }

    #[test]
    fn mistakes_are_named() {
        assert!(table(50, 0.3).problems(1500).is_empty());
        assert!(table(0, 0.0).problems(10).is_empty());
        let all = [
            table(50, 1.5).problems(1500),
            table(2000, 0.3).problems(1500),
            table(0, 0.3).problems(1500),
        ];
        for p in &all {
            assert_eq!(p.len(), 1, "{p:?}");
        }
        assert!(all[0][0].starts_with("addresses.shared_share:"));
        assert!(all[1][0].starts_with("addresses.shared:"));
        assert!(all[2][0].starts_with("addresses.shared:"));
    }
}
