//! Who may use the admin API. Checked in this order, before any route:
//!
//! 1. **Browsers are refused** (403): a request with an `Origin` header, or
//!    with `Sec-Fetch-Site` other than `none` (an address typed into the
//!    browser), comes from a web page. The admin API serves no pages, so
//!    no page has a reason to call it; this stops a page the operator has
//!    open from POSTing to `127.0.0.1:9090`, and DNS rebinding. No CORS
//!    header is ever sent, so a browser never lets a page read an answer.
//! 2. **The bearer token** (401): every path but the open ones
//!    (`server.admin_open`) needs `Authorization: Bearer TOKEN`, compared
//!    in constant time. A peer on the Unix socket that is root or usher's
//!    own user needs none: the socket's mode (0600) already let only them in.
//! 3. **JSON only** (415): a POST must say `Content-Type: application/json`,
//!    which an HTML form or a page's simple request cannot send.

use http::{header, HeaderMap, Method};
use sha2::{Digest, Sha256};

use crate::config::admin::AdminApi;

/// Who is on the other end of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client (the token decides).
    Tcp,
    /// A Unix socket client running as root or as usher's user.
    TrustedSocket,
    /// A Unix socket client running as someone else (the token decides).
    OtherSocket,
}

/// Why a request was refused before reaching its route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A browser sent it on behalf of a web page.
    #[error("refused: {0} shows a web browser sent this for a page; the admin API takes no requests from pages (use `usher ctl` or curl)")]
    Browser(String),
    /// No `Authorization: Bearer` header.
    #[error("missing token: send `Authorization: Bearer TOKEN`, the token in server.admin_token_file or, without it, in admin.token under the state directory")]
    NoToken,
    /// A token that does not match.
    #[error("wrong token")]
    WrongToken,
    /// usher has no token to compare with (none configured, none made).
    #[error("no admin token is set up, so nothing under /admin/ is allowed: {0}")]
    NoTokenSetUp(String),
    /// A POST without `Content-Type: application/json`.
    #[error("a POST must be sent with `Content-Type: application/json` (got {0})")]
    NotJson(String),
}

impl Refusal {
    /// The answer's status.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Refusal::Browser(_) => S::FORBIDDEN,
            Refusal::NoToken | Refusal::WrongToken | Refusal::NoTokenSetUp(_) => S::UNAUTHORIZED,
            Refusal::NotJson(_) => S::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

/// The token requests are compared with: the configured one, the generated
/// one, or why there is none.
pub type Expected<'a> = Result<&'a str, &'a str>;

/// Checks a request's headers before it is routed.
pub fn check(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    api: &AdminApi,
    expected: Expected<'_>,
    peer: Peer,
) -> Result<(), Refusal> {
    if let Some(o) = headers.get(header::ORIGIN) {
        return Err(Refusal::Browser(format!(
            "`Origin: {}`",
            shown(o.as_bytes())
        )));
    }
    if let Some(site) = headers
        .get("sec-fetch-site")
        .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"none"))
    {
        return Err(Refusal::Browser(format!(
            "`Sec-Fetch-Site: {}`",
            shown(site.as_bytes())
        )));
    }
    if !api.is_open(path) && peer != Peer::TrustedSocket {
        let given = bearer(headers);
        match (expected, given) {
            (Err(why), _) => return Err(Refusal::NoTokenSetUp(why.to_string())),
            (Ok(_), None) => return Err(Refusal::NoToken),
            (Ok(want), Some(got)) if !same_secret(got, want.as_bytes()) => {
                return Err(Refusal::WrongToken)
            }
            (Ok(_), Some(_)) => {}
        }
    }
    if method == Method::POST {
        let ct = headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes());
        let essence = ct.map(|v| {
            v.split(|&b| b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii()
        });
        if !essence.is_some_and(|e| e.eq_ignore_ascii_case(b"application/json")) {
            return Err(Refusal::NotJson(
                ct.map_or("none".into(), |v| format!("`{}`", shown(v))),
            ));
        }
    }
    Ok(())
}

