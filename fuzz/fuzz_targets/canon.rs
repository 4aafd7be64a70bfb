#![no_main]
//! cargo-fuzz target `canon`: see `metaguard_fuzz::checks::check_canon` for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    metaguard_fuzz::checks::check_canon(data);
});
