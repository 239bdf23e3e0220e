//! The proof of work asked of a newcomer whose address is over its ticket
//! limit (as Queue-it's proof-of-work challenge and ALTCHA do): find a
//! `nonce` such that `SHA-256(challenge "." nonce)` starts with `bits` zero
//! bits. One try costs one hash, so a solution costs `2^bits` hashes on
//! average: about a second for a phone's browser at 16 bits, and the same
//! for every further ticket a farm wants, while the check costs usher one
//! hash.
//!
//! The solution travels as `challenge "." nonce` (the `usher_pow` cookie
//! or the `X-Usher-Pow` header); `nonce` is decimal digits, so the last
//! dot splits it from the challenge token (which holds one dot itself).

use sha2::{Digest as _, Sha256};

/// Longest nonce accepted (decimal digits of a `u64`).
const MAX_NONCE_LEN: usize = 20;

/// Whether `digest` starts with at least `bits` zero bits.
pub fn leading_zero_bits(digest: &[u8], bits: u32) -> bool {
    let mut left = bits;
    for &byte in digest {
        if left == 0 {
            return true;
        }
        if left >= 8 {
            if byte != 0 {
                return false;
            }
            left -= 8;
        } else {
            return byte >> (8 - left) == 0;
        }
    }
    left == 0
}

/// Whether `nonce` solves `challenge` at `bits`.
pub fn solves(challenge: &str, nonce: &str, bits: u32) -> bool {
    if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN || !nonce.bytes().all(|b| b.is_ascii_digit())
    {
        return false;
    }
    let mut h = Sha256::new();
    h.update(challenge.as_bytes());
    h.update(b".");
    h.update(nonce.as_bytes());
    leading_zero_bits(&h.finalize(), bits)
}

/// Splits a solution `challenge "." nonce` into its two parts.
pub fn split(solution: &str) -> Option<(&str, &str)> {
    solution.rsplit_once('.')
}

/// Finds the smallest nonce solving `challenge` at `bits` (what the
/// holding page's script does, for the simulator and the tests).
pub fn solve(challenge: &str, bits: u32) -> u64 {
    let mut prefix = Sha256::new();
    prefix.update(challenge.as_bytes());
    prefix.update(b".");
    let mut buf = itoa_buf();
    (0..u64::MAX)
        .find(|n| {
            let mut h = prefix.clone();
            h.update(itoa(&mut buf, *n));
            leading_zero_bits(&h.finalize(), bits)
        })
        .unwrap_or(0)
}

fn itoa_buf() -> [u8; MAX_NONCE_LEN] {
    [0; MAX_NONCE_LEN]
}

fn itoa(buf: &mut [u8; MAX_NONCE_LEN], mut n: u64) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_zero_bits_counts_bits_not_bytes() {
        assert!(leading_zero_bits(&[0xff], 0));
        assert!(leading_zero_bits(&[0x00, 0x80], 8));
        assert!(!leading_zero_bits(&[0x00, 0x80], 9));
        assert!(leading_zero_bits(&[0x00, 0x7f], 9));
        assert!(leading_zero_bits(&[0x0f], 4));
        assert!(!leading_zero_bits(&[0x1f], 4));
        assert!(!leading_zero_bits(&[0x00], 9), "more bits than the digest");
    }

    #[test]
    fn a_solution_is_checked_with_one_hash() {
        let c = "abc.def";
        let n = solve(c, 12);
        assert!(solves(c, &n.to_string(), 12));
        let solution = format!("{c}.{n}");
        assert_eq!(split(&solution), Some((c, n.to_string().as_str())));
        // The smallest solution: every smaller nonce fails.
        assert!((0..n).all(|m| !solves(c, &m.to_string(), 12)));
        assert!(!solves("abc.deg", &n.to_string(), 12) || solve("abc.deg", 12) == n);
    }

    #[test]
    fn hostile_nonces_are_refused_before_hashing() {
        assert!(!solves("c", "", 0));
        assert!(!solves("c", "12a", 0));
        assert!(!solves("c", "-1", 0));
        assert!(!solves("c", &"1".repeat(21), 0));
        assert!(solves("c", "7", 0), "zero bits: any well-formed nonce");
    }
}
