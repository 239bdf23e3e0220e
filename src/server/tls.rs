//! TLS: certificates loaded from PEM files, chosen by SNI through our own
//! resolver behind an `ArcSwap`, so a reload swaps certificates without
//! touching open connections (rustls' built-in SNI resolver is fixed at start).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file could not be read or holds no PEM of the expected kind.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key does not belong to the certificate, or is of an unsupported type.
    #[error("{cert}: the key in {key} {reason}")]
    Key {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One loaded certificate with what ops need to know about it.
#[derive(Debug)]
pub struct LoadedCert {
    /// The certificate file (its label in metrics and logs).
    pub path: PathBuf,
    /// Certificate chain and signing key.
    pub key: Arc<CertifiedKey>,
    /// Expiry of the leaf, unix seconds, when it could be read.
    pub not_after: Option<i64>,
}

/// Loads a certificate chain and its key.
pub fn load(cert: &Path, key: &Path) -> Result<LoadedCert, CertError> {
    let file_err = |path: &Path, reason: String| CertError::File {
        path: path.to_path_buf(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, format!("not a PEM certificate ({e})")))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no CERTIFICATE block found".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_err(key, format!("no private key found ({e})")))?;
    let key_err = |reason: String| CertError::Key {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason,
    };
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| key_err(format!("is not usable ({e})")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| key_err(format!("does not match the certificate ({e})")))?;
    let not_after = certified
        .end_entity_cert()
        .ok()
        .and_then(|c| not_after(c.as_ref()));
    Ok(LoadedCert {
        path: cert.to_path_buf(),
        key: Arc::new(certified),
        not_after,
    })
}

/// Picks the certificate for each handshake: the first whose names match
/// the client's SNI, else the first configured one.
#[derive(Debug)]
pub struct CertResolver {
    certs: ArcSwap<Vec<LoadedCert>>,
}

impl CertResolver {
    /// A resolver over `certs` (at least one).
    pub fn new(certs: Vec<LoadedCert>) -> Self {
        CertResolver {
            certs: ArcSwap::from_pointee(certs),
        }
    }

    /// Replaces the certificates; new handshakes use them at once.
    pub fn replace(&self, certs: Vec<LoadedCert>) {
        self.certs.store(Arc::new(certs));
    }

    /// The certificates in use.
    pub fn current(&self) -> Arc<Vec<LoadedCert>> {
        self.certs.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        let wanted = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n).ok());
        if let Some(name) = wanted {
            for c in certs.iter() {
                let matches = c
                    .key
                    .end_entity_cert()
                    .ok()
                    .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok());
                if matches {
                    return Some(c.key.clone());
                }
            }
        }
        certs.first().map(|c| c.key.clone())
    }
}

/// A rustls server config over `resolver` with ALPN `h2` and `http/1.1`.
pub fn server_config(resolver: Arc<CertResolver>) -> rustls::ServerConfig {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg
}

/// Reads the leaf certificate's notAfter (unix seconds) from its DER.
///
/// A dozen lines of DER walking instead of a full X.509 parser crate: we
/// need one field, and the walk refuses anything it does not expect.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert, _) = tlv(der)?; // Certificate SEQUENCE
    let (_, mut tbs, _) = tlv(cert)?; // TBSCertificate SEQUENCE
    let (tag, _, rest) = tlv(tbs)?;
    if tag == 0xa0 {
        tbs = rest; // [0] version
    }
    for _ in 0..3 {
        let (_, _, rest) = tlv(tbs)?; // serial, signature algorithm, issuer
        tbs = rest;
    }
    let (_, validity, _) = tlv(tbs)?;
    let (_, _, rest) = tlv(validity)?; // notBefore
    let (tag, time, _) = tlv(rest)?;
    let text = std::str::from_utf8(time).ok()?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = text.get(0..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(0..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let num = |r: std::ops::Range<usize>| -> Option<i64> { rest.get(r)?.parse().ok() };
    let (mo, d, h, mi, s) = (num(0..2)?, num(2..4)?, num(4..6)?, num(6..8)?, num(8..10)?);
    Some(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

/// Splits one DER TLV: (tag, contents, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = start.checked_add(len)?;
    Some((tag, b.get(start..end)?, b.get(end..)?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Makes a self-signed development certificate for `names` (`usher cert dev`).
/// Returns (certificate PEM, private key PEM).
pub fn dev_certificate(names: &[String], days: u32) -> Result<(String, String), rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + std::time::Duration::from_secs(u64::from(days) * 86_400)).into();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "usher development certificate");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 25), 20_782);
    }

    #[test]
    fn dev_certificate_loads_with_expiry_and_sni() {
        let dir = std::env::temp_dir().join(format!("usher-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = dev_certificate(&["localhost".into(), "127.0.0.1".into()], 30).unwrap();
        std::fs::write(dir.join("c.pem"), cert).unwrap();
        std::fs::write(dir.join("k.pem"), key).unwrap();
        let loaded = load(&dir.join("c.pem"), &dir.join("k.pem")).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let expiry = loaded.not_after.expect("expiry parsed");
        assert!(
            (expiry - now - 30 * 86_400).abs() < 120,
            "expiry {expiry} now {now}"
        );

        // garbage is refused with the file named
        std::fs::write(dir.join("bad.pem"), "not a certificate").unwrap();
        let err = load(&dir.join("bad.pem"), &dir.join("k.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.pem"), "{err}");
        // a key that does not match
        let (_, other_key) = dev_certificate(&["x".into()], 1).unwrap();
        std::fs::write(dir.join("k2.pem"), other_key).unwrap();
        assert!(load(&dir.join("c.pem"), &dir.join("k2.pem")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn not_after_refuses_garbage() {
        assert_eq!(not_after(&[]), None);
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(not_after(&[0x30, 0x03, 0x02, 0x01, 0x00]), None);
    }
}
