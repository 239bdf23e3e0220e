//! The shipped monitoring matches the binary: every `usher_*` and
//! `process_*` metric that the alert rules and the Grafana dashboard query is
//! exported by a running usher, every alert has a runbook section, and
//! (when `promtool` is installed) the rules pass `promtool check rules` and
//! their unit tests.

use crate::support::promql;
use crate::support::TempDir;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usher::app::App;
use usher::config::Config;
use usher::logging::LogHandle;
use usher::server::{self, Listeners};

use promql::{
    aggregations_of, dashboard, dashboard_exprs, exported, helped_with, metric_names, monitoring,
    rule_exprs,
};

/// Every PromQL expression of the rules and the dashboard.
fn all_exprs() -> Vec<String> {
    let rules = std::fs::read_to_string(monitoring("usher.rules.yml")).unwrap();
    let mut exprs = rule_exprs(&rules);
    assert!(
        exprs.len() >= 10,
        "only {} rule expressions found",
        exprs.len()
    );
    let dash = dashboard();
    let before = exprs.len();
    dashboard_exprs(&dash, &mut exprs);
    assert!(exprs.len() - before >= 20, "dashboard queries not found");
    exprs
}

fn used_names() -> BTreeSet<String> {
    all_exprs().iter().flat_map(|e| metric_names(e)).collect()
}

