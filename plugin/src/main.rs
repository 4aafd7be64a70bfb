//! The `metaguard` CNI plugin binary: everything lives in the library.

fn main() {
    std::process::exit(metaguard_plugin::run());
}
