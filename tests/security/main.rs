#[path = "../support/mod.rs"]
mod support;

mod faults;
mod security_flood;
mod security_line;
mod security_smuggling;
