//! The pooled client to the origin: keep-alive connections (so ephemeral
//! ports last under load), optional TLS and HTTP/2, timeouts from config.

use std::sync::Arc;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::pool::Pool;
use crate::config::OriginConfig;
use crate::Body;

/// Why the origin client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA bundle could not be read.
    #[error("origin.ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The origin client and the URL parts requests are rewritten to.
pub struct OriginClient {
    /// usher's own HTTP/1.1 keep-alive pool (`None` for an HTTP/2 origin).
    pub pool: Option<Arc<Pool>>,
    /// hyper-util's pooled client, for an HTTP/2 origin.
    pub client: Client<HttpsConnector<HttpConnector>, Body>,
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// host:port of the origin.
    pub authority: http::uri::Authority,
    /// The same as a `Host` value (made once, sent with every request
    /// unless `origin.preserve_host`).
    pub host: http::HeaderValue,
    /// The settings it was built from (to tell whether a reload needs a new one).
    pub built_from: OriginConfig,
}

impl OriginClient {
    /// Builds a client for `cfg`.
    pub fn new(cfg: &OriginConfig) -> Result<OriginClient, ClientError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_keepalive(Some(std::time::Duration::from_secs(30)));

        let mut roots = rustls::RootCertStore::empty();
        if cfg.https {
            // System roots may be missing in a minimal container; an origin
            // with a private CA then works through ca_file alone.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
        if let Some(path) = &cfg.ca_file {
            use rustls_pki_types::pem::PemObject;
            let err = |reason: String| ClientError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(e.to_string()))?;
            if certs.is_empty() {
                return Err(err("no CERTIFICATE block found".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| err(e.to_string()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if cfg.http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let authority = cfg
            .url
            .authority()
            .cloned()
            .expect("validated: the origin URL has a host");
        let scheme = if cfg.https {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        let pool = (!cfg.http2).then(|| {
            let target = http::Uri::builder()
                .scheme(scheme.clone())
                .authority(authority.clone())
                .path_and_query("/")
                .build()
                .expect("a scheme and an authority make a URI");
            Pool::new(connector.clone(), target, cfg.max_idle, cfg.idle_timeout)
        });

        let mut b = Client::builder(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.idle_timeout)
            .pool_max_idle_per_host(cfg.max_idle)
            .http1_preserve_header_case(true)
            .http2_only(cfg.http2);
        let client = b.build(connector);
        let host = http::HeaderValue::from_str(authority.as_str())
            .expect("an authority is a valid header value");
        Ok(OriginClient {
            pool,
            client,
            host,
            scheme,
            authority,
            built_from: cfg.clone(),
        })
    }

    /// Whether `cfg` differs from what this client was built with in
    /// anything the client itself depends on.
    pub fn needs_rebuild(&self, cfg: &OriginConfig) -> bool {
        let a = &self.built_from;
        a.url != cfg.url
            || a.connect_timeout != cfg.connect_timeout
            || a.idle_timeout != cfg.idle_timeout
            || a.max_idle != cfg.max_idle
            || a.http2 != cfg.http2
            || a.ca_file != cfg.ca_file
    }
}
