//! Path normalisation for routing rules. Rules match the path the origin
//! will understand, not the bytes as sent, so `/COUPON`, `//coupon`,
//! `/%63oupon`, `/x/../coupon` or `/coupon;jsessionid=1` cannot slip past a
//! rule for `/coupon`. The request itself is forwarded unchanged.

use std::borrow::Cow;

/// The normalised form of a request path: percent-decoded once, ASCII
/// case-folded, `;` parameters dropped from each segment, empty and `.`
/// segments removed, `..` resolved; always starts with `/`, and keeps a
/// trailing `/` when the input had one.
pub fn normalize(path: &str) -> Cow<'_, str> {
    if is_normal(path) {
        return Cow::Borrowed(path);
    }
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let lower = decoded.to_ascii_lowercase().replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for seg in lower.split('/') {
        let seg = seg.split(';').next().unwrap_or_default();
        // Origins disagree on where a name ends: C strings stop at NUL, a
        // server that decodes twice ends the path at a decoded `?` or `#`,
        // Windows and some Java routers drop trailing dots and blanks. Cut
        // all of them: that can only widen what a rule covers.
        let seg = seg.split(['\0', '?', '#']).next().unwrap_or_default();
        let seg = match seg {
            "." | ".." => seg,
            s => s.trim_end_matches(['.', ' ', '\t']),
        };
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(lower.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    let trailing = lower.ends_with('/') || lower.ends_with("/.") || lower.ends_with("/..");
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push('/');
    }
    Cow::Owned(out)
}

/// Whether `path` is its own normal form: starts with `/`; no `%`, `;`,
/// `\` or capital letter; no `//`, `/.` or `./`; no `.` at the end. One
/// pass over the bytes (a `str::contains` per pair built a searcher each:
/// 1.6k instructions for `/__usher/status`, polled by every waiting visitor).
fn is_normal(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') || b.last() == Some(&b'.') {
        return false;
    }
    let mut prev = 0u8;
    for &c in b {
        match c {
            b'%' | b';' | b'\\' | b'A'..=b'Z' => return false,
            b'/' if prev == b'/' || prev == b'.' => return false,
            b'.' if prev == b'/' => return false,
            _ => {}
        }
        prev = c;
    }
    true
}

/// Whether normalised `path` falls under normalised `prefix`: `/` takes
/// everything, `/static/` everything below it, `/coupon` the path itself
/// and everything below it (but not `/coupons`).
pub fn under(path: &str, prefix: &str) -> bool {
    if prefix == "/" || (prefix.ends_with('/') && path.starts_with(prefix)) {
        return true;
    }
    path.starts_with(prefix)
        && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass check says what the pattern searches it replaced say,
    /// for every path of up to five bytes over the bytes that matter.
    #[test]
    fn the_one_pass_check_agrees_with_the_searches() {
        fn searched(path: &str) -> bool {
            path.starts_with('/')
                && !path
                    .bytes()
                    .any(|b| matches!(b, b'%' | b';' | b'\\' | b'A'..=b'Z'))
                && !path.contains("//")
                && !path.contains("/.")
                && !path.contains("./")
                && !path.ends_with('.')
        }
        let alphabet = ["/", ".", "a", "Z", "%", ";", "\\", "_"];
        let mut paths = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            for p in paths.iter().chain(&longer) {
                assert_eq!(is_normal(p), searched(p), "{p:?}");
            }
            paths = longer;
        }
        assert!(is_normal("/__usher/status"));
    }

    #[test]
    fn variants_fold_to_one_path() {
        for p in [
            "/coupon",
            "/COUPON",
            "//coupon",
            "/%63oupon",
            "/%43OUPON",
            "/x/../coupon",
            "/./coupon",
            "/coupon;jsessionid=1",
            "\\coupon",
        ] {
            assert_eq!(normalize(p), "/coupon", "{p}");
        }
        assert_eq!(normalize("/coupon%2Fclaim"), "/coupon/claim");
        assert_eq!(normalize("/static/"), "/static/");
        assert_eq!(normalize("/../../etc"), "/etc");
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("/%ff%fe"), "/\u{fffd}\u{fffd}");
        assert!(matches!(normalize("/movies/1"), Cow::Borrowed(_)));
    }

    #[test]
    fn what_origins_may_ignore_is_cut() {
        for p in [
            "/coupon%00",
            "/coupon%00.html",
            "/coupon.",
            "/coupon%2e",
            "/coupon..",
            "/coupon%20",
            "/coupon%09",
            "/coupon%3f",
            "/coupon%3Fx=1",
            "/coupon%23top",
            "/coupon/.",
        ] {
            assert!(under(&normalize(p), "/coupon"), "{p} -> {}", normalize(p));
        }
        assert_eq!(normalize("/coupon./claim"), "/coupon/claim");
        assert_eq!(normalize("/a/.../b"), "/a/b");
        // A real extension or a longer name stays what it is.
        assert_eq!(normalize("/coupon.json"), "/coupon.json");
        assert!(!under(&normalize("/coupons."), "/coupon"));
        assert!(matches!(normalize("/movies/1.html"), Cow::Borrowed(_)));
    }

    #[test]
    fn prefixes() {
        assert!(under("/anything", "/"));
        assert!(under("/coupon", "/coupon"));
        assert!(under("/coupon/claim", "/coupon"));
        assert!(!under("/coupons", "/coupon"));
        assert!(under("/static/app.js", "/static/"));
        assert!(!under("/static", "/static/"));
    }
}
