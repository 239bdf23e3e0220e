//! The proxy's integration tests: forwarding, protocols (h1, h2c,
//! TLS), PROXY protocol, failures, streaming, responses, the access log and
//! live reload. One module per former test file; helpers in `tests/support`.

mod access_log;
mod failures;
mod forwarding;
mod idle_park;
mod protocols;
mod proxy_protocol;
mod relay;
mod reload;
mod responses;
mod streaming;
