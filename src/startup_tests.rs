//! Tests of the file-opening stage: what the config names is opened and a
//! broken file is reported under the key that names it.

use std::path::Path;

use crate::config::Config;

/// `[store]` lines for Redis over TLS, parsed, then every file opened.
fn load(store: &str) -> Result<(), String> {
    let text =
        format!("[origin]\nurl = \"http://127.0.0.1:1\"\n[store]\nbackend = \"redis\"\n{store}");
    let cfg = Config::parse(&text, "t", Path::new("/etc/usher")).map_err(|e| e.to_string())?;
    super::load(&cfg, None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn redis_tls_files_are_opened_and_named() {
    let dir = crate::store::tests::TempDir::new("redis-tls-startup");
    let d = dir.path();
    let (cert, key) = crate::tls::dev_certificate(&["localhost".into()], 1).unwrap();
    let (_, other_key) = crate::tls::dev_certificate(&["localhost".into()], 1).unwrap();
    for (name, text) in [
        ("ca.pem", cert.as_str()),
        ("c.pem", cert.as_str()),
        ("c.key", key.as_str()),
        ("other.key", other_key.as_str()),
        ("junk.pem", "not pem\n"),
    ] {
        std::fs::write(d.join(name), text).unwrap();
    }
    let at = |f: &str| d.join(f).display().to_string();
    load(&format!(
        "tls = true\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        at("ca.pem"),
        at("c.pem"),
        at("c.key")
    ))
    .unwrap();

    let e = load(&format!(
        "tls = true\nca_file = \"{}\"\n",
        at("missing.pem")
    ))
    .unwrap_err();
    assert!(
        e.contains("store.ca_file") && e.contains("missing.pem"),
        "{e}"
    );
    let e = load(&format!("tls = true\nca_file = \"{}\"\n", at("junk.pem"))).unwrap_err();
    assert!(
        e.contains("store.ca_file") && e.contains("no CERTIFICATE"),
        "{e}"
    );
    let e = load(&format!(
        "tls = true\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        at("c.pem"),
        at("other.key")
    ))
    .unwrap_err();
    assert!(
        e.contains("store.client_cert_file") && e.contains("does not match"),
        "{e}"
    );
    let e = load(&format!(
        "tls = true\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        at("c.pem"),
        at("junk.pem")
    ))
    .unwrap_err();
    assert!(
        e.contains("store.client_key_file") && e.contains("junk.pem"),
        "{e}"
    );
    // all at once: each broken file named
    let e = load(&format!(
        "tls = true\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        at("junk.pem"),
        at("c.pem"),
        at("other.key")
    ))
    .unwrap_err();
    assert!(
        e.contains("store.ca_file") && e.contains("store.client_cert_file"),
        "{e}"
    );
}
