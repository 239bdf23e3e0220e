//! A small valid scenario shared by the unit tests.

pub(crate) const SMALL: &str = r#"
name = "t"
visitors = 100
time_scale = 10
time_limit_seconds = 600
[arrivals]
spike_share = 0.5
spike_seconds = 60
tail_seconds = 120
[patience]
distribution = "lognormal"
median_seconds = 120
sigma = 1.0
[origin]
capacity = 8
latency_ms = 100
vouchers = 50
[usher]
max_active_users = 10
new_users_per_minute = 60
session_seconds = 120
refresh_seconds = 10
ticket_grace_seconds = 200
claim_window_seconds = 60
"#;
