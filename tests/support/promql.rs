//! The shipped monitoring read by tests: the PromQL of the alert rules and
//! the Grafana dashboard, the metric names in it, the aggregation around
//! each, a Prometheus text exposition parsed into samples, and a small
//! evaluator for the dashboard's plain queries over scrapes of N nodes.
// Each test binary uses its own part of this file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A file of `config/monitoring/`.
pub fn monitoring(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/monitoring")
        .join(file)
}

/// The PromQL of every `expr:` in a rules file, single-line or block (`|`).
pub fn rule_exprs(yaml: &str) -> Vec<String> {
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

/// The shipped dashboard.
pub fn dashboard() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(monitoring("grafana-dashboard.json")).unwrap())
        .unwrap()
}

/// Every `"expr"` string in the dashboard, wherever it sits.
pub fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
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

/// The query of the dashboard panel titled `title` whose legend is `legend`.
pub fn panel_query(dash: &serde_json::Value, title: &str, legend: &str) -> String {
    let panel = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title:?}"));
    panel["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["legendFormat"] == legend)
        .unwrap_or_else(|| panic!("no query {legend:?} in panel {title:?}"))["expr"]
        .as_str()
        .unwrap()
        .to_string()
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The words of `expr` that name `usher_*` or `process_*` metrics (not in
/// quotes, not recording rules), with their byte offsets.
fn metric_words(expr: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
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
                    out.push((s, word));
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// `usher_*` and `process_*` metric names in a PromQL expression, with the
/// histogram suffixes taken off.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    metric_words(expr)
        .into_iter()
        .map(|(_, w)| base_name(w).to_string())
        .collect()
}

/// A histogram series' metric name.
pub fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

const AGGREGATIONS: [&str; 9] = [
    "sum", "max", "min", "avg", "count", "group", "stddev", "topk", "bottomk",
];

/// For each place `metric` appears in `expr`: the aggregation operator
/// that reduces it over series (the nearest one around it; functions such
/// as `rate` or `max_over_time` work per series and are looked through),
/// or `None` when nothing aggregates it.
pub fn aggregations_of(expr: &str, metric: &str) -> Vec<Option<String>> {
    metric_words(expr)
        .into_iter()
        .filter(|(_, w)| base_name(w) == metric)
        .map(|(at, _)| enclosing_aggregation(&expr[..at]))
        .collect()
}

fn enclosing_aggregation(before: &str) -> Option<String> {
    let bytes = before.as_bytes();
    let mut i = bytes.len();
    let mut depth = 0usize;
    while i > 0 {
        i -= 1;
        match bytes[i] {
            b')' => depth += 1,
            b'(' if depth > 0 => depth -= 1,
            b'(' => {
                // An unmatched `(`: what calls it? Skip `by (...)` or
                // `without (...)` between an operator and its argument.
                let mut head = before[..i].trim_end();
                if head.ends_with(')') {
                    let open = matching_open(head)?;
                    let clause = head[..open].trim_end();
                    if let Some(rest) = clause
                        .strip_suffix("by")
                        .or_else(|| clause.strip_suffix("without"))
                    {
                        head = rest.trim_end();
                    }
                }
                let word_start = head
                    .char_indices()
                    .rev()
                    .find(|(_, c)| !is_name(*c))
                    .map_or(0, |(j, c)| j + c.len_utf8());
                let word = &head[word_start..];
                if AGGREGATIONS.contains(&word) {
                    return Some(word.to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// The offset of the `(` that the final `)` of `s` closes.
fn matching_open(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Metric names in a Prometheus text exposition.
pub fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if l.starts_with('#') || l.is_empty() => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(|n| base_name(n).to_string())
        .collect()
}

/// Metric names whose HELP text in an exposition contains `marker`.
pub fn helped_with(text: &str, marker: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter(|rest| rest.contains(marker))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// One sample of an exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a Prometheus text exposition (label values without
/// escaped quotes, as usher's are).
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect();
            Some(Sample {
                name: name.to_string(),
                labels,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// The dashboard query `expr`, evaluated over scrapes of N nodes taken
/// `seconds` apart (`before[i]` and `after[i]` from node i), for queries
/// of the form `AGG [by (l, ...)] (INNER) [* k]` where INNER is
/// `metric{matchers}` (read from `after`) or `rate(metric{matchers}[...])`
/// (the increase from `before` to `after` over `seconds`). `$job` and
/// `$instance` match every node. Groups by the `by` labels' values.
/// Anything else is an error, so a changed query fails loudly.
pub fn eval(
    expr: &str,
    before: &[Vec<Sample>],
    after: &[Vec<Sample>],
    seconds: f64,
) -> Result<BTreeMap<Vec<String>, f64>, String> {
    let bad = || format!("unsupported query shape: {expr}");
    let expr = expr.trim();
    let (body, factor) = match expr.rsplit_once(") *") {
        Some((b, k)) => (format!("{b})"), k.trim().parse::<f64>().map_err(|_| bad())?),
        None => (expr.to_string(), 1.0),
    };
    let open = body.find('(').ok_or_else(bad)?;
    let head = body[..open].trim();
    let (agg, by, rest) = if let Some(agg) = head.strip_suffix(" by").map(str::trim) {
        let close = open + body[open..].find(')').ok_or_else(bad)?;
        let by: Vec<String> = body[open + 1..close]
            .split(',')
            .map(|s| s.trim().to_string())
            .collect();
        let rest = body[close + 1..].trim();
        (agg.to_string(), by, rest.to_string())
    } else {
        (head.to_string(), Vec::new(), body[open..].to_string())
    };
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(bad)?
        .trim();
    let (is_rate, selector) = match inner.strip_prefix("rate(") {
        Some(r) => (
            true,
            r.rsplit_once('[').ok_or_else(bad)?.0.trim().to_string(),
        ),
        None => (false, inner.to_string()),
    };
    let (name, matchers) = match selector.split_once('{') {
        Some((n, m)) => (n, m.trim_end_matches('}')),
        None => (selector.as_str(), ""),
    };
    if !metric_names(name).contains(name) {
        return Err(bad());
    }
    let mut want = Vec::new();
    for m in matchers.split(',').filter(|m| !m.is_empty()) {
        let (k, v) = m
            .split_once("=~")
            .or_else(|| m.split_once('='))
            .ok_or_else(bad)?;
        let v = v.trim_matches('"');
        if !v.starts_with('$') {
            if m.contains("=~") {
                return Err(bad());
            }
            want.push((k.to_string(), v.to_string()));
        }
    }
    let matches = |s: &Sample| {
        s.name == name
            && want
                .iter()
                .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == v))
    };
    let mut groups: BTreeMap<Vec<String>, Vec<f64>> = BTreeMap::new();
    for (node, now) in after.iter().enumerate() {
        for s in now.iter().filter(|s| matches(s)) {
            let value = if is_rate {
                let then = before[node]
                    .iter()
                    .find(|b| matches(b) && b.labels == s.labels)
                    .map_or(0.0, |b| b.value);
                (s.value - then) / seconds
            } else {
                s.value
            };
            let key = by
                .iter()
                .map(|l| s.labels.get(l).cloned().unwrap_or_default())
                .collect();
            groups.entry(key).or_default().push(value);
        }
    }
    groups
        .into_iter()
        .map(|(k, vs)| {
            let v = match agg.as_str() {
                "sum" => vs.iter().sum(),
                "max" => vs.iter().cloned().fold(f64::MIN, f64::max),
                "min" => vs.iter().cloned().fold(f64::MAX, f64::min),
                "avg" => vs.iter().sum::<f64>() / vs.len() as f64,
                _ => return Err(bad()),
            };
            Ok((k, v * factor))
        })
        .collect()
}
