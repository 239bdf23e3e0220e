//! The effective config, for `usher check`: every section in the file's own
//! format with the defaults filled in and the paths resolved, turned back
//! into the raw structs of `file.rs` and written by the `toml` crate. What
//! it prints checks again to the same config. Secrets never appear: they
//! live in files (only the paths are shown), and a password written into a
//! URL is replaced by `REDACTED`.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::file::{
    RawCertificate, RawHttp2, RawLog, RawOrigin, RawProxyProtocol, RawServer, RawTls,
};
use super::room::{Mode, RawAdaptive, RawLimits, RawRoom, RoomConfig};
use super::store::{OnFailure, RawStore, StoreConfig};
use super::units::{format_bytes, format_duration};
use super::vouchers::{Identity, Plugin, RawVouchers, VouchersConfig};
use super::{AccessLog, Config};

/// What replaces a password found in a URL.
pub const REDACTED: &str = "REDACTED";

/// The whole file, as `usher check` prints it.
#[derive(Debug, Serialize)]
pub struct Effective {
    /// `[server]`
    pub server: RawServer,
    /// `[origin]`
    pub origin: RawOrigin,
    /// `[log]`
    pub log: RawLog,
    /// `[room]`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<RawRoom>,
    /// `[vouchers]`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vouchers: Option<RawVouchers>,
    /// `[store]`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<RawStore>,
}

impl Config {
    /// The effective config as TOML, after a comment naming its source.
    pub fn render(&self) -> String {
        let source = self
            .source
            .as_ref()
            .map_or("<embedded default>".into(), |p| p.display().to_string());
        let body = toml::to_string(&self.effective())
            .unwrap_or_else(|e| format!("# the effective config cannot be written: {e}\n"));
        format!(
            "# effective configuration of {source}\n\
             # (defaults filled in, paths resolved, secrets redacted)\n\n{body}"
        )
    }

    /// The effective config in the file's own terms.
    pub fn effective(&self) -> Effective {
        Effective {
            server: server(self),
            origin: origin(self),
            log: log(self),
            room: self.room.as_ref().map(room),
            vouchers: self.vouchers.as_ref().map(vouchers),
            store: self.store.as_ref().map(store),
        }
    }
}

fn dur(d: Duration) -> String {
    format_duration(d)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn strings<T: ToString>(v: &[T]) -> Vec<String> {
    v.iter().map(T::to_string).collect()
}

/// `url` with the password of its `user:password@` part replaced.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let user = authority[..at]
        .split_once(':')
        .map_or(&authority[..at], |(u, _)| u);
    let password = if authority[..at].contains(':') {
        format!(":{REDACTED}")
    } else {
        String::new()
    };
    format!(
        "{}{user}{password}{}",
        &url[..scheme_end],
        &url[scheme_end + at..]
    )
}

fn server(cfg: &Config) -> RawServer {
    let s = &cfg.server;
    RawServer {
        listen: strings(&s.listen),
        admin: s.admin.map(|a| a.to_string()).unwrap_or_default(),
        // the token's file, never the token
        admin_token_file: s.admin_api.token.as_ref().map(|t| path(&t.path)),
        admin_socket: s.admin_api.socket.as_deref().map(path).unwrap_or_default(),
        admin_open: s.admin_api.open.clone(),
        max_connections: s.max_connections,
        max_connections_per_ip: s.max_connections_per_ip,
        header_read_timeout: dur(s.header_read_timeout),
        body_read_timeout: dur(s.body_read_timeout),
        send_timeout: dur(s.send_timeout),
        // sizes as strings: the file's size fields take "64KiB", not integers
        max_header_bytes: format_bytes(s.max_header_bytes as u64),
        max_headers: s.max_headers,
        max_request_body: format_bytes(s.max_request_body),
        shutdown_grace: dur(s.shutdown_grace),
        trusted_proxies: strings(&s.trusted_proxies),
        http2: RawHttp2 {
            max_concurrent_streams: s.h2_max_concurrent_streams,
            max_resets: s.h2_max_resets,
        },
        tls: s.tls.as_ref().map(|t| RawTls {
            listen: strings(&t.listen),
            certificates: t
                .certificates
                .iter()
                // the key's path is fine to show; its contents never are
                .map(|(c, k)| RawCertificate {
                    cert: path(c),
                    key: path(k),
                })
                .collect(),
            handshake_timeout: dur(t.handshake_timeout),
        }),
        proxy_protocol: s.proxy_protocol.as_ref().map(|p| RawProxyProtocol {
            listen: strings(&p.listen),
            from: strings(&p.from),
        }),
    }
}

