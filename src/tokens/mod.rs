//! Usher's signed cookies: the [`Ticket`] (a place in line) and the [`Pass`]
//! (an admitted visitor), how they are sealed into a compact string and how a
//! string from the outside is opened again. Keys and rotation live in
//! [`keys`]; reading and writing the cookies themselves lives in [`cookie`].
//!
//! # Wire format
//!
//! ```text
//! token   = b64(payload) "." b64(tag)          b64 = base64url, no padding
//! payload = version:u8  kind:u8  kid_len:u8  kid[kid_len]  fields
//! fields  = ticket: event:u64 number:u64 issued_at:u64                   (big-endian)
//!           pass:   event:u64 pass_id:u64 admitted_at:u64 expires_at:u64
//!           challenge: event:u64 issued_at:u64 id:u64   (proof of work, see [`proof`])
//! tag     = HMAC-SHA256(key[kid], payload)[..16]
//! ```
//!
//! The tag covers the version and kind bytes, so a ticket can never be
//! replayed as a pass (or a future format as this one). A ticket is at most
//! 91 bytes, well inside one cookie.
//!
//! Why 16 bytes of tag are enough: forging a token means guessing a tag
//! the server accepts, and every guess costs the attacker one request. At
//! 2^128 possibilities, a billion guesses a second for the age of the universe
//! succeeds with probability about 2^-39, and a rate limiter sees the first
//! million. Birthday bounds do not apply: two of our own tags colliding gives
//! an attacker nothing, and truncating HMAC to half its output is standard practice (NIST SP 800-107
//! permits much shorter tags). Halving the tag keeps the cookie short.
//!
//! Opening checks, in order: size (before any decoding), syntax, key id,
//! signature (constant time), kind, event, time. Nothing before the signature
//! check trusts the content beyond finding the key, so the reason reported for a
//! forged token is at worst `Malformed`, `UnknownKey` or `BadSignature`.

pub mod cookie;
mod keys;
pub mod proof;
#[cfg(test)]
mod tests;

pub use keys::{KeyError, Keyring, MIN_SECRET_LEN};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::Mac as _;
use sha2::{Digest as _, Sha256};

/// Hard upper bound on a token's length in bytes, checked before decoding so
/// a hostile cookie costs nothing. Real tokens are at most 91 bytes; the slack
/// leaves room for a future format version.
pub const MAX_TOKEN_LEN: usize = 256;

/// How far in the future (seconds) an `issued_at` or `admitted_at` may lie and
/// still be accepted. Several usher nodes behind one load balancer never have
/// exactly the same clock; without this a visitor whose ticket came from a node
/// half a second ahead would be rejected by its neighbour.
pub const MAX_CLOCK_SKEW_SECS: u64 = 5;

/// Maximum length of a key id.
pub const MAX_KID_LEN: usize = 16;

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
/// version + kind + kid_len.
const HEADER_LEN: usize = 3;
const MAX_FIELDS: usize = 4;
const MAX_PAYLOAD: usize = HEADER_LEN + MAX_KID_LEN + 8 * MAX_FIELDS;
/// base64 without padding: 4 characters per 3 bytes, rounded up.
const MAX_PAYLOAD_B64: usize = (MAX_PAYLOAD * 4).div_ceil(3);
const TAG_B64: usize = (TAG_LEN * 4).div_ceil(3);

/// A place in line for one event. Costs the server nothing to hold: the
/// number comes from the event's counter and the rest is in the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// [`event_id`] of the event this place belongs to.
    pub event: u64,
    /// Position in the order of arrival (from the event's `issued` counter).
    pub number: u64,
    /// When the ticket was issued, in unix seconds.
    pub issued_at: u64,
}

/// An admitted visitor. Checked without any store round trip; `expires_at`
/// slides forward while the visitor is active (the caller reseals it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pass {
    /// [`event_id`] of the event the visitor was admitted to.
    pub event: u64,
    /// Identity of this admission (active-user accounting, vouchers).
    pub pass_id: u64,
    /// When the visitor was admitted, in unix seconds.
    pub admitted_at: u64,
    /// The pass is expired when `now >= expires_at` (unix seconds).
    pub expires_at: u64,
}

/// A proof-of-work challenge: a newcomer over the per-address ticket
/// limit gets a ticket once they bring a solution of it (see [`proof`]).
/// Sealed like a ticket, so nobody can make their own; the random `id`
/// lets the room accept each one once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Challenge {
    /// [`event_id`] of the event.
    pub event: u64,
    /// When it was issued, in unix seconds.
    pub issued_at: u64,
    /// Random, to tell challenges apart (each is accepted once).
    pub id: u64,
}

