//! usher: a traffic shield.
pub mod holding;
