//! The keyring: the secrets that sign and verify tokens, and rotation.
//!
//! The first key signs; every key verifies. To rotate without logging anyone
//! out: add the new key as a second line, reload everywhere, move it to the
//! first line, reload, and remove the old key once the longest-lived token it
//! signed has expired.
//!
//! Key file, one key per line (`#` comments and blank lines allowed):
//!
//! ```text
//! # kid:base64 secret (at least 32 bytes once decoded)
//! k2024b:1Qx0pX2rP3+Jr0aKx7n0Jm9vU2mF0o1c8d7K5rQ2b5Q=
//! ```
//!
//! Secrets never leave this module: the keyring keeps only the keyed HMAC state,
//! its `Debug` prints key ids only, and parse errors carry line numbers, not
//! line contents.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use rand::rngs::OsRng;
use rand::{RngCore as _, TryRngCore as _};
use sha2::Sha256;

use super::MAX_KID_LEN;

/// Minimum secret length in bytes after base64 decoding: the HMAC-SHA256
/// output size, below which a short key would be the weakest link.
pub const MIN_SECRET_LEN: usize = 32;

/// Bytes of randomness in a generated secret.
const GENERATED_SECRET_LEN: usize = 32;

/// Why a key file or key id was refused. Never contains secret material.
#[derive(thiserror::Error, Debug)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read key file {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A line is neither blank, a comment, nor `KID:SECRET`.
    #[error("key file line {line}: expected KID:BASE64SECRET")]
    MissingColon {
        /// 1-based line number.
        line: usize,
    },
    /// The key id is empty, too long or has characters outside
    /// `[A-Za-z0-9_-]`. The id is not echoed: a line written as `SECRET:kid`
    /// would otherwise print the secret.
    #[error("key file line {line}: key id must be 1 to 16 characters of A-Z a-z 0-9 _ -")]
    BadKid {
        /// 1-based line number.
        line: usize,
    },
    /// The secret is not valid base64 (standard or URL-safe, padding optional).
    #[error("key file line {line}: secret is not valid base64")]
    BadSecret {
        /// 1-based line number.
        line: usize,
    },
    /// The secret decodes to fewer than [`MIN_SECRET_LEN`] bytes.
    #[error("key file line {line}: secret is {len} bytes, at least {min} are required")]
    ShortSecret {
        /// 1-based line number.
        line: usize,
        /// Decoded length found.
        len: usize,
        /// [`MIN_SECRET_LEN`].
        min: usize,
    },
    /// The same key id appears twice; which secret wins would be a guess.
    #[error("key file line {line}: key id {kid:?} already used on line {first}")]
    DuplicateKid {
        /// 1-based line number of the repeat.
        line: usize,
        /// 1-based line number of the first use.
        first: usize,
        /// The key id (ids are not secret).
        kid: String,
    },
    /// No key in the file.
    #[error("key file has no keys")]
    NoKeys,
    /// A key id given to [`Keyring::generate_line`] is not valid.
    #[error("key id must be 1 to 16 characters of A-Z a-z 0-9 _ -")]
    InvalidKid,
    /// The operating system's random generator failed.
    #[error("operating system random generator failed: {0}")]
    Rng(String),
}

#[derive(Clone)]
struct Key {
    kid: String,
    /// Keyed once; cloning this state is cheaper than re-keying per request.
    mac: Hmac<Sha256>,
}

/// Keys that sign (the first) and verify (all) tokens. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    signing: Key,
    /// Verify-only keys, in file order.
    others: Vec<Key>,
}

