//! The holding page's stylesheet and script as files of their own, named by
//! their content, so a browser fetches them once and every later page
//! (a reload, the next visitor on the same phone) is a quarter of the
//! bytes: the page itself carries only the visitor's values.
//!
//! Names: `holding.<hash>.css`, `holding.<lang>.<hash>.js` (the script has
//! the language's texts folded in), `<hash>` the first 12 hex digits of the
//! content's SHA-256. A name with this binary's hash is cached for a year
//! (`immutable`); a name of the right shape with another hash (a page from
//! a node of another version during a rolling upgrade) gets this binary's
//! file uncached, so the page still works and no cache keeps the mismatch.

use std::fmt::Write as _;
use std::sync::OnceLock;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::i18n::Lang;
use super::page::{SCRIPT, STYLE};

/// Where usher serves its static files.
pub const ASSETS_PREFIX: &str = "/__usher/assets/";

/// One static file, made once per process.
#[derive(Debug)]
pub struct Asset {
    /// The path it is served at, `ASSETS_PREFIX` included.
    pub path: String,
    /// `"<hash>"`, quoted as an entity tag.
    pub etag: String,
    /// The `Content-Type` value.
    pub content_type: &'static str,
    /// The file.
    pub body: Bytes,
    /// The part of the name before the hash, with its dot (`holding.ko.`).
    stem: String,
    /// The part after it (`.js`).
    ext: &'static str,
}

impl Asset {
    fn new(stem: &str, ext: &'static str, content_type: &'static str, body: String) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        let mut hash = String::with_capacity(12);
        for b in &digest[..6] {
            let _ = write!(hash, "{b:02x}");
        }
        Asset {
            path: format!("{ASSETS_PREFIX}{stem}{hash}{ext}"),
            etag: format!("\"{hash}\""),
            content_type,
            body: Bytes::from(body),
            stem: stem.to_owned(),
            ext,
        }
    }

    /// Whether `name` (the path after the prefix) is this file under any
    /// hash: the stem, 1-64 hex digits, the extension.
    fn shape_matches(&self, name: &str) -> bool {
        name.strip_prefix(self.stem.as_str())
            .and_then(|rest| rest.strip_suffix(self.ext))
            .is_some_and(|h| {
                (1..=64).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit())
            })
    }
}

/// The stylesheet and the script in each language.
struct Assets {
    style: Asset,
    scripts: [Asset; 2],
}

fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| Assets {
        style: Asset::new(
            "holding.",
            ".css",
            "text/css; charset=utf-8",
            STYLE.to_owned(),
        ),
        scripts: [Lang::Ko, Lang::En].map(|lang| {
            Asset::new(
                &format!("holding.{}.", lang.as_str()),
                ".js",
                "text/javascript; charset=utf-8",
                script_source(lang),
            )
        }),
    })
}

/// The polling script with `lang`'s texts in it.
fn script_source(lang: Lang) -> String {
    // The texts are ours. `</` is escaped all the same, so the source stays
    // safe inside a `<script>` element (where it lived before it was a file).
    let l10n = serde_json::to_string(lang.strings())
        .unwrap_or_else(|_| String::from("{}"))
        .replace("</", "<\\/");
    SCRIPT.replace("__USHER_L10N__", &l10n)
}

/// The stylesheet every holding page links.
pub fn stylesheet() -> &'static Asset {
    &assets().style
}

/// The script a page in `lang` loads.
pub fn script(lang: Lang) -> &'static Asset {
    &assets().scripts[lang as usize]
}

/// The file at `path` (the request's path): `Some((file, current))`, with
/// `current` false when the name's hash is not this binary's.
pub fn find_asset(path: &str) -> Option<(&'static Asset, bool)> {
    let name = path.strip_prefix(ASSETS_PREFIX)?;
    let a = assets();
    std::iter::once(&a.style)
        .chain(a.scripts.iter())
        .find(|f| f.shape_matches(name))
        .map(|f| (f, f.path == path))
}
