//! The operator's side: the CLI, `usher check`, the admin API
//! (and its browser test, skipped without Chromium), monitoring rules and
//! dashboards, systemd. One module per former test file; helpers in
//! `tests/support`.

mod admin_api;
mod admin_browser;
mod check;
mod cli;
mod monitoring;
mod systemd;
