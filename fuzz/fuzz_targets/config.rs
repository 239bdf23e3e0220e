//! Config parsing: any text is either a config or a list of problems, each
//! with a sensible line; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use usher::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `bypass_secret_file` is read while parsing; a fuzzer naming /dev/zero
    // would test the file system, not the parser.
    if text.contains("secret_file") {
        return;
    }
    match Config::parse(text, "fuzz.toml", std::path::Path::new("/nonexistent")) {
        Ok(cfg) => {
            // What `usher check` prints parses again to the same config.
            let shown = cfg.render();
            let again = Config::parse(&shown, "shown.toml", std::path::Path::new("/nonexistent"));
            assert!(again.is_ok(), "{shown}\n{:?}", again.err());
        }
        Err(e) => {
            let lines = text.lines().count().max(1);
            for p in &e.0 {
                if let Some(l) = p.line {
                    assert!(l >= 1 && l <= lines + 1, "line {l} of {lines}: {p}");
                }
            }
        }
    }
});
