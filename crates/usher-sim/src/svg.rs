//! Small inline SVG charts (lines, areas, bars, dots) with axes, ticks and
//! a legend: no JavaScript, no external files, readable in any browser.

use std::fmt::Write;

/// Points drawn per series at most; longer series are thinned evenly.
pub const MAX_POINTS: usize = 1_500;
const W: f64 = 560.0;
const H: f64 = 250.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 36.0;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A line.
    Line,
    /// A dashed line (targets and limits).
    Dashed,
    /// A filled area under a line.
    Area,
    /// Bars centred on each x.
    Bars,
    /// Dots (scatter).
    Dots,
}

/// One series.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend name (also the `data-series` attribute).
    pub name: String,
    /// CSS colour.
    pub color: &'static str,
    /// Drawing style.
    pub style: Style,
    /// (x, y) points, x ascending for lines, areas and bars.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series.
    pub fn new(name: &str, color: &'static str, style: Style, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.to_string(),
            color,
            style,
            points,
        }
    }
}

/// A chart.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// The series, drawn in order.
    pub series: Vec<Series>,
    /// Fixed x range end (so side-by-side charts line up).
    pub x_max: Option<f64>,
    /// Fixed y range end.
    pub y_max: Option<f64>,
}

/// Escapes text for SVG and HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A short number: 1.2k, 35, 0.25.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6).replace(".0M", "M")
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3).replace(".0k", "k")
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}").replace(".0", "")
    } else {
        format!("{v:.2}")
    }
}