impl Keyring {
    /// Parses a key file's text. Stops at the first mistake.
    pub fn parse(text: &str) -> Result<Keyring, KeyError> {
        let mut keys: Vec<(usize, Key)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (kid, secret) = trimmed
                .split_once(':')
                .ok_or(KeyError::MissingColon { line })?;
            let kid = kid.trim();
            if !valid_kid(kid) {
                return Err(KeyError::BadKid { line });
            }
            let secret = decode_secret(secret.trim()).ok_or(KeyError::BadSecret { line })?;
            if secret.len() < MIN_SECRET_LEN {
                return Err(KeyError::ShortSecret {
                    line,
                    len: secret.len(),
                    min: MIN_SECRET_LEN,
                });
            }
            if let Some((first, _)) = keys.iter().find(|(_, k)| k.kid == kid) {
                return Err(KeyError::DuplicateKid {
                    line,
                    first: *first,
                    kid: kid.to_owned(),
                });
            }
            keys.push((line, Key::new(kid, &secret)));
        }
        let mut keys = keys.into_iter().map(|(_, k)| k);
        let signing = keys.next().ok_or(KeyError::NoKeys)?;
        Ok(Keyring {
            signing,
            others: keys.collect(),
        })
    }

    /// Reads and parses a key file (e.g. from systemd `LoadCredential=`).
    pub fn load(path: &Path) -> Result<Keyring, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|cause| KeyError::Io {
            path: path.to_owned(),
            cause,
        })?;
        Keyring::parse(&text)
    }

    /// A new key file line `KID:SECRET` with 32 random bytes from the OS, for
    /// `usher keygen`. Returns an error (rather than a line that would not
    /// parse) when the key id is invalid.
    pub fn generate_line(kid: &str) -> Result<String, KeyError> {
        if !valid_kid(kid) {
            return Err(KeyError::InvalidKid);
        }
        let mut secret = [0u8; GENERATED_SECRET_LEN];
        OsRng
            .try_fill_bytes(&mut secret)
            .map_err(|e| KeyError::Rng(e.to_string()))?;
        Ok(format!("{kid}:{}", STANDARD.encode(secret)))
    }

    /// A random key that lives only in this process: the default when no key
    /// file is configured. Every ticket and pass it signs becomes invalid
    /// ([`Reject::UnknownKey`](super::Reject::UnknownKey)) when the process
    /// restarts, so visitors lose their place in line, and several nodes
    /// cannot share it. The key id is random (`tmp-` and 8 hex digits) so
    /// tokens from before a restart show up as unknown keys, not as forgeries.
    ///
    /// # Panics
    ///
    /// If the operating system's random generator fails: usher cannot sign
    /// anything safely then.
    pub fn ephemeral() -> Keyring {
        let mut rng = OsRng.unwrap_err();
        let mut secret = [0u8; GENERATED_SECRET_LEN];
        rng.fill_bytes(&mut secret);
        let kid = format!("tmp-{:08x}", rng.next_u32());
        Keyring {
            signing: Key::new(&kid, &secret),
            others: Vec::new(),
        }
    }

    /// The id of the key that signs new tokens.
    pub fn signing_kid(&self) -> &str {
        &self.signing.kid
    }

    /// All key ids, signing key first (for status output).
    pub fn kids(&self) -> Vec<&str> {
        std::iter::once(&self.signing)
            .chain(&self.others)
            .map(|k| k.kid.as_str())
            .collect()
    }

    pub(super) fn signer(&self) -> (&str, &Hmac<Sha256>) {
        (&self.signing.kid, &self.signing.mac)
    }

    pub(super) fn verifier(&self, kid: &[u8]) -> Option<&Hmac<Sha256>> {
        std::iter::once(&self.signing)
            .chain(&self.others)
            .find(|k| k.kid.as_bytes() == kid)
            .map(|k| &k.mac)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("kids", &self.kids())
            .field("secrets", &"<redacted>")
            .finish()
    }
}

impl Key {
    fn new(kid: &str, secret: &[u8]) -> Key {
        Key {
            kid: kid.to_owned(),
            // HMAC takes keys of any length (long ones are hashed first), so
            // this cannot fail.
            mac: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length"),
        }
    }
}

