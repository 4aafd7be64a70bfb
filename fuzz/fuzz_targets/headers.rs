#![no_main]
//! cargo-fuzz target `headers`: see `metaguard_fuzz::checks::check_headers` for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    metaguard_fuzz::checks::check_headers(data);
});
