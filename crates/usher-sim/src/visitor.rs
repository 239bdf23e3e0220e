//! One visitor, behaving like a browser: loads the page, keeps its cookies,
//! long-polls `/__usher/status?wait=1` at the interval usher gives (with
//! the holding page's jitter and back-off), gives up after its patience,
//! maybe comes back, stops when usher says sold out, and once in claims a
//! voucher, browses and sometimes checks out. Over usher's per-address
//! limits it does what the holding page does: waits out a `Retry-After`
//! (not an error), or solves a proof-of-work challenge and asks again.
//! Without usher it reloads the error page until its patience runs out.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use super::answers::{read_challenge, read_claim, read_status, says_sold_out, Claim, Status};
use super::crowd::{exponential, VisitorPlan};
use super::net::{Answer, Ask, Failure, Jar, Net, TICKET_COOKIE};
use super::scenario::Scenario;
use super::stats::{GaugeGuard, Live, Outcome};
use super::Mode;
use usher::tokens::Keyring;

/// Poll back-off cap, as the holding page's script does.
const MAX_BACKOFF: u32 = 8;
/// The status poll: `wait=1` asks usher to hold the answer (up to its
/// refresh) for a visitor near the head and to answer as soon as they are
/// admitted; an usher without long polls ignores the query.
pub const STATUS_POLL: &str = "/__usher/status?wait=1";
/// Too Many Requests: usher's answer past the per-pass limit (past the
/// per-address limits it holds or challenges instead).
const TOO_MANY_REQUESTS: u16 = 429;
/// Requests one visitor makes at most while waiting: bounds a run even if
/// every answer is an error and patience is huge.
const MAX_POLLS: u32 = 100_000;
/// Challenges solved in a row before waiting one poll interval (a page
/// would not spin either if its solutions kept being refused).
const MAX_CHALLENGES_IN_A_ROW: u32 = 3;
/// The cookie the holding page's script sets with a solved challenge.
const POW_COOKIE: &str = usher::admission::room::POW_COOKIE;

/// What happened to one visitor, in simulated seconds from the opening.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Index in arrival order.
    pub id: u32,
    /// First arrival.
    pub arrival: f64,
    /// When the place they were admitted with was taken: the ticket's
    /// issue, or the start of the visit for those let straight in.
    pub entry: f64,
    /// When they got in.
    pub admitted_at: Option<f64>,
    /// usher's ticket number they were admitted with.
    pub ticket: Option<u64>,
    /// Admitted without leaving since taking that place (those let in
    /// straight away included): the visitors fairness is judged on.
    pub continuous: bool,
    /// The end of it.
    pub outcome: Outcome,
    /// Visits made.
    pub visits: u8,
    /// Errors seen (5xx, 429, timeouts, broken connections).
    pub errors: u32,
    /// The voucher code received.
    pub voucher: Option<Box<str>>,
    /// When it was received.
    pub voucher_at: Option<f64>,
    /// The first wait estimate usher gave.
    pub first_eta: Option<f64>,
    /// Time waited on the last visit before giving up (or being told sold out).
    pub left_after: Option<f64>,
}

/// Everything a run's visitors share.
pub struct RunCtx {
    /// The scenario.
    pub scenario: Scenario,
    /// With or without usher.
    pub mode: Mode,
    /// The client.
    pub net: Net,
    /// Counters.
    pub live: Live,
    /// The opening.
    pub start: Instant,
    /// Turns true at the time limit or on Ctrl-C.
    pub stop: watch::Receiver<bool>,
    /// Finished visitors.
    pub records: Mutex<Vec<Record>>,
    /// usher's keys and event id, to read ticket numbers.
    pub tickets: Option<(Keyring, u64)>,
}

impl RunCtx {
    /// Simulated seconds since the opening.
    pub fn now(&self) -> f64 {
        self.scenario.sim(self.start.elapsed())
    }

    /// Visitor `id`'s source address: from `[addresses]` on a protected
    /// run (usher's per-address limits are what they are for), else the
    /// default (127.0.0.1).
    pub fn source(&self, id: u32) -> Option<Ipv4Addr> {
        let a = self.scenario.addresses.as_ref()?;
        (self.mode == Mode::Protected).then(|| a.source(self.scenario.seed, id))
    }
}

/// How a visit ended before the site.
enum Leave {
    In,
    GaveUp {
        held: bool,
        waited: f64,
    },
    /// usher said the inventory is gone: no point waiting or coming back.
    SoldOut {
        waited: f64,
    },
    Stopped,
}

