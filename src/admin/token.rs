//! The admin token usher makes for itself when `server.admin_token_file` is
//! not set: 32 random bytes in `admin.token` under the state directory,
//! mode 0600, made on the first start and kept across restarts (delete it
//! and restart to rotate). So a default install is never open, and
//! `usher ctl` run as root (or as usher's user) finds the token without
//! being told.
//!
//! An existing file is used only when it is a regular file owned by usher's
//! user and closed to group and others; otherwise it is replaced. Creation
//! is exclusive (write a temporary file, then hard-link it into place), so
//! two processes starting at once end up with the same token.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::TryRngCore;

use crate::config::admin::token_problem;
use crate::config::store::DEFAULT_STATE_DIR;
use crate::config::Config;

/// The generated token's file name in the state directory.
pub const FILE_NAME: &str = "admin.token";

/// Where usher keeps its generated token for `cfg`: the local store's
/// `state_dir`; else the default state directory (systemd's
/// `StateDirectory=usher`) when it exists; else, for usher run by hand
/// (the README's demo), the user's own state directory
/// (`$XDG_STATE_HOME/usher` or `~/.local/state/usher`), where `usher ctl`
/// run by the same user looks too.
pub fn generated_path(cfg: &Config) -> PathBuf {
    if let Some(dir) = cfg.store.as_ref().and_then(|s| s.state_dir()) {
        return dir.join(FILE_NAME);
    }
    let system = Path::new(DEFAULT_STATE_DIR);
    if system.is_dir() {
        return system.join(FILE_NAME);
    }
    user_state_dir()
        .unwrap_or_else(|| system.to_path_buf())
        .join(FILE_NAME)
}

/// `$XDG_STATE_HOME/usher`, else `$HOME/.local/state/usher`.
fn user_state_dir() -> Option<PathBuf> {
    let set = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    set("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("usher"))
}

/// Makes the user's state directory (0700) when `path` lies in it; any
/// other directory must exist already (the state directory is the
/// operator's, or systemd's).
pub fn prepare_dir(path: &Path) -> Result<(), String> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    if dir.is_dir() || user_state_dir().as_deref() != Some(dir) {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))
}

/// Reads the generated token at `path` if it is usable, else makes a new
/// one there. The error says why neither worked.
pub fn load_or_create(path: &Path) -> Result<String, String> {
    match read_trusted(path) {
        Ok(Some(t)) => return Ok(t),
        Ok(None) => {}
        Err(why) => {
            tracing::warn!(file = %path.display(), "replacing the admin token file: {why}");
            remove(path)?;
        }
    }
    let token = new_token()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
    let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", tmp.display());
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| fail("creating", e))?;
    f.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| fail("writing", e))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(token),
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_trusted(path)?
            .ok_or_else(|| format!("{} vanished while it was made", path.display())),
        Err(e) => Err(format!("creating {}: {e}", path.display())),
    }
}

/// The token in `path`: `Ok(None)` when there is no file, `Err` when there
/// is one that must not be trusted.
fn read_trusted(path: &Path) -> Result<Option<String>, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if meta.uid() != me {
        return Err(format!("owned by uid {}, not {me}", meta.uid()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "mode {:o}: group or others may read it",
            meta.permissions().mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.trim().to_string();
    match token_problem(&token) {
        Some(why) => Err(why),
        None => Ok(Some(token)),
    }
}

fn remove(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", path.display())),
    }
}

/// 32 random bytes from the OS, base64url (43 characters).
fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| format!("the OS random generator failed: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("usher-admin-token-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn made_once_private_and_kept() {
        let d = dir("kept");
        let p = d.join(FILE_NAME);
        let t = load_or_create(&p).unwrap();
        assert_eq!(t.len(), 43);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(&p).unwrap(), t, "a restart keeps the token");
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "no temporary left"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_readable_or_bad_file_is_replaced() {
        let d = dir("loose");
        let p = d.join(FILE_NAME);
        let known = "k".repeat(40);
        std::fs::write(&p, &known).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let t = load_or_create(&p).unwrap();
        assert_ne!(t, known, "a token others could read is not used");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::write(&p, "short").unwrap();
        assert_ne!(load_or_create(&p).unwrap(), "short");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let d = dir("gone");
        let p = d.join("no-such-dir").join(FILE_NAME);
        assert!(load_or_create(&p).unwrap_err().contains("no-such-dir"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_path_follows_the_local_store() {
        let c = Config::parse(
            "[origin]\nurl = \"http://127.0.0.1:9\"\n[store]\nstate_dir = \"/srv/u\"\n",
            "t",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(generated_path(&c), Path::new("/srv/u/admin.token"));
        let embedded = generated_path(&Config::embedded());
        if Path::new(DEFAULT_STATE_DIR).is_dir() {
            assert_eq!(embedded, Path::new("/var/lib/usher/admin.token"));
        } else {
            // by hand, without systemd's state directory: the user's own
            assert_eq!(
                Some(embedded.parent().unwrap()),
                user_state_dir().as_deref()
            );
        }
    }
}
