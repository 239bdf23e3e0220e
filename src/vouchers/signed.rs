//! The `signed` issuer: codes minted locally, which the origin (or
//! `usher voucher verify CODE`) can check offline with the key.
//!
//! A code reads `PREFIX-PPPPPPPPPPPPPPPP-TTTTTTTTTTTTTTTT`: the event's
//! prefix, then 10 payload bytes and a 10-byte (80-bit) truncated
//! HMAC-SHA256 tag, each as 16 Crockford base32 characters. Payload:
//! version (1), the claim's sequence number (u32, big-endian), and the first
//! 5 bytes of SHA-256 of the identity (so the origin can check that a code
//! belongs to the user showing it). The tag covers a domain tag, the prefix
//! and the payload. The code depends only on (sequence, identity), both
//! durable before the issuer is asked: idempotent with no state of its own.

use hmac::Mac as _;
use sha2::{Digest as _, Sha256};

use super::base32;
use super::key::VoucherKey;
use super::{BoxFuture, Claim, IssueOutcome, VoucherIssuer};

/// Code format version, the payload's first byte.
const VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 10;
const TAG_LEN: usize = 10;
/// Longest prefix, in characters.
pub const MAX_PREFIX_LEN: usize = 16;
/// Longest code [`verify_signed`] looks at; anything longer is refused unread.
const MAX_SIGNED_LEN: usize = MAX_PREFIX_LEN + 2 + 2 * 16;

/// Why a signed issuer could not be set up.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SignedError {
    /// The prefix is empty, too long, or not ASCII letters and digits.
    #[error("voucher code prefix must be 1 to {MAX_PREFIX_LEN} ASCII letters or digits")]
    BadPrefix,
}

/// Why a code did not verify.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// Not `PREFIX-PAYLOAD-TAG` with the right lengths and characters.
    #[error("not a signed voucher code")]
    Malformed,
    /// A payload version this build does not know.
    #[error("unknown voucher code version {0}")]
    UnknownVersion(u8),
    /// The tag does not match: forged, mistyped, or another key.
    #[error("voucher code signature does not match")]
    BadSignature,
}

/// What a valid code says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedInfo {
    /// The prefix, upper-case.
    pub prefix: String,
    /// The claim's sequence number.
    pub seq: u32,
    /// The first 5 bytes of SHA-256 of the identity.
    pub identity_tag: [u8; 5],
}

impl SignedInfo {
    /// Whether the code was issued to `identity`.
    pub fn matches_identity(&self, identity: &str) -> bool {
        identity_tag(identity) == self.identity_tag
    }
}

/// Mints codes signed with a key.
#[derive(Debug)]
pub struct SignedIssuer {
    prefix: String,
    key: VoucherKey,
}

impl SignedIssuer {
    /// An issuer writing `prefix` (letters and digits, kept upper-case).
    pub fn new(prefix: &str, key: VoucherKey) -> Result<SignedIssuer, SignedError> {
        if prefix.is_empty()
            || prefix.len() > MAX_PREFIX_LEN
            || !prefix.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(SignedError::BadPrefix);
        }
        Ok(SignedIssuer {
            prefix: prefix.to_ascii_uppercase(),
            key,
        })
    }

    /// The code of claim `seq` for `identity`.
    pub fn mint(&self, seq: u32, identity: &str) -> String {
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[0] = VERSION;
        payload[1..5].copy_from_slice(&seq.to_be_bytes());
        payload[5..].copy_from_slice(&identity_tag(identity));
        let tag = tag(&self.key, &self.prefix, &payload);
        format!(
            "{}-{}-{}",
            self.prefix,
            base32::encode(&payload),
            base32::encode(&tag[..TAG_LEN])
        )
    }
}

impl VoucherIssuer for SignedIssuer {
    fn name(&self) -> &'static str {
        "signed"
    }

    fn issue<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, IssueOutcome> {
        // The payload holds 32 bits of sequence: no event has 4 billion vouchers.
        let out = match u32::try_from(claim.seq) {
            Ok(seq) => IssueOutcome::Issued {
                code: self.mint(seq, &claim.identity),
                meta: serde_json::Value::Null,
            },
            Err(_) => IssueOutcome::SoldOut,
        };
        Box::pin(std::future::ready(out))
    }
}

