//! metaguard CNI plugin library. `main.rs` is a thin wrapper around [`run`].
//!
//! One process handles one CNI command: read the environment and stdin, do the command, print a
//! result or a CNI error on stdout, exit 0 or 1. Logs go to stderr (and `logFile`).

pub mod cni;
pub mod commands;
pub mod config;
pub mod firewall;
pub mod hostif;
pub mod log;
pub mod netns;
pub mod nft;
pub mod podlink;
pub mod rules;

use cni::error::CniError;
use cni::{CniVersion, Command, Env};
use config::Config;
use firewall::nftables::NfTables;
use hostif::KernelProbe;
use metaguard_common::state::{StateDir, StateError};
use std::io::Read;

/// What the process prints on stdout and its exit status.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub stdout: Option<serde_json::Value>,
    pub exit_code: i32,
}

/// Runs one CNI command from the process environment and stdin, prints the outcome and returns
/// the exit status.
pub fn run() -> i32 {
    log::init();
    let mut input = Vec::new();
    let input = std::io::stdin().read_to_end(&mut input).map(|_| input);
    let outcome = run_with(Env::from_process(), input);
    if let Some(out) = &outcome.stdout {
        // serde_json cannot fail on a Value; if stdout is closed there is no one to tell.
        let text = serde_json::to_string_pretty(out).unwrap_or_default();
        println!("{text}");
    }
    outcome.exit_code
}

/// The whole command, minus process I/O: usable from tests.
pub fn run_with(env: Result<Env, CniError>, input: std::io::Result<Vec<u8>>) -> Outcome {
    let input = match input {
        Ok(i) => i,
        Err(e) => return failure(CniError::io("failed to read stdin", e.to_string()), None),
    };
    // stdin is decoded once, here: the version for errors and VERSION, and the configuration,
    // both come from this object.
    let obj = config::decode(&input);
    // Errors carry the input's cniVersion when it is one we speak, else the newest we speak.
    let version = obj.as_ref().ok().and_then(config::declared_version);
    let err_version = version.as_deref().and_then(CniVersion::parse);
    let env = match env {
        Ok(e) => e,
        Err(e) => return failure(e, err_version),
    };
    if env.command.is_attachment() {
        log::set_context(format!(
            "{} {}:{}",
            env.command.as_str(),
            env.container_id(),
            env.ifname()
        ));
    } else {
        log::set_context(env.command.as_str().to_string());
    }
    match dispatch(&env, obj, version.as_deref()) {
        Ok(stdout) => Outcome {
            stdout,
            exit_code: 0,
        },
        Err(e) => failure(e, err_version),
    }
}

fn failure(e: CniError, version: Option<CniVersion>) -> Outcome {
    ::log::error!("{e}");
    let v = version.unwrap_or(cni::version::LATEST);
    Outcome {
        stdout: Some(e.to_json(v.as_str())),
        exit_code: 1,
    }
}

/// `obj` is stdin decoded (or why it could not be), `version` its declared cniVersion.
fn dispatch(
    env: &Env,
    obj: Result<serde_json::Map<String, serde_json::Value>, CniError>,
    version: Option<&str>,
) -> Result<Option<serde_json::Value>, CniError> {
    if env.command == Command::Version {
        // VERSION must answer whatever the input's version: it is how runtimes find out.
        return Ok(Some(cni::version::version_result(version)));
    }
    let cfg = Config::from_object(&obj?, env.command)?;
    log::configure(cfg.log_level, cfg.log_file.as_deref());
    let state = StateDir::new(&cfg.state_dir);
    // Before anything is changed: a state directory someone else can steer makes every write
    // there a write anywhere, and every record a possible lie. A command the configuration's
    // version does not allow gets its own version error instead (it would not run anyway).
    let v = cfg.cni_version;
    match env.command {
        Command::Add | Command::Del => check_state_dir(&state)?,
        Command::Check if v.allows_check() => check_state_dir(&state)?,
        Command::Gc if v.allows_gc_and_status() => check_state_dir(&state)?,
        // STATUS's contract is 50 for "cannot service ADD".
        Command::Status if v.allows_gc_and_status() => {
            check_state_dir(&state).map_err(|e| {
                CniError::new(
                    cni::error::code::NOT_AVAILABLE,
                    "metaguard is not ready",
                    format!("{}: {}", e.msg, e.details),
                )
            })?;
        }
        Command::Check | Command::Gc | Command::Status | Command::Version => {}
    }
    match env.command {
        Command::Add => commands::add::add(env, &cfg, &state, &KernelProbe, &NfTables).map(Some),
        Command::Del => commands::del::del(env, &cfg, &state, &NfTables).map(|()| None),
        Command::Check => {
            commands::check::check(env, &cfg, &state, &KernelProbe, &NfTables).map(|()| None)
        }
        Command::Gc => commands::gc::gc(&cfg, &state, &NfTables).map(|()| None),
        Command::Status => commands::status::status(&cfg, &state).map(|()| None),
        Command::Version => Ok(None),
    }
}

