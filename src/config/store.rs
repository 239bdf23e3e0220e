//! `[store]`: where the waiting line's state lives. Absent, the line is in
//! memory only (a restart starts an empty line); present with the default
//! `backend = "local"`, it survives restarts and crashes under `state_dir`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::validate::Problems;

/// Where the line's files go when `state_dir` is not set: the usual place
/// for a service's durable state on Linux.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/usher";

/// Raw `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// `local` (one node, files under `state_dir`).
    pub backend: String,
    /// Directory of the line's reservation mark and snapshot.
    pub state_dir: String,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            backend: "local".into(),
            state_dir: DEFAULT_STATE_DIR.into(),
        }
    }
}

/// The validated `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// One node; the line persisted under this directory.
    Local {
        /// Directory of the line's files (created if missing).
        state_dir: PathBuf,
    },
}

impl StoreConfig {
    /// The directory of the line's files.
    pub fn state_dir(&self) -> &Path {
        match self {
            StoreConfig::Local { state_dir } => state_dir,
        }
    }
}

pub(super) fn store(raw: &RawStore, base: &Path, p: &mut Problems) -> StoreConfig {
    match raw.backend.as_str() {
        "local" => {}
        "redis" => p.push(
            "store.backend",
            "the Redis backend is not available in this build; use \"local\" (one node)",
        ),
        other => p.push("store.backend", format!("`{other}`: use \"local\"")),
    }
    if raw.state_dir.trim().is_empty() {
        p.push("store.state_dir", "must not be empty");
    }
    StoreConfig::Local {
        state_dir: base.join(&raw.state_dir),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(extra: &str) -> Result<Config, String> {
        let text = format!("[origin]\nurl = \"http://127.0.0.1:1\"\n{extra}");
        Config::parse(&text, "t", Path::new("/etc/usher")).map_err(|e| e.to_string())
    }

    #[test]
    fn absent_means_in_memory_and_present_defaults_to_local() {
        assert_eq!(parse("").unwrap().store, None);
        let c = parse("[store]\n").unwrap();
        assert_eq!(
            c.store.unwrap().state_dir(),
            Path::new(super::DEFAULT_STATE_DIR)
        );
        let c = parse("[store]\nstate_dir = \"state\"\n").unwrap();
        assert_eq!(c.store.unwrap().state_dir(), Path::new("/etc/usher/state"));
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("[store]\nbackend = \"redis\"\n").unwrap_err();
        assert!(e.contains("store.backend") && e.contains("Redis"), "{e}");
        let e = parse("[store]\nbackend = \"disk\"\nstate_dir = \"\"\n").unwrap_err();
        assert!(e.contains("`disk`") && e.contains("store.state_dir"), "{e}");
        let e = parse("[store]\npath = \"x\"\n").unwrap_err();
        assert!(e.contains("path"), "{e}");
    }
}
