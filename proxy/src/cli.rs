//! Command line: `metaguard-proxy [run] [FLAGS]` and `metaguard-proxy check-policy FILE`.

use crate::config::{Config, LogTarget, Overrides};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

pub const USAGE: &str = "\
usage: metaguard-proxy [run] [--config FILE] [--state-dir DIR] [--policy FILE]
                       [--admin ADDR:PORT] [--listen ADDR]... [--upstream NAME=ADDR:PORT]...
                       [--decision-log PATH|-] [--log-level LEVEL]
       metaguard-proxy check-policy FILE
       metaguard-proxy --help | --version

run (the default) serves until SIGTERM; SIGHUP reloads the policy file.
Flags override the configuration file; --listen and --upstream may be repeated.
check-policy validates a policy file and exits 0 (valid) or 1 (invalid, with the line).
";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run {
        config: Option<PathBuf>,
        overrides: Overrides,
    },
    CheckPolicy(PathBuf),
    Help,
    Version,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct UsageError(String);

fn usage(m: impl Into<String>) -> UsageError {
    UsageError(m.into())
}

/// Parses the arguments after the program name. Flags take their value as the next argument or
/// after `=` (`--policy=/etc/p.toml`).
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let mut it = args.iter().peekable();
    match it.peek().map(|s| s.as_str()) {
        Some("check-policy") => {
            it.next();
            let file = it
                .next()
                .ok_or_else(|| usage("check-policy: FILE missing"))?;
            if let Some(extra) = it.next() {
                return Err(usage(format!(
                    "check-policy: unexpected argument {extra:?}"
                )));
            }
            return Ok(Command::CheckPolicy(PathBuf::from(file)));
        }
        Some("run") => {
            it.next();
        }
        _ => {}
    }
    let mut config = None;
    let mut ov = Overrides::default();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if flag == "--help" || flag == "-h" {
            return Ok(Command::Help);
        }
        if flag == "--version" || flag == "-V" {
            return Ok(Command::Version);
        }
        let mut value = || -> Result<String, UsageError> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| usage(format!("{flag}: value missing"))),
            }
        };
        match flag {
            "--config" => config = Some(PathBuf::from(value()?)),
            "--state-dir" => ov.state_dir = Some(PathBuf::from(value()?)),
            "--policy" => ov.policy = Some(PathBuf::from(value()?)),
            "--admin" => {
                let v = value()?;
                ov.admin = Some(
                    v.parse()
                        .map_err(|_| usage(format!("--admin {v:?}: expected ADDR:PORT")))?,
                );
            }
            "--listen" => {
                let v = value()?;
                // Accept `[::1]` as well as `::1`.
                let bare = v.trim_start_matches('[').trim_end_matches(']');
                ov.listen.push(
                    bare.parse()
                        .map_err(|_| usage(format!("--listen {v:?}: expected an IP address")))?,
                );
            }
            "--upstream" => {
                let v = value()?;
                let (name, addr) = v
                    .split_once('=')
                    .ok_or_else(|| usage(format!("--upstream {v:?}: expected NAME=ADDR:PORT")))?;
                let addr: SocketAddr = addr
                    .parse()
                    .map_err(|_| usage(format!("--upstream {v:?}: expected NAME=ADDR:PORT")))?;
                ov.upstream.push((name.to_string(), addr));
            }
            "--decision-log" => {
                let v = value()?;
                if v.is_empty() {
                    return Err(usage("--decision-log: expected a path or -"));
                }
                ov.decision_log = Some(LogTarget::parse(&v));
            }
            "--log-level" => ov.log_level = Some(value()?),
            other => return Err(usage(format!("unknown argument {other:?}"))),
        }
    }
    Ok(Command::Run {
        config,
        overrides: ov,
    })
}

/// The program: parse, dispatch, map errors to exit codes (0 ok, 1 failure, 2 usage or config).
pub fn main() -> ExitCode {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(OsString::into_string)
        .collect()
    {
        Ok(a) => a,
        Err(bad) => {
            eprintln!("metaguard-proxy: argument is not UTF-8: {bad:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let cmd = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("metaguard-proxy: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("metaguard-proxy {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::CheckPolicy(path) => match crate::policy::check_policy_file(&path) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                // Compiler-style position so editors can jump to it.
                if e.line > 0 {
                    eprintln!("{}:{}:{}: {}", path.display(), e.line, e.column, e.message);
                } else {
                    eprintln!("{}: {}", path.display(), e.message);
                }
                ExitCode::FAILURE
            }
        },
        Command::Run { config, overrides } => {
            let cfg = match Config::load(config.as_deref(), &overrides) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("metaguard-proxy: {e}");
                    return ExitCode::from(2);
                }
            };
            crate::logger::init(cfg.level());
            match crate::lifecycle::run(cfg) {
                Ok(()) => {
                    log::info!("stopped");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<Command, UsageError> {
        parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn run_is_the_default() {
        assert_eq!(
            p(&[]).unwrap(),
            Command::Run {
                config: None,
                overrides: Overrides::default()
            }
        );
        assert_eq!(p(&["run"]).unwrap(), p(&[]).unwrap());
    }

    #[test]
    fn all_flags() {
        let c = p(&[
            "run",
            "--config",
            "/etc/c.toml",
            "--state-dir=/s",
            "--policy",
            "/p.toml",
            "--admin",
            "127.0.0.1:9000",
            "--listen",
            "10.0.0.1",
            "--listen",
            "[fd00::1]",
            "--upstream",
            "imds-v4=127.0.0.1:8080",
            "--decision-log",
            "-",
            "--log-level",
            "debug",
        ])
        .unwrap();
        let Command::Run {
            config,
            overrides: o,
        } = c
        else {
            panic!()
        };
        assert_eq!(config, Some(PathBuf::from("/etc/c.toml")));
        assert_eq!(o.state_dir, Some(PathBuf::from("/s")));
        assert_eq!(o.policy, Some(PathBuf::from("/p.toml")));
        assert_eq!(o.admin, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(
            o.listen,
            vec![
                "10.0.0.1".parse::<std::net::IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        assert_eq!(
            o.upstream,
            vec![("imds-v4".to_string(), "127.0.0.1:8080".parse().unwrap())]
        );
        assert_eq!(o.decision_log, Some(LogTarget::Stdout));
        assert_eq!(o.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn check_policy() {
        assert_eq!(
            p(&["check-policy", "f.toml"]).unwrap(),
            Command::CheckPolicy("f.toml".into())
        );
        assert!(p(&["check-policy"]).is_err());
        assert!(p(&["check-policy", "a", "b"]).is_err());
    }

    #[test]
    fn errors_name_the_flag() {
        for (args, want) in [
            (&["--bogus"][..], "--bogus"),
            (&["--policy"][..], "--policy: value missing"),
            (&["--admin", "nope"][..], "--admin"),
            (&["--listen", "10.0.0"][..], "--listen"),
            (&["--upstream", "x"][..], "NAME=ADDR:PORT"),
            (&["--upstream", "x=1.2.3.4"][..], "NAME=ADDR:PORT"),
            (&["--decision-log="][..], "--decision-log"),
        ] {
            let e = p(args).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        assert_eq!(p(&["--help"]).unwrap(), Command::Help);
        assert_eq!(p(&["run", "--version"]).unwrap(), Command::Version);
    }
}
