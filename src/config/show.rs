//! The effective config as TOML, for `usher check` (what is running after
//! defaults are applied; secrets never printed).

use std::fmt::Write;

use super::units::{format_bytes, format_duration};
use super::{AccessLog, Config};

impl Config {
    /// The effective config, in the file's own format.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let s = &self.server;
        let list = |v: &[std::net::SocketAddr]| {
            v.iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let q = |d| format!("\"{}\"", format_duration(d));
        let _ = writeln!(
            o,
            "# effective configuration of {}",
            self.source
                .as_ref()
                .map_or("<embedded default>".into(), |p| p.display().to_string())
        );
        let _ = writeln!(o, "[server]");
        let _ = writeln!(o, "listen = [{}]", list(&s.listen));
        let _ = writeln!(
            o,
            "admin = \"{}\"",
            s.admin.map(|a| a.to_string()).unwrap_or_default()
        );
        let _ = writeln!(o, "max_connections = {}", s.max_connections);
        let _ = writeln!(o, "max_connections_per_ip = {}", s.max_connections_per_ip);
        let _ = writeln!(o, "header_read_timeout = {}", q(s.header_read_timeout));
        let _ = writeln!(o, "body_read_timeout = {}", q(s.body_read_timeout));
        let _ = writeln!(o, "send_timeout = {}", q(s.send_timeout));
        // sizes as strings: the file's size fields take "64KiB", not integers
        let _ = writeln!(
            o,
            "max_header_bytes = \"{}\"",
            format_bytes(s.max_header_bytes as u64)
        );
        let _ = writeln!(o, "max_headers = {}", s.max_headers);
        let _ = writeln!(
            o,
            "max_request_body = \"{}\"",
            format_bytes(s.max_request_body)
        );
        let _ = writeln!(o, "shutdown_grace = {}", q(s.shutdown_grace));
        let _ = writeln!(
            o,
            "trusted_proxies = [{}]",
            s.trusted_proxies
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(o, "\n[server.http2]");
        let _ = writeln!(
            o,
            "max_concurrent_streams = {}",
            s.h2_max_concurrent_streams
        );
        let _ = writeln!(o, "max_resets = {}", s.h2_max_resets);
        if let Some(t) = &s.tls {
            let _ = writeln!(o, "\n[server.tls]");
            let _ = writeln!(o, "listen = [{}]", list(&t.listen));
            let _ = writeln!(o, "handshake_timeout = {}", q(t.handshake_timeout));
            for (c, k) in &t.certificates {
                let _ = writeln!(o, "\n[[server.tls.certificates]]");
                let _ = writeln!(o, "cert = \"{}\"", c.display());
                // the key's path is fine to show; its contents never are
                let _ = writeln!(o, "key = \"{}\"", k.display());
            }
        }
        let r = &self.origin;
        let _ = writeln!(o, "\n[origin]");
        let _ = writeln!(o, "url = \"{}\"", r.url);
        let _ = writeln!(o, "max_in_flight = {}", r.max_in_flight);
        let _ = writeln!(o, "max_queue = {}", r.max_queue);
        let _ = writeln!(o, "queue_timeout = {}", q(r.queue_timeout));
        let _ = writeln!(o, "connect_timeout = {}", q(r.connect_timeout));
        let _ = writeln!(o, "response_timeout = {}", q(r.response_timeout));
        let _ = writeln!(o, "idle_timeout = {}", q(r.idle_timeout));
        let _ = writeln!(o, "max_idle = {}", r.max_idle);
        let _ = writeln!(o, "preserve_host = {}", r.preserve_host);
        let _ = writeln!(o, "http2 = {}", r.http2);
        if let Some(ca) = &r.ca_file {
            let _ = writeln!(o, "ca_file = \"{}\"", ca.display());
        }
        let l = &self.log;
        let _ = writeln!(o, "\n[log]");
        let _ = writeln!(o, "format = \"{}\"", if l.json { "json" } else { "text" });
        let _ = writeln!(o, "level = \"{}\"", l.level);
        let access = match l.access {
            AccessLog::Off => "off",
            AccessLog::Combined => "combined",
            AccessLog::Json => "json",
        };
        let _ = writeln!(o, "access = \"{access}\"");
        o
    }
}
