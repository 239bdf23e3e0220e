#[path = "../support/mod.rs"]
mod support;

mod room_flow;
mod room_http;
mod room_overload;
mod sold_out;
mod store_bench;
mod store_restart;
mod talk;
mod talk_browser;
mod vouchers_http;