/// A round step giving about `n` ticks over `range`.
fn nice_step(range: f64, n: f64) -> f64 {
    let raw = (range / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Every `k`-th point so at most [`MAX_POINTS`] remain (the last kept).
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let k = points.len().div_ceil(MAX_POINTS);
    let mut out: Vec<_> = points.iter().step_by(k).copied().collect();
    if let Some(last) = points.last() {
        if out.last() != Some(last) {
            out.push(*last);
        }
    }
    out
}

impl Chart {
    /// A chart with a title and axis labels.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Chart {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..Chart::default()
        }
    }

    /// Adds a series.
    pub fn with(mut self, s: Series) -> Chart {
        self.series.push(s);
        self
    }

    /// Renders the chart as one `<svg>` element.
    pub fn svg(&self) -> String {
        let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
        let all: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter(finite).copied())
            .collect();
        let mut out = String::with_capacity(8 * 1024);
        let _ = write!(
            out,
            "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{t}</title>\
             <text x=\"{LEFT}\" y=\"18\" class=\"ct\">{t}</text>",
            t = esc(&self.title)
        );
        if all.is_empty() {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" class=\"nd\">no data</text></svg>",
                W / 2.0,
                H / 2.0
            );
            return out;
        }
        let x_max = self
            .x_max
            .unwrap_or_else(|| all.iter().map(|p| p.0).fold(f64::MIN, f64::max));
        let x_min = all.iter().map(|p| p.0).fold(f64::MAX, f64::min).min(0.0);
        let y_top = self
            .y_max
            .unwrap_or_else(|| all.iter().map(|p| p.1).fold(0.0, f64::max));
        let y_step = nice_step(y_top.max(1e-9), 4.0);
        let y_max = ((y_top / y_step).ceil() * y_step).max(y_step);
        let x_span = (x_max - x_min).max(1e-9);
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let sx = |x: f64| LEFT + (x - x_min) / x_span * pw;
        let sy = |y: f64| TOP + ph - (y.clamp(0.0, y_max) / y_max) * ph;
        // Grid and axes.
        let mut y = 0.0;
        while y <= y_max + y_step / 2.0 {
            let py = sy(y);
            let _ = write!(
                out,
                "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{py:.1}\" y2=\"{py:.1}\" class=\"g\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"yt\">{}</text>",
                W - RIGHT,
                LEFT - 4.0,
                py + 3.5,
                short(y)
            );
            y += y_step;
        }
        let x_step = nice_step(x_span, 6.0);
        let mut x = (x_min / x_step).ceil() * x_step;
        while x <= x_max + 1e-9 {
            let px = sx(x);
            let _ = write!(
                out,
                "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" class=\"g\"/><text x=\"{px:.1}\" y=\"{:.1}\" class=\"xt\">{}</text>",
                TOP + ph,
                TOP + ph + 13.0,
                short(x)
            );
            x += x_step;
        }
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"xl\">{}</text><text transform=\"translate(12 {:.1}) rotate(-90)\" class=\"yl\">{}</text>",
            LEFT + pw / 2.0,
            H - 4.0,
            esc(&self.x_label),
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        for s in &self.series {
            let pts: Vec<(f64, f64)> = s.points.iter().filter(finite).copied().collect();
            let pts = thin(&pts);
            let _ = write!(out, "<g data-series=\"{}\">", esc(&s.name));
            match s.style {
                Style::Line | Style::Dashed | Style::Area => {
                    let mut d = String::with_capacity(pts.len() * 14);
                    for (i, (x, y)) in pts.iter().enumerate() {
                        let _ = write!(
                            d,
                            "{}{:.1},{:.1}",
                            if i == 0 { "M" } else { "L" },
                            sx(*x),
                            sy(*y)
                        );
                    }
                    if s.style == Style::Area && !pts.is_empty() {
                        let (first, last) = (pts[0].0, pts[pts.len() - 1].0);
                        let _ = write!(
                            out,
                            "<path d=\"{d}L{:.1},{:.1}L{:.1},{:.1}Z\" fill=\"{c}\" fill-opacity=\"0.25\" stroke=\"none\"/>",
                            sx(last),
                            sy(0.0),
                            sx(first),
                            sy(0.0),
                            c = s.color
                        );
                    }
                    let dash = if s.style == Style::Dashed {
                        " stroke-dasharray=\"5 4\""
                    } else {
                        ""
                    };
                    let _ = write!(
                        out,
                        "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\"{dash}/>",
                        s.color
                    );
                }
                Style::Bars => {
                    let gap = pts
                        .windows(2)
                        .map(|w| w[1].0 - w[0].0)
                        .fold(f64::MAX, f64::min);
                    let bw = if gap.is_finite() && gap < f64::MAX {
                        (gap / x_span * pw * 0.8).max(1.0)
                    } else {
                        8.0
                    };
                    for (x, y) in &pts {
                        let top = sy(*y);
                        let _ = write!(
                            out,
                            "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
                            sx(*x) - bw / 2.0,
                            (sy(0.0) - top).max(0.0),
                            s.color
                        );
                    }
                }
                Style::Dots => {
                    for (x, y) in &pts {
                        let _ = write!(
                            out,
                            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.6\" fill=\"{}\" fill-opacity=\"0.55\"/>",
                            sx(*x),
                            sy(*y),
                            s.color
                        );
                    }
                }
            }
            out.push_str("</g>");
        }
        // Legend on its own row under the title.
        let mut lx = LEFT;
        for s in &self.series {
            let label = esc(&s.name);
            let _ = write!(
                out,
                "<rect x=\"{lx:.1}\" y=\"24\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{:.1}\" y=\"33\" class=\"lg\">{label}</text>",
                s.color,
                lx + 13.0,
            );
            lx += 22.0 + 5.6 * s.name.chars().count() as f64;
        }
        out.push_str("</svg>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_svg_has_every_series_and_its_points() {
        let c = Chart::new("Admissions <per minute>", "minutes", "visitors")
            .with(Series::new(
                "admitted",
                "#2a7",
                Style::Line,
                (0..10).map(|i| (f64::from(i), f64::from(i * 10))).collect(),
            ))
            .with(Series::new(
                "target",
                "#999",
                Style::Dashed,
                vec![(0.0, 50.0), (9.0, 50.0)],
            ))
            .with(Series::new(
                "waits",
                "#c33",
                Style::Bars,
                vec![(1.0, 3.0), (2.0, 4.0)],
            ))
            .with(Series::new("order", "#36c", Style::Dots, vec![(1.0, 1.0)]));
        let svg = c.svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(
            svg.contains("Admissions &lt;per minute&gt;"),
            "escaped title"
        );
        for name in ["admitted", "target", "waits", "order"] {
            assert!(svg.contains(&format!("data-series=\"{name}\"")), "{name}");
            assert!(svg.contains(&format!(">{name}</text>")), "legend {name}");
        }
        let line = svg.split("data-series=\"admitted\"").nth(1).unwrap();
        let path = line
            .split("d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(
            path.matches('L').count(),
            9,
            "ten points, one move and nine lines"
        );
        assert!(svg.contains("stroke-dasharray"));
        assert_eq!(
            svg.matches("<rect x=").count(),
            2 + 4,
            "two bars and four legend swatches"
        );
        assert_eq!(svg.matches("<circle").count(), 1);
    }

    #[test]
    fn long_series_are_thinned_and_empty_charts_say_so() {
        let pts: Vec<(f64, f64)> = (0..100_000).map(|i| (f64::from(i), 1.0)).collect();
        let svg = Chart::new("t", "x", "y")
            .with(Series::new("s", "#000", Style::Line, pts))
            .svg();
        assert!(svg.matches('L').count() <= MAX_POINTS + 1);
        assert!(svg.len() < 100_000, "{}", svg.len());
        let empty = Chart::new("t", "x", "y").with(Series::new("s", "#000", Style::Line, vec![]));
        assert!(empty.svg().contains("no data"));
        let nan = Chart::new("t", "x", "y").with(Series::new(
            "s",
            "#000",
            Style::Line,
            vec![(f64::NAN, 1.0), (1.0, 2.0)],
        ));
        assert!(!nan.svg().contains("NaN"));
    }

    #[test]
    fn numbers_and_steps_are_round() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(1234.0), "1.2k");
        assert_eq!(short(2000.0), "2k");
        assert_eq!(short(45_000.0), "45k");
        assert_eq!(short(2_500_000.0), "2.5M");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(nice_step(100.0, 4.0), 25.0);
        assert_eq!(nice_step(7.0, 6.0), 2.0);
    }
}
