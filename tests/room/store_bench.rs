//! Measurements for docs/BENCHMARKS.md (ignored by default; run with
//! `cargo test --release --test room -- store_bench:: --ignored --nocapture`): admission
//! decisions per second (in-process, local vs Redis) and Redis commands per
//! newcomer, per poll and per admitted visitor (from INFO commandstats).

use crate::support::redis as redis_server;
use crate::support::TempDir;

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderMap, HeaderValue};
use redis_server::RedisServer;
use usher::admission::room::Verdict;

fn app(store: &str, dir: &std::path::Path, max_active: u64, event: &str) -> Arc<usher::app::App> {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n[origin]\nurl = \"http://127.0.0.1:9\"\n\
         [room]\nevent = \"{event}\"\nkeys_file = \"{}\"\nmax_active_users = {max_active}\nnew_users_per_minute = 6000000\nburst = 100000\n\
         [room.limits]\ntickets_per_minute_per_ip = 1000000000\nrequests_per_second_per_ip = 0\n{store}",
        dir.join("keys").display()
    );
    let cfg = usher::config::Config::parse(&text, "bench", dir).unwrap_or_else(|e| panic!("{e}"));
    usher::app::App::new(cfg, usher::logging::LogHandle::none()).unwrap()
}

fn commandstats(port: u16) -> HashMap<String, u64> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "commandstats"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .next()?
                .strip_prefix("calls=")?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

fn diff(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> (u64, String) {
    let mut total = 0;
    let mut parts: Vec<String> = after
        .iter()
        .filter(|(k, _)| k.as_str() != "info")
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            total += d;
            (d > 0).then(|| format!("{k}={d}"))
        })
        .collect();
    parts.sort();
    (total, parts.join(" "))
}

fn cookie_headers(cookies: &[HeaderValue]) -> HeaderMap {
    let jar: Vec<&str> = cookies
        .iter()
        .filter_map(|c| c.to_str().ok())
        .map(|c| c.split(';').next().unwrap_or_default())
        .collect();
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_str(&jar.join("; ")).unwrap(),
    );
    h
}

