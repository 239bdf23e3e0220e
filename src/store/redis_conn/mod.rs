//! The connection to Redis of `[store] backend = "redis"`: one multiplexed
//! connection per process, shared by the line ([`super::line::redis`]) and
//! the voucher ledger, that connects lazily, reconnects by itself and gives
//! every command a time limit (a paused or lost Redis fails fast instead of
//! holding requests).
//!
//! TLS (`rediss://`) goes through the redis crate's rustls support with
//! ring as the process's rustls provider: the server is verified against
//! `ca_file` (else the system roots), and `client_cert_file` /
//! `client_key_file` answer a server that asks for a client certificate.
//! An ACL user is named in the URL (`redis://usher@host`), its password
//! comes from `password_file`.
//!
//! With `sentinels` the primary's address comes from Redis Sentinel
//! (`SENTINEL GET-MASTER-ADDR-BY-NAME`, the Sentinels asked in order) and
//! is followed across failovers: [`StoreCon`] asks again after a command
//! fails the way a lost or demoted primary fails (connection refused or
//! dropped, timeout, `READONLY`), at most every 200 ms, then every 200 ms
//! for 10 s in the background (a dead primary restarted at its old address
//! answers again before Sentinel demotes it: it must not be taken back),
//! and every 5 s otherwise; it moves to the new primary when the Sentinels
//! name another. The command that failed
//! still fails (never retried: a write may have happened); the next one
//! goes to the new primary. The URL's user, password, db and TLS apply to
//! the primary; the Sentinels are reached in the clear or, with TLS, with
//! the same CA and client certificate (without a password).
//!
//! With `cluster` the primary is the Redis Cluster node that owns the
//! event's slot ([`cluster`]), found by `CLUSTER SLOTS` and
//! followed the same way: a `MOVED` answer (the slot went elsewhere) or
//! `CLUSTERDOWN` counts as a failure like a lost primary. The command that
//! got it still fails (a `MOVED` script did not run, but it is answered as
//! any store failure, one rule for every failed command); the next goes
//! to the new owner. `ASK` (the slot in the middle of a migration) is not
//! followed: those commands fail until the migration ends.

pub mod cluster;

use std::path::Path;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{ClientTlsConfig, Cmd, Pipeline, RedisError, RedisFuture, TlsCertificates, Value};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::store::{RedisStore, RedisTls};
use crate::logging::Throttle;

/// Opens the connection `store` describes for the event `event` (with
/// `cluster`, the node of its slot); the password of `password_file` (if
/// any) and the TLS files are read now. No I/O: the connection (and with
/// Sentinels or a Cluster, the primary's address) is made by the first
/// command.
pub fn connect(store: &RedisStore, event: &str) -> Result<StoreCon, String> {
    connect_slot(store, cluster::event_slot(event))
}

