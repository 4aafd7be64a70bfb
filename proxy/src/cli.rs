//! Command line: `metaguard-proxy [run] [OPTIONS]` and `metaguard-proxy check-policy FILE`,
//! parsed by clap (help, errors and `--version` as users expect). Exit codes: 0 ok (and
//! `--help`/`--version`), 1 failure, 2 usage or configuration error.

use crate::config::{Config, LogTarget, Overrides};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

const AFTER_HELP: &str = "\
run (the default) serves until SIGTERM; SIGHUP reloads the policy file.
Flags override the configuration file; --listen and --upstream may be repeated.
check-policy validates a policy file and exits 0 (valid; warnings on stderr) or 1 (invalid, with the line).
Exit codes: 0 success, 1 failure, 2 usage or configuration error.";

#[derive(Debug, Parser)]
#[command(
    name = "metaguard-proxy",
    version,
    about = "Host daemon that enforces each pod's instance-metadata policy.",
    override_usage = "metaguard-proxy [run] [OPTIONS]\n       metaguard-proxy check-policy FILE",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    args_override_self = true,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// `run`'s options, also accepted without the word `run`.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Serve until SIGTERM (the default); SIGHUP reloads the policy file.
    Run(RunArgs),
    /// Validate a policy file: exit 0 and a summary, or exit 1 and FILE:LINE:COLUMN: message.
    CheckPolicy {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Configuration file (TOML); the options below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The plugin's state directory (pod records).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Policy file (none: deny-all for every pod).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Admin listener (/metrics, /healthz, /readyz).
    #[arg(long, value_name = "ADDR:PORT")]
    admin: Option<SocketAddr>,
    /// Address to listen on (repeatable; replaces the file's list; `[::1]` or `::1`).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    listen: Vec<IpAddr>,
    /// Send endpoint NAME's allowed requests to ADDR:PORT (repeatable).
    #[arg(long, value_name = "NAME=ADDR:PORT", value_parser = parse_upstream)]
    upstream: Vec<(String, SocketAddr)>,
    /// Decision log: a file (appended) or - for stdout.
    #[arg(long, value_name = "PATH|-", value_parser = parse_log_target)]
    decision_log: Option<LogTarget>,
    /// Operational log level on stderr: off, error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn parse_listen(v: &str) -> Result<IpAddr, String> {
    // Accept `[::1]` as well as `::1`.
    let bare = v.trim_start_matches('[').trim_end_matches(']');
    bare.parse().map_err(|_| "expected an IP address".into())
}

fn parse_upstream(v: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = v.split_once('=').ok_or("expected NAME=ADDR:PORT")?;
    let addr = addr.parse().map_err(|_| "expected NAME=ADDR:PORT")?;
    Ok((name.to_string(), addr))
}

fn parse_log_target(v: &str) -> Result<LogTarget, String> {
    if v.is_empty() {
        return Err("expected a path or -".into());
    }
    Ok(LogTarget::parse(v))
}

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run {
        config: Option<PathBuf>,
        overrides: Overrides,
    },
    CheckPolicy(PathBuf),
}

impl From<RunArgs> for Command {
    fn from(a: RunArgs) -> Command {
        Command::Run {
            config: a.config,
            overrides: Overrides {
                state_dir: a.state_dir,
                policy: a.policy,
                admin: a.admin,
                listen: a.listen,
                upstream: a.upstream,
                decision_log: a.decision_log,
                log_level: a.log_level,
            },
        }
    }
}

/// Parses the arguments after the program name. Flags take their value as the next argument or
/// after `=` (`--policy=/etc/p.toml`); a repeated flag takes its last value, except the lists. `--help` and `--version` come back as clap errors whose
/// `exit()` prints them to stdout and exits 0.
pub fn parse<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv =
        std::iter::once(OsString::from("metaguard-proxy")).chain(args.into_iter().map(Into::into));
    let cli = Cli::try_parse_from(argv)?;
    Ok(match cli.command {
        Some(Sub::CheckPolicy { file }) => Command::CheckPolicy(file),
        Some(Sub::Run(a)) => a.into(),
        None => cli.run.into(),
    })
}

/// `check-policy FILE`: what goes to stdout, to stderr, and the exit code. A valid file: its
/// summary, exit 0, and each warning on stderr in compiler style (`FILE:LINE:COLUMN: warning:
/// ...`, then the suggested fix), so editors can jump to it. An invalid one: the error, exit 1.
pub fn check_policy(path: &std::path::Path) -> (String, String, u8) {
    match crate::policy::check_policy_file(path) {
        Ok(check) => {
            let mut err = String::new();
            for w in &check.warnings {
                err.push_str(&format!(
                    "{}:{}:{}: warning: {}\n    suggested fix: {}\n",
                    path.display(),
                    w.line,
                    w.column,
                    w.message,
                    w.suggestion
                ));
            }
            (format!("{}\n", check.summary), err, 0)
        }
        // Compiler-style position so editors can jump to it.
        Err(e) if e.line > 0 => (
            String::new(),
            format!(
                "{}:{}:{}: {}\n",
                path.display(),
                e.line,
                e.column,
                e.message
            ),
            1,
        ),
        Err(e) => (
            String::new(),
            format!("{}: {}\n", path.display(), e.message),
            1,
        ),
    }
}

