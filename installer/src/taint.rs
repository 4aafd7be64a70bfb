//! Removing the node's "metaguard not ready" taint once metaguard is in the chain.
//!
//! New nodes are registered with the taint `metaguard.io/not-ready:NoSchedule` (kubelet
//! `--register-with-taints`, or the node pool's taints); pods that do not tolerate it are not
//! scheduled there until the installer, having put metaguard in the chain, removes it. This is the
//! pattern of Cilium's `node.cilium.io/agent-not-ready` taint.
//!
//! The Kubernetes API is reached by running `kubectl` (present in the image): it finds the
//! in-cluster service account token and CA under /var/run/secrets/kubernetes.io/serviceaccount by
//! itself, and it keeps an HTTPS client and its TLS stack out of this workspace. The change is a
//! JSON patch whose first operation tests that the node's taints are still those we read, so a
//! concurrent change to the taints makes the patch fail (and be retried) instead of being undone.

use serde_json::{json, Value};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const DEFAULT_TAINT: &str = "metaguard.io/not-ready:NoSchedule";

#[derive(Debug, thiserror::Error)]
pub enum TaintError {
    #[error("bad taint {0:?}: expected KEY[=VALUE]:EFFECT with EFFECT NoSchedule, PreferNoSchedule or NoExecute")]
    BadTaint(String),
    #[error("bad node name {0:?}")]
    BadNode(String),
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("`kubectl {args}` failed ({status}): {stderr}")]
    Kubectl {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("`kubectl {args}` did not finish within {secs} s; killed")]
    Timeout { args: String, secs: u64 },
    #[error("unexpected node object from kubectl: {0}")]
    BadObject(String),
}

/// A taint, matched on key and effect (as `kubectl taint node NAME KEY:EFFECT-` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub effect: String,
}

impl Taint {
    pub fn parse(s: &str) -> Result<Taint, TaintError> {
        let bad = || TaintError::BadTaint(s.to_string());
        let (kv, effect) = s.rsplit_once(':').ok_or_else(bad)?;
        let key = kv.split_once('=').map_or(kv, |(k, _)| k);
        if key.is_empty() || !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(bad());
        }
        Ok(Taint {
            key: key.to_string(),
            effect: effect.to_string(),
        })
    }

    fn matches(&self, t: &Value) -> bool {
        t.get("key").and_then(Value::as_str) == Some(self.key.as_str())
            && t.get("effect").and_then(Value::as_str) == Some(self.effect.as_str())
    }
}

/// Node names are DNS subdomains; refusing anything else also keeps them from being read as
/// kubectl options.
pub fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// The JSON patch that removes `taint` from `node`, or `None` when the node does not carry it.
pub fn removal_patch(node: &Value, taint: &Taint) -> Result<Option<Value>, TaintError> {
    let taints = match node.pointer("/spec/taints") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(TaintError::BadObject("spec.taints is not a list".into())),
    };
    let keep: Vec<Value> = taints
        .iter()
        .filter(|t| !taint.matches(t))
        .cloned()
        .collect();
    if keep.len() == taints.len() {
        return Ok(None);
    }
    let test = json!({"op": "test", "path": "/spec/taints", "value": taints});
    let change = if keep.is_empty() {
        json!({"op": "remove", "path": "/spec/taints"})
    } else {
        json!({"op": "replace", "path": "/spec/taints", "value": keep})
    };
    Ok(Some(json!([test, change])))
}

/// Result of one removal attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaintOutcome {
    Removed,
    /// The node did not carry the taint.
    Absent,
}