/// [`connect`] for the Cluster slot `slot` (unused without `cluster`).
fn connect_slot(store: &RedisStore, slot: u16) -> Result<StoreCon, String> {
    let mut url = store.url.clone();
    if let Some(f) = &store.password_file {
        let pw = read_password(f).map_err(|e| format!("store.password_file {e}"))?;
        let pw: String =
            percent_encoding::utf8_percent_encode(pw.trim(), percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        url = with_password(&url, &pw);
    }
    let client = client_for(&url, store)?;
    let con = manager(client, store.timeout).map_err(|e| format!("store.url: {e}"))?;
    let source = match (&store.sentinel, store.cluster) {
        (Some(s), _) => Source::Sentinel {
            addrs: s.addrs.clone(),
            master: s.master.clone(),
        },
        (None, true) => Source::Cluster {
            slot,
            known: Mutex::new(Vec::new()),
        },
        (None, false) => return Ok(StoreCon::from(con)),
    };
    Ok(StoreCon {
        current: Arc::new(ArcSwap::from_pointee(con)),
        follow: Some(Arc::new(Follow {
            url,
            store: store.clone(),
            source,
            primary: tokio::sync::Mutex::new(None),
            asked: Mutex::new(None),
            doubt_until: Mutex::new(None),
            checking: std::sync::atomic::AtomicBool::new(false),
            found: std::sync::atomic::AtomicBool::new(false),
        })),
    })
}

/// A client for `url` with `store`'s TLS files, if any.
pub(super) fn client_for(url: &str, store: &RedisStore) -> Result<redis::Client, String> {
    match &store.tls {
        Some(tls) => tls_client(url, tls),
        None => redis::Client::open(url).map_err(|e| format!("store.url: {e}")),
    }
}

/// The connection to Redis every store step goes through: a
/// [`ConnectionManager`] (reconnecting by itself), which with Sentinels is
/// replaced when they name another primary. Cheap to clone (shared).
#[derive(Clone)]
pub struct StoreCon {
    current: Arc<ArcSwap<ConnectionManager>>,
    follow: Option<Arc<Follow>>,
}

/// How to find the primary again.
struct Follow {
    /// The store URL (with the password): its host is replaced by the
    /// primary's.
    url: String,
    store: RedisStore,
    /// Who names the primary.
    source: Source,
    /// The primary in use (`None` until the Sentinels were first asked);
    /// the lock also keeps two askers from asking at once.
    primary: tokio::sync::Mutex<Option<String>>,
    /// When the Sentinels were last asked.
    asked: Mutex<Option<Instant>>,
    /// Until when the primary is in doubt (after a failure like a lost one).
    doubt_until: Mutex<Option<Instant>>,
    /// A background check is running.
    checking: std::sync::atomic::AtomicBool,
    /// The Sentinels named a primary at least once.
    found: std::sync::atomic::AtomicBool,
}

/// Who names the primary.
enum Source {
    /// Redis Sentinels (`host:port`, asked in order) watching `master`.
    Sentinel { addrs: Vec<String>, master: String },
    /// The Redis Cluster's nodes: the owner of `slot`.
    Cluster {
        slot: u16,
        /// Every node the last `CLUSTER SLOTS` answer named (asked after
        /// the URL's node).
        known: Mutex<Vec<String>>,
    },
}

impl Source {
    /// What the logs call it.
    fn name(&self) -> String {
        match self {
            Source::Sentinel { master, .. } => format!("Sentinel master {master}"),
            Source::Cluster { slot, .. } => format!("Cluster slot {slot}"),
        }
    }
}

/// How often the Sentinels are asked while the primary is in doubt, and
/// otherwise.
const ASK_IN_DOUBT: Duration = Duration::from_millis(200);
const ASK_STEADY: Duration = Duration::from_secs(5);
/// How long a failure keeps the primary in doubt.
const DOUBT: Duration = Duration::from_secs(10);

impl From<ConnectionManager> for StoreCon {
    fn from(con: ConnectionManager) -> StoreCon {
        StoreCon {
            current: Arc::new(ArcSwap::from_pointee(con)),
            follow: None,
        }
    }
}

/// How a lost, unreachable or demoted primary fails a command (and, in a
/// Cluster, one that no longer owns the slot).
fn primary_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || matches!(e.code(), Some("READONLY" | "MOVED" | "CLUSTERDOWN"))
}

impl StoreCon {
    /// The primary in use through Sentinels or in a Cluster (`None`
    /// without them, or before they were first asked).
    pub async fn primary(&self) -> Option<String> {
        self.follow.as_ref()?.primary.lock().await.clone()
    }

    /// Another connection like this one (same event slot) for `store`,
    /// e.g. with a longer time limit.
    pub fn another(&self, store: &RedisStore) -> Result<StoreCon, String> {
        let slot = match self.follow.as_deref().map(|f| &f.source) {
            Some(Source::Cluster { slot, .. }) => *slot,
            _ => 0,
        };
        connect_slot(store, slot)
    }

    /// Asks the Sentinels for the primary (first use, or after a failure
    /// that looks like a lost primary, at most every 200 ms) and moves to it
    /// when it changed.
    /// `cause`: the failure that made it ask (for the log), if any.
    async fn find_primary(&self, first: bool, cause: Option<&RedisError>) {
        let Some(f) = &self.follow else { return };
        // once found, commands never wait for an ask (a slow Sentinel must
        // not stall the line): the checks run after failures or aside
        if first && f.found.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut primary = match f.primary.try_lock() {
            Ok(p) => p,
            // before the first answer, commands wait for the one asking
            Err(_) if first => f.primary.lock().await,
            Err(_) => return,
        };
        if first && primary.is_some() {
            return;
        }
        {
            let mut asked = f.asked.lock().unwrap_or_else(|e| e.into_inner());
            if asked.is_some_and(|at| at.elapsed() < ASK_IN_DOUBT) {
                return;
            }
            *asked = Some(Instant::now());
        }
        let asked = match &f.source {
            Source::Sentinel { .. } => ask_sentinels(f).await,
            Source::Cluster { slot, known } => cluster::ask(&f.url, &f.store, known, *slot).await,
        };
        let found = match asked {
            Ok(a) => a,
            Err(e) => {
                // asked every 200 ms while the primary is in doubt: one
                // warning per 10 s, with how many were kept quiet
                static ASK_FAILED: Throttle = Throttle::new();
                if let Some(suppressed) = ASK_FAILED.admit_now() {
                    tracing::warn!(suppressed, "Redis {}: {e}", f.source.name());
                }
                return;
            }
        };
        if primary.as_deref() == Some(found.as_str()) {
            return;
        }
        let (host, port) = found.rsplit_once(':').unwrap_or((found.as_str(), "6379"));
        let url = with_host(&f.url, host, port);
        match client_for(&url, &f.store)
            .and_then(|c| manager(c, f.store.timeout).map_err(|e| e.to_string()))
        {
            Ok(con) => {
                self.current.store(Arc::new(con));
                f.found.store(true, std::sync::atomic::Ordering::Release);
                let by = f.source.name();
                let cause = cause.map_or_else(|| "a periodic check".to_string(), |e| e.to_string());
                match (primary.replace(found.clone()), &f.source) {
                    (None, Source::Sentinel { .. }) => {
                        tracing::info!(primary = %found, %by, "Redis primary found through Sentinel")
                    }
                    (Some(was), Source::Sentinel { .. }) => {
                        tracing::warn!(primary = %found, %was, %by, %cause, "Redis primary changed (Sentinel failover): following it")
                    }
                    (None, Source::Cluster { .. }) => {
                        tracing::info!(primary = %found, %by, "Redis Cluster: the event's slot found")
                    }
                    (Some(was), Source::Cluster { .. }) => {
                        tracing::warn!(primary = %found, %was, %by, %cause, "Redis Cluster: the event's slot moved (failover or resharding): following it")
                    }
                }
            }
            Err(e) => {
                tracing::error!(primary = %found, "Redis primary from Sentinel unusable: {e}")
            }
        }
    }