/// Why a token was refused. A bounded set, so it can label a metric.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Not a token at all: bad syntax, bad base64, bad header or field length.
    #[error("token is malformed")]
    Malformed,
    /// Longer than [`MAX_TOKEN_LEN`]; refused before decoding.
    #[error("token is longer than the maximum of 256 bytes")]
    TooLong,
    /// Signed by a key id not in the keyring (removed key, other cluster, restart
    /// with an ephemeral key).
    #[error("token is signed with an unknown key")]
    UnknownKey,
    /// The tag does not match: forged or damaged.
    #[error("token signature does not match")]
    BadSignature,
    /// Valid but too old (ticket past `max_age`, pass past `expires_at`).
    #[error("token has expired")]
    Expired,
    /// Valid but for another event.
    #[error("token belongs to another event")]
    OtherEvent,
    /// A pass presented as a ticket or the other way round.
    #[error("token is of the wrong kind")]
    WrongKind,
    /// Issued further in the future than clock skew explains.
    #[error("token was issued in the future")]
    FromFuture,
}

impl Reject {
    /// Every reason, so metrics can create each label value up front.
    pub const ALL: [Reject; 8] = [
        Reject::Malformed,
        Reject::TooLong,
        Reject::UnknownKey,
        Reject::BadSignature,
        Reject::Expired,
        Reject::OtherEvent,
        Reject::WrongKind,
        Reject::FromFuture,
    ];

    /// The `reason` label for `usher_token_rejects_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::TooLong => "too_long",
            Reject::UnknownKey => "unknown_key",
            Reject::BadSignature => "bad_signature",
            Reject::Expired => "expired",
            Reject::OtherEvent => "other_event",
            Reject::WrongKind => "wrong_kind",
            Reject::FromFuture => "from_future",
        }
    }
}

/// The 64-bit id of an event: the first 8 bytes (big-endian) of SHA-256 of its
/// name. Stable across versions and nodes, so tokens survive upgrades; never
/// change it.
pub fn event_id(name: &str) -> u64 {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ticket = 1,
    Pass = 2,
    Challenge = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Ticket),
            2 => Some(Kind::Pass),
            3 => Some(Kind::Challenge),
            _ => None,
        }
    }

    fn fields(self) -> usize {
        match self {
            Kind::Ticket | Kind::Challenge => 3,
            Kind::Pass => 4,
        }
    }
}

impl Keyring {
    /// Seals a ticket with the signing key.
    pub fn seal_ticket(&self, t: &Ticket) -> String {
        self.seal(Kind::Ticket, &[t.event, t.number, t.issued_at])
    }

    /// Opens a ticket for `event`. It is expired once
    /// `now >= issued_at + max_age`; a ticket issued more than
    /// [`MAX_CLOCK_SKEW_SECS`] after `now` is [`Reject::FromFuture`].
    pub fn open_ticket(
        &self,
        token: &str,
        event: u64,
        now: u64,
        max_age: u64,
    ) -> Result<Ticket, Reject> {
        let [ev, number, issued_at, _] = self.open(token, Kind::Ticket)?;
        current(ev, event, issued_at, now, issued_at.saturating_add(max_age))?;
        Ok(Ticket {
            event: ev,
            number,
            issued_at,
        })
    }

    /// Seals a pass with the signing key.
    pub fn seal_pass(&self, p: &Pass) -> String {
        self.seal(
            Kind::Pass,
            &[p.event, p.pass_id, p.admitted_at, p.expires_at],
        )
    }

    /// Opens a pass for `event`. It is expired once `now >= expires_at`; one
    /// admitted more than [`MAX_CLOCK_SKEW_SECS`] after `now` is
    /// [`Reject::FromFuture`].
    pub fn open_pass(&self, token: &str, event: u64, now: u64) -> Result<Pass, Reject> {
        let [ev, pass_id, admitted_at, expires_at] = self.open(token, Kind::Pass)?;
        current(ev, event, admitted_at, now, expires_at)?;
        Ok(Pass {
            event: ev,
            pass_id,
            admitted_at,
            expires_at,
        })
    }

    /// Seals a proof-of-work challenge with the signing key.
    pub fn seal_challenge(&self, c: &Challenge) -> String {
        self.seal(Kind::Challenge, &[c.event, c.issued_at, c.id])
    }

    /// Opens a challenge for `event`: expired once `now >= issued_at +
    /// max_age`, [`Reject::FromFuture`] like a ticket.
    pub fn open_challenge(
        &self,
        token: &str,
        event: u64,
        now: u64,
        max_age: u64,
    ) -> Result<Challenge, Reject> {
        let [ev, issued_at, id, _] = self.open(token, Kind::Challenge)?;
        current(ev, event, issued_at, now, issued_at.saturating_add(max_age))?;
        Ok(Challenge {
            event: ev,
            issued_at,
            id,
        })
    }

