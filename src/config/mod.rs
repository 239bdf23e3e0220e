//! Configuration: the TOML file (`file.rs`), read leniently (`lenient.rs`),
//! its validation into typed values (`validate.rs`), where each mistake
//! stands (`locate.rs`), and the effective config printed (`show.rs`).
//!
//! Loading never stops at the first mistake: each section is read on its
//! own and every value is checked, so ops see all problems in one pass.

pub mod admin;
pub mod file;
mod lenient;
pub mod locate;
pub mod messages;
pub mod room;
mod room_file;
mod show;
pub mod store;
mod talk;
pub mod units;
pub mod validate;
pub mod vouchers;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::de::DeTable;

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
    /// Where each key stands in the file, for the mistakes found when the
    /// files the config names are opened ([`crate::startup`]).
    pub places: locate::Places,
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
    /// One mistake is one line (`file:line: key: what`); several get a
    /// count first and one indented line each.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [one] = self.0.as_slice() {
            return writeln!(f, "{one}");
        }
        let n = self.0.len();
        writeln!(f, "{n} problems in the configuration:")?;
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
    /// taken from `base` (the config file's folder). Every mistake is
    /// reported, syntax and validation alike: a key that cannot be read
    /// is left out (its default stands in) and the rest is still checked.
    pub fn parse(text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
        let problem = |line, key: &str, message: String| Problem {
            file: name.to_string(),
            line,
            key: key.to_string(),
            message,
        };
        let (doc, syntax) = DeTable::parse_recoverable(text);
        let mut found: Vec<Problem> = syntax
            .iter()
            .map(|e| {
                let line = e.span().map(|s| locate::line_of(text, s.start));
                problem(line, "", format!("not valid TOML: {}", e.message()))
            })
            .collect();
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
        let places = locate::Places::new(name, doc.get_ref(), text);
        let mut skipped = Vec::new();
        let mut read = Reader {
            doc: doc.get_ref(),
            text,
            name,
            found: &mut found,
            skipped: &mut skipped,
        };
        let server: file::RawServer = read.section("server").unwrap_or_default();
        let origin: file::RawOrigin = read.section("origin").unwrap_or_default();
        let log: file::RawLog = read.section("log").unwrap_or_default();
        let room_raw: Option<room::RawRoom> = read.section("room");
        let vouchers_raw: Option<vouchers::RawVouchers> = read.section("vouchers");
        let store_raw: Option<store::RawStore> = read.section("store");

        let mut p = validate::Problems::default();
        let cfg = Config {
            source: None,
            places: places.clone(),
            server: validate::server(&server, base, &mut p),
            origin: validate::origin(&origin, base, &mut p),
            log: validate::log(&log, &mut p),
            room: room_raw.map(|r| room::room(&r, base, &mut p)),
            vouchers: vouchers_raw.map(|v| vouchers::vouchers(&v, base, &mut p)),
            store: store_raw.map(|s| store::store(&s, base, &mut p)),
        };
        for (key, message) in p.0 {
            // A key left out falls back to its default; what validation
            // then says about it (or about what lies under it) is noise.
            let under = |s: &String| key == *s || key.starts_with(&format!("{s}."));
            if skipped.iter().any(under) {
                continue;
            }
            found.push(places.problem(&key, message));
        }
        // What the parser recovered from a broken line (`level = info`
        // read as a float) is the syntax error again in other words.
        let broken: Vec<Option<usize>> = syntax
            .iter()
            .map(|e| e.span().map(|s| locate::line_of(text, s.start)))
            .collect();
        found.retain(|p| p.key.is_empty() || !broken.contains(&p.line));
        if found.is_empty() {
            Ok(cfg)
        } else {
            found.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            Err(ConfigError(found))
        }
    }
}

/// Reads the sections of one parsed file, collecting every mistake.
struct Reader<'a, 'i> {
    doc: &'a DeTable<'i>,
    text: &'a str,
    name: &'a str,
    found: &'a mut Vec<Problem>,
    skipped: &'a mut Vec<String>,
}

impl Reader<'_, '_> {
    /// The section `key` (`None` when the file has none), read leniently.
    fn section<T: DeserializeOwned + Default>(&mut self, key: &str) -> Option<T> {
        let (_, value) = self.doc.iter().find(|(k, _)| k.get_ref().as_ref() == key)?;
        let read = lenient::read::<T>(value.clone(), key, self.text, self.name);
        self.found.extend(read.problems);
        self.skipped.extend(read.skipped);
        Some(read.value)
    }
}
