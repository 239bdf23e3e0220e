//! The shipped monitoring matches the binary: every `usher_*` and
//! `process_*` metric that the alert rules and the Grafana dashboard query is
//! exported by a running usher, every alert has a runbook section, and
//! (when `promtool` is installed) the rules pass `promtool check rules` and
//! their unit tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usher::app::App;
use usher::config::Config;
use usher::logging::LogHandle;
use usher::server::{self, Listeners};

fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/monitoring")
        .join(file)
}

/// The PromQL of every `expr:` in a rules file, single-line or block (`|`).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                let deeper = next.len() - next.trim_start().len() > indent;
                if !(deeper || next.trim().is_empty()) {
                    break;
                }
                block.push_str(next.trim());
                block.push('\n');
                lines.next();
            }
            out.push(block);
        } else {
            out.push(rest.trim_matches(|c| c == '"' || c == '\'').to_string());
        }
    }
    out
}

/// Every `"expr"` string in the dashboard, wherever it sits.
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// `usher_*` and `process_*` metric names in a PromQL expression, with the
/// histogram suffixes taken off.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeSet::new();
    let mut start = None;
    for (i, c) in expr.char_indices().chain([(expr.len(), ' ')]) {
        match (start, is_name(c)) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                let word = &expr[s..i];
                let prefixed = word.starts_with("usher_") || word.starts_with("process_");
                // Recording rules (`usher:...`) and label values in quotes
                // are not metric names.
                let quoted = expr[..s].ends_with('"');
                if prefixed && !word.contains(':') && !quoted {
                    out.insert(base_name(word).to_string());
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Metric names in a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if l.starts_with('#') || l.is_empty() => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(|n| base_name(n).to_string())
        .collect()
}

fn used_names() -> BTreeSet<String> {
    let rules = std::fs::read_to_string(monitoring("usher.rules.yml")).unwrap();
    let mut exprs = rule_exprs(&rules);
    assert!(
        exprs.len() >= 10,
        "only {} rule expressions found",
        exprs.len()
    );
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let before = exprs.len();
    dashboard_exprs(&dash, &mut exprs);
    assert!(exprs.len() - before >= 20, "dashboard queries not found");
    exprs.iter().flat_map(|e| metric_names(e)).collect()
}

async fn http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts usher with a plain and a TLS listener and sends the traffic that
/// creates the labelled series (a connection, a refused handshake, a
/// smuggling attempt), then returns its `/metrics`.
async fn scrape_running_usher() -> String {
    let dir = std::env::temp_dir().join(format!("usher-monitoring-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = usher::server::tls::dev_certificate(&["localhost".into()], 30).unwrap();
    std::fs::write(dir.join("dev.crt"), cert).unwrap();
    std::fs::write(dir.join("dev.key"), key).unwrap();
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\
                [server.tls]\nlisten = [\"127.0.0.1:0\"]\n\
                [[server.tls.certificates]]\ncert = \"dev.crt\"\nkey = \"dev.key\"\n\
                [origin]\nurl = \"http://127.0.0.1:9\"\n";
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

    let metrics = http(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    running.shutdown(std::time::Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
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

#[test]
fn every_alert_has_a_runbook_section() {
    let rules = std::fs::read_to_string(monitoring("usher.rules.yml")).unwrap();
    let ops =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md"))
            .unwrap();
    let anchors: BTreeSet<String> = ops
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| anchor(h.trim_start_matches('#')))
        .collect();
    let mut alerts = 0;
    for line in rules.lines().map(str::trim) {
        if line.starts_with("- alert:") {
            alerts += 1;
        }
        if let Some(link) = line.strip_prefix("runbook:") {
            let link = link.trim().trim_matches('"');
            let target = link
                .strip_prefix("docs/OPERATIONS.md#")
                .unwrap_or_else(|| panic!("runbook {link} is not in docs/OPERATIONS.md"));
            assert!(
                anchors.contains(target),
                "no section #{target} in docs/OPERATIONS.md"
            );
        }
    }
    assert!(alerts >= 10);
    assert_eq!(
        rules.matches("runbook:").count(),
        alerts,
        "an alert without a runbook"
    );
}

#[test]
fn dashboard_panels_have_ids_places_and_queries() {
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
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
