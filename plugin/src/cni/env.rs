//! The CNI environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`,
//! `CNI_PATH`.
//!
//! Which variables are required depends on the command (spec section 2): ADD and CHECK need the
//! container ID, the netns and the ifname; DEL needs the container ID and the ifname (the netns may
//! already be gone); GC, STATUS and VERSION need none of them. An empty variable counts as missing,
//! as in the reference implementation. Every error is code 4 and names the variable.

use super::error::CniError;
use metaguard_common::ids::{valid_cni_name, valid_ifname};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }

    /// Commands about one attachment (they need a container ID and an ifname).
    pub fn is_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// What metaguard reads from `CNI_ARGS` (`KEY=VALUE;KEY=VALUE`).
///
/// Unknown keys are tolerated whatever `IgnoreUnknown` says: runtimes pass keys meant for other
/// plugins, and refusing them would make metaguard the plugin that breaks a chain. Known keys are
/// validated (printable ASCII, at most 253 bytes: Kubernetes names and UIDs fit) because they are
/// written into the pod record and logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub ignore_unknown: bool,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub infra_container_id: Option<String>,
    /// Keys we do not use, kept for debug logging only.
    pub unknown_keys: Vec<String>,
}

const MAX_ARG_VALUE: usize = 253;

impl CniArgs {
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let bad = |d: String| CniError::invalid_env("CNI_ARGS", d);
        let mut out = CniArgs::default();
        // Empty segments (a trailing ';') carry nothing and are skipped.
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(bad(format!("{pair:?} is not KEY=VALUE")));
            };
            if key.is_empty() {
                return Err(bad(format!("{pair:?} has an empty key")));
            }
            let slot = match key {
                "IgnoreUnknown" => {
                    out.ignore_unknown = match value.to_ascii_lowercase().as_str() {
                        "1" | "true" => true,
                        "0" | "false" | "" => false,
                        _ => {
                            return Err(bad(format!(
                                "IgnoreUnknown={value:?} is not 1/0/true/false"
                            )))
                        }
                    };
                    continue;
                }
                "K8S_POD_NAMESPACE" => &mut out.pod_namespace,
                "K8S_POD_NAME" => &mut out.pod_name,
                "K8S_POD_UID" => &mut out.pod_uid,
                "K8S_POD_INFRA_CONTAINER_ID" => &mut out.infra_container_id,
                _ => {
                    out.unknown_keys.push(key.to_string());
                    continue;
                }
            };
            if slot.is_some() {
                return Err(bad(format!("{key} given twice")));
            }
            if value.len() > MAX_ARG_VALUE || !value.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(format!(
                    "{key}: value must be printable ASCII without spaces, at most {MAX_ARG_VALUE} bytes"
                )));
            }
            if !value.is_empty() {
                *slot = Some(value.to_string());
            }
        }
        Ok(out)
    }
}

/// The parsed environment, validated for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    /// Present and valid for ADD, DEL, CHECK.
    pub container_id: Option<String>,
    /// Present (absolute path) for ADD and CHECK; optional for DEL.
    pub netns: Option<String>,
    /// Present and valid for ADD, DEL, CHECK.
    pub ifname: Option<String>,
    pub args: CniArgs,
    /// Not used: metaguard delegates to no other plugin. Kept for logs.
    pub path: Option<String>,
}

