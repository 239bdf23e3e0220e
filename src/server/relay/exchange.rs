//! One exchange with the origin: the planned request sent on a pooled
//! connection, the answer's head read and planned, its body relayed to the
//! visitor by its framing, and the visitor watched meanwhile.

use super::*;

/// Reads what the visitor sends while its answer is awaited (a pipelined
/// request, kept in `pipelined`, up to a bound); returns when the visitor
/// has closed its side or the connection broke.
async fn watch_visitor<S>(io: &mut Guarded<S>, pipelined: &mut Vec<u8>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Read into a small buffer here, not into `pipelined`: most visitors
    // send nothing, and nothing is allocated for them.
    let mut chunk = [0u8; 512];
    loop {
        if pipelined.len() >= MAX_PIPELINED {
            // Enough waits already: read no more until this answer is out.
            return std::future::pending().await;
        }
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pipelined.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends the planned request and relays the answer; `on_head` sees the
/// answer's head (and may add to it) before the visitor does; `admitted`:
/// the request is an admitted visitor's, whose answer loses
/// `X-Usher-Sold-Out`. `Ok(Some)`: what becomes of the connection;
/// `Ok(None)`: the visitor left before the answer came.
#[allow(clippy::too_many_arguments)]
pub(super) async fn exchange<S>(
    io: &mut Guarded<S>,
    alarm: &mut Alarm,
    pool: &Pool,
    cfg: &Config,
    app: &App,
    plan: &Plan,
    draining: bool,
    admitted: bool,
    on_head: impl FnOnce(&mut Answer),
) -> Result<Option<Next>, ForwardError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let slot = crate::proxy::origin_slot(&app.slots, cfg, &app.metrics).await?;
    let close = plan.close || draining;
    let started = Instant::now();
    let mut rbuf = Spare::take();
    let mut pipelined = Vec::new();
    // The deadline on the connection's alarm, not a timer of its own.
    let sent = tokio::select! {
        biased;
        sent = send(pool, &plan.out, &mut rbuf, plan.head, close, admitted) => Some(sent),
        () = alarm.until(Tick::now() + cfg.origin.response_timeout) => None,
        // A visitor who leaves gives the origin slot back at once (its
        // origin connection is closed: the answer would go nowhere).
        () = watch_visitor(io, &mut pipelined) => return Ok(None),
    };
    if !pipelined.is_empty() {
        io.unread(&pipelined);
    }
    let took = started.elapsed();
    app.metrics.origin_duration.observe(took.as_secs_f64());
    let failed = !matches!(&sent, Some(Ok((_, a, _))) if a.status < 500);
    app.room.health.record(took, failed);
    let (mut origin_io, mut answer, head_len) = match sent {
        None => {
            app.metrics.origin_error("timeout");
            return Err(ForwardError::OriginTimeout(cfg.origin.response_timeout));
        }
        Some(Err(e)) => {
            app.metrics.origin_error(e.kind);
            return Err(ForwardError::OriginFailed {
                kind: e.kind,
                detail: e.detail,
            });
        }
        Some(Ok(sent)) => sent,
    };
    on_head(&mut answer);
    // The head and what came with it of the body, in one write.
    let mut out = std::mem::take(&mut answer.out);
    let extra = &rbuf[head_len..];
    let mut body = Body::new(answer.framing);
    let (take, done) = body.feed(extra);
    out.extend_from_slice(&extra[..take]);
    let mut origin_keeps = answer.origin_keeps && take == extra.len();
    let mut visitor_ok = io.write_all(&out).await.is_ok();
    drop(out);
    let mut ended = done;
    let mut broken = body.broken();
    while visitor_ok && !ended {
        rbuf.clear();
        match origin_io.read_buf(&mut *rbuf).await {
            Ok(0) if answer.framing == Framing::Close => ended = true,
            Ok(n) if n > 0 => {
                let (take, done) = body.feed(&rbuf);
                if take < rbuf.len() {
                    origin_keeps = false;
                }
                visitor_ok = io.write_all(&rbuf[..take]).await.is_ok();
                ended = done;
                broken = body.broken();
            }
            Ok(_) | Err(_) => {
                // The origin broke off the body: the visitor's answer is
                // cut short, so its connection ends too.
                app.metrics.origin_error("reset");
                origin_keeps = false;
                visitor_ok = false;
            }
        }
    }
    if broken {
        // A malformed chunked body: relayed up to where it broke; the
        // visitor's reader fails there too, and neither connection goes on.
        app.metrics.origin_error("protocol");
        origin_keeps = false;
        visitor_ok = false;
    }
    visitor_ok = visitor_ok && io.flush().await.is_ok();
    drop(slot);
    if ended && origin_keeps {
        pool.put_raw(origin_io);
    } else {
        let _ = origin_io.shutdown().await;
    }
    let next = if visitor_ok && ended && !close && answer.framing != Framing::Close {
        Next::KeepAlive
    } else {
        Next::Close
    };
    Ok(Some(next))
}

/// Why the origin gave no answer head.
struct Failure {
    kind: &'static str,
    detail: String,
}

impl From<SendError> for Failure {
    fn from(e: SendError) -> Self {
        Failure {
            kind: if e.is_connect() { "connect" } else { "reset" },
            detail: e.to_string(),
        }
    }
}

/// Writes `head` to an origin connection and reads its answer head into
/// `rbuf` (interim 1xx answers skipped, as hyper's client does). A reused
/// connection that the origin had closed gets the request once more on a
/// new one (a bodiless GET or HEAD can be repeated).
async fn send(
    pool: &Pool,
    head: &[u8],
    rbuf: &mut Vec<u8>,
    is_head: bool,
    close: bool,
    admitted: bool,
) -> Result<(TcpStream, Answer, usize), Failure> {
    let (mut conn, mut reused) = pool.checkout_raw().await?;
    loop {
        rbuf.clear();
        let tried = async {
            conn.write_all(head).await?;
            read_answer(&mut conn, rbuf, is_head, close, admitted).await
        };
        match tried.await {
            Ok(Ok((answer, n))) => return Ok((conn, answer, n)),
            Ok(Err(bad)) => {
                return Err(Failure {
                    kind: "protocol",
                    detail: bad.into(),
                })
            }
            Err(_) if reused && rbuf.is_empty() => {
                tracing::debug!("origin closed the connection under the request; sending it again");
                conn = Box::pin(pool.connect_raw()).await?;
                reused = false;
            }
            Err(e) => {
                return Err(Failure {
                    kind: "reset",
                    detail: e.to_string(),
                })
            }
        }
    }
}

/// Reads the origin's final answer head. `Err` for the socket's failures,
/// `Ok(Err)` for an answer the relay will not pass on.
async fn read_answer(
    conn: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    is_head: bool,
    close: bool,
    admitted: bool,
) -> io::Result<Result<(Answer, usize), &'static str>> {
    loop {
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(CHUNK);
        }
        if conn.read_buf(rbuf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        loop {
            match plan_answer(rbuf, is_head, close, admitted) {
                Parsed::Partial if rbuf.len() > MAX_RESPONSE_HEAD => {
                    return Ok(Err("answer head too large"))
                }
                Parsed::Partial => break,
                Parsed::Bad(why) => return Ok(Err(why)),
                Parsed::Interim(n) => {
                    rbuf.drain(..n);
                }
                Parsed::Final(answer, n) => return Ok(Ok((answer, n))),
            }
        }
    }
}
