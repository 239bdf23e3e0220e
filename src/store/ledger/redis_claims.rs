//! The voucher claim ledger in Redis, shared by several usher nodes: the
//! same operations and rules as the local [`super::Ledger`] ("exactly once
//! across nodes, never more than the stock"), each atomic step one Lua
//! script (`lua/voucher_*.lua`), so a claim costs two round trips (reserve,
//! complete) whatever the number of nodes.
//!
//! Keys (`V` = `{usher:EVENT}:v`, the line's hash tag, so Redis Cluster
//! keeps them in one slot):
//! - `V:claims` hash identity -> claim: `p|SEQ|` pending, `i|SEQ|CODE`
//!   issued, `r||REASON` refused.
//! - `V:n` hash of counters: `seq` next sequence number (never reused),
//!   `taken` units out (pending + issued), `issued`, `exhausted` (1 once the
//!   issuer ran out), `ver` bumped by every change.
//! - `V:pending` zset identity -> reserved at (ms, Redis clock): what
//!   [`RedisLedger::pending`] finds for recovery.
//! - `V:codes` hash code -> identity: no code goes to two identities.
//! - `V:audit` list of audit lines (as in the local audit log), appended in
//!   the same script that records the code.
//!
//! The stock comes from the config (every node has the same). Any Redis
//! failure is an error ([`StoreError::Unreachable`]), never a guess: a
//! script whose answer was lost may have run, and the identity's next claim
//! finds what it recorded.
//!
//! Durability is Redis's: with `appendonly yes` + `appendfsync always` a
//! recorded claim survives a Redis crash; without, a restart can forget
//! reservations and hand a sequence number (the pool plugin's code) again.
//! [`RedisLedger::check_persistence`] says so at start. With
//! [`Durability`] (`[store] min_replicas_acked`) a code is shown only once
//! its record is on that many replicas (`super::redis_durable`), so a
//! failover to a replica never forgets a code that was handed out.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::redis_conn::StoreCon;
use redis::{RedisError, Script};

use super::redis_durable::{confirm_cmd, eval, with_wait, Durability};
use super::{
    audit, clip_reason, idempotency_key, valid_code, valid_identity, IssuedClaim, PendingClaim,
    Reservation, StoreError,
};

/// The scripts, hashed once.
const COMPLETE_SRC: &str = include_str!("lua/voucher_complete.lua");
static VOUCHER_COMPLETE: LazyLock<Script> = LazyLock::new(|| Script::new(COMPLETE_SRC));
static VOUCHER_PENDING: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/voucher_pending.lua")));
static VOUCHER_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/voucher_release.lua")));
static VOUCHER_RESERVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/voucher_reserve.lua")));

/// Pending claims read by one [`RedisLedger::pending`] call at most; the
/// rest are found by the next sweep.
pub const PENDING_BATCH: usize = 1000;

/// The counters as of one Redis answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    taken: u64,
    issued: u64,
    exhausted: bool,
    ver: u64,
}

impl Counters {
    /// The counters as the scripts answer them (`exhausted` 0 or 1).
    fn from_script(taken: u64, issued: u64, exhausted: u8, ver: u64) -> Counters {
        Counters {
            taken,
            issued,
            exhausted: exhausted == 1,
            ver,
        }
    }
}

/// What Redis says about its own persistence (`INFO persistence`, `CONFIG
/// GET appendfsync`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    /// `appendonly yes`.
    pub aof: bool,
    /// `appendfsync`, when `CONFIG` is allowed (managed services often
    /// refuse it).
    pub fsync: Option<String>,
}

impl Persistence {
    /// Whether every recorded claim survives a Redis crash.
    pub fn is_safe(&self) -> bool {
        self.aof && self.fsync.as_deref().is_none_or(|f| f == "always")
    }
}