struct Visitor<'a> {
    ctx: &'a RunCtx,
    plan: &'a VisitorPlan,
    jar: Jar,
    /// Where its connections come from (`None`: the default).
    from: Option<Ipv4Addr>,
    rng: SmallRng,
    stop: watch::Receiver<bool>,
    rec: Record,
    visit: u8,
    entry_visit: u8,
    /// usher cleared the ticket: admitted through the line, not directly.
    via_line: bool,
    /// Admitted and on the site: places in line no longer count.
    on_site: bool,
}

/// Runs one visitor to the end and files its record.
pub async fn visit(ctx: Arc<RunCtx>, plan: VisitorPlan) {
    let mut v = Visitor {
        ctx: &ctx,
        plan: &plan,
        jar: Jar::default(),
        from: ctx.source(plan.id),
        rng: SmallRng::seed_from_u64(plan.seed),
        stop: ctx.stop.clone(),
        rec: Record {
            id: plan.id,
            arrival: ctx.now(),
            entry: ctx.now(),
            admitted_at: None,
            ticket: None,
            continuous: false,
            outcome: Outcome::Waiting,
            visits: 0,
            errors: 0,
            voucher: None,
            voucher_at: None,
            first_eta: None,
            left_after: None,
        },
        visit: 0,
        entry_visit: 0,
        via_line: false,
        on_site: false,
    };
    v.run().await;
    ctx.live.finish(v.rec.outcome);
    let mut records = ctx.records.lock().unwrap_or_else(|e| e.into_inner());
    records.push(v.rec);
}

