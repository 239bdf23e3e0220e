//! The waiting line's storage: this node's line in files under
//! `[store] state_dir` ([`files`]), the line shared by every node in Redis
//! ([`redis`], its Lua scripts in `lua/`), and this node's clock against
//! Redis's `TIME` ([`clock`]). The line itself, and what is saved of it,
//! is `admission::line`.

pub mod clock;
pub mod files;
pub mod redis;
