//! Admission: who gets in, and in what order.

pub mod line;
