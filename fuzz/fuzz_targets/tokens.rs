//! Ticket and pass decoding: arbitrary tokens never panic and never open;
//! sealed ones open to what was sealed, and any tampering is refused.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use usher::tokens::{Keyring, Pass, Ticket};

fn keys() -> &'static Keyring {
    static KEYS: OnceLock<Keyring> = OnceLock::new();
    KEYS.get_or_init(|| {
        Keyring::parse("fuzz:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\nold:Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=")
            .expect("a valid keyring")
    })
}

fn u64_at(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, v) in b.iter_mut().enumerate() {
        *v = data.get(i * 8 + k).copied().unwrap_or(0);
    }
    u64::from_be_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let (event, now) = (u64_at(data, 0), u64_at(data, 1));
    // 1. Arbitrary text as a token: refused, never a panic.
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(keys.open_ticket(text, event, now, u64::MAX).is_err());
        assert!(keys.open_pass(text, event, now).is_err());
    }
    // 2. Sealed tokens open to what was sealed ...
    let ticket = Ticket {
        event,
        number: u64_at(data, 2),
        issued_at: now,
    };
    let sealed = keys.seal_ticket(&ticket);
    let opened = keys.open_ticket(&sealed, event, now, u64::MAX);
    if now < u64::MAX {
        assert_eq!(opened.ok(), Some(ticket), "{sealed}");
    }
    let pass = Pass {
        event,
        pass_id: u64_at(data, 3),
        admitted_at: now,
        expires_at: now.saturating_add(1).max(1),
    };
    let sealed_pass = keys.seal_pass(&pass);
    if now < u64::MAX {
        assert_eq!(keys.open_pass(&sealed_pass, event, now).ok(), Some(pass));
    }
    // ... a ticket is never a pass, nor the reverse ...
    assert!(keys.open_pass(&sealed, event, now).is_err());
    assert!(keys
        .open_ticket(&sealed_pass, event, now, u64::MAX)
        .is_err());
    // ... and one changed character makes either worthless.
    if let Some(&b) = data.get(32) {
        let mut bytes = sealed.clone().into_bytes();
        let at = usize::from(b) % bytes.len();
        let to = data.get(33).copied().unwrap_or(b'A');
        if bytes[at] != to {
            bytes[at] = to;
            if let Ok(tampered) = String::from_utf8(bytes) {
                assert!(
                    keys.open_ticket(&tampered, event, now, u64::MAX).is_err(),
                    "{sealed} -> {tampered}"
                );
            }
        }
    }
});
