//! Configuration: the TOML file (`file.rs`), its validation into typed
//! values (`validate.rs`), and where each mistake stands (`locate.rs`).
//!
//! Loading never stops at the first mistake: each section is read on its
//! own and every value is checked, so ops see all problems in one pass.

pub mod admin;
pub mod file;
pub mod locate;
pub mod room;
mod show;
pub mod store;
pub mod units;
pub mod validate;
pub mod vouchers;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::{DeTable, ValueDeserializer};

pub use validate::{
    AccessLog, LogConfig, OriginConfig, ProxyProtocolConfig, ServerConfig, TlsConfig,
};

/// The embedded default: usher in front of the demo origin on loopback,
/// with no Redis and no files needed (`usher run` without `-c`).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.toml");

/// A validated configuration snapshot. Requests load one `Arc<Config>` and
/// use it throughout, so a reload never changes a request half-way.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (for messages and reloads); `None` when embedded.
    pub source: Option<PathBuf>,
    /// Listeners and guards.
    pub server: ServerConfig,
    /// The origin.
    pub origin: OriginConfig,
    /// Logging.
    pub log: LogConfig,
    /// The waiting room; `None` without a `[room]` section (plain proxy).
    pub room: Option<room::RoomConfig>,
    /// Vouchers issued at the edge; `None` without a `[vouchers]` section.
    pub vouchers: Option<vouchers::VouchersConfig>,
    /// `[store]`: absent, the line lives in memory only.
    pub store: Option<store::StoreConfig>,
}

/// One mistake in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File name as given.
    pub file: String,
    /// One-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path (`origin.url`), empty for whole-file errors.
    pub key: String,
    /// What is wrong, and how to fix it where that is clear.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every mistake found in a config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError(pub Vec<Problem>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(vec![Problem {
                file: name.clone(),
                line: None,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut cfg = Config::parse(&text, &name, base)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// The embedded default config.
    pub fn embedded() -> Config {
        Config::parse(EMBEDDED_DEFAULT, "<embedded default>", Path::new("."))
            .expect("the embedded default config is valid (tested)")
    }

    /// Parses and validates config text; relative file paths in it are
    /// taken from `base` (the config file's folder).
    pub fn parse(text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
        let problem = |line, key: &str, message: String| Problem {
            file: name.to_string(),
            line,
            key: key.to_string(),
            message,
        };
        let doc = DeTable::parse(text).map_err(|e| {
            let line = e.span().map(|s| locate::line_of(text, s.start));
            ConfigError(vec![problem(
                line,
                "",
                format!("not valid TOML: {}", e.message()),
            )])
        })?;
        let mut found = Vec::new();
        for (key, _) in doc.get_ref().iter() {
            let k = key.get_ref().as_ref();
            if !file::SECTIONS.contains(&k) {
                found.push(problem(
                    Some(locate::line_of(text, key.span().start)),
                    k,
                    format!("unknown section (known: {})", file::SECTIONS.join(", ")),
                ));
            }
        }
        let section = |key: &str| -> Option<toml::Spanned<toml::de::DeValue<'_>>> {
            doc.get_ref()
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == key)
                .map(|(_, v)| v.clone())
        };
        let before = found.len();
        let server: file::RawServer =
            read_section(section("server"), "server", text, name, &mut found);
        let origin: file::RawOrigin =
            read_section(section("origin"), "origin", text, name, &mut found);
        let log: file::RawLog = read_section(section("log"), "log", text, name, &mut found);
        let raw_room = section("room");
        let has_room = raw_room.is_some();
        let room_raw: room::RawRoom = read_section(raw_room, "room", text, name, &mut found);
        let raw_vouchers = section("vouchers");
        let has_vouchers = raw_vouchers.is_some();
        let vouchers_raw: vouchers::RawVouchers =
            read_section(raw_vouchers, "vouchers", text, name, &mut found);
        let raw_store = section("store");
        let has_store = raw_store.is_some();
        let store_raw: store::RawStore = read_section(raw_store, "store", text, name, &mut found);
        // A section that could not be read falls back to its defaults; what
        // validation then says about it would be noise, so it is dropped.
        let unreadable: Vec<String> = found[before..].iter().map(|p| p.key.clone()).collect();

        let mut p = validate::Problems::default();
        let cfg = Config {
            source: None,
            server: validate::server(&server, base, &mut p),
            origin: validate::origin(&origin, base, &mut p),
            log: validate::log(&log, &mut p),
            room: has_room.then(|| room::room(&room_raw, base, &mut p)),
            vouchers: has_vouchers.then(|| vouchers::vouchers(&vouchers_raw, base, &mut p)),
            store: has_store.then(|| store::store(&store_raw, base, &mut p)),
        };
        for (key, message) in p.0 {
            let section = key.split('.').next().unwrap_or_default();
            if unreadable.iter().any(|u| u == section) {
                continue;
            }
            let line = locate::offset_of(&doc, &key).map(|o| locate::line_of(text, o));
            found.push(problem(line, &key, message));
        }
        if found.is_empty() {
            Ok(cfg)
        } else {
            found.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            Err(ConfigError(found))
        }
    }
}

/// Deserializes one section; on a mistake records it (with its line) and
/// falls back to the section's defaults so later checks still run.
fn read_section<T: DeserializeOwned + Default>(
    value: Option<toml::Spanned<toml::de::DeValue<'_>>>,
    key: &str,
    text: &str,
    name: &str,
    found: &mut Vec<Problem>,
) -> T {
    let Some(value) = value else {
        return T::default();
    };
    let start = value.span().start;
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(v) => v,
        Err(e) => {
            let at = e.span().map_or(start, |s| s.start);
            found.push(Problem {
                file: name.to_string(),
                line: Some(locate::line_of(text, at)),
                key: key.to_string(),
                message: e.message().to_string(),
            });
            T::default()
        }
    }
}
