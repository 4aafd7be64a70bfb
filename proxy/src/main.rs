//! metaguard-proxy: see the library (`cli::main`) and docs/proxy.md.
fn main() -> std::process::ExitCode {
    metaguard_proxy::cli::main()
}
