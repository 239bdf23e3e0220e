//! The waiting room over real sockets: the line and the gate,
//! the room's HTTP answers, overload, sold out, vouchers, announcements and
//! feedback (and their browser test, skipped without Chromium), the local
//! store across restarts and its benchmark (ignored). One module per former
//! test file; helpers in `tests/support`.

mod room_flow;
mod room_http;
mod room_overload;
mod sold_out;
mod store_bench;
mod store_restart;
mod talk;
mod talk_browser;
mod vouchers_http;
