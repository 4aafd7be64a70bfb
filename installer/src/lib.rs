//! metaguard-install: puts the metaguard CNI plugin into a node's CNI configuration, keeps it
//! there while the main CNI rewrites its files, and takes it out again.
//!
//! - [`confdir`]: which configuration file containerd uses (libcni's rules);
//! - [`jsonspan`] and [`chain`]: the text edits (append metaguard, remove it, `.conf` to list);
//! - [`atomic`]: write-then-rename with fsync and compare-and-swap;
//! - [`install`]: install, uninstall and status on real directories;
//! - [`node_settings`]: node settings that weaken the host guard, reported by `status`;
//! - [`watch`], [`signals`], [`taint`]: the DaemonSet's long-running mode;
//! - [`cli`]: the command line.

pub mod atomic;
pub mod chain;
pub mod cli;
pub mod confdir;
pub mod install;
pub mod jsonspan;
pub mod node_settings;
pub mod signals;
pub mod taint;
pub mod watch;