    fn seal(&self, kind: Kind, fields: &[u64]) -> String {
        let (kid, mac) = self.signer();
        let kid = kid.as_bytes();
        // The keyring guarantees 1..=MAX_KID_LEN ASCII kid bytes and callers
        // pass at most MAX_FIELDS fields, so the buffer is always big enough.
        let mut buf = [0u8; MAX_PAYLOAD];
        buf[0] = VERSION;
        buf[1] = kind as u8;
        buf[2] = kid.len() as u8;
        let mut at = HEADER_LEN;
        buf[at..at + kid.len()].copy_from_slice(kid);
        at += kid.len();
        for f in fields {
            buf[at..at + 8].copy_from_slice(&f.to_be_bytes());
            at += 8;
        }
        let payload = &buf[..at];

        let mut mac = mac.clone();
        mac.update(payload);
        let tag = mac.finalize().into_bytes();

        // Encoded into a buffer of the largest token's size, then copied
        // once: the crate's `encode_string` goes through its chunked
        // writer, twice the instructions for tokens this short.
        let mut text = [0u8; MAX_PAYLOAD_B64 + 1 + TAG_B64];
        let n = URL_SAFE_NO_PAD
            .encode_slice(payload, &mut text)
            .expect("the buffer fits the largest payload");
        text[n] = b'.';
        let m = URL_SAFE_NO_PAD
            .encode_slice(&tag[..TAG_LEN], &mut text[n + 1..])
            .expect("the buffer fits the tag");
        // Base64's alphabet and '.' are ASCII.
        String::from_utf8(text[..n + 1 + m].to_vec()).expect("base64 is ASCII")
    }

    /// Checks everything but event and time; returns the fields (unused
    /// trailing ones are zero).
    fn open(&self, token: &str, want: Kind) -> Result<[u64; MAX_FIELDS], Reject> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Reject::TooLong);
        }
        let (payload_b64, tag_b64) = token.split_once('.').ok_or(Reject::Malformed)?;
        if payload_b64.len() > MAX_PAYLOAD_B64 || tag_b64.len() != TAG_B64 {
            return Err(Reject::Malformed);
        }

        let mut payload_buf = [0u8; MAX_PAYLOAD + 3];
        let payload_len = URL_SAFE_NO_PAD
            .decode_slice(payload_b64, &mut payload_buf)
            .map_err(|_| Reject::Malformed)?;
        let payload = payload_buf.get(..payload_len).ok_or(Reject::Malformed)?;

        // Exactly TAG_LEN bytes: `verify_truncated_left` would happily accept a
        // 1-byte tag, which an attacker could guess in 256 tries.
        let mut tag_buf = [0u8; TAG_LEN + 3];
        let tag_len = URL_SAFE_NO_PAD
            .decode_slice(tag_b64, &mut tag_buf)
            .map_err(|_| Reject::Malformed)?;
        if tag_len != TAG_LEN {
            return Err(Reject::Malformed);
        }

        let (header, rest) = payload
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(Reject::Malformed)?;
        let [version, kind, kid_len] = *header;
        let kind = Kind::from_byte(kind).ok_or(Reject::Malformed)?;
        let kid_len = usize::from(kid_len);
        if version != VERSION || kid_len == 0 || kid_len > MAX_KID_LEN {
            return Err(Reject::Malformed);
        }
        let (kid, body) = rest.split_at_checked(kid_len).ok_or(Reject::Malformed)?;
        if !keys::valid_kid_bytes(kid) {
            return Err(Reject::Malformed);
        }

        let mut mac = self.verifier(kid).ok_or(Reject::UnknownKey)?.clone();
        mac.update(payload);
        mac.verify_truncated_left(&tag_buf[..TAG_LEN])
            .map_err(|_| Reject::BadSignature)?;

        if kind != want {
            return Err(Reject::WrongKind);
        }
        if body.len() != 8 * want.fields() {
            return Err(Reject::Malformed);
        }
        let mut fields = [0u64; MAX_FIELDS];
        for (field, bytes) in fields.iter_mut().zip(body.chunks_exact(8)) {
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            *field = u64::from_be_bytes(be);
        }
        Ok(fields)
    }
}

/// What every token shares once its MAC is good: the event it is for, a
/// start at most [`MAX_CLOCK_SKEW_SECS`] ahead of `now`, and `now` before
/// its end.
fn current(ev: u64, event: u64, start: u64, now: u64, end: u64) -> Result<(), Reject> {
    if ev != event {
        return Err(Reject::OtherEvent);
    }
    if start > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(Reject::FromFuture);
    }
    if now >= end {
        return Err(Reject::Expired);
    }
    Ok(())
}