async fn http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts usher with a plain and a TLS listener, a room (the closed-loop
/// gate) and vouchers, sends the traffic that creates the labelled series
/// (a connection, a refused handshake, a smuggling attempt), then returns
/// its `/metrics` once the room has ticked.
async fn scrape_running_usher() -> String {
    // Tests run at once: one directory each.
    let dir = TempDir::new("monitoring");
    let (cert, key) = usher::tls::dev_certificate(&["localhost".into()], 30).unwrap();
    std::fs::write(dir.join("dev.crt"), cert).unwrap();
    std::fs::write(dir.join("dev.key"), key).unwrap();
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\
                [server.tls]\nlisten = [\"127.0.0.1:0\"]\n\
                [[server.tls.certificates]]\ncert = \"dev.crt\"\nkey = \"dev.key\"\n\
                [origin]\nurl = \"http://127.0.0.1:9\"\n\
                [room]\ntick = \"50ms\"\n\
                [vouchers]\nplugin = \"pool\"\npool_file = \"codes.txt\"\nstock = 5\n\
                state_dir = \"state\"\nidentity = \"header:x-user\"\n";
    // three codes for a stock of five: the pool is the stock
    std::fs::write(dir.join("codes.txt"), "A-1\nA-2\nA-3\n").unwrap();
    let cfg = Config::parse(text, "test", &dir).unwrap();
    let app = App::new(cfg, LogHandle::none()).unwrap();
    let listeners = Listeners::bind(&app).await.unwrap();
    let running = server::serve(Arc::clone(&app), listeners);
    let (plain, tls) = (running.bound.plain[0], running.bound.tls[0]);
    let admin = running.bound.admin.unwrap();

    let smuggle = http(
        plain,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(smuggle.starts_with("HTTP/1.1 400"), "{smuggle}");
    http(tls, b"this is not a TLS hello\r\n\r\n").await;

    // The room's first ticks set the closed-loop gate's figures.
    let started = std::time::Instant::now();
    let metrics = loop {
        let metrics = http(
            admin,
            b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
        if metrics.contains("\nusher_gate_origin_target_ratio 0.85\n") {
            break metrics;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no gate target after 10 s:\n{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    running.shutdown(std::time::Duration::from_secs(1)).await;
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_dashboard_use_is_exported() {
    let used = used_names();
    for sure in [
        "usher_requests_total",
        "usher_origin_request_duration_seconds",
        "process_open_fds",
        "usher_queue_length",
    ] {
        assert!(used.contains(sure), "{sure} not found in {used:?}");
    }
    let metrics = scrape_running_usher().await;
    let have = exported(&metrics);
    assert!(have.contains("usher_build_info"), "{metrics}");
    // the voucher stock the alerts compare with: the pool's three codes
    for line in ["usher_vouchers_stock 3", "usher_vouchers_remaining 3"] {
        assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
    }

    let missing: Vec<&String> = used.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {have:?}"
    );
}

#[test]
fn name_extraction_finds_names_and_skips_labels() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(usher_wait_seconds_bucket{job=\"usher_x\"}[5m])))\n\
         / process_max_fds and usher:recorded:rate5m",
    );
    let want: BTreeSet<String> = ["usher_wait_seconds", "process_max_fds"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want);
    let exprs = rule_exprs("  - alert: A\n    expr: |\n      a_b\n      > 1\n    for: 1m\n  - alert: B\n    expr: up == 0\n");
    assert_eq!(exprs, vec!["a_b\n> 1\n".to_string(), "up == 0".to_string()]);
}

#[test]
fn the_aggregation_around_a_metric_is_found() {
    let agg = |e: &str| aggregations_of(e, "usher_active_users");
    assert_eq!(
        agg("sum(usher_active_users{job=~\"$job\"})"),
        [Some("sum".into())]
    );
    assert_eq!(
        agg("max by (job) (max_over_time(usher_active_users[5m])) > 1"),
        [Some("max".into())]
    );
    assert_eq!(
        agg("sum(max by (job) (usher_active_users)) / sum without (x) (rate(usher_active_users[1m]))"),
        [Some("max".into()), Some("sum".into())]
    );
    assert_eq!(agg("usher_active_users > 3 and on (job) max(up)"), [None]);
}

/// GitHub's anchor for a heading: lower case, spaces to dashes, most
/// punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// One alerting rule's name, severity and annotations.
#[derive(Debug, Default)]
struct Alert {
    name: String,
    severity: String,
    annotations: BTreeMap<String, String>,
}

/// The alerting rules of a rules file, read line by line (our file's
/// layout: `- alert:` then its keys, annotations one line each).
fn alerts(rules: &str) -> Vec<Alert> {
    let mut out: Vec<Alert> = Vec::new();
    let mut in_annotations = false;
    for line in rules.lines() {
        let t = line.trim();
        if t.starts_with('#') {
            continue;
        }
        if let Some(name) = t.strip_prefix("- alert:") {
            out.push(Alert {
                name: name.trim().to_string(),
                ..Alert::default()
            });
            in_annotations = false;
            continue;
        }
        let Some(a) = out.last_mut() else { continue };
        if let Some(s) = t.strip_prefix("severity:") {
            a.severity = s.trim().to_string();
        } else if t == "annotations:" {
            in_annotations = true;
        } else if in_annotations {
            if let Some((k, v)) = t.split_once(": ") {
                let v = v.trim().trim_matches('"').to_string();
                a.annotations.insert(k.to_string(), v);
            }
        }
    }
    out
}

#[test]
fn every_alert_has_runbook_url_summary_and_description() {
    let rules = std::fs::read_to_string(monitoring("usher.rules.yml")).unwrap();
    let ops =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md"))
            .unwrap();
    let anchors: BTreeSet<String> = ops
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| anchor(h.trim_start_matches('#')))
        .collect();
    let alerts = alerts(&rules);
    assert!(alerts.len() >= 20, "only {} alerts found", alerts.len());
    assert_eq!(
        alerts.len(),
        rules.matches("- alert:").count(),
        "an alert the parser missed"
    );
    let mut bases = BTreeSet::new();
    for a in &alerts {
        let keys: Vec<&str> = a.annotations.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["description", "runbook_url", "summary"],
            "{}: annotations",
            a.name
        );
        for k in ["summary", "description"] {
            assert!(a.annotations[k].len() >= 20, "{}: {k} too short", a.name);
        }
        assert!(
            ["critical", "warning", "info"].contains(&a.severity.as_str()),
            "{}: severity {:?}",
            a.name,
            a.severity
        );
        let url = &a.annotations["runbook_url"];
        assert!(
            url.starts_with("https://"),
            "{}: {url} is not a URL",
            a.name
        );
        let (base, target) = url
            .split_once("/docs/OPERATIONS.md#")
            .unwrap_or_else(|| panic!("{}: {url} is not a section of docs/OPERATIONS.md", a.name));
        bases.insert(base.to_string());
        assert_eq!(
            target,
            a.name.to_lowercase(),
            "{}: its runbook section is its own",
            a.name
        );
        assert!(
            anchors.contains(target),
            "no section #{target} in docs/OPERATIONS.md"
        );
    }
    assert_eq!(bases.len(), 1, "one runbook base for all: {bases:?}");
    assert!(
        rules.contains(&format!(
            "# RUNBOOK_BASE: {}/docs/OPERATIONS.md",
            bases.first().unwrap()
        )),
        "the header names the runbook base the links use"
    );
}

/// For each alert name in a promtool test file: the severities of the
/// alerts some case expects to fire, and whether some case expects none.
fn unit_cases(tests: &str) -> BTreeMap<String, (BTreeSet<String>, bool)> {
    let mut out: BTreeMap<String, (BTreeSet<String>, bool)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in tests.lines().map(str::trim) {
        if line.starts_with("- eval_time:") || line.starts_with("- interval:") {
            current = None;
        } else if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_string());
            out.entry(name.trim().to_string()).or_default();
        } else if let Some(name) = &current {
            if line == "exp_alerts: []" {
                out.get_mut(name).unwrap().1 = true;
            } else if let Some(sev) = line.strip_prefix("severity:") {
                out.get_mut(name).unwrap().0.insert(sev.trim().to_string());
            }
        }
    }
    out
}

#[test]
fn every_alert_fires_in_a_unit_test_and_stays_quiet_in_another() {
    let rules = std::fs::read_to_string(monitoring("usher.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(monitoring("usher.rules.test.yml")).unwrap();
    let cases = unit_cases(&tests);
    for a in alerts(&rules) {
        let (fires, quiet) = cases
            .get(&a.name)
            .unwrap_or_else(|| panic!("{}: no unit test", a.name));
        assert!(
            fires.contains(&a.severity),
            "{} ({}): no case where it fires",
            a.name,
            a.severity
        );
        assert!(quiet, "{}: no case where it stays quiet", a.name);
    }
    // the N-node cases: three nodes reporting one line
    assert!(tests.contains(r#"instance="c""#), "no three-node case");
}

/// Line-wide gauges (HELP says so) report the same figure on every node
/// of a shared line: a `sum` (or `count`) over nodes reads N times too
/// high. Every query aggregates them with `max`, `min` or `avg`, or not at
/// all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_wide_gauges_are_never_summed_over_nodes() {
    let metrics = scrape_running_usher().await;
    let line_wide = helped_with(&metrics, usher::metrics::LINE_WIDE);
    for sure in [
        "usher_active_users",
        "usher_pending_admissions",
        "usher_queue_length",
        "usher_admission_rate",
        "usher_vouchers_remaining",
    ] {
        assert!(line_wide.contains(sure), "{sure} not marked line-wide");
    }
    assert!(!line_wide.contains("usher_admitted_total"));
    let mut checked = 0;
    for expr in all_exprs() {
        for name in metric_names(&expr).intersection(&line_wide) {
            for agg in aggregations_of(&expr, name) {
                checked += 1;
                assert!(
                    matches!(agg.as_deref(), None | Some("max" | "min" | "avg")),
                    "{name} aggregated with {agg:?} in:\n{expr}"
                );
            }
        }
    }
    assert!(checked >= 15, "only {checked} uses of line-wide gauges");
}

#[test]
fn dashboard_panels_have_ids_places_and_queries() {
    let dash = dashboard();
    let panels = dash["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id {}",
            p["id"]
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {} is wider than the grid", p["title"]);
        if p["type"] != "row" {
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
            for t in targets {
                assert!(t["refId"].is_string() && t["expr"].is_string());
            }
        }
    }
}

#[test]
fn promtool_accepts_the_rules_and_their_tests() {
    let Ok(out) = Command::new("promtool").arg("--version").output() else {
        println!("note: promtool not installed; rules checked by this test's parser only");
        return;
    };
    assert!(out.status.success());
    for args in [
        ["check", "rules", "usher.rules.yml"],
        ["test", "rules", "usher.rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(monitoring(""))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
