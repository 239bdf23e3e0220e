//! usher: a traffic shield.

pub mod server;
