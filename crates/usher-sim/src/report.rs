//! The report: one self-contained HTML page (inline CSS and SVG, no
//! scripts) putting the collapse without usher beside the rescue with it,
//! plus the JSON summary written next to it.

use std::fmt::Write;

use super::headline::{table, verdict};
use super::runner::RunResult;
use super::sampler::Sample;
use super::scenario::Scenario;
use super::stats::Outcome;
use super::summary::{RunSummary, Summary};
use super::svg::{esc, Chart, Series, Style};
use super::Mode;

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f6f6f4;color:#222}\
main{max-width:1200px;margin:0 auto;padding:1.5em}h1{margin:.2em 0}h2{margin-top:1.6em;border-bottom:2px solid #ddd}\
.sub{color:#555}.cols{display:grid;grid-template-columns:1fr 1fr;gap:1em}.one{grid-template-columns:1fr}\
.card{background:#fff;border-radius:8px;padding:.6em .8em;box-shadow:0 1px 3px #0002}\
.bad{border-top:4px solid #c0392b}.good{border-top:4px solid #27ae60}\
.chart{width:100%;height:auto}.chart .g{stroke:#e4e4e4}.chart text{font-size:10px;fill:#555}\
.chart .ct{font-size:13px;font-weight:600;fill:#222}.chart .yt{text-anchor:end}.chart .xt,.chart .xl,.chart .nd{text-anchor:middle}\
.chart .yl{text-anchor:middle}table{border-collapse:collapse;width:100%;background:#fff}\
td,th{padding:.35em .6em;border-bottom:1px solid #eee;text-align:right}td:first-child,th:first-child{text-align:left}\
.verdict{font-size:1.05em;line-height:1.5}.notes{font-size:.9em;color:#444}code{background:#eee;padding:0 .2em}";

const RED: &str = "#c0392b";
const GREEN: &str = "#27ae60";
const BLUE: &str = "#2c6fbb";
const ORANGE: &str = "#e67e22";
const GREY: &str = "#7f8c8d";
const PURPLE: &str = "#8e44ad";
const BLACK: &str = "#333";

fn pts(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Vec<(f64, f64)> {
    samples
        .iter()
        .filter_map(|s| Some((s.t / 60.0, f(s)?)))
        .collect()
}

/// Per simulated minute, from counts in each sample interval.
fn per_minute(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .map(|w| {
            let dt = (w[1].t - w[0].t).max(1e-9) / 60.0;
            (w[1].t / 60.0, f(&w[1]) / dt)
        })
        .collect()
}

fn max_y(a: &[(f64, f64)], b: &[(f64, f64)]) -> f64 {
    a.iter().chain(b).map(|p| p.1).fold(0.0, f64::max)
}

/// The side-by-side charts for each run (`None` leaves a column out).
struct Pair<'a> {
    runs: Vec<&'a RunResult>,
    x_max: f64,
}

impl Pair<'_> {
    /// One chart per run, made by `make`; a shared y range when `shared_y`.
    fn row(&self, shared_y: bool, make: impl Fn(&RunResult) -> Chart) -> String {
        let mut charts: Vec<Chart> = self.runs.iter().map(|r| make(r)).collect();
        let top = charts
            .iter()
            .flat_map(|c| c.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)))
            .fold(0.0, f64::max);
        let mut out = String::new();
        let class = if self.runs.len() > 1 {
            "cols"
        } else {
            "cols one"
        };
        let _ = write!(out, "<div class=\"{class}\">");
        for (c, r) in charts.iter_mut().zip(&self.runs) {
            c.x_max = c.x_max.or(Some(self.x_max));
            if shared_y && c.y_max.is_none() && top > 0.0 {
                c.y_max = Some(top);
            }
            let tone = if r.mode == Mode::Protected {
                "good"
            } else {
                "bad"
            };
            let _ = write!(out, "<div class=\"card {tone}\">{}</div>", c.svg());
        }
        out.push_str("</div>");
        out
    }
}

fn label(m: Mode) -> &'static str {
    match m {
        Mode::Protected => "with usher",
        Mode::Unprotected => "without usher",
    }
}

fn wait_bars(r: &RunResult, bin: f64) -> Vec<(f64, f64)> {
    let mut counts: Vec<f64> = Vec::new();
    for w in super::fairness::waits(&r.records) {
        let i = ((w / 60.0) / bin).floor().min(10_000.0) as usize;
        if counts.len() <= i {
            counts.resize(i + 1, 0.0);
        }
        counts[i] += 1.0;
    }
    counts
        .iter()
        .enumerate()
        .map(|(i, c)| ((i as f64 + 0.5) * bin, *c))
        .collect()
}

fn order_dots(r: &RunResult) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = r
        .records
        .iter()
        .filter(|x| x.continuous)
        .filter_map(|x| Some((x.entry / 60.0, x.admitted_at? / 60.0)))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// Renders the report page.
pub fn html(s: &Scenario, summary: &Summary, runs: &[&RunResult]) -> String {
    let x_max = runs
        .iter()
        .filter_map(|r| r.samples.last().map(|x| x.t / 60.0))
        .fold(1.0 / 60.0, f64::max);
    let pair = Pair {
        runs: runs.to_vec(),
        x_max,
    };
    let mins = "minutes after opening (simulated)";
    let mut b = String::with_capacity(512 * 1024);
    let _ = write!(
        b,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>usher under fire: {name}</title><style>{CSS}</style></head><body><main>\
         <h1>usher under fire: {name}</h1><p class=\"sub\">{desc}</p>",
        name = esc(&s.name),
        desc = esc(&s.description)
    );
    if s.multi_node() {
        let _ = write!(
            b,
            "<p class=\"sub\">With usher: {}, sharing one line; each request went to the next node in turn (no affinity).</p>",
            super::headline::deployment(s.usher.nodes)
        );
    }
    let prot = runs
        .iter()
        .find(|r| r.mode == Mode::Protected)
        .map(|r| &r.summary);
    let unprot = runs
        .iter()
        .find(|r| r.mode == Mode::Unprotected)
        .map(|r| &r.summary);
    let _ = write!(
        b,
        "<div class=\"card verdict\">{}</div>",
        verdict(prot, unprot)
    );
    let summaries: Vec<&RunSummary> = runs.iter().map(|r| &r.summary).collect();
    let _ = write!(b, "<h2>Headline numbers</h2>{}", table(&summaries));
    // The crowd, once: it is the same in both runs.
    if let Some(r) = runs.first() {
        let mut c = Chart::new("The crowd: arrivals per minute", mins, "visitors / min");
        let cum: Vec<(f64, f64)> = r.samples.iter().map(|x| (x.t, x.arrived as f64)).collect();
        let rate: Vec<(f64, f64)> = cum
            .windows(2)
            .map(|w| {
                (
                    w[1].0 / 60.0,
                    (w[1].1 - w[0].1) / ((w[1].0 - w[0].0).max(1e-9) / 60.0),
                )
            })
            .collect();
        c = c.with(Series::new("arrivals / min", BLUE, Style::Area, rate));
        c.x_max = Some(x_max);
        let _ = write!(
            b,
            "<h2>The crowd</h2><div class=\"cols one\"><div class=\"card\">{}</div></div>",
            c.svg()
        );
    }
    let _ = write!(
        b,
        "<h2>Collapse and rescue</h2><p>{}</p>",
        runs.iter()
            .map(|r| format!("<b>{}</b>", label(r.mode)))
            .collect::<Vec<_>>()
            .join(" (left) · ")
            + if runs.len() > 1 { " (right)" } else { "" }
    );
    b.push_str(&pair.row(true, |r| {
        Chart::new(
            &format!("Origin load, {}", label(r.mode)),
            mins,
            "requests in flight",
        )
        .with(Series::new(
            "in flight",
            ORANGE,
            Style::Area,
            pts(&r.samples, |x| x.origin_in_flight),
        ))
        .with(Series::new(
            "peak so far",
            RED,
            Style::Line,
            pts(&r.samples, |x| x.origin_max_seen),
        ))
        .with(Series::new(
            "capacity",
            BLACK,
            Style::Dashed,
            pts(&r.samples, |_| Some(s.origin.capacity as f64)),
        ))
    }));
    b.push_str(&pair.row(true, |r| {
        Chart::new(
            &format!("Site latency seen by visitors, {}", label(r.mode)),
            mins,
            "ms (simulated)",
        )
        .with(Series::new(
            "p50",
            BLUE,
            Style::Line,
            pts(&r.samples, |x| x.site_p50_ms),
        ))
        .with(Series::new(
            "p95",
            ORANGE,
            Style::Line,
            pts(&r.samples, |x| x.site_p95_ms),
        ))
        .with(Series::new(
            "p99",
            RED,
            Style::Line,
            pts(&r.samples, |x| x.site_p99_ms),
        ))
    }));
    b.push_str(&pair.row(true, |r| {
        Chart::new(
            &format!("Errors visitors met, {}", label(r.mode)),
            mins,
            "per minute",
        )
        .with(Series::new(
            "5xx",
            RED,
            Style::Area,
            per_minute(&r.samples, |x| x.site_5xx as f64),
        ))
        .with(Series::new(
            "429 too many requests",
            ORANGE,
            Style::Line,
            per_minute(&r.samples, |x| x.rejected_429 as f64),
        ))
        .with(Series::new(
            "timeouts",
            PURPLE,
            Style::Line,
            per_minute(&r.samples, |x| x.timeouts as f64),
        ))
        .with(Series::new(
            "connection errors",
            GREY,
            Style::Line,
            per_minute(&r.samples, |x| x.conn_errors as f64),
        ))
    }));
    b.push_str(&pair.row(true, |r| {
        let mut c = Chart::new(
            &format!("Where visitors are, {}", label(r.mode)),
            mins,
            "visitors",
        )
        .with(Series::new(
            if r.mode == Mode::Protected {
                "waiting in line"
            } else {
                "reloading errors"
            },
            ORANGE,
            Style::Area,
            pts(&r.samples, |x| Some(x.waiting as f64)),
        ))
        .with(Series::new(
            "on the site",
            GREEN,
            Style::Line,
            pts(&r.samples, |x| Some(x.browsing as f64)),
        ))
        .with(Series::new(
            "away, coming back",
            GREY,
            Style::Line,
            pts(&r.samples, |x| Some(x.away as f64)),
        ));
        if r.mode == Mode::Protected {
            c = c.with(Series::new(
                "usher_queue_length",
                BLUE,
                Style::Dashed,
                pts(&r.samples, |x| x.queue_length),
            ));
        }
        c
    }));
    b.push_str(&pair.row(true, |r| {
        let colors = [
            GREEN, BLUE, BLACK, "#16a085", "#95a5a6", ORANGE, PURPLE, RED,
        ];
        let mut c = Chart::new(
            &format!("Outcomes so far, {}", label(r.mode)),
            mins,
            "visitors",
        );
        for (i, o) in Outcome::ALL.iter().enumerate() {
            if matches!(o, Outcome::Waiting | Outcome::Unfinished) {
                continue;
            }
            let p = pts(&r.samples, |x| Some(x.outcomes[i] as f64));
            if p.iter().any(|p| p.1 > 0.0) {
                c = c.with(Series::new(o.label(), colors[i], Style::Line, p));
            }
        }
        c
    }));
    b.push_str(&pair.row(true, |r| {
        Chart::new(
            &format!("Arrival order vs admission, {}", label(r.mode)),
            "place taken (minutes)",
            "got in (minutes)",
        )
        .with(Series::new(
            "one visitor",
            if r.mode == Mode::Protected {
                GREEN
            } else {
                RED
            },
            Style::Dots,
            order_dots(r),
        ))
    }));
    let longest = runs
        .iter()
        .filter_map(|r| r.summary.wait_seconds.p99)
        .fold(1.0, f64::max)
        / 60.0;
    let bin = (longest / 30.0).max(1.0 / 60.0);
    b.push_str(&pair.row(true, |r| {
        let bars: Vec<(f64, f64)> = wait_bars(r, bin)
            .into_iter()
            .filter(|p| p.0 <= longest * 1.5 + bin)
            .collect();
        let mut c = Chart::new(
            &format!("Wait before getting in, {}", label(r.mode)),
            "minutes waited (simulated)",
            "visitors",
        )
        .with(Series::new("visitors admitted", BLUE, Style::Bars, bars));
        c.x_max = Some(longest * 1.5 + bin);
        c
    }));
    if let Some(r) = runs.iter().find(|r| r.mode == Mode::Protected) {
        let _ = write!(b, "<h2>Inside usher</h2>");
        let two = |a: Chart, c: Chart| {
            let mut a = a;
            let mut c = c;
            a.x_max = Some(x_max);
            c.x_max = Some(x_max);
            format!("<div class=\"cols\"><div class=\"card good\">{}</div><div class=\"card good\">{}</div></div>", a.svg(), c.svg())
        };
        let adm = per_minute_opt(&r.samples);
        let target = pts(&r.samples, |x| x.target_per_minute);
        let y = max_y(&adm, &target) * 1.1;
        let mut a = Chart::new("Admissions vs target", mins, "visitors / min (simulated)")
            .with(Series::new("admitted / min", GREEN, Style::Line, adm))
            .with(Series::new(
                "target (new_users_per_minute)",
                BLACK,
                Style::Dashed,
                target,
            ));
        a.y_max = Some(y.max(1.0));
        let act = Chart::new("Active users vs max_active_users", mins, "visitors")
            .with(Series::new(
                "usher_active_users",
                BLUE,
                Style::Area,
                pts(&r.samples, |x| x.active_users),
            ))
            .with(Series::new(
                "pending admissions",
                ORANGE,
                Style::Line,
                pts(&r.samples, |x| x.pending),
            ))
            .with(Series::new(
                "max_active_users",
                BLACK,
                Style::Dashed,
                pts(&r.samples, |x| x.max_active),
            ));
        b.push_str(&two(a, act));
        let (cpu_title, mem_title) = if s.multi_node() {
            let d = super::headline::deployment(s.usher.nodes);
            (
                format!("usher CPU ({d}, summed)"),
                format!("usher memory ({d}, summed)"),
            )
        } else {
            ("usher CPU".to_string(), "usher memory".to_string())
        };
        let cpu = Chart::new(&cpu_title, mins, "% of one core")
            .with(Series::new(
                "usher CPU",
                PURPLE,
                Style::Area,
                pts(&r.samples, |x| x.usher_cpu),
            ))
            .with(Series::new(
                "simulator CPU",
                GREY,
                Style::Line,
                pts(&r.samples, |x| x.sim_cpu),
            ));
        let mem = Chart::new(&mem_title, mins, "MiB resident").with(Series::new(
            "usher RSS",
            BLUE,
            Style::Line,
            pts(&r.samples, |x| x.usher_rss_mb),
        ));
        b.push_str(&two(cpu, mem));
    }
    let _ = write!(b, "<h2>How this was made</h2><ul class=\"notes\">");
    for n in &summary.notes {
        let _ = write!(b, "<li>{}</li>", esc(n));
    }
    let _ = writeln!(
        b,
        "</ul><p class=\"notes\">Generated by <code>usher-sim run {}</code>; the JSON summary sits next to this file.</p></main></body></html>",
        esc(&summary.scenario_file)
    );
    b
}

fn per_minute_opt(samples: &[Sample]) -> Vec<(f64, f64)> {
    samples
        .iter()
        .filter_map(|x| Some((x.t / 60.0, x.admissions_per_minute?)))
        .collect()
}
