//! metaguard-proxy: see the library (`cli::main`) and docs/proxy.md.

/// mimalloc's per-thread free lists suit a daemon whose every request allocates and frees
/// small buffers on one worker thread (measured in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    metaguard_proxy::cli::main()
}
