//! `[store]`: where the waiting line's state lives. Absent, the line is in
//! memory only (a restart starts an empty line); present with the default
//! `backend = "local"`, it survives restarts and crashes under `state_dir`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::validate::Problems;

/// Where the line's files go when `state_dir` is not set: the usual place
/// for a service's durable state on Linux.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/usher";

/// A Redis on the same host, the usual test and small-setup layout.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// One Redis command's time limit: a poll waits at most this long for a
/// paused or lost Redis before the visitor gets the holding page.
pub const DEFAULT_REDIS_TIMEOUT: &str = "500ms";
/// How long a voucher claim waits for its replicas (`min_replicas_acked`):
/// a replica on the same network acknowledges within a millisecond, so
/// this only bounds a lagging or lost replica, and a visitor waits at most
/// this long before "try again". The command timeout's default, for one
/// bound on every Redis wait a visitor sees.
pub const DEFAULT_REPLICA_ACK_TIMEOUT: &str = "500ms";
/// More replicas than anyone runs: a typo (`10` for `1`) fails `usher check`
/// instead of every claim.
pub const MAX_REPLICAS_ACKED: u32 = 16;

/// Raw `[store]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// `local` (one node, files under `state_dir`) or `redis` (shared).
    pub backend: String,
    /// Directory of the line's reservation mark and snapshot.
    pub state_dir: String,
    /// `redis`: `redis[s]://[user:password@]host:port[/db]`.
    pub url: String,
    /// `redis`: a file holding the password (kept out of the config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// `redis`: TLS even with a `redis://` URL (`rediss://` is TLS anyway).
    pub tls: bool,
    /// `redis` over TLS: PEM CA bundle trusted instead of the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// `redis` over TLS: PEM client certificate (chain) for mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<String>,
    /// `redis` over TLS: PEM key of `client_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<String>,
    /// `redis`: what new visitors get while Redis is unreachable: `hold`
    /// or `local_share`.
    pub on_failure: String,
    /// `redis`: this node's name in the tick lease (default host-pid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// `redis`: time limit of one Redis command.
    pub timeout: String,
    /// `redis`: a voucher code is shown only once its claim is on this
    /// many replicas (`WAIT`); 0 (the default) shows it when the primary
    /// answers.
    pub min_replicas_acked: u32,
    /// `redis`: how long a claim waits for those replicas before the
    /// visitor is told to try again.
    pub replica_ack_timeout: String,
    /// `redis`: Redis Sentinels (`host:port`) that name the primary; the
    /// URL's host is then only where to start, its user, db and TLS apply.
    pub sentinels: Vec<String>,
    /// `redis` with `sentinels`: the name of the primary they watch.
    pub sentinel_master: Option<String>,
    /// `redis`: the URL names one node of a Redis Cluster; usher uses the
    /// primary that owns the event's slot and follows it.
    pub cluster: bool,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            backend: "local".into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            url: DEFAULT_REDIS_URL.into(),
            password_file: None,
            tls: false,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            on_failure: "hold".into(),
            node_id: None,
            timeout: DEFAULT_REDIS_TIMEOUT.into(),
            min_replicas_acked: 0,
            replica_ack_timeout: DEFAULT_REPLICA_ACK_TIMEOUT.into(),
            sentinels: Vec::new(),
            sentinel_master: None,
            cluster: false,
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
    /// Connection URL (without the password of `password_file`); always
    /// `rediss://` when `tls` is set.
    pub url: String,
    /// Password file, read at start.
    pub password_file: Option<PathBuf>,
    /// TLS to Redis, when the URL is `rediss://` or `tls = true`.
    pub tls: Option<RedisTls>,
    /// This node's name.
    pub node_id: String,
    /// One command's time limit.
    pub timeout: std::time::Duration,
    /// What new visitors get while Redis is unreachable.
    pub on_failure: OnFailure,
    /// Replicas that must hold a voucher claim before its code is shown
    /// (0: none; the primary's answer is enough).
    pub min_replicas_acked: u32,
    /// How long a claim waits for them.
    pub replica_ack_timeout: std::time::Duration,
    /// The primary found through Redis Sentinel (followed across failovers).
    pub sentinel: Option<Box<SentinelConfig>>,
    /// The URL names one node of a Redis Cluster: the owner of the event's
    /// slot is found and followed (never with `sentinel`).
    pub cluster: bool,
}

/// `store.sentinels` and `store.sentinel_master`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// `host:port` of each Sentinel, asked in order.
    pub addrs: Vec<String>,
    /// The name of the primary the Sentinels watch.
    pub master: String,
}

/// `store.on_failure`: admissions while Redis is unreachable (passes keep
/// working either way; they never need Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Nobody new is admitted until Redis is back.
    Hold,
    /// This node admits its share of the rate and of the capacity (1/N,
    /// N = nodes that beat in the last three ticks), waiting visitors first.
    LocalShare,
}

