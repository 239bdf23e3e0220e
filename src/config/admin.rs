//! `[server]` keys of the admin API: its bearer token (read here, at
//! config load, so `usher check` opens the file `run` will use), its Unix
//! socket and the paths it answers without the token.

use std::fmt;
use std::path::{Path, PathBuf};

use super::file::{RawServer, DEFAULT_ADMIN_OPEN};
use super::validate::Problems;

/// Shortest token accepted: 32 characters of a random token (`openssl rand
/// -hex 32` gives 64) are well beyond guessing over a socket.
pub const MIN_TOKEN_LEN: usize = 32;

/// A bearer token and the file it came from. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    /// The file (`server.admin_token_file`).
    pub path: PathBuf,
    /// The token, trimmed.
    pub secret: String,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken")
            .field("path", &self.path)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// How the admin API is reached and guarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminApi {
    /// The configured token; `None`: usher makes one at start (see
    /// `admin::token`).
    pub token: Option<AdminToken>,
    /// The Unix socket, if any.
    pub socket: Option<PathBuf>,
    /// Paths answered without the token.
    pub open: Vec<String>,
}

impl Default for AdminApi {
    fn default() -> Self {
        AdminApi {
            token: None,
            socket: None,
            open: DEFAULT_ADMIN_OPEN.iter().map(|p| p.to_string()).collect(),
        }
    }
}

impl AdminApi {
    /// Whether `path` is answered without the token.
    pub fn is_open(&self, path: &str) -> bool {
        self.open.iter().any(|p| p == path)
    }
}

/// Why a token read from a file is unusable, or `None` when it is fine.
pub fn token_problem(token: &str) -> Option<String> {
    if token.len() < MIN_TOKEN_LEN {
        Some(format!(
            "the token must be at least {MIN_TOKEN_LEN} characters (e.g. `openssl rand -hex 32`)"
        ))
    } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
        Some("the token must be printable ASCII without spaces".into())
    } else {
        None
    }
}

pub(super) fn admin(raw: &RawServer, base: &Path, p: &mut Problems) -> AdminApi {
    let token = raw.admin_token_file.as_ref().and_then(|f| {
        let path = base.join(f);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let secret = text.trim().to_string();
                match token_problem(&secret) {
                    Some(why) => {
                        p.push(
                            "server.admin_token_file",
                            format!("{}: {why}", path.display()),
                        );
                        None
                    }
                    None => Some(AdminToken { path, secret }),
                }
            }
            Err(e) => {
                p.push(
                    "server.admin_token_file",
                    format!("{}: {e}", path.display()),
                );
                None
            }
        }
    });
    let socket = match raw.admin_socket.trim() {
        "" | "off" => None,
        s if !s.starts_with('/') => {
            p.push(
                "server.admin_socket",
                format!("`{s}`: give an absolute path, e.g. \"/run/usher/admin.sock\""),
            );
            None
        }
        // sun_path holds 108 bytes with its terminating NUL.
        s if s.len() > 107 => {
            p.push("server.admin_socket", "a socket path is at most 107 bytes");
            None
        }
        s => Some(PathBuf::from(s)),
    };
    for (i, path) in raw.admin_open.iter().enumerate() {
        if !DEFAULT_ADMIN_OPEN.contains(&path.as_str()) {
            p.push(
                format!("server.admin_open.{i}"),
                format!(
                    "`{path}`: only {} can be open; /admin/ always needs the token",
                    DEFAULT_ADMIN_OPEN.join(", ")
                ),
            );
        }
    }
    AdminApi {
        token,
        socket,
        open: raw.admin_open.clone(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(server: &str, dir: &std::path::Path) -> Result<Config, String> {
        let text = format!("[server]\n{server}\n[origin]\nurl = \"http://127.0.0.1:9\"\n");
        Config::parse(&text, "t.toml", dir).map_err(|e| e.to_string())
    }

    #[test]
    fn token_file_is_read_at_load_and_checked() {
        let dir = std::env::temp_dir().join(format!("usher-admin-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("good"), format!("{}\n", "a".repeat(40))).unwrap();
        std::fs::write(dir.join("short"), "tooshort\n").unwrap();
        std::fs::write(
            dir.join("spaces"),
            format!("{} {}\n", "a".repeat(20), "b".repeat(20)),
        )
        .unwrap();
        let c = parse("admin_token_file = \"good\"", &dir).unwrap();
        let t = c.server.admin_api.token.unwrap();
        assert_eq!((t.secret.len(), &t.path), (40, &dir.join("good")));
        assert!(!format!("{t:?}").contains("aaaa"), "Debug shows the secret");
        let e = parse("admin_token_file = \"short\"", &dir).unwrap_err();
        assert!(
            e.contains("t.toml:2: server.admin_token_file") && e.contains("32"),
            "{e}"
        );
        let e = parse("admin_token_file = \"spaces\"", &dir).unwrap_err();
        assert!(e.contains("printable"), "{e}");
        let e = parse("admin_token_file = \"missing\"", &dir).unwrap_err();
        assert!(
            e.contains("server.admin_token_file") && e.contains("missing"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn socket_and_open_paths_are_checked() {
        let here = std::path::Path::new(".");
        let c = parse("", here).unwrap();
        assert_eq!(c.server.admin_api.socket, None);
        assert!(c.server.admin_api.token.is_none());
        assert!(["/metrics", "/healthz", "/readyz"]
            .iter()
            .all(|p| c.server.admin_api.is_open(p)));
        assert!(!c.server.admin_api.is_open("/admin/status"));
        let c = parse(
            "admin_socket = \"/run/usher/admin.sock\"\nadmin_open = [\"/healthz\"]",
            here,
        )
        .unwrap();
        assert_eq!(
            c.server.admin_api.socket.as_deref(),
            Some(std::path::Path::new("/run/usher/admin.sock"))
        );
        assert!(c.server.admin_api.is_open("/healthz") && !c.server.admin_api.is_open("/metrics"));
        let e = parse("admin_socket = \"admin.sock\"", here).unwrap_err();
        assert!(e.contains("server.admin_socket"), "{e}");
        let e = parse("admin_open = [\"/metrics\", \"/admin/status\"]", here).unwrap_err();
        assert!(e.contains("server.admin_open.1"), "{e}");
    }
}
