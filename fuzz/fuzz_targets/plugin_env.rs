#![no_main]
//! cargo-fuzz target `plugin_env`: see `metaguard_fuzz::checks::check_plugin_env` for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    metaguard_fuzz::checks::check_plugin_env(data);
});
