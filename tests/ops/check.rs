//! `usher check` finds what `usher run` would refuse, without starting:
//! every shipped config passes on a machine that holds only the files it
//! names and fails with one line per missing file; syntax and validation
//! mistakes come together with their lines; the effective config shows
//! every section and no secret; `usher run` refuses a missing file with
//! exit 78 and the cause said once.

use crate::support as common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::process::{bin, check, text};
use common::TempDir;

/// Non-empty lines of `out`'s stderr.
fn err_lines(out: &Output) -> Vec<String> {
    text(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The directory systemd makes for the unit's credentials, as the shipped
/// configs name it. It exists only inside a running unit, so it is the one
/// thing a test on an ordinary machine has to put elsewhere.
const CREDENTIALS: &str = "/run/credentials/usher.service/";

/// A shipped config installed in `dir`: the file itself in `dir` (so its
/// relative paths, /etc/usher's files in production, land in `dir`) and
/// systemd's credentials directory replaced by `dir/credentials`.
fn install(dir: &TempDir, shipped: &Path) -> PathBuf {
    let creds = dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    let original = std::fs::read_to_string(shipped).unwrap();
    let text = original.replace(CREDENTIALS, &format!("{}/", creds.display()));
    dir.write("usher.toml", &text)
}

/// The string at a dotted key path (`server.tls.certificates.1.key`) of a
/// TOML file, resolved against the file's folder.
fn named_path(config: &Path, key: &str) -> PathBuf {
    let doc: toml::Value = toml::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let mut v = &doc;
    for part in key.split('.') {
        v = match part.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[part],
        };
    }
    let p = v
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string"));
    config.parent().unwrap().join(p)
}

/// The key of a problem line `file:line: key: message`.
fn problem_key(line: &str) -> String {
    let mut parts = line.trim().split(": ");
    parts.next();
    parts.next().unwrap_or_default().to_string()
}

fn run_ok(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(out.status.success(), "usher {args:?}: {out:?}");
    text(&out.stdout)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Makes the file the problem at `key` names, with content of its kind;
/// returns the files made.
fn make_file(config: &Path, key: &str, scratch: &Path) -> Vec<PathBuf> {
    if let Some(rest) = key.strip_prefix("server.tls.certificates.") {
        // A certificate and its key belong together: made as a pair.
        let i = rest.split('.').next().unwrap();
        let cert = named_path(config, &format!("server.tls.certificates.{i}.cert"));
        let k = named_path(config, &format!("server.tls.certificates.{i}.key"));
        std::fs::create_dir_all(cert.parent().unwrap()).unwrap();
        std::fs::create_dir_all(k.parent().unwrap()).unwrap();
        run_ok(&[
            "cert",
            "dev",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            k.to_str().unwrap(),
        ]);
        return vec![cert, k];
    }
    let path = named_path(config, key);
    match key {
        "origin.ca_file" => {
            run_ok(&[
                "cert",
                "dev",
                "--cert",
                path.to_str().unwrap(),
                "--key",
                scratch.join("ca.key").to_str().unwrap(),
            ]);
        }
        // a voucher key file takes the same KID:SECRET line
        "room.keys_file" | "vouchers.key_file" => write(&path, &run_ok(&["keygen"])),
        "vouchers.pool_file" => {
            let codes: String = (0..100).map(|i| format!("CODE{i:04}\n")).collect();
            write(&path, &codes);
        }
        "store.password_file" => write(&path, "a-redis-password\n"),
        "server.admin_token_file" => write(&path, &format!("{}\n", "t".repeat(40))),
        other => panic!("{}: unexpected problem at {other}", config.display()),
    }
    vec![path]
}

#[test]
fn every_shipped_config_checks_with_its_files_and_names_each_missing_one() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut configs: Vec<PathBuf> = std::fs::read_dir(&shipped)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    configs.sort();
    assert!(configs.len() >= 5, "{configs:?}");
    let mut files_checked = 0;
    for shipped in &configs {
        let dir = TempDir::new("check-shipped");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let config = install(&dir, shipped);
        let name = shipped.display();

        // Nothing exists yet: check names what is missing (a certificate
        // hides nothing, so two rounds are plenty), the test makes it.
        let mut made: BTreeSet<PathBuf> = BTreeSet::new();
        for _ in 0..3 {
            let out = check(&config);
            if out.status.success() {
                break;
            }
            assert_eq!(out.status.code(), Some(78), "{name}: {out:?}");
            for line in err_lines(&out) {
                if line.ends_with("problems in the configuration:") {
                    continue;
                }
                made.extend(make_file(&config, &problem_key(&line), &scratch));
            }
        }
        let out = check(&config);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name} with its files:\n{}",
            text(&out.stderr)
        );
        let shown = text(&out.stdout);
        let sections = std::fs::read_to_string(shipped).unwrap();
        for section in [
            "[server]",
            "[origin]",
            "[log]",
            "[room]",
            "[vouchers]",
            "[store]",
        ] {
            if sections.contains(section) {
                assert!(shown.contains(section), "{name}: {section} not shown");
            }
        }

        // Each file missing on its own: exit 78 and one line naming it.
        for file in &made {
            let away = scratch.join("away");
            std::fs::rename(file, &away).unwrap();
            let out = check(&config);
            std::fs::rename(&away, file).unwrap();
            let lines = err_lines(&out);
            assert_eq!(out.status.code(), Some(78), "{name} without {file:?}");
            assert_eq!(lines.len(), 1, "{name} without {file:?}: {lines:#?}");
            let shown = file.display().to_string();
            assert!(
                lines[0].contains(&shown) && lines[0].starts_with(&config.display().to_string()),
                "{name}: {} does not name {shown}",
                lines[0]
            );
            assert_eq!(lines[0].matches(&shown).count(), 1, "{}", lines[0]);
            files_checked += 1;
        }
    }
    // the examples name keys, certificates, a CA, a pool, a voucher key
    // and a Redis password: all of them were found missing and made
    assert!(files_checked >= 9, "only {files_checked} files checked");
}

