//! Token round trips, rotation, and every way a token can be refused.

use super::*;
use base64::engine::general_purpose::STANDARD;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

const NOW: u64 = 1_700_000_000;
const DAY: u64 = 86_400;

fn ring(kids: &[(&str, u8)]) -> Keyring {
    let text: String = kids
        .iter()
        .map(|(kid, b)| format!("{kid}:{}\n", STANDARD.encode([*b; 32])))
        .collect();
    Keyring::parse(&text).unwrap()
}

fn ticket() -> Ticket {
    Ticket {
        event: event_id("launch"),
        number: 42,
        issued_at: NOW - 10,
    }
}

fn pass() -> Pass {
    Pass {
        event: event_id("launch"),
        pass_id: 7,
        admitted_at: NOW - 100,
        expires_at: NOW + 600,
    }
}

/// A token over arbitrary payload bytes, correctly signed with the ring's
/// signing key: reaches the checks after the signature.
fn signed(ring: &Keyring, payload: &[u8]) -> String {
    let (_, mac) = ring.signer();
    let mut mac = mac.clone();
    mac.update(payload);
    let tag = mac.finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(&tag[..TAG_LEN])
    )
}

fn decode_parts(token: &str) -> (Vec<u8>, Vec<u8>) {
    let (p, t) = token.split_once('.').unwrap();
    (
        URL_SAFE_NO_PAD.decode(p).unwrap(),
        URL_SAFE_NO_PAD.decode(t).unwrap(),
    )
}

fn encode_parts(payload: &[u8], tag: &[u8]) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

#[test]
fn event_id_is_stable() {
    // Pinned: changing this logs everyone out on upgrade.
    assert_eq!(event_id("launch"), 0xabfc_412c_e6e5_30df);
    assert_eq!(event_id(""), 0xe3b0_c442_98fc_1c14);
    assert_ne!(event_id("launch"), event_id("Launch"));
}

#[test]
fn round_trips() {
    let r = ring(&[("k1", 1)]);
    let t = ticket();
    let token = r.seal_ticket(&t);
    assert_eq!(r.open_ticket(&token, t.event, NOW, DAY), Ok(t));
    let p = pass();
    let token = r.seal_pass(&p);
    assert_eq!(r.open_pass(&token, p.event, NOW), Ok(p));

    let extreme = Ticket {
        event: u64::MAX,
        number: u64::MAX,
        issued_at: 0,
    };
    let token = r.seal_ticket(&extreme);
    assert_eq!(r.open_ticket(&token, u64::MAX, 0, 1), Ok(extreme));
    // A max_age so large that issued_at + max_age overflows never expires.
    assert_eq!(
        r.open_ticket(&token, u64::MAX, u64::MAX - 1, u64::MAX),
        Ok(extreme)
    );
}

#[test]
fn tokens_are_compact_cookie_safe_and_deterministic() {
    let r = ring(&[("abcdefghijklmnop", 1)]);
    let token = r.seal_pass(&pass());
    assert!(token.len() <= 91, "{} bytes", token.len());
    assert_eq!(token.matches('.').count(), 1);
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    assert!(cookie::is_valid_value(&token));
    assert_eq!(token, r.seal_pass(&pass()));
}

#[test]
fn rotation_keeps_old_tokens_valid_until_key_removed() {
    let old = ring(&[("old", 1)]);
    let token = old.seal_ticket(&ticket());

    let rotated = ring(&[("new", 2), ("old", 1)]);
    assert_eq!(rotated.signing_kid(), "new");
    assert_eq!(
        rotated.open_ticket(&token, ticket().event, NOW, DAY),
        Ok(ticket())
    );
    let fresh = rotated.seal_ticket(&ticket());
    assert_ne!(fresh, token);
    // Nodes not yet reloaded already verify what the new key signs, if the new
    // key was added as a second line first.
    let staged = ring(&[("old", 1), ("new", 2)]);
    assert_eq!(
        staged.open_ticket(&fresh, ticket().event, NOW, DAY),
        Ok(ticket())
    );

    let retired = ring(&[("new", 2)]);
    assert_eq!(
        retired.open_ticket(&token, ticket().event, NOW, DAY),
        Err(Reject::UnknownKey)
    );
    // Same kid, different secret: a forgery as far as we can tell.
    let replaced = ring(&[("old", 3)]);
    assert_eq!(
        replaced.open_ticket(&token, ticket().event, NOW, DAY),
        Err(Reject::BadSignature)
    );
}

