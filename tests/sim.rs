//! End to end: the smoke scenario (2,000 visitors, compressed 20x) runs
//! against the real theater and the real usher binary, with and without
//! usher, and the summary shows the rescue: the origin within capacity,
//! no 5xx from usher, patient visitors admitted in ticket order, no voucher
//! code twice or beyond the stock; and without usher, the collapse.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokio::sync::watch;
use usher::sim::procs::Binaries;
use usher::sim::{run_report, Mode, RunOptions, Scenario};

/// The theater example beside the test's binaries; built here if missing
/// (`cargo test --test sim` builds the crate's binaries, not its examples).
fn theater(bins: &Binaries) -> PathBuf {
    if !bins.theater.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "theater"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the theater example");
    }
    bins.theater.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_scenario_rescued_by_usher() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let s = Scenario::load(&root.join("scenarios/smoke.toml")).expect("smoke scenario");
    let mut bins = Binaries::beside_current_exe().expect("binaries");
    bins.usher = PathBuf::from(env!("CARGO_BIN_EXE_usher"));
    bins.theater = theater(&bins);
    let (_tx, rx) = watch::channel(false);
    let opts = RunOptions {
        binaries: bins,
        interrupt: rx,
        progress: false,
        records_csv: false,
    };
    let dir = std::env::temp_dir().join(format!("usher-sim-test-{}", std::process::id()));
    let out = dir.join("smoke.html");
    let (summary, runs) = run_report(
        &s,
        "scenarios/smoke.toml",
        &[Mode::Unprotected, Mode::Protected],
        &opts,
        &out,
    )
    .await
    .expect("both runs");

    let p = summary.protected.as_ref().expect("protected run");
    let u = summary.unprotected.as_ref().expect("unprotected run");
    eprintln!("protected: {p:#?}");
    eprintln!(
        "unprotected outcomes: {:?}, errors {}",
        u.outcomes, u.errors_seen
    );

    // Everyone came, and the crowd was big enough to need a line.
    assert_eq!(p.arrived, s.visitors);
    let usher = p.usher.as_ref().expect("usher numbers");
    assert!(usher.max_queue_length > 100.0, "a line formed: {usher:?}");
    // The origin never saw more than it can take, and refused nothing.
    let peak = p.origin.max_in_flight_seen.expect("theater stats sampled");
    assert!(peak <= s.origin.capacity as f64, "origin peak {peak}");
    assert_eq!(p.origin.rejected_503, Some(0.0));
    // usher made no 5xx of its own; visitors met no errors at all.
    assert_eq!(usher.own_5xx, 0.0);
    assert_eq!(p.errors_seen, 0, "{:?}", p.outcomes);
    assert!(usher.max_active_users <= s.usher.max_active_users as f64);
    // Patient visitors got in in ticket order (within one poll interval).
    assert!(p.fairness.ticket_compared > 100, "{:?}", p.fairness);
    assert_eq!(p.fairness.ticket_order_violations, 0, "{:?}", p.fairness);
    // Vouchers: each code once, never beyond the stock.
    assert!(p.vouchers.issued > 100, "{:?}", p.vouchers);
    assert_eq!(p.vouchers.duplicates, 0);
    assert_eq!(p.vouchers.unique, p.vouchers.issued);
    assert!(p.vouchers.issued <= s.origin.vouchers);
    assert_eq!(u.vouchers.duplicates, 0);
    assert!(u.vouchers.issued <= s.origin.vouchers);

    // Without usher the same crowd breaks the origin.
    assert!(
        u.origin.rejected_503.unwrap_or(0.0) > 100.0,
        "{:?}",
        u.origin
    );
    assert!(
        u.visitors_with_errors > s.visitors / 4,
        "{}",
        u.visitors_with_errors
    );
    assert!(u.fairness.overtaken_share > p.fairness.overtaken_share);

    // One report with both runs side by side, and its JSON summary.
    let html = std::fs::read_to_string(&out).expect("report written");
    assert!(html.contains("without usher") && html.contains("with usher"));
    assert!(html.contains("data-series=\"usher_active_users\""));
    assert!(!html.contains("<script"), "no scripts");
    assert!(
        !html.contains("<link") && !html.contains(" src="),
        "nothing external"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(json["protected"]["usher"]["own_5xx"], 0.0);
    assert_eq!(runs.len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
