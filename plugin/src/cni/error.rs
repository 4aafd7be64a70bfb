//! CNI errors: what the runtime reads on stdout when a command fails.
//!
//! Codes 1-99 are the spec's; 100+ are metaguard's own (see [`code`]). `msg` is short and stable
//! (runtimes and people grep for it), `details` says exactly what was wrong and where.

use std::fmt;

/// Error codes. The spec's meaning is kept; metaguard's own start at 100.
pub mod code {
    /// Incompatible CNI version (also: CHECK before 0.4.0, GC/STATUS before 1.1.0).
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration (a key with a value we cannot honour).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid or missing environment variable (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, ...).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (stdin, state directory, log file, namespace files).
    pub const IO: u32 = 5;
    /// The input could not be decoded (not JSON, not an object).
    pub const DECODE: u32 = 6;
    /// Invalid network configuration: unknown key, bad value, missing prevResult.
    pub const INVALID_CONFIG: u32 = 7;
    /// Transient condition; the runtime may retry.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot service ADD.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available and existing containers may have limited connectivity.
    pub const NOT_AVAILABLE_DEGRADED: u32 = 51;
    /// metaguard: nf_tables refused or failed an operation (apply, delete, list).
    pub const NFTABLES: u32 = 100;
    /// metaguard: CHECK found a rule, guard or record missing or different.
    pub const CHECK_FAILED: u32 = 101;
    /// metaguard: the host-side interface named in prevResult is unusable (missing, ambiguous).
    pub const HOST_INTERFACE: u32 = 102;
    /// metaguard: ADD would take an address another attachment (another network, container or
    /// interface) holds while its network namespace still exists, or whose holder cannot be
    /// read. Nothing was changed. See `commands::claims`.
    pub const ADDRESS_IN_USE: u32 = 103;
    /// metaguard: an unexpected internal condition (a bug); never a panic.
    pub const INTERNAL: u32 = 199;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn incompatible_version(msg: &str, details: impl Into<String>) -> CniError {
        CniError::new(code::INCOMPATIBLE_VERSION, msg, details)
    }

    /// Code 4; `var` is the variable's name, which the spec wants in the message.
    pub fn invalid_env(var: &str, details: impl Into<String>) -> CniError {
        CniError::new(
            code::INVALID_ENV,
            format!("invalid environment variable {var}"),
            details,
        )
    }

    pub fn io(msg: &str, details: impl Into<String>) -> CniError {
        CniError::new(code::IO, msg, details)
    }

    pub fn decode(details: impl Into<String>) -> CniError {
        CniError::new(
            code::DECODE,
            "failed to decode network configuration",
            details,
        )
    }

    /// Code 7; `key` is the configuration key at fault (a path like `endpoints[1].proxyPort`).
    pub fn invalid_config(key: &str, details: impl Into<String>) -> CniError {
        CniError::new(
            code::INVALID_CONFIG,
            format!("invalid network configuration: {key}"),
            details,
        )
    }

    /// The error object, in the protocol version of the input.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }

    /// Several errors as one (DEL and GC keep going and report everything). The code is the first
    /// error's; every message is in `details`.
    pub fn combine(what: &str, errors: Vec<CniError>) -> Option<CniError> {
        let first = errors.first()?.clone();
        if errors.len() == 1 {
            return Some(first);
        }
        let details = errors
            .iter()
            .map(|e| format!("{}: {}", e.msg, e.details))
            .collect::<Vec<_>>()
            .join("; ");
        Some(CniError::new(
            first.code,
            format!("{what}: {} errors", errors.len()),
            details,
        ))
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {}: {}: {}", self.code, self.msg, self.details)
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let e = CniError::invalid_config("proxy.ipv4", "not an IPv4 address: \"x\"");
        let j = e.to_json("0.3.1");
        assert_eq!(j["cniVersion"], "0.3.1");
        assert_eq!(j["code"], 7);
        assert!(j["msg"].as_str().unwrap().contains("proxy.ipv4"));
        assert_eq!(j.as_object().unwrap().len(), 4);
    }

    #[test]
    fn env_errors_name_the_variable() {
        let e = CniError::invalid_env("CNI_CONTAINERID", "missing");
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_CONTAINERID"));
    }

    #[test]
    fn combine_keeps_every_message() {
        assert!(CniError::combine("DEL", vec![]).is_none());
        let one = CniError::io("a", "b");
        assert_eq!(CniError::combine("DEL", vec![one.clone()]), Some(one));
        let c = CniError::combine(
            "DEL",
            vec![
                CniError::new(code::NFTABLES, "x", "first"),
                CniError::io("y", "second"),
            ],
        )
        .unwrap();
        assert_eq!(c.code, code::NFTABLES);
        assert!(c.details.contains("first") && c.details.contains("second"));
    }
}