impl Visitor<'_> {
    async fn run(&mut self) {
        let live = &self.ctx.live;
        live.arrived
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        while self.visit < self.plan.visits {
            if self.visit > 0 {
                let _away = GaugeGuard::new(&live.away);
                let away = self.plan.away[usize::from(self.visit)];
                if !self.pause(self.ctx.scenario.real(f64::from(away))).await {
                    // Stopped while meaning to come back.
                    self.rec.outcome = Outcome::Waiting;
                    return;
                }
                live.returned
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            self.rec.visits += 1;
            let leave = {
                let _waiting = GaugeGuard::new(&live.waiting);
                self.wait().await
            };
            self.visit += 1;
            match leave {
                Leave::In => return self.on_site().await,
                Leave::Stopped => return,
                Leave::SoldOut { waited } => {
                    self.rec.left_after = Some(waited);
                    self.rec.outcome = Outcome::ToldSoldOut;
                    return;
                }
                Leave::GaveUp { held, waited } => {
                    self.rec.left_after = Some(waited);
                    self.rec.outcome = if held {
                        Outcome::GaveUp
                    } else {
                        Outcome::Failed
                    };
                }
            }
        }
    }

    /// Sleeps, unless the run stops first (then false).
    async fn pause(&mut self, d: Duration) -> bool {
        if *self.stop.borrow() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            _ = self.stop.changed() => false,
        }
    }

    fn jitter(&mut self, lo: f64, hi: f64) -> f64 {
        self.rng.random_range(lo..hi)
    }

    async fn request(&mut self, ask: Ask<'_>) -> Result<Answer, Failure> {
        let live = &self.ctx.live;
        // A long poll is held on purpose: its time says nothing of usher's speed.
        let long_poll = ask.path == STATUS_POLL;
        let r = self.ctx.net.send(live, &mut self.jar, self.from, ask).await;
        use std::sync::atomic::Ordering::Relaxed;
        match &r {
            // usher's per-pass limit: an error, never hidden.
            Ok(a) if a.status == TOO_MANY_REQUESTS => {
                live.rejected_429.fetch_add(1, Relaxed);
                self.rec.errors += 1;
            }
            Ok(a) if a.usher_state.is_some() => {
                live.usher_answers.fetch_add(1, Relaxed);
                if !long_poll {
                    live.usher_latency.record(a.latency);
                }
            }
            Ok(a) => {
                live.site_answers.fetch_add(1, Relaxed);
                live.site_latency.record(a.latency);
                if a.status >= 500 {
                    live.site_5xx.fetch_add(1, Relaxed);
                    self.rec.errors += 1;
                }
            }
            Err(Failure::Timeout) => {
                live.timeouts.fetch_add(1, Relaxed);
                self.rec.errors += 1;
            }
            Err(Failure::Connection) => {
                live.conn_errors.fetch_add(1, Relaxed);
                self.rec.errors += 1;
            }
        }
        if let Ok(a) = &r {
            self.via_line |= a.ticket_cleared;
            // Sold out (usher's voucher answer) is an answer, not the line.
            if a.usher_state.is_some() && self.on_site && !says_sold_out(a.usher_state.as_ref()) {
                live.requeued.fetch_add(1, Relaxed);
            }
            if a.new_ticket && !self.on_site {
                self.rec.entry = self.ctx.now();
                self.entry_visit = self.visit;
                self.rec.ticket = self.ticket_number();
            }
        }
        r
    }

    fn ticket_number(&self) -> Option<u64> {
        let (keys, event) = self.ctx.tickets.as_ref()?;
        let token = self.jar.get(TICKET_COOKIE)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        keys.open_ticket(token, *event, now, u64::MAX / 4)
            .ok()
            .map(|t| t.number)
    }

    /// One visit until the site, giving up, or the stop.
    async fn wait(&mut self) -> Leave {
        let s = &self.ctx.scenario;
        let started = self.ctx.now();
        let patience = f64::from(self.plan.patience[usize::from(self.visit)]);
        let deadline = Instant::now() + s.real(patience);
        let protected = self.ctx.mode == Mode::Protected;
        let mut refresh = s.refresh_real();
        let (mut held, mut errs, mut polling) = (false, 0u32, false);
        // Challenges solved in a row.
        let mut challenges = 0u32;
        for _ in 0..MAX_POLLS {
            let answer = if polling {
                self.request(Ask {
                    method: Method::GET,
                    path: STATUS_POLL,
                    json: true,
                    body: None,
                })
                .await
            } else {
                self.request(Ask::page("/")).await
            };
            if self.jar.get(POW_COOKIE).is_some() {
                // Sent once, as the page's script does.
                self.jar.apply(&format!("{POW_COOKIE}=; Max-Age=0"));
            }
            // A Retry-After to honour before the next request.
            let retry_after = match &answer {
                Ok(a) if a.usher_state.is_some() => a.retry_after.map(Duration::from_secs),
                _ => None,
            };
            match answer {
                Ok(a) if a.usher_state.is_some() => {
                    if a.usher_state.as_ref().is_some_and(|v| v != "admitted") {
                        // Held again after being told to come in: not in yet.
                        self.rec.admitted_at = None;
                    }
                    held = true;
                    errs = 0;
                    polling = protected && self.jar.get(TICKET_COOKIE).is_some();
                    match read_status(a.usher_state.as_ref(), &a.body) {
                        Status::SoldOut => {
                            return Leave::SoldOut {
                                waited: self.ctx.now() - started,
                            }
                        }
                        Status::Admitted => {
                            // usher let them in now; the page load that follows
                            // waits on the origin, which is not usher's order.
                            self.rec.admitted_at = Some(self.ctx.now());
                            polling = false;
                            continue;
                        }
                        Status::Held {
                            refresh_seconds,
                            eta_seconds,
                        } => {
                            if let Some(r) = refresh_seconds {
                                refresh = Duration::from_secs(r);
                            }
                            if self.rec.first_eta.is_none() {
                                self.rec.first_eta =
                                    eta_seconds.map(|e| s.sim(Duration::from_secs(e)));
                            }
                        }
                    }
                    match read_challenge(&a.body) {
                        Some((token, bits)) if challenges < MAX_CHALLENGES_IN_A_ROW => {
                            // Over the address's ticket limit: solve and ask again now.
                            challenges += 1;
                            let nonce = usher::tokens::proof::solve(&token, bits);
                            self.jar.apply(&format!("{POW_COOKIE}={token}.{nonce}"));
                            continue;
                        }
                        Some(_) => {}
                        None => challenges = 0,
                    }
                }
                Ok(a) if a.status < 400 => {
                    if self.rec.admitted_at.is_none() || !self.via_line {
                        self.rec.admitted_at = Some(self.ctx.now());
                    }
                    if self.via_line {
                        // A place kept while away counts from when it was taken,
                        // but its holder left: not judged on order.
                        self.rec.continuous = self.entry_visit == self.visit;
                    } else {
                        // Let straight in (or no usher): the place was this visit's start.
                        self.rec.entry = started;
                        self.rec.ticket = None;
                        self.rec.continuous = true;
                    }
                    return Leave::In;
                }
                _ => {
                    errs += 1;
                    // The holding page keeps polling with back-off; others reload.
                    polling = protected && held && self.jar.get(TICKET_COOKIE).is_some();
                }
            }
            // The holding page's schedule, or a person reloading an error page.
            let wait = if let Some(after) = retry_after {
                // Over a per-address limit: usher said when; not an error.
                after.mul_f64(self.jitter(1.0, 1.2))
            } else if held && errs == 0 {
                refresh.mul_f64(self.jitter(0.8, 1.2))
            } else if held {
                refresh
                    .mul_f64(self.jitter(0.8, 1.2) * f64::from(MAX_BACKOFF.min(1 << errs.min(3))))
            } else {
                s.real(s.client.retry_seconds * self.jitter(0.5, 1.5))
            };
            let now = Instant::now();
            if now + wait >= deadline {
                let left = deadline.saturating_duration_since(now);
                if !self.pause(left).await {
                    return Leave::Stopped;
                }
                return Leave::GaveUp {
                    held,
                    waited: self.ctx.now() - started,
                };
            }
            if !self.pause(wait).await {
                return Leave::Stopped;
            }
        }
        Leave::GaveUp {
            held,
            waited: self.ctx.now() - started,
        }
    }

    /// On the site: the voucher, some pages, maybe the checkout.
    async fn on_site(&mut self) {
        let live = &self.ctx.live;
        let _browsing = GaugeGuard::new(&live.browsing);
        self.on_site = true;
        live.admitted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let s = &self.ctx.scenario;
        self.rec.outcome = Outcome::Unfinished;
        let mut done = Outcome::Browsed;
        if s.voucher.enabled {
            match self.claim().await {
                Some(o) => done = o,
                None if *self.stop.borrow() => return,
                None => {
                    self.rec.outcome = Outcome::Failed;
                    return;
                }
            }
            self.rec.outcome = done;
        }
        let paths = &s.browse.paths;
        for i in 0..self.plan.pages as usize {
            let think = exponential(&mut self.rng, s.browse.think_seconds);
            if !self.pause(s.real(think)).await {
                return;
            }
            let Some(path) = paths.get(i % paths.len().max(1)) else {
                break;
            };
            let mut ok = false;
            for _ in 0..2 {
                match self.request(Ask::page(path)).await {
                    Ok(a) if a.usher_state.is_none() && a.status < 400 => {
                        ok = true;
                        break;
                    }
                    Ok(a) if a.usher_state.is_some() => break,
                    _ => {
                        let wait = s.real(s.client.retry_seconds * self.jitter(0.5, 1.5));
                        if !self.pause(wait).await {
                            return;
                        }
                    }
                }
            }
            if !ok {
                break;
            }
        }
        if self.plan.checkout {
            let ask = Ask {
                method: Method::POST,
                path: "/checkout",
                json: false,
                body: Some((
                    "application/x-www-form-urlencoded",
                    Bytes::from_static(b"seat=1"),
                )),
            };
            let _ = self.request(ask).await;
        }
        self.rec.outcome = done;
    }

    /// Claims a voucher: `Some(Voucher | SoldOut | Browsed)`, `None` when
    /// every attempt failed or the run stopped.
    async fn claim(&mut self) -> Option<Outcome> {
        let s = &self.ctx.scenario;
        let v = &s.voucher;
        let method = if v.method == "GET" {
            Method::GET
        } else {
            Method::POST
        };
        for _ in 0..v.attempts {
            let ask = Ask {
                method: method.clone(),
                path: &v.path,
                json: v.path.starts_with("/__usher/"),
                body: (method == Method::POST)
                    .then(|| (v.content_type.as_str(), Bytes::from(v.body.clone()))),
            };
            let answer = self.request(ask).await;
            if let Some(c) = answer
                .ok()
                .and_then(|a| read_claim(a.status, a.usher_state.as_ref(), &a.body))
            {
                return Some(self.claimed(c));
            }
            let wait = s.real(s.client.retry_seconds * self.jitter(0.5, 1.5));
            if !self.pause(wait).await {
                return None;
            }
        }
        None
    }

    /// Files a claim's answer: the code kept and counted, or the outcome.
    fn claimed(&mut self, c: Claim) -> Outcome {
        match c {
            Claim::Code(c) => {
                self.ctx
                    .live
                    .vouchers
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.rec.voucher = Some(c.into_boxed_str());
                self.rec.voucher_at = Some(self.ctx.now());
                Outcome::Voucher
            }
            Claim::SoldOut => Outcome::SoldOut,
            Claim::Unknown => Outcome::Browsed,
        }
    }
}
