//! usher: a traffic shield.
pub mod admission;
