//! Redis and several nodes: the shared line, vouchers, TLS,
//! Sentinel, Cluster, durability, clock skew, failover, and three real usher
//! processes sharing one Redis (metrics, talk). Each test starts its own
//! redis-server(s) on ports the kernel picks, and says so and passes when
//! redis-server is not installed (outside CI). One module per former test
//! file; helpers in `tests/support`.

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
