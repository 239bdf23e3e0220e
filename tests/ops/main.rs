#[path = "../support/mod.rs"]
mod support;

mod admin_api;
mod admin_browser;
mod check;
mod cli;
mod monitoring;
mod systemd;
