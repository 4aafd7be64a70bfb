//! Command line of `metaguard-install`.

use crate::chain::{ChainError, Entry};
use crate::install::Layout;
use crate::taint::{self, Kubectl, Taint};
use crate::watch::{OnExit, TaintRemoval, WatchOptions};
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage: metaguard-install COMMAND [OPTIONS]

Commands:
  install     copy the plugin into the CNI bin dir and chain metaguard into the CNI config
  uninstall   restore the original CNI config and remove the plugin binary
  watch       install, keep metaguard in the chain, restore on SIGTERM (for the DaemonSet)
  status      tell whether metaguard is in the chain containerd uses (exit 0 yes, 3 no)
  probe       exit 0 when --ready-file exists and/or --heartbeat-file is fresh (exec probes)

Options:
  --cni-bin-dir DIR     CNI plugin directory (default /opt/cni/bin)
  --cni-conf-dir DIR    CNI configuration directory (default /etc/cni/net.d)
  --backup-dir DIR      where originals are kept (default <cni-conf-dir>/.metaguard-backup)
  --plugin PATH         the metaguard plugin binary to install (default: `metaguard` next to
                        this program)
  --config JSON|@FILE   the plugin's configuration (a JSON object; `type` and the
                        io.kubernetes.cri.pod-annotations capability are added)
  --keep-plugin         uninstall/watch: leave the plugin binary in the CNI bin dir
  --ready-file PATH     watch: present exactly while metaguard is in the chain; probe: checked
  --heartbeat-file PATH watch: rewritten after every check; probe: must be fresh
  --max-age-ms N        probe: how fresh the heartbeat must be (default 10000)
  --interval-ms N       watch: pause between two checks (default 500)
  --on-exit uninstall|keep
                        watch: what to do with the chain on SIGTERM (default uninstall)
  --remove-taint        watch: remove the node taint once metaguard is in the chain
  --node-name NAME      watch: this node's name (default $NODE_NAME)
  --taint KEY:EFFECT    watch: the taint (default metaguard.io/not-ready:NoSchedule)
  --kubectl PATH        watch: kubectl to run (default kubectl, from PATH)
  -h, --help            this text
  -V, --version         version
";

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
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
    Help,
    Version,
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

#[derive(Default)]
struct Raw {
    bin_dir: Option<PathBuf>,
    conf_dir: Option<PathBuf>,
    backup_dir: Option<PathBuf>,
    plugin: Option<PathBuf>,
    config: Option<String>,
    keep_plugin: bool,
    ready_file: Option<PathBuf>,
    heartbeat_file: Option<PathBuf>,
    max_age_ms: Option<u64>,
    interval_ms: Option<u64>,
    on_exit: Option<OnExit>,
    remove_taint: bool,
    node_name: Option<String>,
    taint: Option<String>,
    kubectl: Option<PathBuf>,
}