/// Runs kubectl for one node.
#[derive(Debug, Clone)]
pub struct Kubectl {
    pub program: PathBuf,
    /// Deadline for one kubectl run (it also gets `--request-timeout` a little shorter).
    pub timeout: Duration,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Result<Vec<u8>, TaintError> {
        let shown = args.join(" ");
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.push(format!(
            "--request-timeout={}s",
            self.timeout.as_secs().saturating_sub(1).max(1)
        ));
        let mut child = Command::new(&self.program)
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| TaintError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        // Read both pipes on threads so a chatty kubectl cannot block on a full pipe.
        let mut so = child.stdout.take();
        let mut se = child.stderr.take();
        let out_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(s) = so.as_mut() {
                let _ = s.read_to_end(&mut v);
            }
            v
        });
        let err_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(s) = se.as_mut() {
                let _ = s.read_to_end(&mut v);
            }
            v
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(TaintError::Timeout {
                        args: shown,
                        secs: self.timeout.as_secs(),
                    });
                }
                Err(source) => {
                    return Err(TaintError::Spawn {
                        program: self.program.display().to_string(),
                        source,
                    })
                }
            }
        };
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        if !status.success() {
            return Err(TaintError::Kubectl {
                args: shown,
                status: status.to_string(),
                stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            });
        }
        Ok(stdout)
    }

    /// Removes `taint` from node `node` if it carries it.
    pub fn remove_taint(&self, node: &str, taint: &Taint) -> Result<TaintOutcome, TaintError> {
        if !valid_node_name(node) {
            return Err(TaintError::BadNode(node.to_string()));
        }
        let out = self.run(&["get", "node", node, "-o", "json"])?;
        let obj: Value =
            serde_json::from_slice(&out).map_err(|e| TaintError::BadObject(e.to_string()))?;
        let Some(patch) = removal_patch(&obj, taint)? else {
            return Ok(TaintOutcome::Absent);
        };
        let patch = patch.to_string();
        self.run(&["patch", "node", node, "--type=json", "-p", &patch])?;
        Ok(TaintOutcome::Removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_taints() {
        assert_eq!(
            Taint::parse(DEFAULT_TAINT).unwrap(),
            Taint {
                key: "metaguard.io/not-ready".into(),
                effect: "NoSchedule".into()
            }
        );
        assert_eq!(Taint::parse("k=v:NoExecute").unwrap().key, "k");
        assert!(Taint::parse("k").is_err());
        assert!(Taint::parse("k:Sometimes").is_err());
        assert!(Taint::parse(":NoSchedule").is_err());
    }

    #[test]
    fn node_names() {
        assert!(valid_node_name("ip-10-0-0-1.eu-west-1.compute.internal"));
        assert!(!valid_node_name("--kubeconfig=/x"));
        assert!(!valid_node_name("Node"));
        assert!(!valid_node_name(""));
    }

    #[test]
    fn patch_tests_then_replaces() {
        let t = Taint::parse(DEFAULT_TAINT).unwrap();
        let node = json!({"spec": {"taints": [
            {"key": "metaguard.io/not-ready", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute", "timeAdded": "2024-01-01T00:00:00Z"}
        ]}});
        let p = removal_patch(&node, &t).unwrap().unwrap();
        assert_eq!(p[0]["op"], "test");
        assert_eq!(p[0]["value"], node["spec"]["taints"]);
        assert_eq!(
            p[1],
            json!({"op": "replace", "path": "/spec/taints", "value": [node["spec"]["taints"][1]]})
        );
    }

    #[test]
    fn patch_removes_the_list_when_ours_was_the_only_taint() {
        let t = Taint::parse(DEFAULT_TAINT).unwrap();
        let node = json!({"spec": {"taints": [{"key": "metaguard.io/not-ready", "effect": "NoSchedule"}]}});
        let p = removal_patch(&node, &t).unwrap().unwrap();
        assert_eq!(p[1], json!({"op": "remove", "path": "/spec/taints"}));
    }

    #[test]
    fn nothing_to_do_without_the_taint() {
        let t = Taint::parse(DEFAULT_TAINT).unwrap();
        assert_eq!(removal_patch(&json!({"spec": {}}), &t).unwrap(), None);
        let other =
            json!({"spec": {"taints": [{"key": "metaguard.io/not-ready", "effect": "NoExecute"}]}});
        assert_eq!(removal_patch(&other, &t).unwrap(), None);
        assert!(removal_patch(&json!({"spec": {"taints": 3}}), &t).is_err());
    }
}
