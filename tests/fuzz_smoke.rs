//! The fuzz targets' short run, on stable, in CI: every target's check on its seed corpus
//! (`fuzz/seeds/<target>/`) plus deterministic pseudo-random mutations of it. The checks are the
//! very functions the cargo-fuzz targets call (`fuzz/src/checks.rs`), so a property that holds here
//! is the one the long run (docs/fuzzing.md) explores further.
//!
//! `FUZZ_SMOKE_ITERATIONS` sets the mutations per target (default 4000); the seed is fixed so a
//! failure reproduces exactly.

#[path = "../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;

use std::path::PathBuf;
use std::time::Instant;

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

fn iterations() -> usize {
    std::env::var("FUZZ_SMOKE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

fn run(target: &str) {
    let check = checks::TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .map(|(_, f)| *f)
        .unwrap();
    let seeds = seeds(target);
    let start = Instant::now();
    for s in &seeds {
        check(s);
    }
    let mut rng = checks::Rng::new(0x6d65_7461_6775_6172 ^ target.len() as u64);
    let n = iterations();
    // Mutations stack: each input is a mutation of a seed or of an earlier mutation, as a fuzzer's
    // corpus grows, so some inputs end up far from every seed.
    let mut pool: Vec<Vec<u8>> = seeds.clone();
    for i in 0..n {
        let a = rng.below(pool.len());
        let b = rng.below(pool.len());
        let input = checks::mutate(&mut rng, &pool[a], &pool[b]);
        let result = std::panic::catch_unwind(|| check(&input));
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            // Keep the input: `cargo fuzz run <target> <file>` (or this check) replays it.
            let file = std::env::temp_dir().join(format!("fuzz_smoke-{target}-crash-{i}"));
            let _ = std::fs::write(&file, &input);
            panic!(
                "fuzz_smoke {target}: iteration {i} failed ({msg}) on input saved as {}: {:?}",
                file.display(),
                String::from_utf8_lossy(&input)
            );
        }
        if pool.len() < 512 {
            pool.push(input);
        } else {
            let slot = rng.below(pool.len());
            pool[slot] = input;
        }
    }
    println!(
        "fuzz_smoke {target}: {} seeds + {n} mutations in {:?}",
        seeds.len(),
        start.elapsed()
    );
}

#[test]
fn canon() {
    run("canon");
}

#[test]
fn request_head() {
    run("request_head");
}

#[test]
fn headers() {
    run("headers");
}

#[test]
fn policy() {
    run("policy");
}

#[test]
fn plugin_config() {
    run("plugin_config");
}

#[test]
fn plugin_env() {
    run("plugin_env");
}

#[test]
fn every_target_has_a_test_and_a_cargo_fuzz_binary() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    for (name, _) in checks::TARGETS {
        assert!(
            root.join("fuzz_targets")
                .join(format!("{name}.rs"))
                .exists(),
            "fuzz/fuzz_targets/{name}.rs missing"
        );
        assert!(
            root.join("seeds").join(name).is_dir(),
            "fuzz/seeds/{name} missing"
        );
    }
}