/// Checks a code against `key` (case-insensitive; `O`/`I`/`L` read as
/// `0`/`1`) and says what it holds.
pub fn verify_signed(code: &str, key: &VoucherKey) -> Result<SignedInfo, VerifyError> {
    let code = code.trim();
    if code.len() > MAX_SIGNED_LEN {
        return Err(VerifyError::Malformed);
    }
    let mut parts = code.rsplitn(3, '-');
    let (Some(tag_txt), Some(payload_txt), Some(prefix)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed);
    };
    if prefix.is_empty()
        || prefix.len() > MAX_PREFIX_LEN
        || !prefix.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(VerifyError::Malformed);
    }
    let prefix = prefix.to_ascii_uppercase();
    let payload = base32::decode::<PAYLOAD_LEN>(payload_txt).ok_or(VerifyError::Malformed)?;
    let given = base32::decode::<TAG_LEN>(tag_txt).ok_or(VerifyError::Malformed)?;
    let mut mac = key.mac();
    feed(&mut mac, &prefix, &payload);
    mac.verify_truncated_left(&given)
        .map_err(|_| VerifyError::BadSignature)?;
    if payload[0] != VERSION {
        return Err(VerifyError::UnknownVersion(payload[0]));
    }
    let mut seq = [0u8; 4];
    seq.copy_from_slice(&payload[1..5]);
    let mut identity_tag = [0u8; 5];
    identity_tag.copy_from_slice(&payload[5..]);
    Ok(SignedInfo {
        prefix,
        seq: u32::from_be_bytes(seq),
        identity_tag,
    })
}

fn identity_tag(identity: &str) -> [u8; 5] {
    let d = Sha256::digest(identity.as_bytes());
    let mut t = [0u8; 5];
    t.copy_from_slice(&d[..5]);
    t
}

fn feed(mac: &mut hmac::Hmac<Sha256>, prefix: &str, payload: &[u8]) {
    mac.update(b"usher-voucher-code-v1\0");
    mac.update(prefix.as_bytes());
    mac.update(&[0]);
    mac.update(payload);
}

fn tag(key: &VoucherKey, prefix: &str, payload: &[u8]) -> [u8; 32] {
    let mut mac = key.mac();
    feed(&mut mac, prefix, payload);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> VoucherKey {
        VoucherKey::from_secret(&[b; 32]).expect("32 bytes")
    }

    #[test]
    fn mint_and_verify() {
        let iss = SignedIssuer::new("spring24", key(1)).expect("valid prefix");
        let code = iss.mint(41, "alice");
        assert!(code.starts_with("SPRING24-"), "{code}");
        assert_eq!(code.len(), 8 + 1 + 16 + 1 + 16);
        assert_eq!(iss.mint(41, "alice"), code, "deterministic");
        assert_ne!(iss.mint(42, "alice"), code);
        assert_ne!(iss.mint(41, "bob"), code);

        let info = verify_signed(&code, &key(1)).expect("valid code");
        assert_eq!((info.prefix.as_str(), info.seq), ("SPRING24", 41));
        assert!(info.matches_identity("alice"));
        assert!(!info.matches_identity("bob"));
        // People type codes in: lower case and O/0 I/1 confusions still verify.
        let typed = code.to_lowercase().replace('0', "o").replace('1', "i");
        assert_eq!(verify_signed(&typed, &key(1)), Ok(info));
    }

    #[test]
    fn rejects_forgeries() {
        let iss = SignedIssuer::new("EV", key(1)).expect("valid prefix");
        let code = iss.mint(7, "alice");
        assert_eq!(
            verify_signed(&code, &key(2)),
            Err(VerifyError::BadSignature)
        );
        let (head, tag) = code.rsplit_once('-').expect("three parts");
        let flipped = if tag.starts_with('A') { "B" } else { "A" };
        let bad = format!("{head}-{flipped}{}", &tag[1..]);
        assert_eq!(verify_signed(&bad, &key(1)), Err(VerifyError::BadSignature));
        let other_prefix = format!("EW{}", &code[2..]);
        assert_eq!(
            verify_signed(&other_prefix, &key(1)),
            Err(VerifyError::BadSignature)
        );
        for junk in [
            "",
            "EV",
            "EV--",
            "EV-abc-def",
            &"A".repeat(500),
            "É-0000000000000000-0000000000000000",
        ] {
            assert_eq!(
                verify_signed(junk, &key(1)),
                Err(VerifyError::Malformed),
                "{junk}"
            );
        }
        assert_eq!(
            SignedIssuer::new("", key(1)).err(),
            Some(SignedError::BadPrefix)
        );
        assert_eq!(
            SignedIssuer::new("A-B", key(1)).err(),
            Some(SignedError::BadPrefix)
        );
    }
}
