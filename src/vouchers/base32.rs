//! Crockford base32: upper-case, no padding, and forgiving on input
//! (lower case, `O` for `0`, `I`/`L` for `1`), since people type codes in.

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Encodes `bytes`, 5 bits per character, the last one padded with zero bits.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity((bytes.len() * 8).div_ceil(5));
    let mut acc = 0u32;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

fn value(c: u8) -> Option<u32> {
    let v = match c.to_ascii_uppercase() {
        c @ b'0'..=b'9' => c - b'0',
        b'O' => 0,
        b'I' | b'L' => 1,
        c => ALPHABET.iter().position(|&a| a == c)? as u8,
    };
    Some(u32::from(v))
}

/// Decodes exactly `N` bytes from `text`; `None` on a bad character, the
/// wrong length, or non-zero padding bits (so each value has one spelling
/// up to the forgiving aliases).
pub(crate) fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != (N * 8).div_ceil(5) {
        return None;
    }
    let mut out = [0u8; N];
    let mut acc = 0u32;
    let mut bits = 0;
    let mut i = 0;
    for &c in text.as_bytes() {
        acc = (acc << 5) | value(c)?;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(i)? = (acc >> bits) as u8;
            i += 1;
        }
        acc &= (1 << bits) - 1;
    }
    (acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_aliases() {
        let bytes = [0u8, 1, 2, 0xfe, 0xff, 0x10, 0x20, 0x7f, 0x80, 0x55];
        let s = encode(&bytes);
        assert_eq!(s.len(), 16);
        assert_eq!(decode::<10>(&s), Some(bytes));
        assert_eq!(decode::<10>(&s.to_lowercase()), Some(bytes));
        assert_eq!(encode(&[0; 10]), "0000000000000000");
        assert_eq!(decode::<10>("OOOOOOOOOOOOOOOO"), Some([0; 10]));
        assert_eq!(decode::<10>("000000000000000U"), None);
        assert_eq!(decode::<10>("000000000000000"), None);
        assert_eq!(encode(&[0xff]), "ZW");
        // Padding bits must be zero.
        assert_eq!(decode::<1>("ZW"), Some([0xff]));
        assert_eq!(decode::<1>("ZX"), None);
    }
}
