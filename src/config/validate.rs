//! The validated config: typed values, every mistake in the file collected
//! with its key path, so `usher check` reports them all at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::file::{RawLog, RawOrigin, RawServer};
use super::units::{parse_bytes, parse_duration};

/// Mistakes found so far, each with its dotted key path.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<(String, String)>);

impl Problems {
    /// Records a mistake at `path`.
    pub fn push(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.0.push((path.into(), msg.into()));
    }

    fn duration(&mut self, path: &str, text: &str) -> Duration {
        parse_duration(text).unwrap_or_else(|e| {
            self.push(path, e);
            Duration::ZERO
        })
    }

    fn bytes(&mut self, path: &str, text: &str) -> u64 {
        parse_bytes(text).unwrap_or_else(|e| {
            self.push(path, e);
            0
        })
    }

    fn positive(&mut self, path: &str, n: usize) -> usize {
        if n == 0 {
            self.push(path, "must be at least 1");
        }
        n
    }

    fn addr(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.push(
                    path,
                    format!("`{text}` is not an address like \"127.0.0.1:8080\" or \"[::1]:8080\""),
                );
                None
            }
        }
    }
}

/// Listeners and connection guards.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Plain listeners.
    pub listen: Vec<SocketAddr>,
    /// Admin listener, if any.
    pub admin: Option<SocketAddr>,
    /// The admin API's token, Unix socket and open paths.
    pub admin_api: super::admin::AdminApi,
    /// Open client connections at most.
    pub max_connections: usize,
    /// Open connections per client address (IPv6: per /64); 0 = no cap.
    pub max_connections_per_ip: usize,
    /// Time to receive a request head.
    pub header_read_timeout: Duration,
    /// Longest wait for the next bytes of a request body (zero: none).
    pub body_read_timeout: Duration,
    /// Longest write stall towards the client (zero: none).
    pub send_timeout: Duration,
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Largest request body in bytes.
    pub max_request_body: u64,
    /// Shutdown drain time.
    pub shutdown_grace: Duration,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// HTTP/2 concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 client-caused resets tolerated per connection.
    pub h2_max_resets: usize,
    /// TLS listeners and certificates.
    pub tls: Option<TlsConfig>,
    /// PROXY protocol listeners and who may send the header.
    pub proxy_protocol: Option<ProxyProtocolConfig>,
}

/// `[server.proxy_protocol]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyProtocolConfig {
    /// Listeners (as configured) that expect the header.
    pub listen: Vec<SocketAddr>,
    /// Peers allowed to send it.
    pub from: Vec<IpNet>,
}

impl ProxyProtocolConfig {
    /// Whether the listener configured as `addr` expects the header.
    pub fn on(&self, addr: SocketAddr) -> bool {
        self.listen.contains(&addr)
    }
}

/// TLS listeners and certificate files.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// TLS listeners.
    pub listen: Vec<SocketAddr>,
    /// Certificate and key files, in the order given.
    pub certificates: Vec<(PathBuf, PathBuf)>,
    /// Time to finish a handshake.
    pub handshake_timeout: Duration,
}

/// The origin and how usher treats it.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginConfig {
    /// Origin base URL (scheme and authority only).
    pub url: http::Uri,
    /// Whether the origin is reached over TLS.
    pub https: bool,
    /// Concurrent origin requests at most.
    pub max_in_flight: usize,
    /// Requests waiting for a slot at most.
    pub max_queue: usize,
    /// Wait for a slot at most this long.
    pub queue_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Response header timeout.
    pub response_timeout: Duration,
    /// Pool idle timeout.
    pub idle_timeout: Duration,
    /// Idle pooled connections kept.
    pub max_idle: usize,
    /// Keep the client's Host header.
    pub preserve_host: bool,
    /// Speak HTTP/2 to the origin.
    pub http2: bool,
    /// Plain HTTP/1.1 GETs and HEADs forwarded by the relay (`server::relay`).
    pub relay: bool,
    /// Extra CA bundle.
    pub ca_file: Option<PathBuf>,
}

