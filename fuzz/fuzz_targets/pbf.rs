//! Fuzz target: see `checks::pbf`.
#![no_main]

#[allow(dead_code)] // each target uses one check
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(
    init: {
        // The importer catches osmpbf's panics on malformed blocks and
        // turns them into errors; libfuzzer-sys's hook would abort before
        // they are caught. A panic that escapes is still a crash: the
        // harness catches it at the top and aborts.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| checks::pbf(data)
);
