//! TLS and ACL users to Redis (`[store] backend = "redis"`) against a real
//! redis-server: the config goes through `Config::parse` and
//! `redis_conn::connect` exactly as in `usher run`, and the shared line
//! issues and answers tickets over it. The certificates (a CA, the server,
//! a client, and an unrelated CA) are made by rcgen for each test. Skipped
//! with a note when redis-server is not installed.

use crate::support as common;
use crate::support::redis;

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::TempDir;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use redis::{RedisOptions, RedisServer, RedisTlsFiles};
use usher::config::store::{RedisStore, StoreConfig};
use usher::config::Config;
use usher::store::redis_line::{RedisLine, RedisLineConfig, RedisPlace};

const CFG: RedisLineConfig = RedisLineConfig {
    grace_ms: 10_000,
    claim_window_ms: 5_000,
    lease_ms: 1_000,
    heartbeat_ms: 2_000,
};

/// Every command of a test is answered or refused well within this.
const TEST_LIMIT: Duration = Duration::from_secs(10);

/// A private CA with a server and a client certificate under it, and a
/// second CA with a client certificate of its own; PEM files in `dir`.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new("redis-tls");
        let ours = new_ca("usher test CA");
        dir.write("ca.pem", &ours.pem());
        let other = new_ca("someone else's CA");
        dir.write("other-ca.pem", &other.pem());
        for (name, sans, issuer) in [
            (
                "server",
                vec!["127.0.0.1".to_string(), "localhost".into()],
                &ours,
            ),
            ("client", vec!["usher-node".to_string()], &ours),
            ("stranger", vec!["usher-node".to_string()], &other),
        ] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(sans)
                .unwrap()
                .signed_by(&key, issuer)
                .unwrap();
            dir.write(&format!("{name}.pem"), &cert.pem());
            dir.write(&format!("{name}.key"), &key.serialize_pem());
        }
        Pki { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn server(&self, auth_clients: &'static str) -> RedisOptions {
        RedisOptions {
            tls: Some(RedisTlsFiles {
                cert: self.path().join("server.pem"),
                key: self.path().join("server.key"),
                ca: self.path().join("ca.pem"),
                auth_clients,
            }),
            ..RedisOptions::default()
        }
    }
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// `[store]` lines (`url`, TLS files relative to `base`) through the
/// config's own validation.
fn store(base: &Path, lines: &str) -> RedisStore {
    let text = format!(
        "[origin]\nurl = \"http://127.0.0.1:1\"\n[store]\nbackend = \"redis\"\nnode_id = \"t\"\ntimeout = \"2s\"\n{lines}"
    );
    match Config::parse(&text, "test.toml", base) {
        Ok(Config {
            store: Some(StoreConfig::Redis(r)),
            ..
        }) => r,
        Ok(_) => panic!("not a redis store"),
        Err(e) => panic!("config refused:\n{e}"),
    }
}

/// Issues a ticket and reads its place back: the line works end to end.
async fn line_works(store: &RedisStore) -> Result<(), String> {
    // a new event each time: its first ticket is 1
    static EVENTS: AtomicU32 = AtomicU32::new(0);
    let event = format!("e{}", EVENTS.fetch_add(1, Ordering::Relaxed));
    let con = usher::store::redis_conn::connect(store, &event)?;
    let line = RedisLine::new(con, &event, "t", CFG);
    let ask = async {
        let n = line.issue(1_000_000).await?;
        let place = line.observe(n, 1_000_000).await?;
        Ok::<_, ::redis::RedisError>((n, place))
    };
    match tokio::time::timeout(TEST_LIMIT, ask).await {
        Err(_) => panic!("no answer or error within {TEST_LIMIT:?}"),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok((n, place))) => {
            assert_eq!(n, 1, "the first ticket of a new event");
            assert!(
                matches!(place, RedisPlace::Waiting { .. }),
                "ticket {n}: {place:?}"
            );
            Ok(())
        }
    }
}