/// Accepts what people paste: standard or URL-safe alphabet, with or without
/// padding.
fn decode_secret(s: &str) -> Option<Vec<u8>> {
    let unpadded = s
        .strip_suffix("==")
        .or_else(|| s.strip_suffix('='))
        .unwrap_or(s);
    STANDARD_NO_PAD
        .decode(unpadded)
        .or_else(|_| URL_SAFE_NO_PAD.decode(unpadded))
        .ok()
}

fn valid_kid(kid: &str) -> bool {
    valid_kid_bytes(kid.as_bytes())
}

/// 1..=16 bytes of `[A-Za-z0-9_-]`: safe in logs and status output.
pub(super) fn valid_kid_bytes(kid: &[u8]) -> bool {
    (1..=MAX_KID_LEN).contains(&kid.len())
        && kid
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_b64(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn parses_comments_blank_lines_and_order() {
        let text = format!(
            "# keys\n\n  new : {}  \r\nold:{}\n# end\n",
            secret_b64(1),
            URL_SAFE_NO_PAD.encode([2u8; 40])
        );
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.signing_kid(), "new");
        assert_eq!(ring.kids(), vec!["new", "old"]);
        assert!(ring.verifier(b"old").is_some());
        assert!(ring.verifier(b"nope").is_none());
    }

    #[test]
    fn parse_errors_carry_line_numbers_and_no_secret() {
        let good = secret_b64(7);
        let secret_like = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0";
        let cases: Vec<(String, usize, &str)> = vec![
            (format!("# c\n{secret_like}\n"), 2, "KID:BASE64SECRET"),
            (
                format!("a:{good}\n\n{secret_like}:kid\n"),
                3,
                "key id must be",
            ),
            (format!(":{good}\n"), 1, "key id must be"),
            ("bad kid:AAAA\n".into(), 1, "key id must be"),
            ("a:not base64!!\n".into(), 1, "not valid base64"),
            (format!("a:{}\n", STANDARD.encode([9u8; 31])), 1, "31 bytes"),
            (format!("a:{good}\nb:{good}\na:{good}\n"), 3, "line 1"),
        ];
        for (text, line, needle) in cases {
            let err = Keyring::parse(&text).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("line {line}:")),
                "{msg:?} lacks line {line}"
            );
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
            assert!(!msg.contains(secret_like), "{msg:?} echoes a secret");
            assert!(!msg.contains(&good), "{msg:?} echoes a secret");
        }
        assert!(matches!(
            Keyring::parse("# only\n\n"),
            Err(KeyError::NoKeys)
        ));
    }

    #[test]
    fn generate_line_round_trips_and_differs() {
        let a = Keyring::generate_line("k1").unwrap();
        let b = Keyring::generate_line("k1").unwrap();
        assert_ne!(a, b);
        let (_, secret) = a.split_once(':').unwrap();
        assert_eq!(STANDARD.decode(secret).unwrap().len(), 32);
        assert_eq!(Keyring::parse(&a).unwrap().signing_kid(), "k1");
        for bad in ["", "has space", "x:y", "seventeen-chars-x", "é"] {
            assert!(matches!(
                Keyring::generate_line(bad),
                Err(KeyError::InvalidKid)
            ));
        }
        assert!(Keyring::generate_line(&"a".repeat(16)).is_ok());
    }

    #[test]
    fn ephemeral_keys_are_random_and_valid() {
        let a = Keyring::ephemeral();
        let b = Keyring::ephemeral();
        assert_ne!(a.signing_kid(), b.signing_kid());
        assert!(a.signing_kid().starts_with("tmp-"));
        assert!(valid_kid(a.signing_kid()));
    }

    #[test]
    fn debug_masks_secrets() {
        let secret = secret_b64(0x5a);
        let ring = Keyring::parse(&format!("main:{secret}")).unwrap();
        let shown = format!("{ring:?}");
        assert!(shown.contains("main"));
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&secret));
        assert!(!shown.contains("90, 90")); // 0x5a bytes as a list
    }

    #[test]
    fn load_reports_missing_file() {
        let err = Keyring::load(Path::new("/nonexistent/usher/keys")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/usher/keys"));
    }
}
