//! Tests of `[store]`'s validation.

use crate::config::Config;
use std::path::Path;

fn parse(extra: &str) -> Result<Config, String> {
    let text = format!("[origin]\nurl = \"http://127.0.0.1:1\"\n{extra}");
    Config::parse(&text, "t", Path::new("/etc/usher")).map_err(|e| e.to_string())
}

#[test]
fn absent_means_in_memory_and_present_defaults_to_local() {
    assert_eq!(parse("").unwrap().store, None);
    let c = parse("[store]\n").unwrap();
    assert_eq!(
        c.store.unwrap().state_dir(),
        Some(Path::new(super::DEFAULT_STATE_DIR))
    );
    let c = parse("[store]\nstate_dir = \"state\"\n").unwrap();
    assert_eq!(
        c.store.unwrap().state_dir(),
        Some(Path::new("/etc/usher/state"))
    );
    let c = parse("[store]\nbackend = \"redis\"\nnode_id = \"n1\"\n").unwrap();
    let Some(super::StoreConfig::Redis(r)) = c.store else {
        panic!("redis")
    };
    assert_eq!(
        (r.url.as_str(), r.node_id.as_str()),
        ("redis://127.0.0.1:6379", "n1")
    );
}

#[test]
fn mistakes_are_named() {
    let e = parse("[store]\nbackend = \"redis\"\nurl = \"http://h\"\non_failure = \"x\"\n")
        .unwrap_err();
    assert!(
        e.contains("store.url") && e.contains("store.on_failure"),
        "{e}"
    );
    let e = parse("[store]\nbackend = \"disk\"\n").unwrap_err();
    assert!(e.contains("`disk`"), "{e}");
    let e = parse("[store]\nstate_dir = \"\"\n").unwrap_err();
    assert!(e.contains("store.state_dir"), "{e}");
    // the lottery and the pre-queue are shared through Redis: accepted
    parse("[room]\nmode = \"random\"\nopens_at = \"2030-01-01T09:00:00+09:00\"\n[store]\nbackend = \"redis\"\n")
        .unwrap();
    // [vouchers] is shared through Redis too: accepted.
    let c = parse(
        "[vouchers]\nplugin = \"signed\"\nkey_file = \"k\"\nstock = 1\n[store]\nbackend = \"redis\"\n",
    )
    .unwrap();
    assert!(c.vouchers.is_some());
    let e = parse("[store]\npath = \"x\"\n").unwrap_err();
    assert!(e.contains("path"), "{e}");
}

fn redis(extra: &str) -> Result<super::RedisStore, String> {
    let c = parse(&format!("[store]\nbackend = \"redis\"\n{extra}"))?;
    match c.store {
        Some(super::StoreConfig::Redis(r)) => Ok(r),
        other => panic!("{other:?}"),
    }
}

#[test]
fn claims_wait_for_replicas_only_when_asked() {
    let r = redis("").unwrap();
    assert_eq!(r.min_replicas_acked, 0);
    assert_eq!(r.replica_ack_timeout, std::time::Duration::from_millis(500));
    let r = redis("min_replicas_acked = 2\nreplica_ack_timeout = \"50ms\"\n").unwrap();
    assert_eq!(r.min_replicas_acked, 2);
    assert_eq!(r.replica_ack_timeout, std::time::Duration::from_millis(50));
    let e = redis("min_replicas_acked = 40\nreplica_ack_timeout = \"0s\"\n").unwrap_err();
    assert!(
        e.contains("store.min_replicas_acked") && e.contains("store.replica_ack_timeout"),
        "{e}"
    );
}

#[test]
fn tls_comes_from_the_url_or_the_tls_key() {
    let r = redis("").unwrap();
    assert_eq!((r.url.as_str(), r.tls), ("redis://127.0.0.1:6379", None));
    let r = redis("url = \"redis://usher@h:6380/1\"\ntls = true\n").unwrap();
    assert_eq!(r.url, "rediss://usher@h:6380/1");
    assert_eq!(r.tls, Some(super::RedisTls::default()));
    // rediss:// is TLS whatever `tls` says
    let r = redis("url = \"rediss://h\"\ntls = false\n").unwrap();
    assert_eq!((r.url.as_str(), r.tls.is_some()), ("rediss://h", true));
    let r = redis("url = \"rediss://h\"\ntls = true\n").unwrap();
    assert_eq!(r.url, "rediss://h");
    let e = redis("url = \"rediss://h/#insecure\"\n").unwrap_err();
    assert!(e.contains("store.url") && e.contains("ca_file"), "{e}");
    let e = redis("url = \"redis://h:notaport\"\n").unwrap_err();
    assert!(
        e.contains("store.url") && e.contains("not a Redis URL"),
        "{e}"
    );
}

#[test]
fn tls_files_are_named_and_paired() {
    let d = Path::new("/etc/usher/redis");
    let at = |f: &str| d.join(f).display().to_string();
    let r = redis(&format!(
        "tls = true\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        at("ca.pem"),
        at("c.pem"),
        at("c.key")
    ))
    .unwrap();
    let tls = r.tls.unwrap();
    assert_eq!(tls.ca_file, Some(d.join("ca.pem")));
    assert_eq!(tls.client_cert, Some((d.join("c.pem"), d.join("c.key"))));
    let e = redis(&format!(
        "tls = true\nclient_cert_file = \"{}\"\n",
        at("c.pem")
    ))
    .unwrap_err();
    assert!(
        e.contains("store.client_key_file") && e.contains("missing"),
        "{e}"
    );
    let e = redis(&format!(
        "tls = true\nclient_key_file = \"{}\"\n",
        at("c.key")
    ))
    .unwrap_err();
    assert!(e.contains("store.client_cert_file"), "{e}");
    // TLS files without TLS are a mistake, not silently ignored
    let e = redis(&format!("ca_file = \"{}\"\n", at("ca.pem"))).unwrap_err();
    assert!(
        e.contains("store.ca_file") && e.contains("only used over TLS"),
        "{e}"
    );
}

#[test]
fn a_cluster_is_one_url_and_database_0() {
    let r = redis("cluster = true\nurl = \"redis://10.0.0.1:7000\"\n").unwrap();
    assert!(r.cluster && r.sentinel.is_none());
    assert!(!redis("").unwrap().cluster);
    let e =
        redis("cluster = true\nsentinels = [\"h:26379\"]\nsentinel_master = \"m\"\n").unwrap_err();
    assert!(
        e.contains("store.cluster") && e.contains("sentinels"),
        "{e}"
    );
    let e = redis("cluster = true\nurl = \"redis://h:7000/2\"\n").unwrap_err();
    assert!(e.contains("store.url") && e.contains("database `2`"), "{e}");
    redis("cluster = true\nurl = \"redis://h:7000/0\"\n").unwrap();
    // without a Cluster, another database is fine
    redis("url = \"redis://h:7000/2\"\n").unwrap();
}