impl Env {
    /// Reads the variables through `get` (the process environment in production, a map in
    /// tests). `get` returns `Err` for a variable that is set but not UTF-8.
    pub fn from_vars(get: impl Fn(&str) -> Result<Option<String>, ()>) -> Result<Env, CniError> {
        let var = |name: &str| -> Result<Option<String>, CniError> {
            match get(name) {
                Ok(Some(v)) if v.is_empty() => Ok(None),
                Ok(v) => Ok(v),
                Err(()) => Err(CniError::invalid_env(
                    name,
                    format!("{name} is not valid UTF-8"),
                )),
            }
        };
        let command = match var("CNI_COMMAND")? {
            None => return Err(CniError::invalid_env("CNI_COMMAND", "CNI_COMMAND is not set")),
            Some(c) => Command::parse(&c).ok_or_else(|| {
                CniError::invalid_env(
                    "CNI_COMMAND",
                    format!("unknown CNI_COMMAND {c:?}; expected ADD, DEL, CHECK, GC, STATUS or VERSION"),
                )
            })?,
        };
        let mut env = Env {
            command,
            container_id: None,
            netns: None,
            ifname: None,
            args: CniArgs::default(),
            path: var("CNI_PATH")?,
        };
        if !command.is_attachment() {
            // GC, STATUS and VERSION are not about one container: the attachment variables are
            // ignored, not validated.
            return Ok(env);
        }
        let cid = var("CNI_CONTAINERID")?.ok_or_else(|| {
            CniError::invalid_env("CNI_CONTAINERID", "CNI_CONTAINERID is not set")
        })?;
        if !valid_cni_name(&cid) {
            return Err(CniError::invalid_env(
                "CNI_CONTAINERID",
                format!("CNI_CONTAINERID {cid:?} must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"),
            ));
        }
        let ifname = var("CNI_IFNAME")?
            .ok_or_else(|| CniError::invalid_env("CNI_IFNAME", "CNI_IFNAME is not set"))?;
        if !valid_ifname(&ifname) {
            return Err(CniError::invalid_env(
                "CNI_IFNAME",
                format!("CNI_IFNAME {ifname:?} is not a valid interface name (1-15 bytes, no '/', ':' or spaces)"),
            ));
        }
        let netns = var("CNI_NETNS")?;
        match &netns {
            None if command != Command::Del => {
                return Err(CniError::invalid_env("CNI_NETNS", "CNI_NETNS is not set"));
            }
            Some(p) if !p.starts_with('/') => {
                return Err(CniError::invalid_env(
                    "CNI_NETNS",
                    format!("CNI_NETNS {p:?} is not an absolute path"),
                ));
            }
            _ => {}
        }
        env.container_id = Some(cid);
        env.ifname = Some(ifname);
        env.netns = netns;
        env.args = match var("CNI_ARGS")? {
            Some(a) => CniArgs::parse(&a)?,
            None => CniArgs::default(),
        };
        Ok(env)
    }

    /// From the process environment.
    pub fn from_process() -> Result<Env, CniError> {
        Env::from_vars(|name| match std::env::var(name) {
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(()),
        })
    }

