//! The connection to Redis of `[store] backend = "redis"`: one multiplexed
//! connection per process, shared by the line ([`super::redis_line`]) and
//! the voucher ledger, that connects lazily, reconnects by itself and gives
//! every command a time limit (a paused or lost Redis fails fast instead of
//! holding requests).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisError;

use crate::config::store::RedisStore;

/// Opens the connection `store` describes; the password of
/// `password_file` (if any) is read now and put into the URL.
pub fn connect(store: &RedisStore) -> Result<ConnectionManager, String> {
    let mut url = store.url.clone();
    if let Some(f) = &store.password_file {
        let pw = std::fs::read_to_string(f)
            .map_err(|e| format!("store.password_file {}: {e}", f.display()))?;
        let pw: String =
            percent_encoding::utf8_percent_encode(pw.trim(), percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        url = with_password(&url, &pw);
    }
    connect_url(&url, store.timeout).map_err(|e| format!("store.url: {e}"))
}

/// A lazy connection to `url`; every command fails after `timeout`.
pub fn connect_url(url: &str, timeout: Duration) -> Result<ConnectionManager, RedisError> {
    let client = redis::Client::open(url)?;
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
fn the_password_goes_after_the_user() {
    assert_eq!(
        with_password("redis://usher@h:6379/0", "p%40"),
        "redis://usher:p%40@h:6379/0"
    );
    assert_eq!(with_password("redis://h:6379", "x"), "redis://:x@h:6379");
    assert_eq!(with_password("redis://u:old@h", "x"), "redis://u:x@h");
    assert_eq!(with_password("rediss://h", "x"), "rediss://:x@h");
}
