//! Command line of `metaguard-install`, parsed by clap (help, errors and `--version` as users
//! expect). Each command takes only its own options, to catch typos.

use crate::chain::{ChainError, Entry};
use crate::install::Layout;
use crate::taint::{self, Kubectl, Taint};
use crate::watch::{OnExit, TaintRemoval, WatchOptions};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const AFTER_HELP: &str = "\
Exit codes: 0 success (status: metaguard is in the chain); 1 failure; 2 bad usage;
3 status/probe: not in the chain / not ready; 75 install: the file changed while it was being
edited (nothing half-written; run again).";

#[derive(Debug, Parser)]
#[command(
    name = "metaguard-install",
    version,
    about = "Adds the metaguard CNI plugin to a node's CNI configuration and keeps it there.",
    after_help = AFTER_HELP,
    subcommand_required = true,
    arg_required_else_help = true,
    args_override_self = true,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Copy the plugin into the CNI bin dir and chain metaguard into the CNI config
    Install {
        #[command(flatten)]
        dirs: Dirs,
        #[command(flatten)]
        plugin: PluginArgs,
    },
    /// Restore the original CNI config and remove the plugin binary
    Uninstall {
        #[command(flatten)]
        dirs: Dirs,
        /// Leave the plugin binary in the CNI bin dir
        #[arg(long)]
        keep_plugin: bool,
    },
    /// Install and keep metaguard in the chain until SIGTERM (for the DaemonSet)
    Watch(Box<WatchArgs>),
    /// Tell whether metaguard is in the chain containerd uses (exit 0 yes, 3 no)
    Status {
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Exit 0 when --ready-file exists and/or --heartbeat-file is fresh (exec probes)
    Probe(ProbeArgs),
}

