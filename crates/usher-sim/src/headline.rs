//! The report's headline: the verdict in two sentences and the table of
//! numbers, one column per run.

use std::fmt::Write;

use super::summary::RunSummary;
use super::svg::{esc, short};

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("–".into(), |v| format!("{}{unit}", short(v)))
}

/// A share (0 to 1) as a whole percentage, "–" when unknown.
fn share(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.0}%", v * 100.0))
}

fn pct(a: u64, b: u64) -> String {
    if b == 0 {
        "–".into()
    } else {
        format!("{:.1}%", a as f64 * 100.0 / b as f64)
    }
}

/// "1 process" or "3 nodes + Redis": what usher ran as.
pub(super) fn deployment(nodes: usize) -> String {
    if nodes > 1 {
        format!("{nodes} nodes + Redis")
    } else {
        "1 process".into()
    }
}

fn minutes(s: Option<f64>) -> String {
    s.map_or("–".into(), |s| {
        if s < 90.0 {
            format!("{s:.0} s")
        } else {
            format!("{:.1} min", s / 60.0)
        }
    })
}

/// Rows of the headline table: label, then one cell per run.
pub(super) fn table(runs: &[&RunSummary]) -> String {
    type Cell = Box<dyn Fn(&RunSummary) -> String>;
    let rows: Vec<(&str, Cell)> = vec![
        (
            "usher ran as",
            Box::new(|r| r.usher.as_ref().map_or("–".into(), |u| deployment(u.nodes))),
        ),
        ("Visitors arrived", Box::new(|r| short(r.arrived as f64))),
        (
            "Got a voucher",
            Box::new(|r| {
                format!(
                    "{} ({})",
                    short(r.outcomes.voucher as f64),
                    pct(r.outcomes.voucher, r.arrived)
                )
            }),
        ),
        (
            "Got in, claim answered sold out",
            Box::new(|r| short(r.outcomes.sold_out as f64)),
        ),
        (
            "Told sold out while waiting",
            Box::new(|r| short(r.outcomes.told_sold_out as f64)),
        ),
        (
            "Gave up waiting in line",
            Box::new(|r| short(r.outcomes.gave_up as f64)),
        ),
        (
            "Gave up on errors",
            Box::new(|r| short(r.outcomes.failed as f64)),
        ),
        (
            "Still waiting at the end",
            Box::new(|r| short(r.outcomes.waiting as f64)),
        ),
        (
            "Visitors who met an error",
            Box::new(|r| {
                format!(
                    "{} ({})",
                    short(r.visitors_with_errors as f64),
                    pct(r.visitors_with_errors, r.arrived)
                )
            }),
        ),
        (
            "Errors met (5xx, 429s, timeouts, resets)",
            Box::new(|r| short(r.errors_seen as f64)),
        ),
        (
            "of which 429 Too Many Requests",
            Box::new(|r| short(r.errors_429 as f64)),
        ),
        (
            "Origin peak in flight",
            Box::new(|r| {
                format!(
                    "{} of {}",
                    opt(r.origin.max_in_flight_seen, ""),
                    r.origin.capacity
                )
            }),
        ),
        ("Origin 503s", Box::new(|r| opt(r.origin.rejected_503, ""))),
        (
            "Origin busy while the line waited (stock left)",
            Box::new(|r| share(r.origin.busy_share_while_waiting)),
        ),
        (
            "Site latency p50 / p95 / p99",
            Box::new(|r| {
                format!(
                    "{} / {} / {}",
                    opt(r.origin.latency_p50_ms, " ms"),
                    opt(r.origin.latency_p95_ms, " ms"),
                    opt(r.origin.latency_p99_ms, " ms")
                )
            }),
        ),
        (
            "Wait to get in: median / p90 / max",
            Box::new(|r| {
                format!(
                    "{} / {} / {}",
                    minutes(r.wait_seconds.p50),
                    minutes(r.wait_seconds.p90),
                    minutes(r.wait_seconds.max)
                )
            }),
        ),
        (
            "Wait to get in, voucher holders: median / p90 / p99",
            Box::new(|r| {
                let w = &r.wait_seconds_voucher;
                format!(
                    "{} / {} / {}",
                    minutes(w.p50),
                    minutes(w.p90),
                    minutes(w.p99)
                )
            }),
        ),
        (
            "Overtaken by a later arrival",
            Box::new(|r| format!("{:.2}%", r.fairness.overtaken_share * 100.0)),
        ),
        (
            "Voucher codes: issued / distinct / stock",
            Box::new(|r| {
                format!(
                    "{} / {} / {}",
                    r.vouchers.issued, r.vouchers.unique, r.vouchers.stock
                )
            }),
        ),
        (
            "Last voucher received",
            Box::new(|r| {
                r.vouchers.last_issued_seconds.map_or("–".into(), |t| {
                    format!("{} after opening", minutes(Some(t)))
                })
            }),
        ),
        (
            "usher's own 5xx",
            Box::new(|r| r.usher.as_ref().map_or("–".into(), |u| short(u.own_5xx))),
        ),
        (
            "usher CPU mean / peak, RSS peak",
            Box::new(|r| {
                r.usher.as_ref().map_or("–".into(), |u| {
                    let summed = if u.nodes > 1 {
                        format!(" (summed: {})", deployment(u.nodes))
                    } else {
                        String::new()
                    };
                    format!(
                        "{:.0}% / {:.0}%, {:.0} MiB{summed}",
                        u.cpu_mean_percent, u.cpu_peak_percent, u.rss_peak_mib
                    )
                })
            }),
        ),
    ];
    let mut out = String::from("<table><tr><th></th>");
    for r in runs {
        let _ = write!(
            out,
            "<th>{}</th>",
            esc(&r
                .mode
                .replace("unprotected", "without usher")
                .replace("protected", "with usher"))
        );
    }
    out.push_str("</tr>");
    for (name, cell) in rows {
        let _ = write!(out, "<tr><td>{name}</td>");
        for r in runs {
            let _ = write!(out, "<td>{}</td>", esc(&cell(r)));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

pub(super) fn verdict(p: Option<&RunSummary>, u: Option<&RunSummary>) -> String {
    let mut out = String::new();
    if let Some(u) = u {
        let _ = write!(
            out,
            "<p><b>Without usher</b>: {} of {} visitors met errors ({} errors in all); the origin was pushed to {} requests at once (capacity {}) and refused {}. {} got a voucher; {} gave up on errors.</p>",
            short(u.visitors_with_errors as f64),
            short(u.arrived as f64),
            short(u.errors_seen as f64),
            opt(u.origin.max_in_flight_seen, ""),
            u.origin.capacity,
            opt(u.origin.rejected_503, ""),
            short(u.outcomes.voucher as f64),
            short(u.outcomes.failed as f64),
        );
    }
    if let Some(p) = p {
        let own = p.usher.as_ref().map_or(0.0, |x| x.own_5xx);
        let _ = write!(
            out,
            "<p><b>With usher</b>: the origin peaked at {} requests at once (capacity {}, {} refused); usher answered {} errors itself; {} visitors got a voucher, {} gave up waiting, {} met an error. Admission followed arrival: {:.2}% were overtaken by a later arrival by more than one poll interval ({:.0} s).</p>",
            opt(p.origin.max_in_flight_seen, ""),
            p.origin.capacity,
            opt(p.origin.rejected_503, ""),
            short(own),
            short(p.outcomes.voucher as f64),
            short(p.outcomes.gave_up as f64),
            short(p.visitors_with_errors as f64),
            p.fairness.overtaken_share * 100.0,
            p.fairness.slack_seconds,
        );
        if p.outcomes.told_sold_out > 0 {
            let _ = write!(
                out,
                "<p>usher told {} waiting visitors the vouchers were gone, and they left.</p>",
                short(p.outcomes.told_sold_out as f64)
            );
        }
        if p.errors_429 > 0 {
            let _ = write!(
                out,
                "<p>usher refused {} requests with 429 Too Many Requests (its per-pass limit, or the durable store unable to reserve tickets; the per-address limits hold or challenge instead); they count as errors above.</p>",
                short(p.errors_429 as f64)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_column_per_run() {
        let a = RunSummary {
            mode: "unprotected".into(),
            arrived: 10,
            ..RunSummary::default()
        };
        let b = RunSummary {
            mode: "protected".into(),
            arrived: 10,
            ..RunSummary::default()
        };
        let t = table(&[&a, &b]);
        assert!(
            t.contains("<th>without usher</th><th>with usher</th>"),
            "{t}"
        );
        assert!(t.contains("Origin peak in flight"));
        assert!(t.contains("of which 429 Too Many Requests"));
        assert_eq!(pct(1, 4), "25.0%");
        assert_eq!(share(Some(0.426)), "43%");
        assert_eq!(share(None), "–");
        assert!(t.contains("Last voucher received") && t.contains("voucher holders"));
        assert_eq!(minutes(Some(30.0)), "30 s");
        assert_eq!(minutes(Some(600.0)), "10.0 min");
    }

    #[test]
    fn refusals_and_sold_out_are_named_in_the_verdict() {
        let p = RunSummary {
            mode: "protected".into(),
            errors_seen: 12,
            errors_429: 12,
            ..RunSummary::default()
        };
        assert!(verdict(Some(&p), None).contains("429 Too Many Requests"));
        let told = RunSummary {
            mode: "protected".into(),
            outcomes: crate::summary::Outcomes {
                told_sold_out: 40,
                ..Default::default()
            },
            ..RunSummary::default()
        };
        assert!(verdict(Some(&told), None).contains("told 40 waiting visitors"));
        let calm = RunSummary {
            mode: "protected".into(),
            ..RunSummary::default()
        };
        assert!(!verdict(Some(&calm), None).contains("429"));
    }
}