#[tokio::test]
async fn the_line_works_over_tls_with_a_private_ca_and_not_with_another() {
    let pki = Pki::new();
    // also on 127.0.0.2, a name the certificate is not for
    // (`optional`: a client certificate is checked if sent, not required)
    let mut opts = pki.server("optional");
    opts.args = ["--bind", "127.0.0.1", "127.0.0.2"]
        .map(String::from)
        .to_vec();
    let Some(server) = RedisServer::start_with(opts) else {
        return;
    };
    let url = server.url();
    assert!(url.starts_with("rediss://"), "{url}");

    line_works(&store(
        pki.path(),
        &format!("url = \"{url}\"\nca_file = \"ca.pem\"\n"),
    ))
    .await
    .expect("rediss:// with the server's CA");

    line_works(&store(
        pki.path(),
        &format!(
            "url = \"{url}\"\nca_file = \"ca.pem\"\nclient_cert_file = \"client.pem\"\nclient_key_file = \"client.key\"\n"
        ),
    ))
    .await
    .expect("with a client certificate the server may check");

    // tls = true turns redis:// into rediss://
    let plain = url.replacen("rediss://", "redis://", 1);
    let s = store(
        pki.path(),
        &format!("url = \"{plain}\"\ntls = true\nca_file = \"ca.pem\"\n"),
    );
    assert!(s.url.starts_with("rediss://"), "{}", s.url);
    line_works(&s).await.expect("tls = true");

    // a CA that did not sign the server's certificate: refused, and the
    // error says why
    let e = line_works(&store(
        pki.path(),
        &format!("url = \"{url}\"\nca_file = \"other-ca.pem\"\n"),
    ))
    .await
    .expect_err("a server signed by another CA must be refused");
    assert!(
        e.contains("certificate") && e.contains("UnknownIssuer"),
        "{e}"
    );

    // the system roots do not know a private CA either
    let e = line_works(&store(pki.path(), &format!("url = \"{url}\"\n")))
        .await
        .expect_err("system roots");
    assert!(e.contains("certificate"), "{e}");

    // the certificate is for 127.0.0.1 and localhost, not for another name
    let e = line_works(&store(
        pki.path(),
        &format!(
            "url = \"{}\"\nca_file = \"ca.pem\"\n",
            url.replacen("127.0.0.1", "127.0.0.2", 1)
        ),
    ))
    .await
    .expect_err("a name the certificate is not for");
    assert!(e.contains("not valid for name \"127.0.0.2\""), "{e}");
}

#[tokio::test]
async fn mutual_tls_works_with_the_client_certificate_and_fails_without() {
    let pki = Pki::new();
    let Some(server) = RedisServer::start_with(pki.server("yes")) else {
        return;
    };
    let url = server.url();
    line_works(&store(
        pki.path(),
        &format!(
            "url = \"{url}\"\nca_file = \"ca.pem\"\nclient_cert_file = \"client.pem\"\nclient_key_file = \"client.key\"\n"
        ),
    ))
    .await
    .expect("with the client certificate");

    let e = line_works(&store(
        pki.path(),
        &format!("url = \"{url}\"\nca_file = \"ca.pem\"\n"),
    ))
    .await
    .expect_err("a server that requires a client certificate");
    assert!(e.contains("CertificateRequired"), "{e}");

    // a client certificate from a CA the server does not trust
    let e = line_works(&store(
        pki.path(),
        &format!(
            "url = \"{url}\"\nca_file = \"ca.pem\"\nclient_cert_file = \"stranger.pem\"\nclient_key_file = \"stranger.key\"\n"
        ),
    ))
    .await
    .expect_err("a client certificate of another CA");
    assert!(e.contains("UnknownCA"), "{e}");
}

#[tokio::test]
async fn an_acl_user_with_its_password_file_and_a_wrong_password() {
    let dir = TempDir::new("redis-acl");
    // characters that must be escaped in a URL
    let secret = "p@ss:w/rd%1";
    let Some(server) = RedisServer::start_with(RedisOptions {
        args: [
            "--user",
            "usher",
            "on",
            &format!(">{secret}"),
            // the rights docs/STATE.md asks for, no more
            "~{usher:*",
            "+@read",
            "+@write",
            "+@scripting",
            "+@connection",
            "+time",
        ]
        .into_iter()
        .chain(["--user", "default", "off"])
        .map(String::from)
        .collect(),
        ..RedisOptions::default()
    }) else {
        return;
    };
    dir.write("password", &format!("{secret}\n"));
    dir.write("wrong", "secret\n");
    let url = format!("redis://usher@127.0.0.1:{}/", server.port);

    line_works(&store(
        dir.path(),
        &format!("url = \"{url}\"\npassword_file = \"password\"\n"),
    ))
    .await
    .expect("the ACL user with its password");

    let e = line_works(&store(
        dir.path(),
        &format!("url = \"{url}\"\npassword_file = \"wrong\"\n"),
    ))
    .await
    .expect_err("a wrong password");
    assert!(e.contains("authentication failed"), "{e}");

    // the default user is off: no password, no access
    let e = line_works(&store(
        dir.path(),
        &format!("url = \"redis://127.0.0.1:{}/\"\n", server.port),
    ))
    .await
    .expect_err("the default user is off");
    // NOAUTH, or (for a command of more than 10 arguments, such as the
    // newcomer's script) Redis's refusal of long unauthenticated commands
    assert!(
        e.contains("NOAUTH") || e.contains("unauthenticated multibulk"),
        "{e}"
    );
}