    async fn after(&self, failed: Option<&RedisError>) {
        let Some(f) = &self.follow else { return };
        if failed.is_some_and(primary_lost) {
            *f.doubt_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + DOUBT);
            self.find_primary(false, failed).await;
        }
    }

    /// Asks the Sentinels again in the background when it is time (in
    /// doubt every 200 ms, else every 5 s); one check at a time.
    fn recheck(&self) {
        let Some(f) = &self.follow else { return };
        let in_doubt = f
            .doubt_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| Instant::now() < t);
        let every = if in_doubt { ASK_IN_DOUBT } else { ASK_STEADY };
        let due = f
            .asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() >= every);
        if due && !f.checking.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let me = self.clone();
            tokio::spawn(async move {
                me.find_primary(false, None).await;
                if let Some(f) = &me.follow {
                    f.checking
                        .store(false, std::sync::atomic::Ordering::Release);
                }
            });
        }
    }
}

/// The primary's `host:port` from the first Sentinel that names it.
async fn ask_sentinels(f: &Follow) -> Result<String, String> {
    let Source::Sentinel { addrs, master } = &f.source else {
        return Err("not a Sentinel setup".into());
    };
    let scheme = if f.store.tls.is_some() {
        "rediss"
    } else {
        "redis"
    };
    let mut last = String::from("no Sentinel configured");
    for s in addrs {
        let ask = async {
            let client = client_for(&format!("{scheme}://{s}/"), &f.store)?;
            let mut c = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(master)
                .query_async::<Option<(String, u16)>>(&mut c)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(f.store.timeout, ask).await {
            Ok(Ok(Some((host, port)))) => return Ok(format!("{host}:{port}")),
            Ok(Ok(None)) => last = format!("{s} does not know the primary {master:?}"),
            Ok(Err(e)) => last = format!("{s}: {e}"),
            Err(_) => last = format!("{s}: no answer within {:?}", f.store.timeout),
        }
    }
    Err(last)
}

/// The first error answer among `values`: Redis's error replies
/// (`READONLY`, `MOVED`, …) come back from a connection as values, and
/// become errors only when the caller reads them.
fn server_error(values: &[Value]) -> Option<RedisError> {
    values.iter().find_map(|v| match v {
        Value::ServerError(e) => Some(RedisError::from(e.clone())),
        _ => None,
    })
}

impl ConnectionLike for StoreCon {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.find_primary(true, None).await;
            self.recheck();
            let mut con = (**self.current.load()).clone();
            let r = con.req_packed_command(cmd).await;
            let answer = match &r {
                Ok(v) => server_error(std::slice::from_ref(v)),
                Err(_) => None,
            };
            self.after(r.as_ref().err().or(answer.as_ref())).await;
            r
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.find_primary(true, None).await;
            self.recheck();
            let mut con = (**self.current.load()).clone();
            let r = con.req_packed_commands(pipeline, offset, count).await;
            let answer = match &r {
                Ok(v) => server_error(v),
                Err(_) => None,
            };
            self.after(r.as_ref().err().or(answer.as_ref())).await;
            r
        })
    }

    fn get_db(&self) -> i64 {
        self.current.load().get_db()
    }
}