#[test]
fn unknown_key_bad_duration_and_bad_url_in_one_section_are_all_reported() {
    let dir = TempDir::new("check-three-kinds");
    let path = dir.write(
        "three.toml",
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n\
         [origin]\n\
         url = \"ftp://origin.example\"\n\
         queue_timeout = \"soon\"\n\
         colour = \"blue\"\n\n\
         [log]\nlevel = info\n",
    );
    let out = check(&path);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    let file = path.display().to_string();
    for (line, key, words) in [
        (5, "origin.url", "ftp://origin.example"),
        (6, "origin.queue_timeout", "soon"),
        (7, "origin.colour", "unknown field"),
        // a syntax error does not hide the others either
        (10, "", "not valid TOML"),
    ] {
        let at = if key.is_empty() {
            format!("{file}:{line}: ")
        } else {
            format!("{file}:{line}: {key}: ")
        };
        assert!(
            err.lines().any(|l| l.contains(&at) && l.contains(words)),
            "no line with `{at}` and `{words}` in:\n{err}"
        );
    }
    assert!(err.starts_with("4 problems"), "{err}");
}

#[test]
fn under_systemd_a_missing_credential_is_named_as_one() {
    let dir = TempDir::new("check-credential");
    let creds = dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    let config = dir.write(
        "usher.toml",
        &format!(
            "[origin]\nurl = \"http://127.0.0.1:1\"\n\n[room]\nkeys_file = \"{}/keys\"\n",
            creds.display()
        ),
    );
    let out = bin()
        .args(["check", "-c"])
        .arg(&config)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    let lines = err_lines(&out);
    assert_eq!(out.status.code(), Some(78), "{lines:#?}");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("room.keys_file") && lines[0].contains("no credential `keys`"),
        "{lines:#?}"
    );
    // there but broken: the file's own problem, no word about credentials
    std::fs::write(creds.join("keys"), "not a key line\n").unwrap();
    let out = bin()
        .args(["check", "-c"])
        .arg(&config)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    let lines = err_lines(&out);
    assert_eq!(out.status.code(), Some(78), "{lines:#?}");
    assert!(!lines[0].contains("credential `"), "{lines:#?}");
}

/// A config for `usher run` that listens on 127.0.0.1:0 with `room` added.
fn run_config(dir: &TempDir, tail: &str) -> PathBuf {
    dir.write(
        "usher.toml",
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"\"\n\n\
             [origin]\nurl = \"http://127.0.0.1:1\"\n\n{tail}"
        ),
    )
}

fn assert_refused_once(config: &Path, missing: &Path) {
    let out = bin()
        .args(["run", "-c"])
        .arg(config)
        .output()
        .expect("run usher");
    let lines = err_lines(&out);
    assert_eq!(out.status.code(), Some(78), "{lines:#?}");
    assert_eq!(lines.len(), 1, "one clean line: {lines:#?}");
    let shown = missing.display().to_string();
    assert_eq!(lines[0].matches(&shown).count(), 1, "{}", lines[0]);
    assert_eq!(lines[0].matches("os error 2").count(), 1, "{}", lines[0]);
}

