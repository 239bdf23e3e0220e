//! Redis Cluster (`[store] cluster = true`): which node holds the event's
//! slot. Every key of an event is under the hash tag `{usher:EVENT}`, so
//! one slot, so one primary serves the whole event; [`super`]
//! sends every command there and asks again (as it asks Sentinels) after a
//! failure like a lost primary or a `MOVED` answer.
//!
//! The owner comes from `CLUSTER SLOTS`, asked of the URL's node first and
//! then of every node the last answer named (so a dead URL node, or a
//! failover of the slot's primary, does not leave usher without anyone to
//! ask). A node's own answer is trusted as given: during a failover the
//! surviving nodes name the dead primary until the replica is promoted,
//! then the replica.

use std::sync::Mutex;

use redis::Value;

use crate::config::store::RedisStore;

/// Slots in a Redis Cluster.
const SLOTS: u16 = 16384;

/// The slot of `key` as Redis Cluster computes it: CRC16 (XMODEM) of the
/// hash tag (the part between the first `{` and the next `}`, if not
/// empty) or else of the whole key, modulo 16384.
pub fn key_slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let hashed = match b.iter().position(|&c| c == b'{') {
        Some(open) => match b[open + 1..].iter().position(|&c| c == b'}') {
            Some(len) if len > 0 => &b[open + 1..open + 1 + len],
            _ => b,
        },
        None => b,
    };
    crc16(hashed) % SLOTS
}

/// The slot of the event `event` (its hash tag `{usher:EVENT}`).
pub fn event_slot(event: &str) -> u16 {
    key_slot(&format!("{{usher:{event}}}"))
}

/// CRC-16/XMODEM (polynomial 0x1021, initial 0), the one Redis Cluster uses.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// What one node's `CLUSTER SLOTS` says: the `host:port` of `slot`'s
/// primary (`None` if no node serves it) and every node it names (where to
/// ask next time). `asked_host` is the host of the node asked: an empty
/// host in the answer means that one.
pub fn owner_in(reply: &[Value], slot: u16, asked_host: &str) -> (Option<String>, Vec<String>) {
    let mut owner = None;
    let mut nodes = Vec::new();
    for range in reply {
        let Value::Array(items) = range else { continue };
        let (Some(start), Some(end)) = (int(items.first()), int(items.get(1))) else {
            continue;
        };
        let addrs: Vec<String> = items[2..]
            .iter()
            .filter_map(|n| node_addr(n, asked_host))
            .collect();
        if (start..=end).contains(&i64::from(slot)) {
            owner = addrs.first().cloned();
        }
        for a in addrs {
            if !nodes.contains(&a) {
                nodes.push(a);
            }
        }
    }
    (owner, nodes)
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

/// `host:port` of one node entry `[host, port, id, …]`.
fn node_addr(v: &Value, asked_host: &str) -> Option<String> {
    let Value::Array(items) = v else { return None };
    let host = match items.first()? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
        Value::SimpleString(s) => s.clone(),
        _ => return None,
    };
    let port = int(items.get(1))?;
    // an empty or unknown endpoint: the node asked
    let host = if host.is_empty() || host == "?" {
        asked_host.to_string()
    } else {
        host
    };
    if host.contains(':') {
        Some(format!("[{host}]:{port}"))
    } else {
        Some(format!("{host}:{port}"))
    }
}

/// The `host:port` of the primary that owns the slot, from the first
/// Cluster node (the URL's, then those last named) whose `CLUSTER SLOTS`
/// names one. Asked with the URL's user, password and TLS.
pub(super) async fn ask(
    url: &str,
    store: &RedisStore,
    known: &Mutex<Vec<String>>,
    slot: u16,
) -> Result<String, String> {
    let mut seeds = vec![url_addr(url)];
    for k in known.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if !seeds.contains(k) {
            seeds.push(k.clone());
        }
    }
    let mut last = String::from("no node to ask");
    for s in seeds {
        let (host, port) = s.rsplit_once(':').unwrap_or((s.as_str(), "6379"));
        let ask = async {
            let client = super::client_for(
                &super::with_host(url, host.trim_matches(['[', ']']), port),
                store,
            )?;
            let mut c = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Vec<Value>>(&mut c)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(store.timeout, ask).await {
            Ok(Ok(reply)) => {
                let (owner, nodes) = owner_in(&reply, slot, host.trim_matches(['[', ']']));
                if !nodes.is_empty() {
                    *known.lock().unwrap_or_else(|e| e.into_inner()) = nodes;
                }
                match owner {
                    Some(o) => return Ok(o),
                    None => last = format!("{s}: no node serves slot {slot}"),
                }
            }
            Ok(Err(e)) => last = format!("{s}: {e}"),
            Err(_) => last = format!("{s}: no answer within {:?}", store.timeout),
        }
    }
    Err(last)
}

/// The `host:port` of a URL (6379 when the port is not given).
fn url_addr(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match hostport.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => format!("{h}:{p}"),
        _ => format!("{hostport}:6379"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // the values `CLUSTER KEYSLOT` answers (and the spec's test vector)
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), key_slot("foo{}{bar}"));
        assert_ne!(key_slot("foo{}{bar}"), key_slot("bar"));
        assert_eq!(key_slot("{usher:show}:v:claims"), event_slot("show"));
    }

    #[test]
    fn the_url_names_the_first_node_to_ask() {
        assert_eq!(url_addr("redis://u:p%40@h:7000/0"), "h:7000");
        assert_eq!(url_addr("rediss://h"), "h:6379");
        assert_eq!(url_addr("redis://[::1]:7001"), "[::1]:7001");
        assert_eq!(url_addr("redis://[::1]"), "[::1]:6379");
    }

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn the_owner_is_the_first_node_of_the_range() {
        let reply = vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
                node("10.0.0.4", 7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("", 7001)]),
        ];
        let (owner, nodes) = owner_in(&reply, 5460, "h");
        assert_eq!(owner.as_deref(), Some("10.0.0.1:7000"));
        assert_eq!(nodes, ["10.0.0.1:7000", "10.0.0.4:7003", "h:7001"]);
        assert_eq!(owner_in(&reply, 5461, "h").0.as_deref(), Some("h:7001"));
        assert_eq!(owner_in(&reply[..1], 9000, "h").0, None);
    }
}
