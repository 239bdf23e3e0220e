//! The waiting room over real sockets: modes and live admin changes, JSON
//! for apps, bypass rules, per-client limits (holding answers and the
//! proof-of-work challenge, never an error page), the language switch, and
//! the origin's release header.
//!
//! `harness` holds this module's origin, in-process usher and answer helpers;
//! the tests are grouped by subject in the other files.

mod harness;
mod limits;
mod pages;
mod proof_of_work;