#[test]
fn run_refuses_a_missing_keys_file_or_certificate_with_78_and_one_cause() {
    let dir = TempDir::new("run-missing");
    let keys = dir.path().join("keys");
    let config = run_config(
        &dir,
        &format!("[room]\nkeys_file = \"{}\"\n", keys.display()),
    );
    assert_refused_once(&config, &keys);

    let (cert, key, _) = common::dev_cert(&dir);
    let gone = dir.path().join("gone.crt");
    let config = run_config(&dir, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "admin = \"\"\n",
        &format!(
            "admin = \"\"\n[server.tls]\nlisten = [\"127.0.0.1:0\"]\n\
             [[server.tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n\
             [[server.tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display(),
            gone.display(),
            key.display()
        ),
    );
    let config = dir.write("tls.toml", &text);
    assert_refused_once(&config, &gone);
}

#[test]
fn check_prints_every_section_and_no_secret() {
    let dir = TempDir::new("check-secrets");
    let keys = dir.write("keys", &run_ok(&["keygen", "--kid", "k1"]));
    let voucher_key = run_ok(&["keygen", "--kid", "v1"]);
    dir.write("voucher.key", &voucher_key);
    let bypass = "bypass-secret-value-0123456789";
    dir.write("bypass.secret", bypass);
    let redis_password = "hunter2-in-the-url";
    let admin_token = "admin-token-value-0123456789abcdef0123";
    let token_file = dir.write("admin.token", admin_token);
    let config = dir.write(
        "usher.toml",
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_token_file = \"admin.token\"\n\
             [server.proxy_protocol]\nlisten = [\"127.0.0.1:0\"]\nfrom = [\"10.0.0.0/8\"]\n\n\
             [origin]\nurl = \"http://127.0.0.1:1\"\n\n\
             [log]\nformat = \"json\"\n\n\
             [room]\nevent = \"e\"\nkeys_file = \"keys\"\n\
             bypass_header = \"x-usher-bypass\"\nbypass_secret_file = \"bypass.secret\"\n\n\
             [vouchers]\nplugin = \"signed\"\nkey_file = \"voucher.key\"\nstock = 10\n\
             state_dir = \"state\"\n\n\
             [store]\nbackend = \"redis\"\nurl = \"redis://usher:{redis_password}@127.0.0.1:1/0\"\n"
        ),
    );
    let out = check(&config);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for section in [
        "[server]",
        "[server.http2]",
        "[server.proxy_protocol]",
        "[origin]",
        "[log]",
        "[room]",
        "[room.limits]",
        "[vouchers]",
        "[store]",
    ] {
        assert!(
            shown.lines().any(|l| l == section),
            "{section} missing:\n{shown}"
        );
    }
    let key_secrets = [&std::fs::read_to_string(&keys).unwrap(), &voucher_key]
        .map(|line| line.trim().split_once(':').unwrap().1.to_string());
    for secret in [
        bypass,
        redis_password,
        admin_token,
        &key_secrets[0],
        &key_secrets[1],
    ] {
        assert!(!shown.contains(secret), "a secret is shown:\n{shown}");
    }
    // where the secrets are is shown
    assert!(shown.contains(&keys.display().to_string()), "{shown}");
    assert!(shown.contains(&token_file.display().to_string()), "{shown}");
    assert!(
        shown.contains("redis://usher:REDACTED@127.0.0.1:1/0"),
        "{shown}"
    );
}

#[test]
fn a_state_dir_that_cannot_work_is_78_and_one_another_usher_holds_is_1() {
    let dir = TempDir::new("run-state");
    let not_a_dir = dir.write("not-a-dir", "x");
    let config = run_config(
        &dir,
        &format!(
            "[room]\n\n[store]\nstate_dir = \"{}\"\n",
            not_a_dir.display()
        ),
    );
    // check tells without opening it; run refuses it the same way
    for verb in ["check", "run"] {
        let out = bin().args([verb, "-c"]).arg(&config).output().unwrap();
        let lines = err_lines(&out);
        assert_eq!(out.status.code(), Some(78), "{verb}: {lines:#?}");
        assert_eq!(lines.len(), 1, "{verb}: {lines:#?}");
        let named = not_a_dir.display().to_string();
        assert!(
            lines[0].contains("store.state_dir") && lines[0].contains(&named),
            "{verb}: {lines:#?}"
        );
    }

    // The same state directory while another usher runs on it: that is
    // not the config's fault, and a retry once it has gone works.
    let state = dir.path().join("state");
    let tail = format!("[room]\n\n[store]\nstate_dir = \"{}\"\n", state.display());
    let text = common::config("127.0.0.1:1".parse().unwrap(), "", "", &tail);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let first = rt.block_on(common::process::UsherProcess::spawn(
        TempDir::new("run-state-first"),
        &text,
    ));
    let second = dir.write("second.toml", &text);
    let out = bin().args(["run", "-c"]).arg(&second).output().unwrap();
    let lines = err_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("locked by another usher")),
        "{lines:#?}"
    );
    drop(first);
}