/// The program: parse, dispatch, map errors to exit codes (0 ok, 1 failure, 2 usage or config).
pub fn main() -> ExitCode {
    let cmd = match parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        // Help and version: stdout, 0; usage errors: stderr, 2.
        Err(e) => e.exit(),
    };
    match cmd {
        Command::CheckPolicy(path) => {
            let (out, err, code) = check_policy(&path);
            print!("{out}");
            eprint!("{err}");
            ExitCode::from(code)
        }
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
    use clap::error::ErrorKind;

    fn p(a: &[&str]) -> Result<Command, clap::Error> {
        parse(a.iter().copied())
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
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
        assert_eq!(
            p(&["--config", "/c.toml"]).unwrap(),
            p(&["run", "--config", "/c.toml"]).unwrap()
        );
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
    fn a_repeated_flag_takes_the_last_value_and_lists_append() {
        let Command::Run { overrides: o, .. } = p(&[
            "--policy",
            "/a",
            "--policy=/b",
            "--listen",
            "::1",
            "--listen",
            "10.0.0.2",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(o.policy, Some(PathBuf::from("/b")));
        assert_eq!(o.listen.len(), 2);
    }

    #[test]
    fn check_policy() {
        assert_eq!(
            p(&["check-policy", "f.toml"]).unwrap(),
            Command::CheckPolicy("f.toml".into())
        );
        assert!(p(&["check-policy"]).is_err());
        assert!(p(&["check-policy", "a", "b"]).is_err());
        // Run's options belong to run.
        assert!(p(&["--policy", "p", "check-policy", "f.toml"]).is_err());
    }

    /// `check-policy` on a file with a near-miss denial: valid (exit 0, summary on stdout), and
    /// on stderr the warning at the denial's line and column, then the suggested fix.
    #[test]
    fn check_policy_prints_near_miss_warnings() {
        let dir = crate::testing::TempDir::new("check-policy");
        let path = dir.path().join("p.toml");
        let text = "default = \"p\"\n\n[[policy]]\nname = \"p\"\nfallback = \"gcp\"\n\n\
                    [[policy.rule]]\nid = \"startup-script\"\n\
                    glob = \"/computeMetadata/v1/instance/attributes/startup-script/**\"\n\
                    action = \"deny\"\n";
        std::fs::write(&path, text).unwrap();
        let (out, err, code) = super::check_policy(&path);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.starts_with(&format!("{}: ok, 1 warning\n", path.display())),
            "{out}"
        );
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        let head = format!(
            "{}:9:8: warning: deny rule `startup-script` names `instance`, `attributes`, \
             `startup-script` exactly, but allow rule `v1` of fallback policy `gcp` lets through \
             near-miss names (the name plus trailing characters) such as \
             `GET /computeMetadata/v1/instance/attributes/startup-script.`",
            path.display()
        );
        assert!(lines[0].starts_with(&head), "{}\n{head}", lines[0]);
        assert_eq!(
            lines[1],
            "    suggested fix: glob = \"/computeMetadata/v1/instance*/attributes*/startup-script*/**\""
        );

        // The fix applied: no warning, nothing on stderr.
        std::fs::write(
            &path,
            text.replace(
                "instance/attributes/startup-script/",
                "instance*/attributes*/startup-script*/",
            ),
        )
        .unwrap();
        let (out, err, code) = super::check_policy(&path);
        assert_eq!((code, err.as_str()), (0, ""));
        assert!(
            out.starts_with(&format!("{}: ok\n", path.display())),
            "{out}"
        );

        // An invalid file: exit 1, the position.
        std::fs::write(&path, "default = \"nope\"\n").unwrap();
        let (out, err, code) = super::check_policy(&path);
        assert_eq!((code, out.as_str()), (1, ""));
        assert!(
            err.starts_with(&format!("{}:1:11: ", path.display())),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_flag() {
        for (args, want) in [
            (&["--bogus"][..], "--bogus"),
            (&["--policy"][..], "--policy"),
            (&["--admin", "nope"][..], "--admin"),
            (&["--listen", "10.0.0"][..], "--listen"),
            (&["--upstream", "x"][..], "NAME=ADDR:PORT"),
            (&["--upstream", "x=1.2.3.4"][..], "NAME=ADDR:PORT"),
            (&["--decision-log="][..], "--decision-log"),
        ] {
            let e = p(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
            let e = e.to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        for (args, kind) in [
            (&["--help"][..], ErrorKind::DisplayHelp),
            (&["-h"][..], ErrorKind::DisplayHelp),
            (&["run", "--help"][..], ErrorKind::DisplayHelp),
            (&["--version"][..], ErrorKind::DisplayVersion),
            (&["run", "--version"][..], ErrorKind::DisplayVersion),
        ] {
            let e = p(args).unwrap_err();
            assert_eq!(e.kind(), kind, "{args:?}");
            assert_eq!(e.exit_code(), 0, "{args:?}");
        }
    }

    #[test]
    fn help_and_version_text() {
        let help = p(&["--help"]).unwrap_err().to_string();
        for want in [
            "metaguard-proxy [run] [OPTIONS]",
            "metaguard-proxy check-policy FILE",
            "--upstream <NAME=ADDR:PORT>",
            "--decision-log <PATH|->",
            "SIGHUP reloads the policy file",
        ] {
            assert!(help.contains(want), "{want:?} missing in\n{help}");
        }
        let v = p(&["-V"]).unwrap_err().to_string();
        assert_eq!(
            v,
            format!("metaguard-proxy {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}