fn origin(cfg: &Config) -> RawOrigin {
    let o = &cfg.origin;
    RawOrigin {
        url: redact_url(&o.url.to_string()),
        max_in_flight: o.max_in_flight,
        max_queue: o.max_queue,
        queue_timeout: dur(o.queue_timeout),
        connect_timeout: dur(o.connect_timeout),
        response_timeout: dur(o.response_timeout),
        idle_timeout: dur(o.idle_timeout),
        max_idle: o.max_idle,
        preserve_host: o.preserve_host,
        http2: o.http2,
        relay: o.relay,
        ca_file: o.ca_file.as_deref().map(path),
    }
}

fn log(cfg: &Config) -> RawLog {
    let l = &cfg.log;
    RawLog {
        format: if l.json { "json" } else { "text" }.into(),
        level: l.level.clone(),
        access: match l.access {
            AccessLog::Off => "off",
            AccessLog::Combined => "combined",
            AccessLog::Json => "json",
        }
        .into(),
    }
}

fn room(r: &RoomConfig) -> RawRoom {
    // The gate as it runs: closed-loop with its ceilings (only those set),
    // or fixed with both numbers.
    let (gate, max_active_users, new_users_per_minute, origin_target) = match &r.closed_loop {
        Some(cl) => ("closed-loop", cl.max_active, cl.per_minute, cl.target),
        None => (
            "fixed",
            Some(r.max_active_users),
            Some(r.new_users_per_minute),
            RawRoom::default().origin_target,
        ),
    };
    RawRoom {
        event: r.event.clone(),
        mode: Mode::as_str(r.mode).into(),
        max_active_users,
        new_users_per_minute,
        gate: Some(gate.into()),
        origin_target,
        burst: r.burst,
        session_duration: dur(r.session_duration),
        ticket_grace: dur(r.ticket_grace),
        claim_window: dur(r.claim_window),
        tick: dur(r.tick),
        refresh: dur(r.refresh),
        ticket_max_age: dur(r.ticket_max_age),
        opens_at: r.opens_at.as_ref().map(|(text, _)| text.clone()),
        protect: r.protect.clone(),
        bypass_paths: r.bypass_paths.clone(),
        bypass_cidrs: strings(&r.bypass_cidrs),
        // the header's name and the secret's file; the secret itself never
        bypass_header: r.bypass_header.as_ref().map(|(h, _)| h.to_string()),
        bypass_secret_file: r.bypass_secret_file.as_deref().map(path),
        keys_file: r.keys_file.as_deref().map(path),
        cookie_domain: r.cookie_domain.clone(),
        message: r.message.clone(),
        messages: (r.messages != crate::config::messages::Messages::both(&r.message)).then(|| {
            crate::config::messages::RawMessages {
                ko: Some(r.messages.ko.clone()),
                en: Some(r.messages.en.clone()),
            }
        }),
        feedback_webhook: r.feedback_webhook.as_ref().map(|u| u.to_string()),
        template: r.template.as_deref().map(path),
        default_lang: if r.default_english { "en" } else { "ko" }.into(),
        limits: RawLimits {
            tickets_per_minute_per_ip: r.tickets_per_minute_per_ip,
            requests_per_second_per_ip: r.requests_per_second_per_ip,
            requests_per_second_per_pass: r.requests_per_second_per_pass,
            ticket_proof_bits: r.ticket_proof_bits,
        },
        adaptive: r.adaptive.as_ref().map(|a| RawAdaptive {
            enabled: true,
            target_latency: dur(a.target_latency),
            max_error_rate: a.max_error_rate,
            floor: a.floor,
            ceiling: a.ceiling,
            interval: dur(a.interval),
            increase: a.increase,
            decrease: a.decrease,
        }),
    }
}

fn vouchers(v: &VouchersConfig) -> RawVouchers {
    let mut raw = RawVouchers {
        stock: v.stock,
        state_dir: path(&v.state_dir),
        identity: match &v.identity {
            Identity::Pass => "pass".into(),
            Identity::Cookie(name) => format!("cookie:{name}"),
            Identity::Header(name) => format!("header:{name}"),
        },
        intercept: v
            .intercept
            .as_ref()
            .map(|(method, p)| format!("{method} {p}")),
        low_chance_ratio: v.low_chance_ratio,
        recover_after: dur(v.recover_after),
        ..RawVouchers::default()
    };
    match &v.plugin {
        Plugin::Pool(file) => {
            raw.plugin = "pool".into();
            raw.pool_file = Some(path(file));
        }
        Plugin::Signed { prefix, key_file } => {
            raw.plugin = "signed".into();
            raw.signed_prefix = prefix.clone();
            raw.key_file = Some(path(key_file));
        }
        Plugin::Webhook {
            url,
            key_file,
            timeout,
            attempts,
        } => {
            raw.plugin = "webhook".into();
            raw.webhook_url = Some(redact_url(&url.to_string()));
            raw.key_file = Some(path(key_file));
            raw.webhook_timeout = dur(*timeout);
            raw.webhook_attempts = *attempts;
        }
    }
    raw
}

