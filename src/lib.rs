//! usher: a traffic shield.
pub mod tokens;
