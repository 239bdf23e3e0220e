//! The relay in a room: the room decides on what the relay read
//! ([`crate::pipeline::relayed`]); a waiting visitor's answer is written
//! here, the rest forwarded or given back to hyper.

use super::own::{end_head, write_both};
use super::*;

/// [`serve_next`] when the config has a `[room]`: the room decides first
/// ([`crate::pipeline::relayed`]) on what the relay read. A separate
/// future (the caller boxes one or the other): a waiting visitor's answer
/// carries none of forwarding's state, and a forwarded request without a
/// room none of the room's.
pub async fn serve_next_in_room<S>(turn: Turn<'_, S>) -> Next
where
    S: AsyncRead + AsyncWrite + Readable + Unpin,
{
    let host = turn.host();
    let Turn {
        io,
        guard,
        app,
        cfg,
        info,
        origin,
        head_timeout,
        draining,
        alarm,
    } = turn;
    let (Some(pool), Some(room)) = (origin.pool.as_ref(), cfg.room.as_ref()) else {
        return Next::Hyper;
    };
    let mut reading = Reading {
        build: Build::Nothing,
        room: true,
        bypass: room.bypass_header.as_ref().map(|(name, _)| name.as_str()),
    };
    let mut read = match read_plan(io, guard, app, cfg, info, head_timeout, &host, reading).await {
        Ok(read) => read,
        Err(next) => return next,
    };
    let (buf, plan) = (&read.buf, &read.plan);
    let head = &buf[..read.head_len];
    let text = |at| Plan::text(head, at);
    let cookies = plan.cookies(head);
    let raw = RawRequest {
        head: plan.head,
        target: text(Some(plan.target)).unwrap_or("/"),
        accept: text(plan.accept),
        accept_language: text(plan.accept_language),
        cookies: &cookies[..plan.cookie_count],
        pow: text(plan.pow),
        bypass: plan.bypass.map(|span| span.of(head)),
    };
    let said = relayed::decide(app, cfg.clone(), info, &raw).await;
    let answered = |io: &mut Guarded<S>| {
        let _ = guard.next_request();
        if buf.len() > read.head_len {
            io.unread(&buf[read.head_len..]);
        }
        plan.close || draining
    };
    let admitted = match said {
        Relayed::Hyper => {
            io.unread(buf);
            return Next::Hyper;
        }
        Relayed::Reply(reply, outcome) => {
            let close = answered(io);
            let mut out = Spare::take();
            reply.write_h1_fields(&mut out);
            end_head(&mut out, reply.body.len(), close);
            let body: &[u8] = if plan.head { &[] } else { &reply.body };
            read.counted(app, info, 200, Some(reply.body.len() as u64), outcome);
            // The head and the body in one write, the body not copied.
            let written = write_both(io, &out, body).await.is_ok() && io.flush().await.is_ok();
            return if written && !close {
                Next::KeepAlive
            } else {
                Next::Close
            };
        }
        Relayed::Answer(resp, outcome) => {
            let close = answered(io);
            let status = resp.status().as_u16();
            let written = Box::pin(write_answer(io, resp, plan.head, close, |length| {
                read.counted(app, info, status, Some(length), outcome)
            }))
            .await;
            return if written.is_ok() && !close {
                Next::KeepAlive
            } else {
                Next::Close
            };
        }
        Relayed::Open => None,
        Relayed::Admitted(a) => Some(a),
    };
    reading.build = if admitted.is_some() {
        Build::Stripped
    } else {
        Build::Plain
    };
    let peer = crate::net::canonical(info.peer.ip());
    let proto = if info.tls { "https" } else { "http" };
    match plan_request(&read.buf[..read.head_len], peer, proto, &host, reading) {
        Some(built) => read.plan = built,
        // Read once already: it reads the same again.
        None => return Next::Close,
    }
    let _ = guard.next_request();
    // Boxed: a waiting visitor's answer (most of a room's requests) need
    // not carry forwarding's state, copied into this future's box.
    Box::pin(forward(
        io, alarm, app, cfg, info, pool, read, draining, admitted,
    ))
    .await
}
