//! Voucher claims that survive a Redis failover (`[store]
//! min_replicas_acked`): a code is shown to a visitor only once the record
//! of its claim is on that many replicas, so a promoted replica holds every
//! code ever shown and never hands one again.
//!
//! `WAIT n timeout` counts the replicas that acknowledged the writes made
//! *on the same connection* before it, so the step that records a code and
//! its `WAIT` go out as one pipeline on one connection (a reconnection
//! between them would make `WAIT` count nothing of ours and answer at
//! once). The step is sent as `EVAL` (the script's text) rather than
//! `EVALSHA`, so a fresh primary after a failover needs no `SCRIPT LOAD`
//! round between them. `WAIT` blocks its connection until it answers, so
//! the ledger gets a connection of its own, apart from the line's polls.
//!
//! A `WAIT` that times out says nothing about the failover: the record
//! may or may not survive it. The code is then not shown (the visitor is
//! told to try again, [`super::StoreError::NotDurable`]); the identity's
//! next claim finds its record if it survived and waits for the replicas
//! again before showing that same code ([`confirm_cmd`]), or starts a new
//! claim if it did not.

use std::time::Duration;

use crate::store::redis_conn::StoreCon;
use redis::{Cmd, FromRedisValue, RedisError};

use crate::config::store::RedisStore;

/// How many replicas must hold a claim before its code is shown, and how
/// long to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    /// Replicas that must acknowledge (at least 1).
    pub replicas: u32,
    /// The longest wait for them.
    pub timeout: Duration,
}

/// The connection the voucher ledger uses, and the durability it asks for.
#[derive(Clone)]
pub struct ClaimsConnection {
    /// The line's connection without durability; with it, one of the
    /// ledger's own (`WAIT` blocks its connection).
    pub con: StoreCon,
    /// `None`: a code is shown when the primary answers.
    pub durability: Option<Durability>,
}

impl ClaimsConnection {
    /// The ledger's connection for `store`: `line` itself unless claims
    /// wait for replicas, then a new lazy connection whose command time
    /// limit leaves room for the wait.
    pub fn for_store(store: &RedisStore, line: &StoreCon) -> Result<Self, String> {
        if store.min_replicas_acked == 0 {
            return Ok(ClaimsConnection {
                con: line.clone(),
                durability: None,
            });
        }
        let own = RedisStore {
            timeout: store.timeout + store.replica_ack_timeout,
            ..store.clone()
        };
        Ok(ClaimsConnection {
            con: line.another(&own)?,
            durability: Some(Durability {
                replicas: store.min_replicas_acked,
                timeout: store.replica_ack_timeout,
            }),
        })
    }
}

/// `EVAL src` over `keys` (the caller adds the arguments).
pub(super) fn eval(src: &str, keys: &[String]) -> Cmd {
    let mut c = redis::cmd("EVAL");
    c.arg(src).arg(keys.len()).arg(keys);
    c
}

/// Rewrites `identity`'s claim record with itself if it still reads
/// `record` (answers 1; 0 if it changed or is gone): a write on this
/// connection after the record, so the `WAIT` that follows covers it even
/// when another node wrote it.
pub(super) fn confirm_cmd(claims_key: &str, identity: &str, record: &str) -> Cmd {
    let mut c = eval(CONFIRM, &[claims_key.to_owned()]);
    c.arg(identity).arg(record);
    c
}

const CONFIRM: &str = "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then \
     redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1 end return 0";

/// Runs `step` then `WAIT` in one pipeline on `con`: the step's answer and
/// the number of replicas that acknowledged it.
pub(super) async fn with_wait<T: FromRedisValue>(
    con: &StoreCon,
    step: Cmd,
    d: Durability,
) -> Result<(T, u32), RedisError> {
    let mut p = redis::pipe();
    p.add_command(step)
        .cmd("WAIT")
        .arg(d.replicas)
        .arg(d.timeout.as_millis().max(1) as u64);
    p.query_async(&mut con.clone()).await
}
