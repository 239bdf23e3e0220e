//! `[store]`: where the waiting line's state lives. Absent, the line is in
//! memory only (a restart starts an empty line); present with the default
//! `backend = "local"`, it survives restarts and crashes under `state_dir`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::validate::Problems;

/// Where the line's files go when `state_dir` is not set: the usual place
/// for a service's durable state on Linux.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/usher";

/// A Redis on the same host, the usual test and small-setup layout.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// One Redis command's time limit: a poll waits at most this long for a
/// paused or lost Redis before the visitor gets the holding page.
pub const DEFAULT_REDIS_TIMEOUT: &str = "500ms";

/// Raw `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// `local` (one node, files under `state_dir`) or `redis` (shared).
    pub backend: String,
    /// Directory of the line's reservation mark and snapshot.
    pub state_dir: String,
    /// `redis`: `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// `redis`: a file holding the password (kept out of the config).
    pub password_file: Option<String>,
    /// `redis`: TLS (`rediss://`); not in this build.
    pub tls: bool,
    /// `redis`: what new visitors get while Redis is unreachable.
    pub on_failure: String,
    /// `redis`: this node's name in the tick lease (default host-pid).
    pub node_id: Option<String>,
    /// `redis`: time limit of one Redis command.
    pub timeout: String,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            backend: "local".into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            url: DEFAULT_REDIS_URL.into(),
            password_file: None,
            tls: false,
            on_failure: "hold".into(),
            node_id: None,
            timeout: DEFAULT_REDIS_TIMEOUT.into(),
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
    /// Several nodes sharing one line in Redis.
    Redis(RedisStore),
}

/// The validated `[store] backend = "redis"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStore {
    /// Connection URL (without the password of `password_file`).
    pub url: String,
    /// Password file, read at start.
    pub password_file: Option<PathBuf>,
    /// This node's name.
    pub node_id: String,
    /// One command's time limit.
    pub timeout: std::time::Duration,
}

impl StoreConfig {
    /// The directory of the line's files.
    pub fn state_dir(&self) -> Option<&Path> {
        match self {
            StoreConfig::Local { state_dir } => Some(state_dir),
            StoreConfig::Redis(_) => None,
        }
    }
}

pub(super) fn store(raw: &RawStore, base: &Path, p: &mut Problems) -> StoreConfig {
    match raw.backend.as_str() {
        "local" => {
            if raw.state_dir.trim().is_empty() {
                p.push("store.state_dir", "must not be empty");
            }
            StoreConfig::Local {
                state_dir: base.join(&raw.state_dir),
            }
        }
        "redis" => StoreConfig::Redis(redis(raw, base, p)),
        other => {
            p.push(
                "store.backend",
                format!("`{other}`: use \"local\" or \"redis\""),
            );
            StoreConfig::Local {
                state_dir: base.join(&raw.state_dir),
            }
        }
    }
}

fn redis(raw: &RawStore, base: &Path, p: &mut Problems) -> RedisStore {
    if !raw.url.starts_with("redis://") {
        p.push(
            "store.url",
            "use redis://host:port (rediss:// needs TLS, not in this build)",
        );
    }
    if raw.tls {
        p.push(
            "store.tls",
            "TLS to Redis is not in this build: reach Redis over a private network or a local TLS tunnel",
        );
    }
    match raw.on_failure.as_str() {
        "hold" => {}
        "local_share" => p.push(
            "store.on_failure",
            "\"local_share\" is not available yet; use \"hold\"",
        ),
        other => p.push("store.on_failure", format!("`{other}`: use \"hold\"")),
    }
    let timeout = super::units::parse_duration(&raw.timeout).unwrap_or_else(|e| {
        p.push("store.timeout", e);
        std::time::Duration::from_millis(500)
    });
    if timeout.is_zero() {
        p.push("store.timeout", "must be more than 0");
    }
    let node_id = raw.node_id.clone().unwrap_or_else(default_node_id);
    if node_id.is_empty() || node_id.len() > 128 {
        p.push("store.node_id", "1 to 128 characters");
    }
    RedisStore {
        url: raw.url.clone(),
        password_file: raw.password_file.as_ref().map(|f| base.join(f)),
        node_id,
        timeout,
    }
}

/// What the Redis backend does not share yet is refused, never guessed.
pub(super) fn cross_check(cfg: &super::Config, p: &mut Problems) {
    if !matches!(cfg.store, Some(StoreConfig::Redis(_))) {
        return;
    }
    if let Some(room) = &cfg.room {
        if room.opens_at.is_some() {
            p.push(
                "room.opens_at",
                "the pre-queue is not shared through Redis yet: remove opens_at or use backend = \"local\"",
            );
        }
        if room.mode == super::room::Mode::Random {
            p.push(
                "room.mode",
                "the lottery is not shared through Redis yet (the shared line is FIFO)",
            );
        }
    }
}

/// `HOSTNAME-PID`: unique per process, readable in Redis.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "usher".into());
    format!("{host}-{}", std::process::id())
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
            Some(Path::new(super::DEFAULT_STATE_DIR))
        );
        let c = parse("[store]\nstate_dir = \"state\"\n").unwrap();
        assert_eq!(
            c.store.unwrap().state_dir(),
            Some(Path::new("/etc/usher/state"))
        );
        let c = parse("[store]\nbackend = \"redis\"\nnode_id = \"n1\"\n").unwrap();
        let Some(super::StoreConfig::Redis(r)) = c.store else {
            panic!("redis")
        };
        assert_eq!(
            (r.url.as_str(), r.node_id.as_str()),
            ("redis://127.0.0.1:6379", "n1")
        );
    }

    #[test]
    fn mistakes_are_named() {
        let e =
            parse("[store]\nbackend = \"redis\"\ntls = true\non_failure = \"x\"\n").unwrap_err();
        assert!(
            e.contains("store.tls") && e.contains("store.on_failure"),
            "{e}"
        );
        let e = parse("[store]\nbackend = \"disk\"\n").unwrap_err();
        assert!(e.contains("`disk`"), "{e}");
        let e = parse("[store]\nstate_dir = \"\"\n").unwrap_err();
        assert!(e.contains("store.state_dir"), "{e}");
        let e = parse("[room]\nmode = \"random\"\n[store]\nbackend = \"redis\"\n").unwrap_err();
        assert!(e.contains("room.mode") && e.contains("lottery"), "{e}");
        // [vouchers] is shared through Redis too: accepted.
        let c = parse(
            "[vouchers]\nplugin = \"signed\"\nkey_file = \"k\"\nstock = 1\n[store]\nbackend = \"redis\"\n",
        )
        .unwrap();
        assert!(c.vouchers.is_some());
        let e = parse("[store]\npath = \"x\"\n").unwrap_err();
        assert!(e.contains("path"), "{e}");
    }
}
