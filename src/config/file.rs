//! The config file as written: raw serde structs, every field optional with a
//! documented default. Nothing here is validated; see `validate.rs`.

use serde::{Deserialize, Serialize};

/// How much of the origin's capacity the closed-loop gate
/// (`room.origin_target`) aims to fill by default: high enough to get
/// people through, low enough that bursts of page loads rarely wait for a
/// slot.
pub const DEFAULT_ORIGIN_TARGET: f64 = 0.85;

/// Plain listener used when the file names none: loopback, so a fresh
/// install exposes nothing until ops choose an address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Admin listener: loopback, because it can pause the room and reload config.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9090";
/// Admin paths answered without the bearer token: Prometheus and load
/// balancer health checks often cannot send one, and these three only read
/// numbers; everything under `/admin/` always needs the token.
pub const DEFAULT_ADMIN_OPEN: &[&str] = &["/metrics", "/healthz", "/readyz"];
/// Open client connections at most. Below the machine's open-file limit
/// (20,000 here) with room left for origin connections and files.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_000;
/// Time a client gets to send a complete request head. Long enough for a
/// phone on a bad network, short enough that slowloris holds a socket for
/// seconds, not minutes (nginx uses 60 s; Apache's reqtimeout 20 s).
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "15s";
/// Largest request head. Browsers send 1-8 KiB; big cookie jars reach 16 KiB.
/// 64 KiB keeps room for legacy sites' cookies while bounding memory per
/// connection (nginx's large_client_header_buffers allows 4 x 8 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: &str = "64KiB";
/// Time a request body may go without a single byte arriving before the
/// upload is cut with 408 (nginx's client_body_timeout is the same idea, 60 s).
/// A phone on a bad network resumes within seconds; a slow-POST attacker
/// trickling bytes would otherwise hold an origin slot for the whole
/// origin.response_timeout.
pub const DEFAULT_BODY_READ_TIMEOUT: &str = "15s";
/// Time a client may go without reading a single byte of what usher sends
/// before the connection is dropped (nginx's send_timeout: 60 s). Without
/// it, a client that never reads keeps its origin slot forever.
pub const DEFAULT_SEND_TIMEOUT: &str = "30s";
/// Open connections from one client address (IPv6: one /64) at most: one
/// host cannot take more than an eighth of max_connections. Generous on
/// purpose: mobile carriers put hundreds of phones behind one address
/// (CGNAT), each with up to six HTTP/1.1 connections during a page load.
/// Trusted proxies are exempt. 0 turns the cap off.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 2048;
/// Header fields at most: hyper's default, which no real browser reaches.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Largest request body forwarded. Uploads on a cinema site are small, but a
/// legacy site may take file uploads; bodies are streamed, so this bounds
/// the origin's exposure rather than usher's memory.
pub const DEFAULT_MAX_REQUEST_BODY: &str = "128MiB";
/// Time in-flight requests get to finish on shutdown (systemd's default stop
/// timeout is 90 s; this leaves room for the state flush after it).
pub const DEFAULT_SHUTDOWN_GRACE: &str = "30s";
/// HTTP/2 streams at once per connection: what browsers expect (nginx: 128).
pub const DEFAULT_H2_MAX_STREAMS: u32 = 128;
/// HTTP/2 streams a client may reset before usher answers GOAWAY; the
/// rapid-reset defence (CVE-2023-44487). hyper's own default is 1024 pending
/// accept resets; 32 errors caused by the client are plenty for a browser.
pub const DEFAULT_H2_MAX_RESETS: usize = 32;
/// HTTP/2 TLS handshake time limit: a handshake stalled longer is an attack or a dead peer.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: &str = "10s";

/// Concurrent origin requests. A legacy site typically has a fixed worker
/// pool (PHP-FPM, Tomcat threads) of a few hundred.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Requests allowed to wait for an origin slot; beyond it, a 503 at once.
pub const DEFAULT_MAX_QUEUE: usize = 1024;
/// How long a request waits for an origin slot before its friendly 503.
pub const DEFAULT_QUEUE_TIMEOUT: &str = "2s";
/// TCP (and TLS) connect time to the origin; it is on the same network.
pub const DEFAULT_CONNECT_TIMEOUT: &str = "3s";
/// Time for the origin to send response headers (nginx proxy_read_timeout: 60 s).
pub const DEFAULT_RESPONSE_TIMEOUT: &str = "60s";
/// Idle pooled origin connections are closed after this; below the common
/// origin keep-alive timeouts (Apache 5 s is lower: set it there).
pub const DEFAULT_IDLE_TIMEOUT: &str = "60s";
/// Idle connections kept per origin; enough for max_in_flight bursts so
/// ephemeral ports are not burnt on new connections.
pub const DEFAULT_MAX_IDLE: usize = 512;

/// The whole file. Sections are deserialized one by one so that a mistake
/// in one does not hide mistakes in another.
pub const SECTIONS: &[&str] = &["server", "origin", "log", "room", "vouchers", "store"];

