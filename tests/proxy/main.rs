#[path = "../support/mod.rs"]
mod support;

mod access_log;
mod failures;
mod forwarding;
mod protocols;
mod proxy_protocol;
mod reload;
mod responses;
mod streaming;