async fn run(label: &str, store: &str, port: Option<u16>) {
    let dir = TempDir::new(&format!("bench-{label}"));
    std::fs::write(
        dir.join("keys"),
        usher::tokens::Keyring::generate_line("b").unwrap() + "\n",
    )
    .unwrap();
    let store = store.replace("DIR", &dir.join("state").display().to_string());
    let a = app(&store, &dir, 1, "bench-a");
    let cfg = a.config.load().room.clone().unwrap();
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    let stats = || port.map(commandstats).unwrap_or_default();
    // one visitor fills the single slot; everyone after waits
    let mut headers = Vec::new();
    let n = 2_000;
    let s0 = stats();
    let t = Instant::now();
    for _ in 0..n {
        match a.room.decide(&cfg, &HeaderMap::new(), ip, false).await {
            Verdict::Hold(h) => headers.push(cookie_headers(&h.cookies)),
            Verdict::Admit { .. } => {}
            Verdict::Limited { .. } => panic!("limited"),
        }
    }
    let issue = t.elapsed();
    // one tick, so positions count a real line
    a.room.tick(&cfg).await;
    let s1 = stats();
    let t = Instant::now();
    let polls = 20_000;
    for i in 0..polls {
        let _ = a
            .room
            .decide(&cfg, &headers[i % headers.len()], ip, false)
            .await;
    }
    let poll = t.elapsed();
    let s2 = stats();
    let (ci, bi) = diff(&s0, &s1);
    let (cp, bp) = diff(&s1, &s2);
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "{label}: newcomers {:.0}/s, polls {:.0}/s ({build} build, one task, one after another)",
        n as f64 / issue.as_secs_f64(),
        polls as f64 / poll.as_secs_f64()
    );
    // the same polls from 64 tasks at once (a busy node: Redis commands
    // from many requests share one connection, pipelined)
    let shared = Arc::new(headers.clone());
    let t = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|k| {
            let (a, cfg, shared) = (a.clone(), cfg.clone(), shared.clone());
            tokio::spawn(async move {
                for i in (k..polls).step_by(64) {
                    let _ = a
                        .room
                        .decide(&cfg, &shared[i % shared.len()], ip, false)
                        .await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let took = t.elapsed();
    let (_, scripts) = diff(&s2, &stats());
    println!(
        "{label}: polls {:.0}/s ({build} build, 64 tasks at once on 2 worker threads) {scripts}",
        polls as f64 / took.as_secs_f64()
    );
    if port.is_some() {
        println!(
            "  per newcomer: {:.2} commands ({bi})",
            ci as f64 / headers.len() as f64
        );
        println!(
            "  per poll:     {:.2} commands ({bp})",
            cp as f64 / polls as f64
        );
    }
    // admitted visitors: capacity for all; first into an empty line (each
    // admitted at once), then arriving while paused (everyone takes a
    // ticket) and ticks until everyone is in
    if let Some(port) = port {
        let b = app(&store, &dir, 1_000_000, "bench-b");
        let cfg = b.config.load().room.clone().unwrap();
        let v = 500;
        let s0 = commandstats(port);
        for _ in 0..v {
            let verdict = b.room.decide(&cfg, &HeaderMap::new(), ip, false).await;
            assert!(matches!(verdict, Verdict::Admit { .. }), "{verdict:?}");
        }
        let (c, breakdown) = diff(&s0, &commandstats(port));
        println!(
            "  per visitor admitted directly (empty line): {:.2} commands ({breakdown})",
            c as f64 / v as f64
        );
        let b = app(&store, &dir, 1_000_000, "bench-c");
        let cfg = b.config.load().room.clone().unwrap();
        let pause = usher::admission::room::Overrides {
            mode: Some("paused".into()),
            ..Default::default()
        };
        b.room.set_overrides(&cfg, pause).unwrap();
        let s0 = commandstats(port);
        let mut waiting = Vec::new();
        for _ in 0..v {
            if let Verdict::Hold(h) = b.room.decide(&cfg, &HeaderMap::new(), ip, false).await {
                waiting.push(cookie_headers(&h.cookies));
            }
        }
        b.room.clear_overrides(&cfg, false);
        let mut ticks = 0;
        while !waiting.is_empty() {
            b.room.tick(&cfg).await;
            ticks += 1;
            let mut still = Vec::new();
            for h in waiting {
                match b.room.decide(&cfg, &h, ip, false).await {
                    Verdict::Admit { .. } => {}
                    _ => still.push(h),
                }
            }
            waiting = still;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (c, breakdown) = diff(&s0, &commandstats(port));
        println!(
            "  per admitted visitor (ticket, one poll per tick until granted, take; {ticks} ticks for {v}): {:.2} commands ({breakdown})",
            c as f64 / v as f64
        );
    }
}

/// The pre-queue draw with Redis: how long the one `draw.lua` call (which
/// blocks Redis) takes for `n` tickets.
async fn draw(url: &str, n: u64) {
    use usher::store::redis_line::{RedisLine, RedisLineConfig, SharedGate};
    let cfg = RedisLineConfig {
        grace_ms: 120_000,
        claim_window_ms: 60_000,
        lease_ms: 1_000,
        heartbeat_ms: 2_000,
    };
    let con = usher::store::redis_conn::connect_url(url, Duration::from_secs(30)).unwrap();
    let line = Arc::new(RedisLine::new(con, "bench-draw", "bench", cfg));
    let t0 = 1_000_000_000;
    line.set_opens_at(Some(t0 + 1_000));
    let tasks: Vec<_> = (0..64)
        .map(|k| {
            let line = line.clone();
            tokio::spawn(async move {
                for _ in (k..n).step_by(64) {
                    line.issue(t0).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let t = line
        .tick(t0 + 1_000, 1, SharedGate::default())
        .await
        .unwrap();
    assert_eq!(t.draw, n);
    let ranks = usher::admission::line::shuffled_ranks(n as u32, [1; 32]);
    let started = Instant::now();
    assert!(line.draw(&ranks).await.unwrap());
    let write = started.elapsed();
    // then the ticks carry the live into rank order, a chunk each
    let (mut ticks, mut longest) = (0, Duration::ZERO);
    loop {
        let t = Instant::now();
        let out = line
            .tick(t0 + 2_000 + ticks, 1, SharedGate::default())
            .await
            .unwrap();
        longest = longest.max(t.elapsed());
        ticks += 1;
        if !out.drawing {
            break;
        }
    }
    println!(
        "redis: pre-queue draw of {n} tickets: ranks written in {:.0} ms, then {ticks} ticks, the longest {:.0} ms (each one script: Redis answers nothing else meanwhile)",
        write.as_secs_f64() * 1000.0,
        longest.as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_local_and_redis() {
    run("memory", "", None).await;
    run("local", "[store]\nstate_dir = \"DIR\"\n", None).await;
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    run(
        "redis",
        &format!(
            "[store]\nbackend = \"redis\"\nurl = \"{}\"\nnode_id = \"bench\"\n",
            redis.url()
        ),
        Some(redis.port),
    )
    .await;
    draw(&redis.url(), 200_000).await;
}