/// `[server]`: listeners and connection guards.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Plain HTTP listeners (HTTP/1.1 and h2c by prior knowledge).
    pub listen: Vec<String>,
    /// Admin listener (metrics, health, reload); `""` turns it off.
    pub admin: String,
    /// File holding the admin API's bearer token (e.g. a systemd
    /// credential); unset, usher makes one at start (`admin.token` in the
    /// state directory).
    pub admin_token_file: Option<String>,
    /// Unix socket for the admin API (`usher ctl`), mode 0600; `""` = none.
    pub admin_socket: String,
    /// Admin paths answered without the token (of `/metrics`, `/healthz`,
    /// `/readyz`); `[]` = every path needs it.
    pub admin_open: Vec<String>,
    /// Open client connections at most, over all listeners.
    pub max_connections: usize,
    /// Open connections per client address (IPv6: per /64); 0 = no cap.
    pub max_connections_per_ip: usize,
    /// Time to receive a complete request head.
    pub header_read_timeout: String,
    /// Longest wait for the next bytes of a request body.
    pub body_read_timeout: String,
    /// Longest time the client may read nothing of what usher sends.
    pub send_timeout: String,
    /// Largest request head (request line and headers).
    pub max_header_bytes: String,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Largest request body forwarded to the origin.
    pub max_request_body: String,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_grace: String,
    /// Proxies (CIDRs) whose `X-Forwarded-For` / `Forwarded` are believed.
    pub trusted_proxies: Vec<String>,
    /// HTTP/2 limits.
    pub http2: RawHttp2,
    /// TLS listeners and certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
    /// Listeners whose connections start with a PROXY protocol header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<RawProxyProtocol>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: vec![DEFAULT_LISTEN.into()],
            admin: DEFAULT_ADMIN.into(),
            admin_token_file: None,
            admin_socket: String::new(),
            admin_open: DEFAULT_ADMIN_OPEN.iter().map(|p| p.to_string()).collect(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT.into(),
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT.into(),
            send_timeout: DEFAULT_SEND_TIMEOUT.into(),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES.into(),
            max_headers: DEFAULT_MAX_HEADERS,
            max_request_body: DEFAULT_MAX_REQUEST_BODY.into(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE.into(),
            trusted_proxies: Vec::new(),
            http2: RawHttp2::default(),
            tls: None,
            proxy_protocol: None,
        }
    }
}

/// `[server.http2]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp2 {
    /// Concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// Client-caused stream resets tolerated per connection (rapid reset).
    pub max_resets: usize,
}

impl Default for RawHttp2 {
    fn default() -> Self {
        RawHttp2 {
            max_concurrent_streams: DEFAULT_H2_MAX_STREAMS,
            max_resets: DEFAULT_H2_MAX_RESETS,
        }
    }
}

/// `[server.tls]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// TLS listeners (ALPN `h2` and `http/1.1`).
    pub listen: Vec<String>,
    /// Certificates; the one whose names match the client's SNI is used,
    /// the first one when nothing matches.
    pub certificates: Vec<RawCertificate>,
    /// Time a client gets to finish the TLS handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: String,
}

fn default_handshake_timeout() -> String {
    DEFAULT_TLS_HANDSHAKE_TIMEOUT.into()
}

/// `[[server.tls.certificates]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// `[server.proxy_protocol]`: PROXY protocol (v1 or v2) from an L4 balancer.
/// No default: a listener takes the header only when named here, and only
/// from the peers named here (the section absent, no listener takes it).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyProtocol {
    /// Listeners (addresses as written in `server.listen` or
    /// `server.tls.listen`) where every connection must start with the header.
    pub listen: Vec<String>,
    /// Peers (CIDRs or addresses) allowed to send it: the balancer's. Any
    /// other peer on those listeners is refused.
    pub from: Vec<String>,
}

/// `[origin]`: the site usher protects.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOrigin {
    /// `http://host:port` or `https://host:port`; no path.
    pub url: String,
    /// Concurrent requests to the origin at most.
    pub max_in_flight: usize,
    /// Requests waiting for an origin slot at most.
    pub max_queue: usize,
    /// How long a request may wait for an origin slot.
    pub queue_timeout: String,
    /// Origin connect timeout.
    pub connect_timeout: String,
    /// Time until the origin's response headers arrive.
    pub response_timeout: String,
    /// Idle pooled origin connections are closed after this.
    pub idle_timeout: String,
    /// Idle pooled connections kept.
    pub max_idle: usize,
    /// Keep the client's `Host` header (true) or send the origin's authority.
    pub preserve_host: bool,
    /// Speak HTTP/2 to the origin (ALPN on https, prior knowledge on http).
    pub http2: bool,
    /// Forward plain HTTP/1.1 GETs and HEADs without hyper (the relay,
    /// `src/server/relay/`); false sends every request through hyper.
    pub relay: bool,
    /// Extra CA bundle (PEM) trusted for an https origin, beside the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

impl Default for RawOrigin {
    fn default() -> Self {
        RawOrigin {
            url: String::new(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_queue: DEFAULT_MAX_QUEUE,
            queue_timeout: DEFAULT_QUEUE_TIMEOUT.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT.into(),
            response_timeout: DEFAULT_RESPONSE_TIMEOUT.into(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT.into(),
            max_idle: DEFAULT_MAX_IDLE,
            preserve_host: true,
            http2: false,
            relay: true,
            ca_file: None,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `"text"` or `"json"`.
    pub format: String,
    /// A tracing filter: `"info"`, `"usher=debug,hyper=warn"`.
    pub level: String,
    /// Access log: `"combined"`, `"json"` or `"off"`.
    pub access: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
            level: "info".into(),
            // Off by default: at 50k requests/s a line per request is the
            // bottleneck; ops turn it on deliberately.
            access: "off".into(),
        }
    }
}
