//! Admission: who gets in, who waits, and in which order.
//!
//! - `line`: tickets, the frontier, liveness, the pre-queue shuffle.
//! - `gate`: the admission rate (GCRA).
//! - `flow`: the closed-loop gate (admissions follow the origin's load).
//! - `active`: admitted visitors and the measured admission rate.
//! - `room`: the decisions per request and the admission tick.
//! - `pass_limit`: requests per pass per second (a copied pass).

pub mod active;
pub mod adaptive;
pub mod flow;
pub mod gate;
pub mod line;
pub mod pass_limit;
mod persist;
pub mod room;
#[cfg(test)]
mod room_tests;