/// One node's handle on the shared claim ledger of one event.
pub struct RedisLedger {
    con: StoreCon,
    event: String,
    prefix: String,
    stock: u64,
    /// The counters of the latest answer, for the sync readers (holding
    /// page, metrics); refreshed by every script and by [`Self::refresh`].
    cache: Mutex<Counters>,
    /// Replicas a claim must be on before its code is shown (`None`: the
    /// primary's answer is enough).
    durable: Option<Durability>,
}

impl std::fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLedger")
            .field("event", &self.event)
            .field("stock", &self.stock)
            .finish_non_exhaustive()
    }
}

fn unreachable(e: RedisError) -> StoreError {
    StoreError::Unreachable(e.to_string())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Decodes a claim record (`p|SEQ|`, `i|SEQ|CODE`, `r||REASON`).
fn decode(event: &str, identity: &str, rec: &str) -> Result<Reservation, StoreError> {
    let bad = || StoreError::Unreachable(format!("damaged claim record in Redis: {rec:?}"));
    let mut parts = rec.splitn(3, '|');
    let (Some(kind), Some(seq), Some(text)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let seq = || seq.parse::<u64>().map_err(|_| bad());
    let key = || idempotency_key(event, identity);
    Ok(match kind {
        "p" => Reservation::Pending(PendingClaim {
            seq: seq()?,
            identity: identity.to_owned(),
            idempotency_key: key(),
        }),
        "i" => Reservation::Issued(IssuedClaim {
            seq: seq()?,
            code: text.to_owned(),
            idempotency_key: key(),
        }),
        "r" => Reservation::Refused(text.to_owned()),
        _ => return Err(bad()),
    })
}

impl RedisLedger {
    /// The ledger of `event` with `stock` units over `con` (the process's
    /// one connection, see [`crate::store::redis_conn`]). No I/O here: call
    /// [`Self::refresh`] before trusting [`Self::remaining`].
    pub fn new(con: impl Into<StoreCon>, event: &str, stock: u64) -> RedisLedger {
        RedisLedger {
            con: con.into(),
            event: event.to_owned(),
            prefix: format!("{{usher:{event}}}:v"),
            stock,
            cache: Mutex::new(Counters::default()),
            durable: None,
        }
    }

    /// Shows a code only once its claim is on `d.replicas` replicas (see
    /// `store::redis_durable`); `None` keeps the primary's answer enough.
    /// The connection given to [`Self::new`] must then be the ledger's own
    /// ([`super::redis_durable::ClaimsConnection`]): `WAIT` blocks it.
    pub fn with_durability(mut self, d: Option<Durability>) -> RedisLedger {
        self.durable = d;
        self
    }

    /// `acked` replicas of the `wanted`: enough, or "try again".
    fn enough(&self, acked: u32) -> Result<(), StoreError> {
        match self.durable {
            Some(d) if acked < d.replicas => Err(StoreError::NotDurable {
                acked,
                wanted: d.replicas,
            }),
            _ => Ok(()),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// Keeps `c` if it is at least as new as the cached counters.
    fn note(&self, c: Counters) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.ver >= cache.ver {
            *cache = c;
        }
    }

    fn counters(&self) -> Counters {
        *self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The claim of `identity`: the one it already has (issued, pending or
    /// refused, recorded by any node), else a new pending one taken from
    /// the stock, else [`Reservation::SoldOut`]. One script, atomic across
    /// nodes.
    pub async fn reserve(&self, identity: &str) -> Result<Reservation, StoreError> {
        if !valid_identity(identity) {
            return Err(StoreError::BadIdentity);
        }
        type Reply = (u8, u64, String, u64, u64, u8, u64);
        let (kind, seq, text, taken, issued, exhausted, ver): Reply = VOUCHER_RESERVE
            .key(self.key("claims"))
            .key(self.key("n"))
            .key(self.key("pending"))
            .arg(identity)
            .arg(self.stock)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(unreachable)?;
        self.note(Counters::from_script(taken, issued, exhausted, ver));
        let key = || idempotency_key(&self.event, identity);
        Ok(match kind {
            0 => Reservation::SoldOut,
            1 => Reservation::Pending(PendingClaim {
                seq,
                identity: identity.to_owned(),
                idempotency_key: key(),
            }),
            2 => {
                if let Some(d) = self.durable {
                    // a repeat claim: maybe after a WAIT that timed out, so
                    // the code is shown only once its record is on replicas
                    let record = format!("i|{seq}|{text}");
                    let cmd = confirm_cmd(&self.key("claims"), identity, &record);
                    let (same, acked): (u8, u32) =
                        with_wait(&self.con, cmd, d).await.map_err(unreachable)?;
                    if same != 1 {
                        return Err(StoreError::NotDurable {
                            acked: 0,
                            wanted: d.replicas,
                        });
                    }
                    self.enough(acked)?;
                }
                Reservation::Issued(IssuedClaim {
                    seq,
                    code: text,
                    idempotency_key: key(),
                })
            }
            _ => Reservation::Refused(text),
        })
    }

    /// Records `code` as issued to `identity`'s pending claim, by `plugin`,
    /// and appends its audit line, in one step. Completing again with the
    /// same code (from this node or another) is a no-op.
    pub async fn complete(
        &self,
        identity: &str,
        code: &str,
        plugin: &str,
    ) -> Result<(), StoreError> {
        if !valid_code(code) {
            return Err(StoreError::BadCode);
        }
        let (head, tail) = audit::line_around_seq(&self.event, unix_ms(), identity, code, plugin);
        let keys = ["claims", "n", "pending", "codes", "audit"].map(|k| self.key(k));
        let (status, acked) = match self.durable {
            None => {
                let mut inv = VOUCHER_COMPLETE.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                inv.arg(identity).arg(code).arg(&head).arg(&tail);
                (self.step(&mut inv).await?, 0)
            }
            Some(d) => {
                let mut cmd = eval(COMPLETE_SRC, &keys);
                cmd.arg(identity).arg(code).arg(&head).arg(&tail);
                type Reply = ((i8, u64, u64, u8, u64), u32);
                let ((status, taken, issued, exhausted, ver), acked): Reply =
                    with_wait(&self.con, cmd, d).await.map_err(unreachable)?;
                self.note(Counters::from_script(taken, issued, exhausted, ver));
                (status, acked)
            }
        };
        match status {
            0 | 1 => self.enough(acked),
            -2 => Err(StoreError::Conflict),
            -3 => Err(StoreError::DuplicateCode),
            _ => Err(StoreError::NotPending),
        }
    }

    /// Records that the issuer refused `identity` (kept: later claims on
    /// any node get the same answer) and gives its unit back. Refusing an
    /// identity another node already refused is a no-op.
    pub async fn refuse(&self, identity: &str, reason: &str) -> Result<(), StoreError> {
        self.release(identity, "refuse", &clip_reason(reason)).await
    }

    /// Records that the issuer ran out while `identity` was pending: its
    /// unit is released and the event is sold out on every node. A no-op
    /// when another node already did it for this identity.
    pub async fn release_sold_out(&self, identity: &str) -> Result<(), StoreError> {
        self.release(identity, "sold_out", "").await
    }

    async fn release(&self, identity: &str, how: &str, reason: &str) -> Result<(), StoreError> {
        let status = self
            .step(
                VOUCHER_RELEASE
                    .key(self.key("claims"))
                    .key(self.key("n"))
                    .key(self.key("pending"))
                    .arg(identity)
                    .arg(how)
                    .arg(reason),
            )
            .await?;
        if status < 0 {
            return Err(StoreError::NotPending);
        }
        Ok(())
    }

    /// Runs a script answering `{status, counters…}` and keeps the counters.
    async fn step(&self, inv: &mut redis::ScriptInvocation<'_>) -> Result<i8, StoreError> {
        let (status, taken, issued, exhausted, ver): (i8, u64, u64, u8, u64) = inv
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(unreachable)?;
        self.note(Counters::from_script(taken, issued, exhausted, ver));
        Ok(status)
    }

    /// Pending claims reserved at least `older_than` ago (by any node),
    /// oldest first, at most [`PENDING_BATCH`]. Younger ones may still be
    /// in progress on a live node; finishing them too is safe (same
    /// idempotency key, same code) but asks the issuer twice.
    pub async fn pending(&self, older_than: Duration) -> Result<Vec<PendingClaim>, StoreError> {
        let flat: Vec<String> = VOUCHER_PENDING
            .key(self.key("claims"))
            .key(self.key("pending"))
            .arg(older_than.as_millis() as u64)
            .arg(PENDING_BATCH)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(unreachable)?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks_exact(2) {
            let seq = pair[1].parse().map_err(|_| {
                StoreError::Unreachable(format!("damaged pending claim in Redis: {pair:?}"))
            })?;
            out.push(PendingClaim {
                seq,
                identity: pair[0].clone(),
                idempotency_key: idempotency_key(&self.event, &pair[0]),
            });
        }
        out.sort_unstable_by_key(|c| c.seq);
        Ok(out)
    }

    /// The recorded claim of `identity`, without reserving anything.
    pub async fn lookup(&self, identity: &str) -> Result<Option<Reservation>, StoreError> {
        let rec: Option<String> = redis::cmd("HGET")
            .arg(self.key("claims"))
            .arg(identity)
            .query_async(&mut self.con.clone())
            .await
            .map_err(unreachable)?;
        rec.map(|r| decode(&self.event, identity, &r)).transpose()
    }

    /// Reads the shared counters (one `HMGET`), so [`Self::remaining`] and
    /// [`Self::issued_count`] show what every node did.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let c: (Option<u64>, Option<u64>, Option<u8>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.key("n"))
            .arg(&["taken", "issued", "exhausted", "ver"][..])
            .query_async(&mut self.con.clone())
            .await
            .map_err(unreachable)?;
        let now = Counters {
            taken: c.0.unwrap_or(0),
            issued: c.1.unwrap_or(0),
            exhausted: c.2 == Some(1),
            ver: c.3.unwrap_or(0),
        };
        // The current state, whatever the cache held; a ledger that went
        // back means Redis lost acknowledged writes (restart without AOF,
        // failover to a lagging replica): say so loudly.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if now.ver < cache.ver {
            tracing::error!(
                event = %self.event,
                was = cache.ver,
                now = now.ver,
                "the voucher ledger in Redis went back in time: Redis lost writes, codes may be handed twice; \
                 stop the event and check Redis persistence (appendonly yes, appendfsync always)"
            );
        }
        *cache = now;
        Ok(())
    }

    /// Whether Redis keeps what it acknowledged across a crash: vouchers
    /// need `appendonly yes` and `appendfsync always`.
    pub async fn check_persistence(&self) -> Result<Persistence, StoreError> {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(&mut self.con.clone())
            .await
            .map_err(unreachable)?;
        let aof = info.lines().any(|l| l.trim() == "aof_enabled:1");
        let fsync: Option<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendfsync")
            .query_async::<Vec<String>>(&mut self.con.clone())
            .await
            .ok()
            .and_then(|v| v.into_iter().nth(1));
        Ok(Persistence { aof, fsync })
    }

    /// The audit list: one line per code issued, in order of recording.
    pub async fn audit_lines(&self) -> Result<Vec<String>, StoreError> {
        redis::cmd("LRANGE")
            .arg(self.key("audit"))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.con.clone())
            .await
            .map_err(unreachable)
    }

    /// `usher voucher audit` for the shared ledger: the claims, the
    /// counters and the audit list must agree (every code once, none beyond
    /// the stock, one audit line per issued claim with its number and
    /// code). Reads the whole ledger: an operator's command, not a hot path.
    pub async fn audit(&self) -> Result<audit::AuditReport, StoreError> {
        let claims: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key("claims"))
            .query_async(&mut self.con.clone())
            .await
            .map_err(unreachable)?;
        let lines = self.audit_lines().await?;
        self.refresh().await?;
        let n = self.counters();
        let mut r = audit::AuditReport {
            event: self.event.clone(),
            stock: self.stock,
            issued: n.issued,
            exhausted: n.exhausted,
            audit_lines: lines.len() as u64,
            ..audit::AuditReport::default()
        };
        // identity hash -> (seq, code) of every issued claim
        let mut issued = std::collections::HashMap::new();
        let mut seqs = std::collections::HashSet::new();
        for (id, rec) in &claims {
            match decode(&self.event, id, rec)? {
                Reservation::Issued(c) => {
                    if !seqs.insert(c.seq) {
                        r.problem(format!("sequence number {} held twice", c.seq));
                    }
                    issued.insert(super::identity_hash(id), (c.seq, c.code));
                }
                Reservation::Pending(c) => {
                    r.pending += 1;
                    if !seqs.insert(c.seq) {
                        r.problem(format!("sequence number {} held twice", c.seq));
                    }
                }
                Reservation::Refused(_) => r.refused += 1,
                Reservation::SoldOut => {}
            }
        }
        if issued.len() as u64 != n.issued {
            r.problem(format!(
                "{} issued claims but the counter says {}",
                issued.len(),
                n.issued
            ));
        }
        if n.taken != r.pending + n.issued {
            r.problem(format!(
                "{} units taken but {} pending + {} issued",
                n.taken, r.pending, n.issued
            ));
        }
        if n.issued > self.stock {
            r.problem(format!(
                "{} codes issued for a stock of {}",
                n.issued, self.stock
            ));
        }
        let mut codes = std::collections::HashSet::new();
        let mut listed = std::collections::HashSet::new();
        for (i, line) in lines.iter().enumerate() {
            let Some((seq, who, code)) = audit::parse_line(line) else {
                r.problem(format!("audit list item {i} is damaged"));
                continue;
            };
            if !codes.insert(code.clone()) {
                r.problem(format!("audit: code of seq {seq} appears twice"));
            }
            if !listed.insert(who.clone()) {
                r.problem(format!("audit: identity {who} holds two codes"));
            }
            match issued.get(&who) {
                Some((s, c)) if *s == seq && *c == code => {}
                Some((s, _)) => r.problem(format!("audit seq {seq} is seq {s} in the claims")),
                None => r.problem(format!("audit seq {seq} is not an issued claim")),
            }
        }
        let mut missing: Vec<u64> = issued
            .iter()
            .filter(|(who, _)| !listed.contains(*who))
            .map(|(_, (seq, _))| *seq)
            .collect();
        missing.sort_unstable();
        for seq in missing {
            r.problem(format!("claim seq {seq} is missing from the audit list"));
        }
        Ok(r)
    }

    /// Redis's `used_memory` (bytes), for sizing figures.
    pub async fn memory_used(&self) -> Result<u64, StoreError> {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.con.clone())
            .await
            .map_err(unreachable)?;
        info.lines()
            .find_map(|l| l.trim().strip_prefix("used_memory:")?.parse().ok())
            .ok_or_else(|| StoreError::Unreachable("INFO memory without used_memory".into()))
    }

    /// Units left to reserve as of the latest answer (0 once the issuer ran
    /// out). Pending claims count as taken.
    pub fn remaining(&self) -> u64 {
        let c = self.counters();
        if c.exhausted {
            0
        } else {
            self.stock.saturating_sub(c.taken)
        }
    }

    /// Codes issued so far, by every node, as of the latest answer.
    pub fn issued_count(&self) -> u64 {
        self.counters().issued
    }

    /// The stock, from the config.
    pub fn stock(&self) -> u64 {
        self.stock
    }

    /// The event this ledger belongs to.
    pub fn event(&self) -> &str {
        &self.event
    }
}

#[cfg(test)]
#[path = "redis_claims_tests.rs"]
mod tests;