#[derive(Debug, Args)]
struct Dirs {
    /// CNI plugin directory
    #[arg(long, value_name = "DIR", default_value = "/opt/cni/bin")]
    cni_bin_dir: PathBuf,
    /// CNI configuration directory
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// Where originals are kept [default: <cni-conf-dir>/.metaguard-backup]
    #[arg(long, value_name = "DIR")]
    backup_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PluginArgs {
    /// The metaguard plugin binary to install [default: `metaguard` next to this program]
    #[arg(long, value_name = "PATH")]
    plugin: Option<PathBuf>,
    /// The plugin's configuration (a JSON object; `type` and the
    /// io.kubernetes.cri.pod-annotations capability are added)
    #[arg(long, value_name = "JSON|@FILE")]
    config: Option<String>,
}

#[derive(Debug, Args)]
struct WatchArgs {
    #[command(flatten)]
    dirs: Dirs,
    #[command(flatten)]
    plugin: PluginArgs,
    /// Leave the plugin binary in the CNI bin dir on exit
    #[arg(long)]
    keep_plugin: bool,
    /// Present exactly while metaguard is in the chain
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
    /// Rewritten after every check
    #[arg(long, value_name = "PATH")]
    heartbeat_file: Option<PathBuf>,
    /// Pause between two checks
    #[arg(long, value_name = "N", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(50..=60_000))]
    interval_ms: u64,
    /// What to do with the chain on SIGTERM: keep (metaguard stays, pods started while it is
    /// away fail closed) or uninstall
    #[arg(long, value_enum, default_value_t = OnExitArg::Keep)]
    on_exit: OnExitArg,
    /// Remove the node taint once metaguard is in the chain
    #[arg(long)]
    remove_taint: bool,
    /// This node's name [default: $NODE_NAME]
    #[arg(long, value_name = "NAME", requires = "remove_taint")]
    node_name: Option<String>,
    /// The taint [default: metaguard.io/not-ready:NoSchedule]
    #[arg(long, value_name = "KEY:EFFECT", requires = "remove_taint")]
    taint: Option<String>,
    /// The kubectl program to run [default: kubectl, from PATH]
    #[arg(long, value_name = "PATH", requires = "remove_taint")]
    kubectl: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[group(skip)]
#[command(group(ArgGroup::new("probe_target").args(["ready_file", "heartbeat_file"]).required(true).multiple(true)))]
struct ProbeArgs {
    /// Ready when this file exists
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
    /// Ready when this file was modified within --max-age-ms
    #[arg(long, value_name = "PATH")]
    heartbeat_file: Option<PathBuf>,
    /// How fresh the heartbeat must be [default: 10000]
    #[arg(long, value_name = "N", requires = "heartbeat_file")]
    max_age_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnExitArg {
    Keep,
    Uninstall,
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// Refused by the parser, or `--help`/`--version` (clap prints and exits 0 for those).
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error("{0}")]
    Msg(String),
    #[error(transparent)]
    Entry(#[from] ChainError),
    #[error(transparent)]
    Taint(#[from] taint::TaintError),
}

fn msg(s: impl Into<String>) -> UsageError {
    UsageError::Msg(s.into())
}

#[derive(Debug)]
pub enum Command {
    Install {
        layout: Layout,
        plugin: PathBuf,
        entry: Entry,
    },
    Uninstall {
        layout: Layout,
        keep_plugin: bool,
    },
    Watch(Box<WatchOptions>),
    Status {
        layout: Layout,
    },
    Probe {
        ready_file: Option<PathBuf>,
        heartbeat: Option<(PathBuf, Duration)>,
    },
}

impl Dirs {
    fn layout(self) -> Layout {
        Layout::new(self.cni_bin_dir, self.cni_conf_dir, self.backup_dir)
    }
}

impl PluginArgs {
    fn plugin(&self) -> Result<PathBuf, UsageError> {
        if let Some(p) = &self.plugin {
            return Ok(p.clone());
        }
        let exe =
            std::env::current_exe().map_err(|e| msg(format!("cannot locate this program: {e}")))?;
        Ok(exe.with_file_name(crate::chain::PLUGIN_TYPE))
    }

    fn entry(&self) -> Result<Entry, UsageError> {
        let text = match self.config.as_deref() {
            None => None,
            Some(s) => match s.strip_prefix('@') {
                Some(path) => Some(
                    std::fs::read_to_string(path).map_err(|e| msg(format!("--config {s}: {e}")))?,
                ),
                None => Some(s.to_string()),
            },
        };
        Ok(Entry::from_config(text.as_deref())?)
    }
}

impl WatchArgs {
    fn taint(&self) -> Result<Option<TaintRemoval>, UsageError> {
        if !self.remove_taint {
            return Ok(None);
        }
        let node = match self.node_name.clone() {
            Some(n) => n,
            None => std::env::var("NODE_NAME")
                .map_err(|_| msg("--remove-taint needs --node-name or $NODE_NAME"))?,
        };
        if !taint::valid_node_name(&node) {
            return Err(msg(format!("--node-name: not a valid node name: {node:?}")));
        }
        Ok(Some(TaintRemoval {
            kubectl: Kubectl {
                program: self.kubectl.clone().unwrap_or_else(|| "kubectl".into()),
                timeout: Duration::from_secs(15),
            },
            node,
            taint: Taint::parse(self.taint.as_deref().unwrap_or(taint::DEFAULT_TAINT))?,
        }))
    }

    fn options(self) -> Result<WatchOptions, UsageError> {
        Ok(WatchOptions {
            plugin_src: self.plugin.plugin()?,
            entry: self.plugin.entry()?,
            taint: self.taint()?,
            ready_file: self.ready_file,
            heartbeat_file: self.heartbeat_file,
            interval: Duration::from_millis(self.interval_ms),
            on_exit: match self.on_exit {
                OnExitArg::Keep => OnExit::Keep,
                OnExitArg::Uninstall => OnExit::Uninstall,
            },
            keep_plugin: self.keep_plugin,
            layout: self.dirs.layout(),
        })
    }
}

/// Parses the arguments after the program name (a repeated option takes its last value).
/// Besides clap's checks, the plugin
/// configuration and the taint options are checked here, so that a typo is refused before
/// anything is written.
pub fn parse<I, T>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv = std::iter::once(OsString::from("metaguard-install"))
        .chain(args.into_iter().map(Into::into));
    Ok(match Cli::try_parse_from(argv)?.command {
        Sub::Install { dirs, plugin } => Command::Install {
            plugin: plugin.plugin()?,
            entry: plugin.entry()?,
            layout: dirs.layout(),
        },
        Sub::Uninstall { dirs, keep_plugin } => Command::Uninstall {
            layout: dirs.layout(),
            keep_plugin,
        },
        Sub::Status { dirs } => Command::Status {
            layout: dirs.layout(),
        },
        Sub::Probe(p) => Command::Probe {
            ready_file: p.ready_file,
            heartbeat: p
                .heartbeat_file
                .map(|f| (f, Duration::from_millis(p.max_age_ms.unwrap_or(10_000)))),
        },
        Sub::Watch(w) => Command::Watch(Box::new(w.options()?)),
    })
}

/// Parses this program's arguments. `--help` and `--version` print on stdout (exit 0); usage
/// errors on stderr (exit 2).
pub fn parse_env() -> Result<Command, ExitCode> {
    parse(std::env::args_os().skip(1)).map_err(|e| match e {
        UsageError::Clap(e) => {
            let _ = e.print();
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
        }
        e => {
            eprintln!("metaguard-install: error: {e}\n\nFor more information, try '--help'.");
            ExitCode::from(2)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(s: &str) -> Result<Command, UsageError> {
        super::parse(s.split_whitespace())
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn install_options() {
        let c =
            parse("install --cni-bin-dir /b --cni-conf-dir=/c --plugin /p/metaguard --config {}")
                .unwrap();
        let Command::Install {
            layout,
            plugin,
            entry,
        } = c
        else {
            panic!("{c:?}")
        };
        assert_eq!(layout.bin_dir, PathBuf::from("/b"));
        assert_eq!(layout.backup_dir, PathBuf::from("/c/.metaguard-backup"));
        assert_eq!(plugin, PathBuf::from("/p/metaguard"));
        assert_eq!(entry.value()["type"], "metaguard");
    }

    #[test]
    fn defaults() {
        let Command::Status { layout } = parse("status").unwrap() else {
            panic!()
        };
        assert_eq!(layout.bin_dir, PathBuf::from("/opt/cni/bin"));
        assert_eq!(layout.conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(
            layout.backup_dir,
            PathBuf::from("/etc/cni/net.d/.metaguard-backup")
        );
        let Command::Watch(w) = parse("watch").unwrap() else {
            panic!()
        };
        assert_eq!(w.interval, Duration::from_millis(500));
        assert!(w.taint.is_none() && !w.keep_plugin && w.ready_file.is_none());
        let Command::Probe { heartbeat, .. } = parse("probe --heartbeat-file /h").unwrap() else {
            panic!()
        };
        assert_eq!(
            heartbeat,
            Some((PathBuf::from("/h"), Duration::from_millis(10_000)))
        );
    }

    #[test]
    fn watch_options() {
        let c = parse(
            "watch --ready-file /tmp/r --interval-ms 100 --on-exit keep --remove-taint --node-name node-1 --kubectl /k",
        )
        .unwrap();
        let Command::Watch(w) = c else {
            panic!("{c:?}")
        };
        assert_eq!(w.interval, Duration::from_millis(100));
        assert_eq!(w.on_exit, OnExit::Keep);
        let t = w.taint.unwrap();
        assert_eq!(t.node, "node-1");
        assert_eq!(t.taint.key, "metaguard.io/not-ready");
        assert_eq!(t.kubectl.program, PathBuf::from("/k"));
    }

    #[test]
    fn a_repeated_option_takes_the_last_value() {
        let Command::Watch(w) =
            parse("watch --plugin /a --plugin=/b --keep-plugin --keep-plugin --on-exit uninstall --on-exit keep").unwrap()
        else {
            panic!()
        };
        assert_eq!(w.plugin_src, PathBuf::from("/b"));
        assert!(w.keep_plugin);
        assert_eq!(w.on_exit, OnExit::Keep);
    }

    #[test]
    fn watch_keeps_the_chain_on_exit_unless_told_otherwise() {
        let on_exit = |a: &str| match parse(a).unwrap() {
            Command::Watch(w) => w.on_exit,
            c => panic!("{c:?}"),
        };
        assert_eq!(on_exit("watch"), OnExit::Keep);
        assert_eq!(on_exit("watch --on-exit keep"), OnExit::Keep);
        assert_eq!(on_exit("watch --on-exit=uninstall"), OnExit::Uninstall);
    }

    #[test]
    fn refuses_bad_usage() {
        for a in [
            "",
            "frobnicate",
            "install --ready-file /x",
            "install --cni-bin-dir",
            "uninstall --keep-plugin=yes",
            "watch --interval-ms 0",
            "watch --interval-ms 60001",
            "watch --on-exit maybe",
            "watch --node-name n",
            "watch --remove-taint --node-name -bad",
            "probe",
            "probe --max-age-ms 5 --ready-file /r",
            "probe --max-age-ms x --heartbeat-file /h",
            "install --config [1]",
            "status --plugin /p",
        ] {
            let e = parse(a).err().unwrap_or_else(|| panic!("{a}: accepted"));
            if let UsageError::Clap(e) = &e {
                assert_eq!(e.exit_code(), 2, "{a}: {e}");
            }
        }
        for (a, kind) in [
            ("--help", ErrorKind::DisplayHelp),
            ("help", ErrorKind::DisplayHelp),
            ("status --help", ErrorKind::DisplayHelp),
            ("-V", ErrorKind::DisplayVersion),
            ("watch --version", ErrorKind::DisplayVersion),
        ] {
            match parse(a) {
                Err(UsageError::Clap(e)) => {
                    assert_eq!(e.kind(), kind, "{a}");
                    assert_eq!(e.exit_code(), 0, "{a}");
                }
                other => panic!("{a}: {other:?}"),
            }
        }
    }

    #[test]
    fn help_names_every_command_and_the_defaults() {
        let Err(UsageError::Clap(e)) = parse("--help") else {
            panic!()
        };
        let help = e.to_string();
        for want in [
            "install",
            "uninstall",
            "watch",
            "status",
            "probe",
            "Exit codes",
        ] {
            assert!(help.contains(want), "{want:?} missing in\n{help}");
        }
        let Err(UsageError::Clap(e)) = parse("watch --help") else {
            panic!()
        };
        let help = e.to_string();
        for want in [
            "--on-exit <ON_EXIT>",
            "[default: keep]",
            "[possible values: keep, uninstall]",
            "--interval-ms <N>",
            "[default: 500]",
            "[default: /opt/cni/bin]",
        ] {
            assert!(help.contains(want), "{want:?} missing in\n{help}");
        }
    }
}