    /// The container ID; only call for attachment commands (validated present by `from_vars`).
    pub fn container_id(&self) -> &str {
        self.container_id.as_deref().unwrap_or_default()
    }

    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_vars(|n| Ok(m.get(n).cloned()))
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "Abc-123_x.y"),
        ("CNI_NETNS", "/var/run/netns/p"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    fn with(
        base: &[(&'static str, &'static str)],
        k: &'static str,
        v: &'static str,
    ) -> Vec<(&'static str, &'static str)> {
        let mut out: Vec<_> = base.iter().filter(|(n, _)| *n != k).copied().collect();
        out.push((k, v));
        out
    }

    fn without(
        base: &[(&'static str, &'static str)],
        k: &str,
    ) -> Vec<(&'static str, &'static str)> {
        base.iter().filter(|(n, _)| *n != k).copied().collect()
    }

    #[test]
    fn add_env_parses() {
        let e = env(ADD).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.container_id(), "Abc-123_x.y");
        assert_eq!(e.ifname(), "eth0");
        assert_eq!(e.netns.as_deref(), Some("/var/run/netns/p"));
        assert_eq!(e.args, CniArgs::default());
    }

    #[test]
    fn missing_or_bad_variables_are_code_4_and_named() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (without(ADD, "CNI_COMMAND"), "CNI_COMMAND"),
            (with(ADD, "CNI_COMMAND", "add"), "CNI_COMMAND"),
            (with(ADD, "CNI_COMMAND", "FROB"), "CNI_COMMAND"),
            (without(ADD, "CNI_CONTAINERID"), "CNI_CONTAINERID"),
            (with(ADD, "CNI_CONTAINERID", ""), "CNI_CONTAINERID"),
            (with(ADD, "CNI_CONTAINERID", "../etc"), "CNI_CONTAINERID"),
            (with(ADD, "CNI_CONTAINERID", "a:b"), "CNI_CONTAINERID"),
            (with(ADD, "CNI_CONTAINERID", "-a"), "CNI_CONTAINERID"),
            (without(ADD, "CNI_IFNAME"), "CNI_IFNAME"),
            (with(ADD, "CNI_IFNAME", "a/b"), "CNI_IFNAME"),
            (with(ADD, "CNI_IFNAME", "0123456789abcdef"), "CNI_IFNAME"),
            (without(ADD, "CNI_NETNS"), "CNI_NETNS"),
            (with(ADD, "CNI_NETNS", "relative/path"), "CNI_NETNS"),
            (with(ADD, "CNI_ARGS", "novalue"), "CNI_ARGS"),
        ];
        for (vars, name) in cases {
            let e = env(&vars).unwrap_err();
            assert_eq!(e.code, 4, "{vars:?}");
            assert!(e.msg.contains(name), "{vars:?}: {e}");
        }
    }

    #[test]
    fn del_needs_no_netns_and_check_does() {
        let del = with(&without(ADD, "CNI_NETNS"), "CNI_COMMAND", "DEL");
        let e = env(&del).unwrap();
        assert_eq!(e.command, Command::Del);
        assert_eq!(e.netns, None);
        let check = with(&without(ADD, "CNI_NETNS"), "CNI_COMMAND", "CHECK");
        assert_eq!(env(&check).unwrap_err().code, 4);
    }

    #[test]
    fn non_attachment_commands_ignore_attachment_vars() {
        for c in ["GC", "STATUS", "VERSION"] {
            let e = env(&[("CNI_COMMAND", c), ("CNI_CONTAINERID", "../bad")]).unwrap();
            assert_eq!(e.container_id, None);
            assert!(!e.command.is_attachment());
        }
    }

    #[test]
    fn non_utf8_is_code_4() {
        let e = Env::from_vars(|n| {
            if n == "CNI_COMMAND" {
                Err(())
            } else {
                Ok(None)
            }
        })
        .unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_COMMAND"));
    }

    #[test]
    fn kubernetes_args() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=0b6e4a2c-1d1f-4d7e-9c1e-2f7f0f0f0f0f;FOO=bar;",
        )
        .unwrap();
        assert!(a.ignore_unknown);
        assert_eq!(a.pod_namespace.as_deref(), Some("default"));
        assert_eq!(a.pod_name.as_deref(), Some("web-0"));
        assert_eq!(
            a.pod_uid.as_deref(),
            Some("0b6e4a2c-1d1f-4d7e-9c1e-2f7f0f0f0f0f")
        );
        assert_eq!(a.infra_container_id.as_deref(), Some("abc123"));
        assert_eq!(a.unknown_keys, vec!["FOO".to_string()]);
    }

    #[test]
    fn unknown_args_are_tolerated_without_ignore_unknown() {
        let a = CniArgs::parse("FOO=1;BAR=2").unwrap();
        assert!(!a.ignore_unknown);
        assert_eq!(a.unknown_keys.len(), 2);
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        // Empty values mean "not given".
        assert_eq!(CniArgs::parse("K8S_POD_NAME=").unwrap().pod_name, None);
        // A value may contain '=' (split at the first one).
        assert_eq!(
            CniArgs::parse("X=a=b").unwrap().unknown_keys,
            vec!["X".to_string()]
        );
    }

    #[test]
    fn bad_args_are_refused() {
        for bad in [
            "K8S_POD_NAME",
            "=x",
            "K8S_POD_NAME=a b",
            "K8S_POD_NAME=a\nb",
            "K8S_POD_NAME=a;K8S_POD_NAME=b",
            "IgnoreUnknown=maybe",
        ] {
            let e = CniArgs::parse(bad).unwrap_err();
            assert_eq!(e.code, 4, "{bad:?}");
            assert!(e.msg.contains("CNI_ARGS"));
        }
        let long = format!("K8S_POD_NAME={}", "a".repeat(254));
        assert!(CniArgs::parse(&long).is_err());
    }
}