#[test]
fn ephemeral_tokens_do_not_survive_a_restart() {
    let before = Keyring::ephemeral();
    let token = before.seal_pass(&pass());
    assert_eq!(before.open_pass(&token, pass().event, NOW), Ok(pass()));
    let after = Keyring::ephemeral();
    assert_eq!(
        after.open_pass(&token, pass().event, NOW),
        Err(Reject::UnknownKey)
    );
}

#[test]
fn each_reason_from_a_crafted_input() {
    let r = ring(&[("k1", 1)]);
    let ev = ticket().event;
    let t = r.seal_ticket(&ticket());
    let p = r.seal_pass(&pass());
    let open_t = |s: &str| r.open_ticket(s, ev, NOW, DAY);

    for bad in ["", ".", "abc", "a.b.c", "!!!!.????", "AAAA.AAAA", "a b.c"] {
        assert_eq!(open_t(bad), Err(Reject::Malformed), "{bad:?}");
    }
    // Padded base64 is not our encoding.
    let (pt, tt) = t.split_once('.').unwrap();
    assert_eq!(open_t(&format!("{pt}.{tt}==")), Err(Reject::Malformed));
    assert_eq!(open_t(&format!("{pt}.{t}")), Err(Reject::Malformed));

    assert_eq!(open_t(&"A".repeat(MAX_TOKEN_LEN)), Err(Reject::Malformed));
    assert_eq!(open_t(&"A".repeat(MAX_TOKEN_LEN + 1)), Err(Reject::TooLong));
    let padded = format!("{t}{}", "A".repeat(MAX_TOKEN_LEN));
    assert_eq!(open_t(&padded), Err(Reject::TooLong));

    let other = ring(&[("k2", 1)]);
    assert_eq!(other.open_ticket(&t, ev, NOW, DAY), Err(Reject::UnknownKey));

    let (payload, mut tag) = decode_parts(&t);
    tag[0] ^= 1;
    assert_eq!(
        open_t(&encode_parts(&payload, &tag)),
        Err(Reject::BadSignature)
    );

    assert_eq!(
        r.open_ticket(&t, ev, ticket().issued_at + DAY, DAY),
        Err(Reject::Expired)
    );
    assert_eq!(
        r.open_ticket(&t, ev, ticket().issued_at + DAY - 1, DAY),
        Ok(ticket())
    );
    assert_eq!(r.open_ticket(&t, ev, NOW, 0), Err(Reject::Expired));
    assert_eq!(r.open_pass(&p, ev, pass().expires_at), Err(Reject::Expired));
    assert_eq!(r.open_pass(&p, ev, pass().expires_at - 1), Ok(pass()));

    assert_eq!(
        r.open_ticket(&t, event_id("other"), NOW, DAY),
        Err(Reject::OtherEvent)
    );
    assert_eq!(
        r.open_pass(&p, event_id("other"), NOW),
        Err(Reject::OtherEvent)
    );

    assert_eq!(open_t(&p), Err(Reject::WrongKind));
    assert_eq!(r.open_pass(&t, ev, NOW), Err(Reject::WrongKind));

    let skewed = ticket().issued_at - MAX_CLOCK_SKEW_SECS;
    assert_eq!(r.open_ticket(&t, ev, skewed, DAY), Ok(ticket()));
    assert_eq!(
        r.open_ticket(&t, ev, skewed - 1, DAY),
        Err(Reject::FromFuture)
    );
    let skewed = pass().admitted_at - MAX_CLOCK_SKEW_SECS - 1;
    assert_eq!(r.open_pass(&p, ev, skewed), Err(Reject::FromFuture));
}

#[test]
fn correctly_signed_but_malformed_payloads() {
    let r = ring(&[("k1", 1)]);
    let ev = ticket().event;
    let (payload, _) = decode_parts(&r.seal_ticket(&ticket()));

    let mut version = payload.clone();
    version[0] = 2;
    let mut kind = payload.clone();
    kind[1] = 9;
    let mut short = payload.clone();
    short.pop();
    let mut long = payload.clone();
    long.push(0);
    let mut bad_kid = payload.clone();
    bad_kid[3] = b'!';
    for crafted in [version, kind, short, long, bad_kid, vec![], vec![1, 1, 0]] {
        assert_eq!(
            r.open_ticket(&signed(&r, &crafted), ev, NOW, DAY),
            Err(Reject::Malformed),
            "{crafted:?}"
        );
    }
    assert_eq!(
        r.open_ticket(&signed(&r, &payload), ev, NOW, DAY),
        Ok(ticket())
    );
}