/// Log output.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// JSON lines instead of text.
    pub json: bool,
    /// tracing filter directive.
    pub level: String,
    /// Access log format.
    pub access: AccessLog,
}

/// Access log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLog {
    /// No access log.
    Off,
    /// Apache/nginx combined format.
    Combined,
    /// One JSON object per line.
    Json,
}

pub(super) fn server(raw: &RawServer, base: &std::path::Path, p: &mut Problems) -> ServerConfig {
    let listen: Vec<SocketAddr> = raw
        .listen
        .iter()
        .enumerate()
        .filter_map(|(i, a)| p.addr(&format!("server.listen.{i}"), a))
        .collect();
    let admin = match raw.admin.trim() {
        "" | "off" => None,
        a => p.addr("server.admin", a),
    };
    let tls = raw.tls.as_ref().map(|t| {
        let listen: Vec<SocketAddr> = t
            .listen
            .iter()
            .enumerate()
            .filter_map(|(i, a)| p.addr(&format!("server.tls.listen.{i}"), a))
            .collect();
        if t.certificates.is_empty() {
            p.push(
                "server.tls",
                "a TLS listener needs at least one [[server.tls.certificates]]",
            );
        }
        let certificates = t
            .certificates
            .iter()
            .map(|c| (base.join(&c.cert), base.join(&c.key)))
            .collect();
        TlsConfig {
            listen,
            certificates,
            handshake_timeout: p.duration("server.tls.handshake_timeout", &t.handshake_timeout),
        }
    });
    if raw.listen.is_empty() && raw.tls.as_ref().is_none_or(|t| t.listen.is_empty()) {
        p.push(
            "server.listen",
            "no listener: give server.listen or server.tls.listen",
        );
    }
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match parse_cidr(c) {
            Ok(n) => Some(n),
            Err(e) => {
                p.push(format!("server.trusted_proxies.{i}"), e);
                None
            }
        })
        .collect();
    let proxy_protocol = raw.proxy_protocol.as_ref().map(|pp| {
        let tls_listen: &[SocketAddr] = tls.as_ref().map_or(&[], |t| &t.listen);
        proxy_protocol(pp, &listen, tls_listen, p)
    });
    let max_header_bytes = p.bytes("server.max_header_bytes", &raw.max_header_bytes);
    if max_header_bytes != 0 && !(8192..=(1 << 20)).contains(&max_header_bytes) {
        p.push("server.max_header_bytes", "must be between 8KiB and 1MiB");
    }
    ServerConfig {
        listen,
        admin,
        admin_api: super::admin::admin(raw, base, p),
        max_connections: p.positive("server.max_connections", raw.max_connections),
        max_connections_per_ip: raw.max_connections_per_ip,
        header_read_timeout: p.duration("server.header_read_timeout", &raw.header_read_timeout),
        body_read_timeout: p.duration("server.body_read_timeout", &raw.body_read_timeout),
        send_timeout: p.duration("server.send_timeout", &raw.send_timeout),
        max_header_bytes: max_header_bytes as usize,
        max_headers: p.positive("server.max_headers", raw.max_headers),
        max_request_body: p.bytes("server.max_request_body", &raw.max_request_body),
        shutdown_grace: p.duration("server.shutdown_grace", &raw.shutdown_grace),
        trusted_proxies,
        h2_max_concurrent_streams: p.positive(
            "server.http2.max_concurrent_streams",
            raw.http2.max_concurrent_streams as usize,
        ) as u32,
        h2_max_resets: raw.http2.max_resets,
        tls,
        proxy_protocol,
    }
}

