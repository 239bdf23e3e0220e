//! Scenario parsing, checking and scaling.

use super::tests_support::SMALL;
use super::*;

#[test]
fn parses_and_scales() {
    let s = Scenario::parse(SMALL, "t").unwrap();
    assert_eq!(s.refresh_real(), Duration::from_secs(1));
    assert_eq!(s.rate_real_per_minute(), Some(600));
    assert_eq!(s.origin_latency_real_ms(), 10);
    assert_eq!(s.real(60.0), Duration::from_secs(6));
    assert_eq!(s.sim(Duration::from_secs(2)), 20.0);
    assert_eq!(s.origin_max_in_flight(), 8);
    assert!(s.voucher.enabled && s.voucher.path == "/voucher/claim");
    assert_eq!(s.usher.nodes, 1, "one process unless asked");
    assert!(!s.multi_node());
    assert_eq!(s.origin_max_in_flight_per_node(), 8);
}

#[test]
fn nodes_share_the_origin_cap_and_are_bounded() {
    let with = |n: &str| SMALL.replace("[usher]\n", &format!("[usher]\nnodes = {n}\n"));
    let s = Scenario::parse(&with("3"), "t").unwrap();
    assert!(s.multi_node());
    // 8 over 3 nodes: 2 each, never more than 8 in all.
    assert_eq!(s.origin_max_in_flight_per_node(), 2);
    let s = Scenario::parse(&with("8"), "t").unwrap();
    assert_eq!(s.origin_max_in_flight_per_node(), 1);
    // Zero, beyond the bound, or more nodes than the origin's cap.
    let too_many = with("8").replace("capacity = 8", "capacity = 4");
    for bad in [with("0"), with("9"), too_many] {
        let Err(ScenarioError::Invalid { problems, .. }) = Scenario::parse(&bad, "t") else {
            panic!("accepted: {bad}")
        };
        assert!(
            problems.iter().any(|p| p.starts_with("usher.nodes:")),
            "{problems:?}"
        );
    }
}

#[test]
fn every_mistake_is_reported_with_its_key() {
    let bad = SMALL
        .replace("visitors = 100", "visitors = 0")
        .replace("claim_window_seconds = 60", "claim_window_seconds = 20")
        .replace("sigma = 1.0", "sigma = 9.0");
    let Err(ScenarioError::Invalid { problems, .. }) = Scenario::parse(&bad, "t") else {
        panic!("accepted")
    };
    let joined = problems.join("\n");
    assert!(joined.contains("visitors:"), "{joined}");
    assert!(joined.contains("usher.claim_window_seconds"), "{joined}");
    assert!(joined.contains("patience.sigma"), "{joined}");
}

#[test]
fn unknown_keys_are_refused() {
    let bad = SMALL.replace("[origin]", "[origin]\ncapacty = 3");
    assert!(matches!(
        Scenario::parse(&bad, "t"),
        Err(ScenarioError::Parse { .. })
    ));
    let bad = SMALL.replace("sigma = 1.0", "sigma = 1.0\nmean_seconds = 3");
    assert!(Scenario::parse(&bad, "t").is_err());
}

#[test]
fn client_timeout_must_outlast_a_long_poll() {
    // Refresh 10 s simulated at 10x: one real second; 20 s simulated needed.
    let with = |t: &str| format!("{SMALL}[client]\ntimeout_seconds = {t}\n");
    assert!(Scenario::parse(&with("20"), "t").is_ok());
    let Err(ScenarioError::Invalid { problems, .. }) = Scenario::parse(&with("15"), "t") else {
        panic!("a timeout shorter than the long poll was accepted")
    };
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("client.timeout_seconds:") && p.contains("long poll")),
        "{problems:?}"
    );
}

#[test]
fn addresses_are_optional_and_checked() {
    let s = Scenario::parse(SMALL, "t").unwrap();
    assert!(s.addresses.is_none(), "no table, no addresses");
    let with = |t: &str| format!("{SMALL}[addresses]\n{t}\n");
    let s = Scenario::parse(&with("shared = 50\nshared_share = 0.3"), "t").unwrap();
    let a = s.addresses.expect("the table");
    assert_eq!((a.shared, a.shared_share), (50, 0.3));
    // More carriers than connections (default 1,000), a share past 1, a typo.
    for (bad, key) in [
        ("shared = 1001\nshared_share = 0.3", "addresses.shared:"),
        ("shared = 5\nshared_share = 1.2", "addresses.shared_share:"),
    ] {
        let Err(ScenarioError::Invalid { problems, .. }) = Scenario::parse(&with(bad), "t") else {
            panic!("accepted: {bad}")
        };
        assert!(problems.iter().any(|p| p.starts_with(key)), "{problems:?}");
    }
    let typo = with("shared = 5\nshare = 0.3");
    assert!(matches!(
        Scenario::parse(&typo, "t"),
        Err(ScenarioError::Parse { .. })
    ));
}
