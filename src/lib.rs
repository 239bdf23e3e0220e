//! usher: a traffic shield. It stands in front of an unchanged website,
//! admits visitors at the pace the site can bear, and forwards their
//! requests byte-for-byte.
//!
//! # Layout, by layer (each names only the layers below it; see
//! docs/ARCHITECTURE.md, "Layers", kept true by `layers_tests.rs`)
//! - [`server`]: listeners, protocol sniffing, TLS handshakes, parked idle
//!   connections, graceful drain. [`ctl`]: the `usher ctl` admin client.
//! - [`pipeline`]: the request path and the one place errors become answers.
//!   [`admin`]: metrics, health, status and reload over the admin listener
//!   and socket, behind its guard (no browser pages, a bearer token, JSON only).
//! - [`app`]: shared state of the running process and live reload.
//! - [`startup`]: every file the config names, opened and parsed (run, check, reload).
//! - [`admission`]: the waiting line (tickets, frontier, liveness), the gate,
//!   and the room that decides over one line backend (memory, files, Redis).
//! - [`holding`]: the holding page, status JSON and usher's own error pages.
//! - [`talk`]: announcements to waiting visitors, their feedback back.
//!   [`vouchers`]: voucher claims exactly once: issuer plugins and the claim service.
//! - [`store`]: state by what is stored: the voucher ledger, the line's
//!   files, Redis connections.
//! - [`proxy`]: forwarding to the origin (its pool, header rules, in-flight
//!   cap, health). [`logging`]: tracing setup and the access log.
//! - [`config`]: the TOML file, its validation, and where mistakes stand.
//!   [`metrics`]: every metric, in one struct.
//! - Leaves: [`tokens`] (signed tickets and passes, keys, cookies), [`tls`]
//!   (certificates), [`h1_guard`] (the smuggling guard on raw bytes),
//!   [`net`], [`paths`], [`civil`], [`notify`] (systemd notifications).
//!
//! The flash-crowd simulator `usher-sim` is its own crate (`crates/usher-sim`)
//! over this library.

pub mod admin;
pub mod admission;
pub mod app;
pub mod civil;
pub mod config;
pub mod ctl;
pub mod h1_guard;
pub mod holding;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod paths;
pub mod pipeline;
pub mod proxy;
pub mod server;
pub mod startup;
pub mod store;
pub mod talk;
pub mod tls;
pub mod tokens;
pub mod vouchers;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};

/// Boxed error type used by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response usher produces or relays.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A complete in-memory body.
pub fn full_body(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty_body() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

#[cfg(test)]
mod layers_tests;