/// TLS to Redis: whom to trust and, for mutual TLS, who we are. The files
/// were checked to hold usable PEM when the config was validated; they are
/// read again when the connection is made.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisTls {
    /// CA bundle trusted instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key files (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
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
    let url = redis_url(raw, p);
    let tls = redis_tls(raw, url.starts_with("rediss://"), base, p);
    let on_failure = match raw.on_failure.as_str() {
        "hold" => OnFailure::Hold,
        "local_share" => OnFailure::LocalShare,
        other => {
            p.push(
                "store.on_failure",
                format!("`{other}`: use \"hold\" or \"local_share\""),
            );
            OnFailure::Hold
        }
    };
    let timeout = super::units::parse_duration(&raw.timeout).unwrap_or_else(|e| {
        p.push("store.timeout", e);
        std::time::Duration::from_millis(500)
    });
    if timeout.is_zero() {
        p.push("store.timeout", "must be more than 0");
    }
    if raw.min_replicas_acked > MAX_REPLICAS_ACKED {
        p.push(
            "store.min_replicas_acked",
            format!("at most {MAX_REPLICAS_ACKED} (the replicas a claim waits for)"),
        );
    }
    let replica_ack_timeout = super::units::parse_duration(&raw.replica_ack_timeout)
        .unwrap_or_else(|e| {
            p.push("store.replica_ack_timeout", e);
            std::time::Duration::from_millis(500)
        });
    if replica_ack_timeout.is_zero() {
        // WAIT 0 would wait for ever
        p.push("store.replica_ack_timeout", "must be more than 0");
    }
    let sentinel = sentinel(raw, p);
    if raw.cluster {
        if !raw.sentinels.is_empty() {
            p.push(
                "store.cluster",
                "not with sentinels: a Cluster fails over by itself (give one of its nodes as url)",
            );
        }
        let db = url.split_once("://").and_then(|(_, r)| r.split_once('/'));
        if let Some((_, db)) = db.filter(|(_, db)| !db.is_empty() && *db != "0") {
            p.push(
                "store.url",
                format!("database `{db}`: a Redis Cluster has only database 0"),
            );
        }
    }
    let node_id = raw.node_id.clone().unwrap_or_else(default_node_id);
    if node_id.is_empty() || node_id.len() > 128 {
        p.push("store.node_id", "1 to 128 characters");
    }
    RedisStore {
        url,
        password_file: raw.password_file.as_ref().map(|f| base.join(f)),
        tls,
        node_id,
        timeout,
        on_failure,
        min_replicas_acked: raw.min_replicas_acked,
        replica_ack_timeout,
        sentinel,
        cluster: raw.cluster,
    }
}

/// `sentinels` with `sentinel_master`, each `host:port`.
fn sentinel(raw: &RawStore, p: &mut Problems) -> Option<Box<SentinelConfig>> {
    match (&raw.sentinels[..], &raw.sentinel_master) {
        ([], None) => None,
        ([], Some(_)) => {
            p.push(
                "store.sentinels",
                "missing: sentinel_master needs the Sentinels",
            );
            None
        }
        (_, None) => {
            p.push(
                "store.sentinel_master",
                "missing: the name of the primary the Sentinels watch",
            );
            None
        }
        (addrs, Some(master)) => {
            for a in addrs {
                let ok = a
                    .rsplit_once(':')
                    .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
                if !ok {
                    p.push("store.sentinels", format!("`{a}`: use host:port"));
                }
            }
            Some(Box::new(SentinelConfig {
                addrs: addrs.to_vec(),
                master: master.clone(),
            }))
        }
    }
}

/// `store.url`, turned into `rediss://` by `tls = true`. A `rediss://` URL
/// means TLS whatever `tls` says: the URL is what an operator copies from
/// their Redis provider, and connecting in the clear to a TLS port only
/// fails later and less clearly.
fn redis_url(raw: &RawStore, p: &mut Problems) -> String {
    let url = raw.url.trim();
    let url = match url.strip_prefix("redis://") {
        Some(rest) if raw.tls => format!("rediss://{rest}"),
        Some(_) => url.to_string(),
        None if url.starts_with("rediss://") => url.to_string(),
        None => {
            p.push("store.url", "use redis://host:port or rediss://host:port");
            return url.to_string();
        }
    };
    if url.contains('#') {
        // the redis crate reads `#insecure` as "do not verify the server"
        p.push(
            "store.url",
            "no `#` fragment (certificate checks cannot be turned off): trust a private CA with store.ca_file",
        );
    } else if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
        p.push("store.url", format!("not a Redis URL ({e})"));
    }
    url
}

/// The TLS files, checked now so that `usher check` names a wrong one
/// instead of the first connection failing with a handshake error.
fn redis_tls(raw: &RawStore, on: bool, base: &Path, p: &mut Problems) -> Option<RedisTls> {
    let ca_file = raw.ca_file.as_ref().map(|f| base.join(f));
    let cert = raw.client_cert_file.as_ref().map(|f| base.join(f));
    let key = raw.client_key_file.as_ref().map(|f| base.join(f));
    if !on {
        for (name, set) in [
            ("store.ca_file", ca_file.is_some()),
            ("store.client_cert_file", cert.is_some()),
            ("store.client_key_file", key.is_some()),
        ] {
            if set {
                p.push(
                    name,
                    "only used over TLS: set tls = true or use a rediss:// URL",
                );
            }
        }
        return None;
    }
    // The files themselves are opened and checked with every other file
    // the config names, at startup (`crate::startup`).
    let client_cert = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (Some(_), None) => {
            p.push(
                "store.client_key_file",
                "missing: client_cert_file needs its key",
            );
            None
        }
        (None, Some(_)) => {
            p.push(
                "store.client_cert_file",
                "missing: client_key_file needs its certificate",
            );
            None
        }
        (None, None) => None,
    };
    Some(RedisTls {
        ca_file,
        client_cert,
    })
}

/// `HOSTNAME-PID`: unique per process, readable in Redis.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "usher".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
