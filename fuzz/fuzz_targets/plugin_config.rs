#![no_main]
//! cargo-fuzz target `plugin_config`: see `metaguard_fuzz::checks::check_plugin_config` for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    metaguard_fuzz::checks::check_plugin_config(data);
});
