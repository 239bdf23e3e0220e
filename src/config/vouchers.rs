//! `[vouchers]`: the limited stock issued at the edge, exactly once per person.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::validate::Problems;

/// A claim's normal life (a webhook's attempts included) is well under
/// this, so a node rarely finishes a claim still in progress on a live one
/// (which would be safe, only a wasted issuer call).
pub const DEFAULT_RECOVER_AFTER: &str = "30s";

/// Raw `[vouchers]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawVouchers {
    /// `pool`, `signed` or `webhook`.
    pub plugin: String,
    /// Units to hand out.
    pub stock: u64,
    /// Directory of the durable claim ledger and audit log.
    pub state_dir: String,
    /// Who a claim belongs to: `pass` (the admitted visitor), `cookie:NAME`
    /// or `header:NAME` (the site's own user id).
    pub identity: String,
    /// The origin's own claim route to intercept, e.g. `POST /voucher/claim`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intercept: Option<String>,
    /// `pool`: the code file, one code per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_file: Option<String>,
    /// `signed`: code prefix.
    pub signed_prefix: String,
    /// `signed` and `webhook`: the key file (base64 secret, 32 bytes or more).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// `webhook`: the issuer's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// `webhook`: time limit of one attempt.
    pub webhook_timeout: String,
    /// `webhook`: attempts per claim.
    pub webhook_attempts: u32,
    /// Show "your chance is low" when the live line ahead is more than this
    /// many times the remaining stock (0 turns the note off).
    pub low_chance_ratio: f64,
    /// With `[store] backend = "redis"`: how long a claim may stay pending
    /// (its node died between reserve and code, or the issuer said "retry
    /// later") before any node finishes it with the same idempotency key.
    pub recover_after: String,
}

impl Default for RawVouchers {
    fn default() -> Self {
        RawVouchers {
            plugin: String::new(),
            stock: 0,
            state_dir: "/var/lib/usher".into(),
            identity: "pass".into(),
            intercept: None,
            pool_file: None,
            signed_prefix: "USHER".into(),
            key_file: None,
            webhook_url: None,
            webhook_timeout: "3s".into(),
            webhook_attempts: 4,
            // Three people ahead per voucher left: most of them will not get one.
            low_chance_ratio: 3.0,
            recover_after: DEFAULT_RECOVER_AFTER.into(),
        }
    }
}

/// Who a claim belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The admitted visitor's pass id.
    Pass,
    /// A cookie the origin sets.
    Cookie(String),
    /// A header the origin's front sets.
    Header(http::HeaderName),
}

/// The issuer plugin and its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Plugin {
    /// Codes from a file.
    Pool(PathBuf),
    /// Codes minted and signed locally.
    Signed {
        /// Code prefix.
        prefix: String,
        /// Key file.
        key_file: PathBuf,
    },
    /// An external issuer over HTTP.
    Webhook {
        /// URL.
        url: http::Uri,
        /// Key file for the body signature.
        key_file: PathBuf,
        /// One attempt's time limit.
        timeout: Duration,
        /// Attempts.
        attempts: u32,
    },
}

/// The validated `[vouchers]`.
#[derive(Debug, Clone, PartialEq)]
pub struct VouchersConfig {
    /// The plugin.
    pub plugin: Plugin,
    /// Units.
    pub stock: u64,
    /// Ledger directory.
    pub state_dir: PathBuf,
    /// Claim identity.
    pub identity: Identity,
    /// Intercepted origin route (method, normalised path).
    pub intercept: Option<(http::Method, String)>,
    /// Low-chance note threshold.
    pub low_chance_ratio: f64,
    /// Age of a pending claim that any node finishes (shared ledger only).
    pub recover_after: Duration,
}

