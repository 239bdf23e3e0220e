//! The closed-loop gate over real sockets, one binary: a crowd of polling
//! visitors in front of a fragile in-process origin. Without a rate the gate
//! keeps the origin busy, never past its slots (`closed_loop`); when the
//! origin slows down, it backs off within seconds (`backoff`).
//!
//! These two measure how busy the gate keeps the origin, over time: any
//! load beside them shows as a gate that cut for nothing (beside two
//! timer-paced crowds of the room binary, or its other tests at four
//! threads, the back-off test's origin fell below half busy before the
//! slowdown in 5 of 16 runs). So they have a binary of their own (cargo
//! runs test binaries one at a time) and take `support::crowd_alone`: one
//! after the other, nothing beside them. The crowd and the origin are the
//! room binary's (`tests/room/room_flow/`), included by path.

#[path = "../support/mod.rs"]
mod support;

#[allow(dead_code)] // shared with tests/room by path
#[path = "../room/room_flow/crowd.rs"]
mod crowd;
#[allow(dead_code)]
#[path = "../room/room_flow/fragile.rs"]
mod fragile;

mod backoff;
mod closed_loop;
