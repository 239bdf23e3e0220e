//! usher: a traffic shield.
