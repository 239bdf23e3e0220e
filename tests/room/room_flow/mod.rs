//! The hand-off over real sockets: a crowd of
//! polling visitors (long polls, the holding page's schedule) in front of a
//! fragile origin, an in-process usher.
//!
//! - With a fixed rate, visitors who leave at once (the origin's
//!   `X-Usher-Release`) are let in at the configured rate: a granted place
//!   does not sit idle until its holder's next poll.
//!
//! `fragile` is the origin and `crowd` the visitors and their figures; the
//! test is in `release`. The closed-loop gate's crowd tests use the same two
//! in a binary of their own (`tests/gate`: they measure load, so nothing
//! runs beside them).

#[allow(dead_code)] // shared with tests/gate by path
mod crowd;
#[allow(dead_code)]
mod fragile;
mod release;
