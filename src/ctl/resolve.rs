//! Where `usher ctl` finds the admin API and its token: `--socket` or
//! `--admin`, else the config's `server.admin_socket` or `server.admin`;
//! the token from `--token-file`, `$USHER_ADMIN_TOKEN`, the config's
//! `server.admin_token_file`, or usher's generated `admin.token`.

use std::path::PathBuf;

use super::{Client, Target};
use crate::config::Config;

/// The environment variable `usher ctl` reads a token from.
pub const TOKEN_ENV: &str = "USHER_ADMIN_TOKEN";

/// Why `usher ctl` could not even ask (a setup mistake, not the server's).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The token file cannot be read or holds no usable token.
    #[error("token file {path}: {reason}")]
    TokenFile {
        /// Which.
        path: String,
        /// Why.
        reason: String,
    },
    /// The token from the environment is unusable.
    #[error("${TOKEN_ENV}: {0}")]
    TokenEnv(String),
    /// The config names neither an admin listener nor a socket.
    #[error("{0} has no admin listener (server.admin) and no admin socket (server.admin_socket)")]
    NoAdmin(String),
}

/// What the command line gave.
#[derive(Debug, Default)]
pub struct Options {
    /// `--admin HOST:PORT`.
    pub admin: Option<String>,
    /// `--socket PATH`.
    pub socket: Option<PathBuf>,
    /// The config loaded from `-c` (it names the admin address, socket and token).
    pub config: Option<Config>,
    /// `--token-file PATH`.
    pub token_file: Option<PathBuf>,
    /// `$USHER_ADMIN_TOKEN`.
    pub env_token: Option<String>,
}

impl Options {
    /// The target and token these options lead to (see the module docs).
    pub fn resolve(self) -> Result<Client, SetupError> {
        let cfg = self.config.as_ref();
        let target = match (self.socket, self.admin, cfg) {
            (Some(p), _, _) => Target::Unix(p),
            (None, Some(a), _) => Target::Tcp(a),
            (None, None, Some(c)) => match (&c.server.admin_api.socket, c.server.admin) {
                (Some(p), _) => Target::Unix(p.clone()),
                (None, Some(a)) => Target::Tcp(a.to_string()),
                (None, None) => return Err(SetupError::NoAdmin(source_name(c))),
            },
            (None, None, None) => Target::Tcp(crate::config::file::DEFAULT_ADMIN.to_string()),
        };
        let token = if let Some(path) = &self.token_file {
            let fail = |reason: String| SetupError::TokenFile {
                path: path.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
            Some(usable(text.trim()).map_err(fail)?)
        } else if let Some(t) = self.env_token.filter(|t| !t.trim().is_empty()) {
            Some(usable(t.trim()).map_err(SetupError::TokenEnv)?)
        } else if let Some(t) = cfg.and_then(|c| c.server.admin_api.token.as_ref()) {
            Some(t.secret.clone())
        } else {
            // usher's own token; unreadable (not root, not usher's user) is
            // no error here: the server then says what is missing.
            let generated = match cfg {
                Some(c) => crate::admin::token::generated_path(c),
                None => crate::admin::token::generated_path(&Config::embedded()),
            };
            std::fs::read_to_string(generated)
                .ok()
                .and_then(|t| usable(t.trim()).ok())
        };
        Ok(Client { target, token })
    }
}

fn source_name(c: &Config) -> String {
    c.source
        .as_ref()
        .map_or("the embedded default".into(), |p| p.display().to_string())
}

/// `token` when it can go into a header and is long enough to be real.
fn usable(token: &str) -> Result<String, String> {
    match crate::config::admin::token_problem(token) {
        Some(why) => Err(why),
        None => Ok(token.to_string()),
    }
}