pub(super) fn vouchers(raw: &RawVouchers, base: &Path, p: &mut Problems) -> VouchersConfig {
    let file = |p: &mut Problems, key: &str, v: &Option<String>| -> PathBuf {
        match v {
            Some(f) => base.join(f),
            None => {
                p.push(key, format!("required by plugin = \"{}\"", raw.plugin));
                PathBuf::new()
            }
        }
    };
    let plugin = match raw.plugin.as_str() {
        "pool" => Plugin::Pool(file(p, "vouchers.pool_file", &raw.pool_file)),
        "signed" => Plugin::Signed {
            prefix: raw.signed_prefix.clone(),
            key_file: file(p, "vouchers.key_file", &raw.key_file),
        },
        "webhook" => {
            let url = match raw.webhook_url.as_deref().map(str::parse::<http::Uri>) {
                Some(Ok(u)) if matches!(u.scheme_str(), Some("http" | "https")) => u,
                Some(_) => {
                    p.push("vouchers.webhook_url", "must be an http:// or https:// URL");
                    http::Uri::from_static("http://invalid")
                }
                None => {
                    p.push("vouchers.webhook_url", "required by plugin = \"webhook\"");
                    http::Uri::from_static("http://invalid")
                }
            };
            Plugin::Webhook {
                url,
                key_file: file(p, "vouchers.key_file", &raw.key_file),
                timeout: super::units::parse_duration(&raw.webhook_timeout).unwrap_or_else(|e| {
                    p.push("vouchers.webhook_timeout", e);
                    Duration::from_secs(3)
                }),
                attempts: raw.webhook_attempts.max(1),
            }
        }
        other => {
            p.push(
                "vouchers.plugin",
                format!("`{other}`: use \"pool\", \"signed\" or \"webhook\""),
            );
            Plugin::Pool(PathBuf::new())
        }
    };
    if raw.stock == 0 {
        p.push("vouchers.stock", "must be at least 1");
    }
    let identity = if raw.identity == "pass" {
        Identity::Pass
    } else if let Some(name) = raw.identity.strip_prefix("cookie:") {
        if !crate::tokens::cookie::is_valid_name(name) {
            p.push(
                "vouchers.identity",
                format!("`{name}` is not a cookie name"),
            );
        }
        Identity::Cookie(name.to_string())
    } else if let Some(name) = raw.identity.strip_prefix("header:") {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Identity::Header(h),
            Err(_) => {
                p.push(
                    "vouchers.identity",
                    format!("`{name}` is not a header name"),
                );
                Identity::Pass
            }
        }
    } else {
        p.push(
            "vouchers.identity",
            "use \"pass\", \"cookie:NAME\" or \"header:NAME\"",
        );
        Identity::Pass
    };
    let intercept = raw.intercept.as_ref().and_then(|text| {
        let mut parts = text.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(path), None) if path.starts_with('/') => {
                match http::Method::from_bytes(m.as_bytes()) {
                    Ok(method) => Some((method, crate::paths::normalize(path).into_owned())),
                    Err(_) => {
                        p.push("vouchers.intercept", format!("`{m}` is not an HTTP method"));
                        None
                    }
                }
            }
            _ => {
                p.push(
                    "vouchers.intercept",
                    format!("`{text}`: write it as \"POST /voucher/claim\""),
                );
                None
            }
        }
    });
    VouchersConfig {
        plugin,
        stock: raw.stock,
        state_dir: base.join(&raw.state_dir),
        identity,
        intercept,
        low_chance_ratio: raw.low_chance_ratio.max(0.0),
        recover_after: recover_after(raw, p),
    }
}

fn recover_after(raw: &RawVouchers, p: &mut Problems) -> Duration {
    match super::units::parse_duration(&raw.recover_after) {
        Ok(d) if d >= Duration::from_secs(1) => d,
        Ok(_) => {
            p.push("vouchers.recover_after", "at least 1s");
            Duration::from_secs(30)
        }
        Err(e) => {
            p.push("vouchers.recover_after", e);
            Duration::from_secs(30)
        }
    }
}
