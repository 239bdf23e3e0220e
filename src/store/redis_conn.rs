//! The connection to Redis of `[store] backend = "redis"`: one multiplexed
//! connection per process, shared by the line ([`super::redis_line`]) and
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

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ClientTlsConfig, RedisError, TlsCertificates};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::store::{RedisStore, RedisTls};

/// Opens the connection `store` describes; the password of
/// `password_file` (if any) and the TLS files are read now.
pub fn connect(store: &RedisStore) -> Result<ConnectionManager, String> {
    let mut url = store.url.clone();
    if let Some(f) = &store.password_file {
        let pw = read_password(f).map_err(|e| format!("store.password_file {e}"))?;
        let pw: String =
            percent_encoding::utf8_percent_encode(pw.trim(), percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        url = with_password(&url, &pw);
    }
    let client = match &store.tls {
        Some(tls) => tls_client(&url, tls)?,
        None => redis::Client::open(url).map_err(|e| format!("store.url: {e}"))?,
    };
    manager(client, store.timeout).map_err(|e| format!("store.url: {e}"))
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
fn the_password_goes_after_the_user() {
    assert_eq!(
        with_password("redis://usher@h:6379/0", "p%40"),
        "redis://usher:p%40@h:6379/0"
    );
    assert_eq!(with_password("redis://h:6379", "x"), "redis://:x@h:6379");
    assert_eq!(with_password("redis://u:old@h", "x"), "redis://u:x@h");
    assert_eq!(with_password("rediss://h", "x"), "rediss://:x@h");
}