fn proxy_protocol(
    raw: &super::file::RawProxyProtocol,
    plain: &[SocketAddr],
    tls: &[SocketAddr],
    p: &mut Problems,
) -> ProxyProtocolConfig {
    let mut listen = Vec::new();
    for (i, a) in raw.listen.iter().enumerate() {
        let key = format!("server.proxy_protocol.listen.{i}");
        if let Some(addr) = p.addr(&key, a) {
            if plain.contains(&addr) || tls.contains(&addr) {
                listen.push(addr);
            } else {
                p.push(
                    key,
                    format!("`{a}` is not in server.listen or server.tls.listen"),
                );
            }
        }
    }
    if raw.listen.is_empty() {
        p.push(
            "server.proxy_protocol.listen",
            "name the listeners that take the PROXY header, e.g. [\"0.0.0.0:8080\"]",
        );
    }
    let from = raw
        .from
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match parse_cidr(c) {
            Ok(n) => Some(n),
            Err(e) => {
                p.push(format!("server.proxy_protocol.from.{i}"), e);
                None
            }
        })
        .collect();
    if raw.from.is_empty() {
        p.push(
            "server.proxy_protocol.from",
            "name the balancer's addresses (CIDRs); nobody else may send the header",
        );
    }
    ProxyProtocolConfig { listen, from }
}

/// Parses `10.0.0.0/8` or a bare address (a /32 or /128).
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not an address or CIDR like \"10.0.0.0/8\""))
}

pub(super) fn origin(raw: &RawOrigin, base: &std::path::Path, p: &mut Problems) -> OriginConfig {
    let (url, https) = match origin_url(&raw.url) {
        Ok(v) => v,
        Err(e) => {
            p.push("origin.url", e);
            (http::Uri::from_static("http://invalid"), false)
        }
    };
    OriginConfig {
        url,
        https,
        max_in_flight: p.positive("origin.max_in_flight", raw.max_in_flight),
        max_queue: raw.max_queue,
        queue_timeout: p.duration("origin.queue_timeout", &raw.queue_timeout),
        connect_timeout: p.duration("origin.connect_timeout", &raw.connect_timeout),
        response_timeout: p.duration("origin.response_timeout", &raw.response_timeout),
        idle_timeout: p.duration("origin.idle_timeout", &raw.idle_timeout),
        max_idle: raw.max_idle,
        preserve_host: raw.preserve_host,
        http2: raw.http2,
        relay: raw.relay,
        ca_file: raw.ca_file.as_ref().map(|f| base.join(f)),
    }
}

fn origin_url(text: &str) -> Result<(http::Uri, bool), String> {
    if text.trim().is_empty() {
        return Err("missing: the origin's URL, e.g. \"http://127.0.0.1:8000\"".into());
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("`{text}` is not a URL ({e})"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("`{text}`: the scheme must be http:// or https://")),
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{text}` has no host"));
    }
    if uri
        .path_and_query()
        .is_some_and(|pq| pq.as_str() != "/" && !pq.as_str().is_empty())
    {
        return Err(format!(
            "`{text}`: give only scheme, host and port; requests keep their own path"
        ));
    }
    Ok((uri, https))
}

pub(super) fn log(raw: &RawLog, p: &mut Problems) -> LogConfig {
    let json = match raw.format.as_str() {
        "text" => false,
        "json" => true,
        other => {
            p.push("log.format", format!("`{other}`: use \"text\" or \"json\""));
            false
        }
    };
    let access = match raw.access.as_str() {
        "off" => AccessLog::Off,
        "combined" => AccessLog::Combined,
        "json" => AccessLog::Json,
        other => {
            p.push(
                "log.access",
                format!("`{other}`: use \"off\", \"combined\" or \"json\""),
            );
            AccessLog::Off
        }
    };
    if let Err(e) = raw.level.parse::<tracing_subscriber::filter::Targets>() {
        p.push("log.level", format!("`{}`: {e}", raw.level));
    }
    LogConfig {
        json,
        level: raw.level.clone(),
        access,
    }
}
