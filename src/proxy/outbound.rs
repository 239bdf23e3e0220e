//! The client for usher's own calls out (the voucher issuer's and the
//! feedback webhooks): HTTP/1 over plain TCP or TLS with the system's
//! roots, ring as the TLS provider, a connect timeout, pooled connections.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// A client for calls out.
pub type OutboundClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client that trusts the system's roots when `https` (none are loaded
/// for a plain `http://` URL) and gives up connecting after
/// `connect_timeout`.
pub fn client(https: bool, connect_timeout: Duration) -> OutboundClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let mut roots = rustls::RootCertStore::empty();
    if https {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let mut b = Client::builder(TokioExecutor::new());
    b.timer(TokioTimer::new()).pool_timer(TokioTimer::new());
    b.build(connector)
}
