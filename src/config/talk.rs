//! `room.feedback_webhook`: where visitors' feedback is also sent.

use http::Uri;

use super::validate::Problems;

/// The validated webhook URL: `http://` or `https://` with a host.
pub(super) fn feedback_webhook(raw: Option<&str>, p: &mut Problems) -> Option<Uri> {
    let text = raw?.trim();
    if text.is_empty() {
        return None;
    }
    match text.parse::<Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Some(u),
        _ => {
            p.push(
                "room.feedback_webhook",
                format!("`{text}`: give an http:// or https:// URL with a host"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host() {
        let mut p = Problems::default();
        assert!(feedback_webhook(Some("https://hooks.example/u"), &mut p).is_some());
        assert!(feedback_webhook(Some(""), &mut p).is_none());
        assert!(p.0.is_empty());
        for bad in ["ftp://x/", "/relative", "https://"] {
            assert!(feedback_webhook(Some(bad), &mut p).is_none(), "{bad}");
        }
        assert_eq!(p.0.len(), 3);
    }
}
