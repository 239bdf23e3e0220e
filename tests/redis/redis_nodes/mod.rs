//! Three usher processes (the real binary) sharing one line in a real
//! Redis, visitors spread across them, and the faults of an event:
//! - steady: one global FIFO order; the origin never has more visitors
//!   inside than `max_active_users` across all nodes;
//! - Redis stopped mid-event and restarted (with its append-only file):
//!   passes keep working, newcomers are held, `/readyz` and
//!   `usher_store_up` say so, nobody loses a place, FIFO and the cap hold;
//! - Redis paused (SIGSTOP) for 10 s, longer than `ticket_grace`: every
//!   answer within the command timeout, and after it nobody is skipped;
//! - one node SIGKILLed mid-event: the others carry the line on;
//! - `on_failure = "local_share"`: each node admits its share, 1/3 of the
//!   capacity, ticket holders first, and the shared line resumes after.
//!
//! `nodes` starts the origin and the usher processes, `event` drives the
//! visitors through them; the tests are in `faults`, `local_share` and
//! `prequeue`.

mod event;
mod faults;
mod local_share;
mod nodes;
mod prequeue;
