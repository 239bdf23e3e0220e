//! The start-up stage that `usher run`, `usher check` and every reload
//! share: each file the config names is opened and parsed here, before
//! anything listens, and each mistake is reported with the config key (and
//! line) that named the file. `usher check` is this stage without the
//! sockets, so a file read here is checked by `check` too: a new file
//! setting belongs here, not in the code that later uses it.
//!
//! Not touched here: the state under `state_dir` (the line's files, the
//! voucher ledger) and Redis. The running process writes, locks and
//! connects to them, and `check` runs beside it (`systemctl reload`).

use std::path::Path;

use crate::admission::room::{Prepared, Room};
use crate::config::store::StoreConfig;
use crate::config::{Config, ConfigError, Problem};
use crate::holding::HoldingPages;
use crate::proxy::client::{ClientError, OriginClient};
use crate::tls::{self, CertError, LoadedCert};
use crate::tokens::Keyring;
use crate::vouchers::setup::{self, Issuer};

/// Everything the config's files hold, read and checked.
pub struct Loaded {
    /// The TLS certificates in config order (`None` without `[server.tls]`).
    pub certs: Option<Vec<LoadedCert>>,
    /// The origin client, trusting `origin.ca_file`.
    pub origin: OriginClient,
    /// The room's keys (`room.keys_file`) and pages (`room.template`).
    pub room: Prepared,
    /// The voucher plugin with its code pool or key, when `[vouchers]` is set.
    pub vouchers: Option<Issuer>,
}

/// Opens and parses every file `cfg` names; every mistake is reported, not
/// only the first. `running` is the room of a running process (a reload):
/// without `room.keys_file` its random key is kept.
pub fn load(cfg: &Config, running: Option<&Room>) -> Result<Loaded, ConfigError> {
    let mut found = Vec::new();
    let mut problem = |key: &str, message: String| found.push(cfg.places.problem(key, message));

    let certs = cfg.server.tls.as_ref().map(|t| {
        t.certificates
            .iter()
            .enumerate()
            .filter_map(|(i, (cert, key))| {
                let at = |which: &str| format!("server.tls.certificates.{i}.{which}");
                tls::load(cert, key)
                    .map_err(|e| match &e {
                        CertError::File { path, .. } if path == key => {
                            problem(&at("key"), e.to_string());
                        }
                        CertError::File { .. } => {
                            problem(&at("cert"), e.to_string());
                            // The key is not reached when the certificate
                            // fails; say now if it is unusable too.
                            if let Err(k) = tls::read_key(key) {
                                problem(&at("key"), k.to_string());
                            }
                        }
                        CertError::Key { .. } => problem(&at("key"), e.to_string()),
                    })
                    .ok()
            })
            .collect::<Vec<_>>()
    });

    let origin = OriginClient::new(&cfg.origin)
        .map_err(|ClientError::CaFile { path, reason }| {
            problem("origin.ca_file", format!("{path}: {reason}"));
        })
        .ok();

    let room_cfg = cfg.room.as_ref();
    let keys = match (room_cfg.and_then(|r| r.keys_file.as_deref()), running) {
        (Some(path), _) => Keyring::load(path)
            .map_err(|e| problem("room.keys_file", e.to_string()))
            .ok(),
        (None, Some(room)) => Some(Prepared::running_keys(room)),
        (None, None) => Some(Keyring::ephemeral()),
    };
    let template = match room_cfg.and_then(|r| r.template.as_deref()) {
        Some(path) => read_text(path)
            .map(Some)
            .map_err(|e| problem("room.template", e))
            .unwrap_or(None),
        None => None,
    };
    let pages = HoldingPages::new(template.as_deref())
        .map_err(|e| problem("room.template", e.to_string()))
        .ok();

    let vouchers = cfg
        .vouchers
        .as_ref()
        .and_then(|v| setup::issuer(v).map_err(|e| problem(e.key, e.reason)).ok());

    // The state directories are opened (and locked) by the running process
    // only; what can be told without touching them is told here.
    if let Some(dir) = cfg.store.as_ref().and_then(StoreConfig::state_dir) {
        if let Err(e) = usable_dir(dir) {
            problem("store.state_dir", e);
        }
    }
    let shared_ledger = matches!(cfg.store, Some(StoreConfig::Redis(_)));
    if let Some(v) = cfg.vouchers.as_ref().filter(|_| !shared_ledger) {
        if let Err(e) = usable_dir(&v.state_dir) {
            problem("vouchers.state_dir", e);
        }
    }

    if let Some(StoreConfig::Redis(r)) = &cfg.store {
        if let Some(f) = &r.password_file {
            if let Err(e) = crate::store::redis_conn::read_password(f) {
                problem("store.password_file", e);
            }
        }
        if let Some(t) = &r.tls {
            if let Some(f) = &t.ca_file {
                if let Err(e) = crate::store::redis_conn::read_ca(f) {
                    problem("store.ca_file", e);
                }
            }
            if let Some((cert, key)) = &t.client_cert {
                if let Err(e) = tls::load(cert, key) {
                    let name = match &e {
                        CertError::File { path, .. } if path == key => "store.client_key_file",
                        _ => "store.client_cert_file",
                    };
                    problem(name, e.to_string());
                }
            }
        }
    }

    match (certs, origin, keys, pages) {
        (certs, Some(origin), Some(keys), Some(pages)) if found.is_empty() => Ok(Loaded {
            certs,
            origin,
            room: Prepared::new(keys, pages),
            vouchers,
        }),
        _ => Err(ConfigError(sorted(credential_hints(found)))),
    }
}

/// Under systemd (`$CREDENTIALS_DIRECTORY` set), a file missing from the
/// credentials directory is a credential the unit did not pass: say which,
/// so ops look at the unit and the credential store, not at the config.
fn credential_hints(mut found: Vec<Problem>) -> Vec<Problem> {
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
        return found;
    };
    let dir = Path::new(&dir);
    let prefix = format!("{}/", dir.display());
    for p in &mut found {
        let Some(at) = p.message.find(&prefix) else {
            continue;
        };
        let name: String = p.message[at + prefix.len()..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != ':')
            .collect();
        if !name.is_empty() && !dir.join(&name).exists() {
            p.message.push_str(&format!(
                " (systemd passed no credential `{name}`: see LoadCredential= in the unit)"
            ));
        }
    }
    found
}

/// A directory usher can create or use: one that exists, or a path whose
/// missing parts can be made (not one that is, or runs through, a file).
fn usable_dir(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("{}: not a directory", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// A text file, or why not (one cause, starting with the path).
fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn sorted(mut found: Vec<Problem>) -> Vec<Problem> {
    found.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    found
}

#[cfg(test)]
#[path = "startup_tests.rs"]
mod tests;
