#![no_main]
//! cargo-fuzz target `policy`: see `metaguard_fuzz::checks::check_policy` for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    metaguard_fuzz::checks::check_policy(data);
});
