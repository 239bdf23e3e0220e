//! Path normalisation: any path normalises to an absolute path without
//! empty, `.` or `..` segments, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use usher::paths::{normalize, under};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let n = normalize(path);
    assert!(n.starts_with('/'), "{path:?} -> {n:?}");
    assert!(!n.contains("//"), "{path:?} -> {n:?}");
    for seg in n.split('/') {
        assert!(seg != "." && seg != "..", "{path:?} -> {n:?}");
    }
    assert!(under(&n, "/"));
});
