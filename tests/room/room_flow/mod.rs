//! The hand-off and the closed-loop gate over real sockets: a crowd of
//! polling visitors (long polls, the holding page's schedule) in front of a
//! fragile origin, an in-process usher.
//!
//! - With a fixed rate, visitors who leave at once (the origin's
//!   `X-Usher-Release`) are let in at the configured rate: a granted place
//!   does not sit idle until its holder's next poll.
//! - Without a rate, the closed-loop gate keeps the origin busy, never past
//!   its slots.
//! - When the origin slows down, the gate backs off within seconds.
//!
//! `fragile` is the origin and `crowd` the visitors and their figures; the
//! tests are in `release` and `backoff`.

mod backoff;
mod crowd;
mod fragile;
mod release;
