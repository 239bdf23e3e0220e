//! The integration tests but two, one binary: one build of the helpers,
//! one link, and one harness running the tests of every area side by side
//! (eight threads, `.cargo/config.toml`): most of them wait on sockets,
//! timers and child processes, not on a core. One module per area, one
//! file per former test file; helpers in `tests/support`.
//!
//! Run one area with a filter: `cargo test --test integration -- room::`
//! (or `proxy::`, `redis::`, `ops::`, `security::`).
//!
//! The two exceptions have binaries of their own: the closed-loop gate's
//! crowd tests (`tests/gate`), which measure how busy the gate keeps the
//! origin and so run with nothing beside them, and the simulator's
//! end-to-end test (`crates/usher-sim/tests/sim.rs`).

mod support;

mod ops;
mod proxy;
mod redis;
mod room;
mod security;