/// [`StateDir::check_secure`] as a CNI error: code 7 naming `stateDir` when the directory is
/// refused (the operator must fix it), an I/O error when it cannot even be looked at. A missing
/// directory passes (ADD creates it, DEL and GC have nothing to do there).
fn check_state_dir(state: &StateDir) -> Result<(), CniError> {
    state.check_secure().map_err(|e| match e {
        e @ StateError::Insecure { .. } => CniError::invalid_config("stateDir", e.to_string()),
        e => commands::state_error("checking", e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(cmd: Command) -> Env {
        Env {
            command: cmd,
            container_id: Some("c1".into()),
            netns: Some("/nonexistent/netns".into()),
            ifname: Some("eth0".into()),
            args: Default::default(),
            path: None,
        }
    }

    fn run_json(cmd: Command, input: serde_json::Value) -> Outcome {
        run_with(Ok(env(cmd)), Ok(serde_json::to_vec(&input).unwrap()))
    }

    #[test]
    fn version_answers_without_a_config() {
        let o = run_json(Command::Version, json!({"cniVersion": "0.3.1"}));
        assert_eq!(o.exit_code, 0);
        let out = o.stdout.unwrap();
        assert_eq!(out["cniVersion"], "0.3.1");
        assert_eq!(out["supportedVersions"].as_array().unwrap().len(), 5);
        let o = run_with(Ok(env(Command::Version)), Ok(Vec::new()));
        assert_eq!(o.stdout.unwrap()["cniVersion"], "1.1.0");
    }

    #[test]
    fn errors_use_the_input_version() {
        let o = run_json(
            Command::Add,
            json!({"cniVersion": "0.4.0", "name": "n", "bogus": 1}),
        );
        assert_eq!(o.exit_code, 1);
        let out = o.stdout.unwrap();
        assert_eq!(out["cniVersion"], "0.4.0");
        assert_eq!(out["code"], 7);
        // Unknown versions: the error is in the newest version we speak.
        let o = run_json(Command::Add, json!({"cniVersion": "9.9.9", "name": "n"}));
        let out = o.stdout.unwrap();
        assert_eq!(out["code"], 1);
        assert_eq!(out["cniVersion"], "1.1.0");
    }

    #[test]
    fn env_errors_come_out_as_json() {
        let e = CniError::invalid_env("CNI_COMMAND", "x");
        let o = run_with(Err(e), Ok(br#"{"cniVersion":"1.0.0"}"#.to_vec()));
        assert_eq!(o.exit_code, 1);
        assert_eq!(o.stdout.unwrap()["code"], 4);
        let o = run_with(Ok(env(Command::Add)), Err(std::io::Error::other("boom")));
        assert_eq!(o.stdout.unwrap()["code"], 5);
    }

    #[test]
    fn add_without_prev_result_is_code_7() {
        let o = run_json(
            Command::Add,
            json!({"cniVersion": "1.0.0", "name": "n", "type": "metaguard"}),
        );
        let out = o.stdout.unwrap();
        assert_eq!(out["code"], 7);
        assert!(out["msg"].as_str().unwrap().contains("prevResult"));
    }

    #[test]
    fn check_gc_status_need_their_versions() {
        let cfg = json!({"cniVersion": "0.3.1", "name": "n", "prevResult": {}});
        assert_eq!(run_json(Command::Check, cfg).stdout.unwrap()["code"], 1);
        let cfg = json!({"cniVersion": "1.0.0", "name": "n", "cni.dev/attachments": []});
        assert_eq!(
            run_json(Command::Gc, cfg.clone()).stdout.unwrap()["code"],
            1
        );
        assert_eq!(run_json(Command::Status, cfg).stdout.unwrap()["code"], 1);
    }
}
