//! Listeners and the per-connection guards that run before hyper sees a byte.

pub mod h1_guard;
