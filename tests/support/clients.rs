//! Test clients: raw HTTP/1.1 bytes over TCP or TLS, and hyper's HTTP/2
//! client over h2c (prior knowledge) or TLS with ALPN.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::h1::{Conn, Response};

/// A raw connection to `addr`.
pub async fn connect(addr: SocketAddr) -> Conn<TcpStream> {
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    Conn::new(s)
}

/// Sends `request` (raw bytes) on a fresh connection and reads one response.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Response {
    let mut c = connect(addr).await;
    c.send(request).await.expect("send request");
    let method = String::from_utf8_lossy(request)
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    c.read_response(&method).await.expect("read response")
}

/// `GET path` on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
}

/// `POST path` with an empty body on a fresh connection.
pub async fn post(addr: SocketAddr, path: &str) -> Response {
    exchange(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: test.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
}

/// `GET path` on the admin listener, with the token.
pub async fn admin_get(addr: SocketAddr, path: &str) -> Response {
    exchange(
        addr,
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
             Connection: close\r\n\r\n",
            super::ADMIN_TOKEN
        )
        .as_bytes(),
    )
    .await
}

/// `POST path` on the admin listener with `json` as the body, with the token.
pub async fn admin_post(addr: SocketAddr, path: &str, json: &str) -> Response {
    exchange(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            super::ADMIN_TOKEN,
            json.len()
        )
        .as_bytes(),
    )
    .await
}

/// A TLS connection to `addr` trusting only `cert_pem`, offering `alpn`.
pub async fn tls_connect(addr: SocketAddr, cert_pem: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    try_tls_connect(addr, cert_pem, alpn)
        .await
        .expect("TLS handshake")
}

/// Like [`tls_connect`], but a failed handshake is returned, not a panic.
pub async fn try_tls_connect(
    addr: SocketAddr,
    cert_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(c.expect("PEM certificate")).expect("add root");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    connector.connect(name, tcp).await
}

/// An HTTP/2 client over `io`.
pub async fn h2_over<IO>(io: IO) -> SendRequest<Full<Bytes>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

/// An h2c (prior knowledge) client to `addr`.
pub async fn h2c(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    h2_over(tcp).await
}

/// An HTTP/2 response with its body and trailers read.
#[derive(Debug)]
pub struct H2Response {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Trailers, if any.
    pub trailers: Option<HeaderMap>,
}

/// Sends `req` and reads the whole response.
pub async fn h2_send(send: &mut SendRequest<Full<Bytes>>, req: Request<Full<Bytes>>) -> H2Response {
    send.ready().await.expect("h2 ready");
    let resp = send.send_request(req).await.expect("h2 request");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("h2 body");
    let trailers = collected.trailers().cloned();
    H2Response {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}