/// A client's header value for a message and the log: at most 100 bytes.
fn shown(v: &[u8]) -> String {
    let cut = &v[..v.len().min(100)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if cut.len() < v.len() {
        s.push_str("...");
    }
    s
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// Equality whose time depends on neither the secret's length nor where
/// the first difference is: both sides are hashed, then every byte of the
/// digests is compared.
fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(secret));
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn run(method: Method, path: &str, h: &[(&str, &str)], peer: Peer) -> Result<(), Refusal> {
        let mut headers = HeaderMap::new();
        for (k, v) in h {
            headers.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        check(
            &method,
            path,
            &headers,
            &AdminApi::default(),
            Ok(TOKEN),
            peer,
        )
    }

    const AUTH: (&str, &str) = ("authorization", "Bearer 0123456789abcdef0123456789abcdef");
    const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");

    #[test]
    fn browsers_are_refused_first() {
        for h in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-site", "same-origin"),
        ] {
            let r = run(
                Method::POST,
                "/admin/pause",
                &[AUTH, JSON, h],
                Peer::TrustedSocket,
            );
            assert!(matches!(r, Err(Refusal::Browser(_))), "{h:?}: {r:?}");
            assert!(matches!(
                run(Method::GET, "/metrics", &[h], Peer::Tcp),
                Err(Refusal::Browser(_))
            ));
        }
        // An address typed into the browser: reading the metrics is fine.
        assert_eq!(
            run(
                Method::GET,
                "/metrics",
                &[("sec-fetch-site", "none")],
                Peer::Tcp
            ),
            Ok(())
        );
    }

    #[test]
    fn tokens_are_checked_except_on_open_paths_and_trusted_sockets() {
        assert!(matches!(
            run(Method::GET, "/admin/status", &[], Peer::Tcp),
            Err(Refusal::NoToken)
        ));
        for wrong in [
            "Bearer 0123456789abcdef0123456789abcdeF",
            "Bearer 0123456789abcdef0123456789abcdef0",
            "Bearer ",
            "Basic 0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef",
        ] {
            let r = run(
                Method::GET,
                "/admin/status",
                &[("authorization", wrong)],
                Peer::OtherSocket,
            );
            assert!(
                matches!(r, Err(Refusal::WrongToken | Refusal::NoToken)),
                "{wrong}: {r:?}"
            );
        }
        assert_eq!(
            run(Method::GET, "/admin/status", &[AUTH], Peer::Tcp),
            Ok(())
        );
        assert_eq!(
            run(
                Method::GET,
                "/admin/status",
                &[("authorization", "bearer  0123456789abcdef0123456789abcdef ")],
                Peer::Tcp
            ),
            Ok(())
        );
        assert_eq!(
            run(Method::GET, "/admin/status", &[], Peer::TrustedSocket),
            Ok(())
        );
        assert_eq!(run(Method::GET, "/healthz", &[], Peer::Tcp), Ok(()));
        let closed = AdminApi {
            open: vec![],
            ..AdminApi::default()
        };
        let r = check(
            &Method::GET,
            "/healthz",
            &HeaderMap::new(),
            &closed,
            Ok(TOKEN),
            Peer::Tcp,
        );
        assert!(matches!(r, Err(Refusal::NoToken)));
        let r = check(
            &Method::GET,
            "/admin/status",
            &HeaderMap::new(),
            &closed,
            Err("disk"),
            Peer::Tcp,
        );
        assert_eq!(r, Err(Refusal::NoTokenSetUp("disk".into())));
    }

    #[test]
    fn posts_must_be_json() {
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
        ] {
            let r = run(
                Method::POST,
                "/admin/pause",
                &[AUTH, ("content-type", ct)],
                Peer::Tcp,
            );
            assert!(matches!(r, Err(Refusal::NotJson(_))), "{ct}: {r:?}");
        }
        assert!(matches!(
            run(Method::POST, "/admin/pause", &[AUTH], Peer::Tcp),
            Err(Refusal::NotJson(_))
        ));
        assert_eq!(
            run(Method::POST, "/admin/pause", &[AUTH, JSON], Peer::Tcp),
            Ok(())
        );
        assert_eq!(
            run(
                Method::POST,
                "/admin/pause",
                &[AUTH, ("content-type", "Application/JSON")],
                Peer::Tcp
            ),
            Ok(())
        );
    }

    #[test]
    fn long_header_values_are_cut_in_the_reason() {
        let long = format!("http://{}.example", "a".repeat(500));
        let r = run(Method::GET, "/metrics", &[("origin", &long)], Peer::Tcp).unwrap_err();
        assert!(r.to_string().len() < 300, "{r}");
        assert!(r.to_string().contains("http://aaaa") && r.to_string().contains("..."));
    }

    #[test]
    fn same_secret_is_plain_equality() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
