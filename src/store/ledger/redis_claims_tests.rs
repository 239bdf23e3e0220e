//! Unit tests of the Redis claim ledger's pure parts.

use super::*;

#[test]
fn claim_records_decode() {
    let r = decode("e", "a", "i|7|X|Y").unwrap();
    assert!(matches!(r, Reservation::Issued(c) if c.seq == 7 && c.code == "X|Y"));
    let r = decode("e", "a", "p|3|").unwrap();
    assert!(
        matches!(r, Reservation::Pending(p) if p.seq == 3 && p.idempotency_key == idempotency_key("e", "a"))
    );
    assert_eq!(
        decode("e", "a", "r||no").unwrap(),
        Reservation::Refused("no".into())
    );
    for bad in ["", "p", "p|x|", "z|1|"] {
        assert!(decode("e", "a", bad).is_err(), "{bad:?}");
    }
}

#[test]
fn persistence_is_safe_only_with_aof_fsync_always() {
    let p = |aof, f: Option<&str>| Persistence {
        aof,
        fsync: f.map(str::to_owned),
    };
    assert!(p(true, Some("always")).is_safe());
    assert!(
        p(true, None).is_safe(),
        "CONFIG refused: AOF is what we know"
    );
    assert!(!p(true, Some("everysec")).is_safe());
    assert!(!p(false, Some("always")).is_safe());
}