#[test]
fn every_bit_flip_is_refused() {
    let r = ring(&[("k1", 1)]);
    let ev = ticket().event;
    for token in [r.seal_ticket(&ticket()), r.seal_pass(&pass())] {
        let (payload, tag) = decode_parts(&token);
        let body_start = HEADER_LEN + 2;
        for i in 0..payload.len() * 8 {
            let mut p = payload.clone();
            p[i / 8] ^= 1 << (i % 8);
            let crafted = encode_parts(&p, &tag);
            let got_t = r.open_ticket(&crafted, ev, NOW, DAY);
            let got_p = r.open_pass(&crafted, ev, NOW);
            assert!(got_t.is_err() && got_p.is_err(), "payload bit {i}");
            if i / 8 >= body_start {
                assert_eq!(got_t, Err(Reject::BadSignature), "payload bit {i}");
            }
        }
        for i in 0..tag.len() * 8 {
            let mut t = tag.clone();
            t[i / 8] ^= 1 << (i % 8);
            let crafted = encode_parts(&payload, &t);
            assert_eq!(
                r.open_ticket(&crafted, ev, NOW, DAY),
                Err(Reject::BadSignature)
            );
            assert_eq!(r.open_pass(&crafted, ev, NOW), Err(Reject::BadSignature));
        }
    }
}

#[test]
fn every_truncation_is_refused() {
    let r = ring(&[("k1", 1)]);
    let ev = ticket().event;
    for token in [r.seal_ticket(&ticket()), r.seal_pass(&pass())] {
        for len in 0..token.len() {
            let cut = &token[..len];
            for got in [
                r.open_ticket(cut, ev, NOW, DAY).err(),
                r.open_pass(cut, ev, NOW).err(),
            ] {
                assert!(
                    matches!(got, Some(Reject::Malformed | Reject::BadSignature)),
                    "len {len}: {got:?}"
                );
            }
        }
    }
}

#[test]
fn random_input_never_panics_or_verifies() {
    let r = ring(&[("k1", 1)]);
    let ev = ticket().event;
    let valid = r.seal_pass(&pass());
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/";
    let mut rng = StdRng::seed_from_u64(0x05e7);
    for round in 0..20_000 {
        let token: String = match round % 3 {
            0 => {
                let len = rng.random_range(0..300);
                let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            1 => {
                let len = rng.random_range(0..120);
                (0..len)
                    .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
                    .collect()
            }
            _ => {
                let mut bytes = valid.clone().into_bytes();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = alphabet[rng.random_range(0..alphabet.len())];
                }
                if bytes == valid.as_bytes() {
                    continue;
                }
                String::from_utf8(bytes).unwrap()
            }
        };
        assert!(r.open_ticket(&token, ev, NOW, DAY).is_err(), "{token:?}");
        assert!(r.open_pass(&token, ev, NOW).is_err(), "{token:?}");
    }
}

#[test]
fn reject_labels_are_distinct_snake_case_and_complete() {
    let labels: Vec<&str> = Reject::ALL.iter().map(Reject::label).collect();
    let mut unique = labels.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), Reject::ALL.len());
    for l in &labels {
        assert!(
            l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{l}"
        );
    }
    for r in [
        Reject::Malformed,
        Reject::TooLong,
        Reject::UnknownKey,
        Reject::BadSignature,
        Reject::Expired,
        Reject::OtherEvent,
        Reject::WrongKind,
        Reject::FromFuture,
    ] {
        assert!(Reject::ALL.contains(&r), "{r:?} missing from ALL");
    }
}

#[test]
fn challenges_round_trip_expire_and_are_no_ticket() {
    let r = ring(&[("k1", 1)]);
    let ev = event_id("launch");
    let c = Challenge {
        event: ev,
        issued_at: NOW,
        id: 99,
    };
    let token = r.seal_challenge(&c);
    assert_eq!(r.open_challenge(&token, ev, NOW + 60, 120), Ok(c));
    assert_eq!(
        r.open_challenge(&token, ev, NOW + 120, 120),
        Err(Reject::Expired)
    );
    assert_eq!(
        r.open_challenge(&token, event_id("other"), NOW, 120),
        Err(Reject::OtherEvent)
    );
    assert_eq!(
        r.open_challenge(&token, ev, NOW - 60, 120),
        Err(Reject::FromFuture)
    );
    // Same field count as a ticket, but never one (nor the other way round).
    assert_eq!(r.open_ticket(&token, ev, NOW, DAY), Err(Reject::WrongKind));
    let t = r.seal_ticket(&ticket());
    assert_eq!(r.open_challenge(&t, ev, NOW, 120), Err(Reject::WrongKind));
    // Another cluster's keys: refused.
    let other = ring(&[("k1", 2)]);
    assert_eq!(
        other.open_challenge(&token, ev, NOW, 120),
        Err(Reject::BadSignature)
    );
}