/// `url` with its host and port replaced (user, password, db kept).
pub(super) fn with_host(url: &str, host: &str, port: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    match authority.rsplit_once('@') {
        Some((user, _)) => format!("{scheme}://{user}@{host}:{port}{path}"),
        None => format!("{scheme}://{host}:{port}{path}"),
    }
}

/// The password in `path` (trimmed); errors start with the path. Read at
/// start (and by `usher check`), and again when connecting.
pub fn read_password(path: &Path) -> Result<String, String> {
    let pw = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(pw.trim().to_string())
}

/// A client for a `rediss://` URL with the CA and client certificate of
/// `tls`.
fn tls_client(url: &str, tls: &RedisTls) -> Result<redis::Client, String> {
    use_ring_provider();
    let root_cert = match &tls.ca_file {
        Some(f) => Some(read_ca(f).map_err(|e| format!("store.ca_file {e}"))?),
        None => None,
    };
    let client_tls = match &tls.client_cert {
        Some((cert, key)) => Some(ClientTlsConfig {
            client_cert: read_file("store.client_cert_file", cert)?,
            client_key: read_file("store.client_key_file", key)?,
        }),
        None => None,
    };
    let certs = TlsCertificates {
        client_tls,
        root_cert,
    };
    redis::Client::build_with_tls(url, certs).map_err(|e| format!("store TLS: {e}"))
}

/// The PEM CA bundle at `path`, checked to hold at least one usable
/// certificate (a trust anchor); errors start with the path.
pub fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    let err = |reason: String| format!("{}: {reason}", path.display());
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not a PEM certificate ({e})")))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| err(format!("not a usable CA certificate ({e})")))?;
    }
    Ok(pem)
}

fn read_file(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key} {}: {e}", path.display()))
}

/// The redis crate builds its rustls config with the process's default
/// provider. Installing ring's here keeps it ring (the provider of every
/// other TLS config in usher, which name theirs explicitly) even if a
/// dependency ever enables a second one.
fn use_ring_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means some provider was installed first: it is then used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A lazy connection to `url`; every command fails after `timeout`.
pub fn connect_url(url: &str, timeout: Duration) -> Result<ConnectionManager, RedisError> {
    manager(redis::Client::open(url)?, timeout)
}

/// A lazy connection through `client`; every command fails after `timeout`.
fn manager(client: redis::Client, timeout: Duration) -> Result<ConnectionManager, RedisError> {
    let mc = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, mc)
}

/// `redis[s]://[user@]host…` with the password inserted after the user
/// (an ACL user) or alone (the default user).
fn with_password(url: &str, pw: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.split_once('@') {
        Some((user, _)) => {
            let user = user.split(':').next().unwrap_or_default();
            let after = &rest[rest.find('@').map_or(0, |i| i + 1)..];
            format!("{scheme}://{user}:{pw}@{after}")
        }
        None => format!("{scheme}://:{pw}@{rest}"),
    }
}

#[cfg(test)]
#[test]
fn the_primary_replaces_the_host_only() {
    assert_eq!(
        with_host("redis://u:p%40@h:6379/2", "10.0.0.5", "6380"),
        "redis://u:p%40@10.0.0.5:6380/2"
    );
    assert_eq!(
        with_host("rediss://h", "::1", "7000"),
        "rediss://[::1]:7000"
    );
    assert_eq!(with_host("redis://:x@h:1", "a", "2"), "redis://:x@a:2");
}

#[cfg(test)]
#[test]
fn the_password_goes_after_the_user() {
    assert_eq!(
        with_password("redis://usher@h:6379/0", "p%40"),
        "redis://usher:p%40@h:6379/0"
    );
    assert_eq!(with_password("redis://h:6379", "x"), "redis://:x@h:6379");
    assert_eq!(with_password("redis://u:old@h", "x"), "redis://u:x@h");
    assert_eq!(with_password("rediss://h", "x"), "rediss://:x@h");
}

#[cfg(test)]
#[test]
fn error_answers_that_mean_another_primary() {
    let answer = |reply: &[u8]| server_error(&[redis::parse_redis_value(reply).unwrap()]);
    for lost in [
        &b"-MOVED 2529 127.0.0.1:7002\r\n"[..],
        b"-READONLY You can't write against a read only replica.\r\n",
        b"-CLUSTERDOWN The cluster is down\r\n",
    ] {
        let e = answer(lost).expect("an error answer");
        assert!(primary_lost(&e), "{e}");
    }
    let e = answer(b"-ERR wrong number of arguments\r\n").unwrap();
    assert!(!primary_lost(&e), "{e}");
    // ASK (a slot being migrated) is not followed
    let e = answer(b"-ASK 2529 127.0.0.1:7002\r\n").unwrap();
    assert!(!primary_lost(&e), "{e}");
    assert!(answer(b"+OK\r\n").is_none());
}
