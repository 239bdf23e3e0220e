//! The security and fault tests: request smuggling, slow and
//! flooding clients, line-jumping, origin and process faults. One module per
//! former test file; helpers in `tests/support`.

mod faults;
mod security_flood;
mod security_line;
mod security_smuggling;
