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
    let der = read_key(key)?;
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

/// Reads the PEM private key in `key` (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(key: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_file(key).map_err(|e| CertError::File {
        path: key.to_path_buf(),
        reason: format!("no private key found ({e})"),
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

/// Reads the leaf certificate's notAfter (unix seconds) from its DER, with
/// RustCrypto's X.509 decoder; `None` for anything it cannot decode.
pub fn not_after(der: &[u8]) -> Option<i64> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let at = cert
        .tbs_certificate()
        .validity()
        .not_after
        .to_unix_duration();
    i64::try_from(at.as_secs()).ok()
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
