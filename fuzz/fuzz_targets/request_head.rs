#![no_main]
//! cargo-fuzz target `request_head`: see `metaguard_fuzz::checks::check_request_head` for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    metaguard_fuzz::checks::check_request_head(data);
});