fn store(s: &StoreConfig) -> RawStore {
    match s {
        StoreConfig::Local { state_dir } => RawStore {
            backend: "local".into(),
            state_dir: path(state_dir),
            ..RawStore::default()
        },
        StoreConfig::Redis(r) => RawStore {
            backend: "redis".into(),
            url: redact_url(&r.url),
            password_file: r.password_file.as_deref().map(path),
            tls: r.tls.is_some(),
            ca_file: r.tls.as_ref().and_then(|t| t.ca_file.as_deref().map(path)),
            client_cert_file: r
                .tls
                .as_ref()
                .and_then(|t| t.client_cert.as_ref().map(|(c, _)| path(c))),
            client_key_file: r
                .tls
                .as_ref()
                .and_then(|t| t.client_cert.as_ref().map(|(_, k)| path(k))),
            on_failure: match r.on_failure {
                OnFailure::Hold => "hold",
                OnFailure::LocalShare => "local_share",
            }
            .into(),
            node_id: Some(r.node_id.clone()),
            timeout: dur(r.timeout),
            min_replicas_acked: r.min_replicas_acked,
            replica_ack_timeout: dur(r.replica_ack_timeout),
            sentinels: r.sentinel.as_ref().map_or(Vec::new(), |s| s.addrs.clone()),
            sentinel_master: r.sentinel.as_ref().map(|s| s.master.clone()),
            cluster: r.cluster,
            ..RawStore::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url("redis://usher:hunter2@10.0.0.30:6379/0"),
            "redis://usher:REDACTED@10.0.0.30:6379/0"
        );
        assert_eq!(
            redact_url("rediss://:hunter2@redis.internal"),
            "rediss://:REDACTED@redis.internal"
        );
        assert_eq!(
            redact_url("redis://usher@10.0.0.30:6379/0"),
            "redis://usher@10.0.0.30:6379/0"
        );
        assert_eq!(
            redact_url("https://issuer.example/hook?x=a@b"),
            "https://issuer.example/hook?x=a@b"
        );
    }

    #[test]
    fn a_cluster_store_prints_and_checks_the_same() {
        let text = "[origin]\nurl = \"http://127.0.0.1:8000\"\n\
            [store]\nbackend = \"redis\"\nurl = \"redis://10.0.0.41:6379\"\ncluster = true\nnode_id = \"n1\"\n";
        let base = Path::new("/etc/usher");
        let cfg = Config::parse(text, "t.toml", base).expect("valid");
        let shown = cfg.render();
        assert!(shown.lines().any(|l| l == "cluster = true"), "{shown}");
        let again = Config::parse(&shown, "shown.toml", base).expect("what check prints checks");
        assert_eq!(again.store, cfg.store);
    }

    #[test]
    fn every_section_prints_and_checks_to_the_same_config() {
        let text = "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[origin]\nurl = \"http://127.0.0.1:8000\"\n\n\
            [room]\nevent = \"e\"\nmax_active_users = 50\nopens_at = \"2026-12-01T09:00:00+09:00\"\n\
            [room.adaptive]\nenabled = true\n\n\
            [vouchers]\nplugin = \"webhook\"\nwebhook_url = \"https://issuer.example/hook\"\n\
            key_file = \"k\"\nstock = 3\nintercept = \"POST /claim\"\nidentity = \"header:x-member\"\n\n\
            [store]\nbackend = \"redis\"\nurl = \"redis://usher:hunter2@10.0.0.30:6379/0\"\nnode_id = \"n1\"\n";
        let base = Path::new("/etc/usher");
        let cfg = Config::parse(text, "t.toml", base).expect("valid");
        let shown = cfg.render();
        for section in [
            "[server]",
            "[server.http2]",
            "[origin]",
            "[log]",
            "[room]",
            "[room.limits]",
            "[room.adaptive]",
            "[vouchers]",
            "[store]",
        ] {
            assert!(
                shown.lines().any(|l| l == section),
                "{section} missing:\n{shown}"
            );
        }
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("key_file = \"/etc/usher/k\""), "{shown}");
        let again = Config::parse(&shown, "shown.toml", base).expect("what check prints checks");
        assert_eq!(again.room, cfg.room);
        assert_eq!(again.vouchers, cfg.vouchers);
        assert_eq!(again.server, cfg.server);
        assert_eq!(again.origin, cfg.origin);
        assert_eq!(again.log, cfg.log);
        let Some(StoreConfig::Redis(r)) = &again.store else {
            panic!("redis store expected");
        };
        assert_eq!(r.url, "redis://usher:REDACTED@10.0.0.30:6379/0");
        assert_eq!(again.render(), shown.replace("t.toml", "shown.toml"));
    }
}
