//! The `pool` issuer: codes from a file, one per line, each handed out once.
//!
//! The code of a claim is the pool's line at the claim's ledger sequence
//! number. The sequence number is durable before the issuer is asked, so a
//! retry after a crash gets the same code: idempotent with no state of its
//! own. Blank lines and `#` comments are skipped.
//!
//! The file must not be reordered or edited during an event (only appended
//! to): indexes would move. The ledger refuses to record a code twice, so an
//! edit cannot hand one code to two people, but it can strand claims.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{BoxFuture, Claim, IssueOutcome, VoucherIssuer};
use crate::store::MAX_CODE_LEN;

/// Most codes in a pool file: bounds memory whatever the file holds.
pub const MAX_POOL_CODES: usize = 10_000_000;

/// Why a pool file was refused.
#[derive(thiserror::Error, Debug)]
pub enum PoolError {
    /// The file could not be read.
    #[error("cannot read voucher pool {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A code is longer than the ledger accepts or has characters other than
    /// printable ASCII without spaces.
    #[error("voucher pool line {line}: a code must be 1 to {MAX_CODE_LEN} printable ASCII characters without spaces")]
    BadCode {
        /// 1-based line number.
        line: usize,
    },
    /// The same code twice: it would go to two people.
    #[error("voucher pool line {line}: duplicate of line {first}")]
    Duplicate {
        /// 1-based line number of the repeat.
        line: usize,
        /// 1-based line number of the first one.
        first: usize,
    },
    /// No code at all.
    #[error("voucher pool has no codes")]
    Empty,
    /// More than [`MAX_POOL_CODES`].
    #[error("voucher pool has more than {MAX_POOL_CODES} codes")]
    TooMany,
}

/// Codes from a file.
#[derive(Debug)]
pub struct PoolIssuer {
    codes: Vec<String>,
}

impl PoolIssuer {
    /// Parses pool text (see the module docs).
    pub fn parse(text: &str) -> Result<PoolIssuer, PoolError> {
        let mut codes = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let code = raw.trim();
            if code.is_empty() || code.starts_with('#') {
                continue;
            }
            if code.len() > MAX_CODE_LEN || !code.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(PoolError::BadCode { line });
            }
            if let Some(&first) = seen.get(code) {
                return Err(PoolError::Duplicate { line, first });
            }
            if codes.len() == MAX_POOL_CODES {
                return Err(PoolError::TooMany);
            }
            seen.insert(code, line);
            codes.push(code.to_owned());
        }
        if codes.is_empty() {
            return Err(PoolError::Empty);
        }
        Ok(PoolIssuer { codes })
    }

    /// Reads and parses a pool file.
    pub fn load(path: &Path) -> Result<PoolIssuer, PoolError> {
        let text = std::fs::read_to_string(path).map_err(|cause| PoolError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        PoolIssuer::parse(&text)
    }

    /// Number of codes.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Whether the pool is empty (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }
}

impl VoucherIssuer for PoolIssuer {
    fn name(&self) -> &'static str {
        "pool"
    }

    fn issue<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, IssueOutcome> {
        let out = usize::try_from(claim.seq)
            .ok()
            .and_then(|i| self.codes.get(i))
            .map_or(IssueOutcome::SoldOut, |code| IssueOutcome::Issued {
                code: code.clone(),
                meta: serde_json::json!({ "index": claim.seq }),
            });
        Box::pin(std::future::ready(out))
    }

    fn capacity(&self) -> Option<u64> {
        Some(self.codes.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(seq: u64) -> Claim {
        Claim {
            event: "e".into(),
            identity: "i".into(),
            idempotency_key: "k".into(),
            seq,
            client_ip: None,
            user_agent: None,
        }
    }

    #[tokio::test]
    async fn index_is_the_sequence_number() {
        let p = PoolIssuer::parse("# codes\nAAA\n\n  BBB \nCCC\n").expect("valid pool");
        assert_eq!(p.len(), 3);
        assert_eq!(p.capacity(), Some(3));
        for (seq, want) in [(0, "AAA"), (1, "BBB"), (2, "CCC"), (1, "BBB")] {
            match p.issue(&claim(seq)).await {
                IssueOutcome::Issued { code, .. } => assert_eq!(code, want),
                other => panic!("seq {seq}: {other:?}"),
            }
        }
        assert_eq!(p.issue(&claim(3)).await, IssueOutcome::SoldOut);
        assert_eq!(p.issue(&claim(u64::MAX)).await, IssueOutcome::SoldOut);
    }

    #[test]
    fn refuses_bad_pools() {
        assert!(matches!(
            PoolIssuer::parse("A\nB\nA\n"),
            Err(PoolError::Duplicate { line: 3, first: 1 })
        ));
        assert!(matches!(
            PoolIssuer::parse("A\nB C\n"),
            Err(PoolError::BadCode { line: 2 })
        ));
        assert!(matches!(
            PoolIssuer::parse(&"X".repeat(MAX_CODE_LEN + 1)),
            Err(PoolError::BadCode { line: 1 })
        ));
        assert!(matches!(
            PoolIssuer::parse("# nothing\n\n"),
            Err(PoolError::Empty)
        ));
    }
}
