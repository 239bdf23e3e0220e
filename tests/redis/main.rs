#[path = "../support/mod.rs"]
mod support;

mod monitoring_nodes;
mod redis_clock;
mod redis_cluster;
mod redis_cluster_slot;
mod redis_durable;
mod redis_line;
mod redis_line_failover;
mod redis_live_nodes;
mod redis_nodes;
mod redis_sentinel;
mod redis_tls;
mod redis_vouchers;
mod redis_vouchers_nodes;
mod talk_nodes;
