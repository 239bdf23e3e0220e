//! The secret that signs voucher codes ([`super::signed`]) and webhook
//! bodies ([`super::webhook`]).
//!
//! Key file: the first line that is neither blank nor a `#` comment holds
//! the base64 secret, optionally after `KID:` (so a line of the tokens key
//! file works too). Secrets never leave this module: `Debug` prints nothing
//! of them and errors carry line numbers, not contents.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// Minimum secret length in bytes: the HMAC-SHA256 output size.
pub const MIN_SECRET_LEN: usize = 32;

/// Why a voucher key was refused. Never contains secret material.
#[derive(thiserror::Error, Debug)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read voucher key file {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// No line with a secret.
    #[error("voucher key: no secret found")]
    Missing,
    /// The secret is not base64.
    #[error("voucher key line {line}: not base64")]
    NotBase64 {
        /// 1-based line number.
        line: usize,
    },
    /// The secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("voucher key: the secret must be at least {MIN_SECRET_LEN} bytes, found {len}")]
    TooShort {
        /// Decoded length.
        len: usize,
    },
}

/// An HMAC-SHA256 key, kept as the keyed state only.
#[derive(Clone)]
pub struct VoucherKey {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for VoucherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VoucherKey(..)")
    }
}

impl VoucherKey {
    /// A key from raw secret bytes (at least [`MIN_SECRET_LEN`]).
    pub fn from_secret(secret: &[u8]) -> Result<VoucherKey, KeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::TooShort { len: secret.len() });
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| KeyError::Missing)?;
        Ok(VoucherKey { mac })
    }

    /// A key from the text of a key file (see the module docs).
    pub fn parse(text: &str) -> Result<VoucherKey, KeyError> {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let b64 = line.rsplit_once(':').map_or(line, |(_, s)| s).trim();
            let secret = STANDARD
                .decode(b64)
                .or_else(|_| STANDARD_NO_PAD.decode(b64))
                .map_err(|_| KeyError::NotBase64 { line: i + 1 })?;
            return VoucherKey::from_secret(&secret);
        }
        Err(KeyError::Missing)
    }

    /// A key from a key file.
    pub fn load(path: &Path) -> Result<VoucherKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|cause| KeyError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        VoucherKey::parse(&text)
    }

    /// A fresh keyed MAC to feed.
    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        self.mac.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms_and_errors() {
        let b64 = STANDARD.encode([7u8; 32]);
        assert!(VoucherKey::parse(&format!("# c\n\n{b64}\n")).is_ok());
        assert!(VoucherKey::parse(&format!("k1:{b64}")).is_ok());
        assert!(matches!(
            VoucherKey::parse(&STANDARD.encode([7u8; 16])),
            Err(KeyError::TooShort { len: 16 })
        ));
        assert!(matches!(
            VoucherKey::parse("# only\n!!!"),
            Err(KeyError::NotBase64 { line: 2 })
        ));
        assert!(matches!(VoucherKey::parse(""), Err(KeyError::Missing)));
        let dbg = format!("{:?}", VoucherKey::parse(&b64).expect("valid key"));
        assert!(!dbg.contains(&b64[..8]));
    }
}