impl Raw {
    fn layout(&self) -> Layout {
        Layout::new(
            self.bin_dir
                .clone()
                .unwrap_or_else(|| "/opt/cni/bin".into()),
            self.conf_dir
                .clone()
                .unwrap_or_else(|| "/etc/cni/net.d".into()),
            self.backup_dir.clone(),
        )
    }

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

/// Which options each command takes (anything else is refused, to catch typos).
fn allowed(cmd: &str) -> &'static [&'static str] {
    const DIRS: &[&str] = &["--cni-bin-dir", "--cni-conf-dir", "--backup-dir"];
    match cmd {
        "install" => &[
            "--cni-bin-dir",
            "--cni-conf-dir",
            "--backup-dir",
            "--plugin",
            "--config",
        ],
        "uninstall" => &[
            "--cni-bin-dir",
            "--cni-conf-dir",
            "--backup-dir",
            "--keep-plugin",
        ],
        "status" => DIRS,
        "probe" => &["--ready-file", "--heartbeat-file", "--max-age-ms"],
        "watch" => &[
            "--cni-bin-dir",
            "--cni-conf-dir",
            "--backup-dir",
            "--plugin",
            "--config",
            "--keep-plugin",
            "--ready-file",
            "--heartbeat-file",
            "--interval-ms",
            "--on-exit",
            "--remove-taint",
            "--node-name",
            "--taint",
            "--kubectl",
        ],
        _ => &[],
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let Some(cmd) = args.first() else {
        return Err(msg("no command given"));
    };
    match cmd.as_str() {
        "-h" | "--help" | "help" => return Ok(Command::Help),
        "-V" | "--version" => return Ok(Command::Version),
        "install" | "uninstall" | "watch" | "status" | "probe" => {}
        other => return Err(msg(format!("unknown command {other:?}"))),
    }
    let mut raw = Raw::default();
    let mut it = args[1..].iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if !allowed(cmd).contains(&name) {
            return Err(msg(format!("{cmd}: unknown option {name:?}")));
        }
        let is_flag = matches!(name, "--keep-plugin" | "--remove-taint");
        let value = if is_flag {
            if inline.is_some() {
                return Err(msg(format!("{name} takes no value")));
            }
            String::new()
        } else {
            match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| msg(format!("{name} needs a value")))?,
            }
        };
        match name {
            "--cni-bin-dir" => raw.bin_dir = Some(value.into()),
            "--cni-conf-dir" => raw.conf_dir = Some(value.into()),
            "--backup-dir" => raw.backup_dir = Some(value.into()),
            "--plugin" => raw.plugin = Some(value.into()),
            "--config" => raw.config = Some(value),
            "--keep-plugin" => raw.keep_plugin = true,
            "--ready-file" => raw.ready_file = Some(value.into()),
            "--heartbeat-file" => raw.heartbeat_file = Some(value.into()),
            "--max-age-ms" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| msg(format!("--max-age-ms: not a number: {value:?}")))?;
                raw.max_age_ms = Some(n);
            }
            "--interval-ms" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| msg(format!("--interval-ms: not a number: {value:?}")))?;
                if !(50..=60_000).contains(&n) {
                    return Err(msg("--interval-ms must be between 50 and 60000"));
                }
                raw.interval_ms = Some(n);
            }
            "--on-exit" => {
                raw.on_exit = Some(match value.as_str() {
                    "uninstall" => OnExit::Uninstall,
                    "keep" => OnExit::Keep,
                    _ => {
                        return Err(msg(format!(
                            "--on-exit: expected uninstall or keep, got {value:?}"
                        )))
                    }
                })
            }
            "--remove-taint" => raw.remove_taint = true,
            "--node-name" => raw.node_name = Some(value),
            "--taint" => raw.taint = Some(value),
            "--kubectl" => raw.kubectl = Some(value.into()),
            _ => return Err(msg(format!("unknown option {name:?}"))),
        }
    }
    Ok(match cmd.as_str() {
        "install" => Command::Install {
            layout: raw.layout(),
            plugin: raw.plugin()?,
            entry: raw.entry()?,
        },
        "uninstall" => Command::Uninstall {
            layout: raw.layout(),
            keep_plugin: raw.keep_plugin,
        },
        "status" => Command::Status {
            layout: raw.layout(),
        },
        "probe" => {
            if raw.ready_file.is_none() && raw.heartbeat_file.is_none() {
                return Err(msg("probe: give --ready-file and/or --heartbeat-file"));
            }
            if raw.max_age_ms.is_some() && raw.heartbeat_file.is_none() {
                return Err(msg("probe: --max-age-ms needs --heartbeat-file"));
            }
            Command::Probe {
                ready_file: raw.ready_file.clone(),
                heartbeat: raw
                    .heartbeat_file
                    .clone()
                    .map(|f| (f, Duration::from_millis(raw.max_age_ms.unwrap_or(10_000)))),
            }
        }
        _ => {
            let taint = if raw.remove_taint {
                let node = match raw.node_name.clone() {
                    Some(n) => n,
                    None => std::env::var("NODE_NAME")
                        .map_err(|_| msg("--remove-taint needs --node-name or $NODE_NAME"))?,
                };
                if !taint::valid_node_name(&node) {
                    return Err(msg(format!("--node-name: not a valid node name: {node:?}")));
                }
                Some(TaintRemoval {
                    kubectl: Kubectl {
                        program: raw.kubectl.clone().unwrap_or_else(|| "kubectl".into()),
                        timeout: Duration::from_secs(15),
                    },
                    node,
                    taint: Taint::parse(raw.taint.as_deref().unwrap_or(taint::DEFAULT_TAINT))?,
                })
            } else {
                if raw.node_name.is_some() || raw.taint.is_some() || raw.kubectl.is_some() {
                    return Err(msg(
                        "--node-name, --taint and --kubectl only make sense with --remove-taint",
                    ));
                }
                None
            };
            Command::Watch(Box::new(WatchOptions {
                layout: raw.layout(),
                plugin_src: raw.plugin()?,
                entry: raw.entry()?,
                ready_file: raw.ready_file.clone(),
                heartbeat_file: raw.heartbeat_file.clone(),
                interval: Duration::from_millis(raw.interval_ms.unwrap_or(500)),
                on_exit: raw.on_exit.unwrap_or(OnExit::Uninstall),
                keep_plugin: raw.keep_plugin,
                taint,
            }))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn install_options() {
        let c = parse(&args(
            "install --cni-bin-dir /b --cni-conf-dir=/c --plugin /p/metaguard --config {}",
        ))
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
    fn watch_options() {
        let c = parse(&args(
            "watch --ready-file /tmp/r --interval-ms 100 --on-exit keep --remove-taint --node-name node-1 --kubectl /k",
        ))
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
    fn refuses_bad_usage() {
        for a in [
            "",
            "frobnicate",
            "install --ready-file /x",
            "install --cni-bin-dir",
            "uninstall --keep-plugin=yes",
            "watch --interval-ms 0",
            "watch --on-exit maybe",
            "watch --node-name n",
            "watch --remove-taint --node-name -bad",
            "probe",
            "probe --max-age-ms 5 --ready-file /r",
            "install --config [1]",
        ] {
            assert!(parse(&args(a)).is_err(), "{a}");
        }
        assert!(matches!(
            parse(&args("status --help")).unwrap(),
            Command::Help
        ));
    }
}
