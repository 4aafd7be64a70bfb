//! `metaguard-install`: see `metaguard-install --help` ([`metaguard_installer::cli`]).
//!
//! Exit codes: 0 success (status: metaguard is in the chain); 1 failure; 2 bad usage;
//! 3 status/probe: not in the chain / not ready; 75 install: the file changed while it was being
//! edited (nothing half-written; run again).

use metaguard_installer::cli::{self, Command};
use metaguard_installer::install::{self, ChainOutcome};
use metaguard_installer::node_settings;
use metaguard_installer::watch;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cmd = match cli::parse_env() {
        Ok(c) => c,
        Err(code) => return code,
    };
    match run(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("metaguard-install: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cmd: Command) -> Result<ExitCode, install::InstallError> {
    match cmd {
        Command::Install {
            layout,
            plugin,
            entry,
        } => {
            install::sweep_temps(&layout);
            if install::install_plugin(&layout, &plugin)? {
                println!("installed {}", layout.plugin_path().display());
            } else {
                println!("{} already up to date", layout.plugin_path().display());
            }
            match install::ensure_chain(&layout, &entry, &mut |_, _| true)? {
                ChainOutcome::AlreadyInChain(f) => {
                    println!("metaguard already in the chain of {}", f.display())
                }
                ChainOutcome::Added {
                    file,
                    converted_from: None,
                } => {
                    println!("metaguard added to {}", file.display())
                }
                ChainOutcome::Added {
                    file,
                    converted_from: Some(c),
                } => println!(
                    "{} converted to {} with metaguard last (original kept in {})",
                    c.display(),
                    file.display(),
                    layout.backup_dir.display()
                ),
                ChainOutcome::Deferred(f) => {
                    eprintln!("metaguard-install: {} changed while being edited; nothing half-written; run again", f.display());
                    return Ok(ExitCode::from(75));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Uninstall {
            layout,
            keep_plugin,
        } => {
            install::sweep_temps(&layout);
            let notes = install::uninstall(&layout, keep_plugin)?;
            if notes.is_empty() {
                println!("nothing to uninstall");
            }
            for n in notes {
                println!("{n}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { layout } => {
            let st = install::status(&layout)?;
            match &st.selected {
                None => println!("no CNI configuration in {}", layout.conf_dir.display()),
                Some(f) => println!("config: {} (plugins: {})", f.display(), st.types.join(", ")),
            }
            if let Some(p) = &st.problem {
                println!("problem: {p}");
            }
            println!(
                "plugin binary: {} ({})",
                layout.plugin_path().display(),
                if st.plugin_present {
                    "present"
                } else {
                    "missing"
                }
            );
            println!(
                "metaguard in chain: {}",
                if st.in_chain { "yes" } else { "no" }
            );
            // Read here, not in install::status: watch mode calls that every pass and needs only
            // readiness. Weak settings are warnings: the exit code still answers "is metaguard
            // in the chain".
            for line in node_settings::render(&node_settings::read_live()) {
                println!("{line}");
            }
            Ok(if st.ready() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::Probe {
            ready_file,
            heartbeat,
        } => {
            let ready = match ready_file {
                Some(f) => f.exists(),
                None => true,
            };
            // Fresh: modified no longer than `max` ago.
            let alive = match heartbeat {
                Some((f, max)) => std::fs::metadata(f)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age <= max),
                None => true,
            };
            Ok(if ready && alive {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::Watch(opts) => {
            watch::run(&opts)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
