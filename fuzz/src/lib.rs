//! Fuzz targets for metaguard (run with cargo-fuzz, see docs/fuzzing.md). The checks live in
//! [`checks`] so that the stable short run in CI (`tests/fuzz_smoke.rs`) uses the same code.

pub mod checks;
