//! Version negotiation: which spec versions metaguard speaks and what each one allows.
//!
//! Results differ between the versions we support only in `ips[].version` (present up to 0.4.0,
//! gone from 1.0.0). CHECK exists from 0.4.0, GC and STATUS from 1.1.0; asking for them with an
//! older `cniVersion` is an incompatible-version error, as in the reference Go `skel`.

use super::error::CniError;
use std::fmt;

/// A spec version metaguard supports. Ordered oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// Every version we answer to, in the order VERSION lists them.
pub const SUPPORTED: &[CniVersion] = &[
    CniVersion::V0_3_0,
    CniVersion::V0_3_1,
    CniVersion::V0_4_0,
    CniVersion::V1_0_0,
    CniVersion::V1_1_0,
];

/// The newest version we speak; used for errors when the input names none we know.
pub const LATEST: CniVersion = CniVersion::V1_1_0;

impl CniVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Exact match against the supported list. Anything else (including "0.2.0", "1.2.0" or
    /// "1.0") is refused: guessing compatibility is how results get misread.
    pub fn parse(s: &str) -> Option<CniVersion> {
        SUPPORTED.iter().copied().find(|v| v.as_str() == s)
    }

    /// Like [`CniVersion::parse`], as a CNI error (code 1) naming what we support.
    pub fn negotiate(s: &str) -> Result<CniVersion, CniError> {
        CniVersion::parse(s).ok_or_else(|| {
            CniError::incompatible_version(
                "incompatible CNI version",
                format!(
                    "cniVersion {s:?} is not supported; supported: {}",
                    supported_list()
                ),
            )
        })
    }

    /// Whether `ips[]` entries carry `"version": "4"|"6"` (0.3.x and 0.4.0).
    pub fn ips_have_version(self) -> bool {
        self < CniVersion::V1_0_0
    }

    pub fn allows_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    pub fn allows_gc_and_status(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The VERSION answer: `cniVersion` is echoed from the input as the spec asks (the newest we
/// speak when the input names none).
pub fn version_result(input_version: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": input_version.unwrap_or(LATEST.as_str()),
        "supportedVersions": SUPPORTED.iter().map(|v| v.as_str()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_the_supported_versions() {
        for v in SUPPORTED {
            assert_eq!(CniVersion::parse(v.as_str()), Some(*v));
        }
        for bad in [
            "", "0.1.0", "0.2.0", "1.0", "1.2.0", "v1.0.0", " 1.0.0", "1.0.0 ",
        ] {
            assert_eq!(CniVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn negotiate_refuses_with_code_1() {
        let e = CniVersion::negotiate("0.2.0").unwrap_err();
        assert_eq!(e.code, 1);
        assert!(
            e.details.contains("0.2.0") && e.details.contains("1.1.0"),
            "{}",
            e.details
        );
    }

    #[test]
    fn features_by_version() {
        assert!(CniVersion::V0_4_0.ips_have_version());
        assert!(!CniVersion::V1_0_0.ips_have_version());
        assert!(!CniVersion::V0_3_1.allows_check());
        assert!(CniVersion::V0_4_0.allows_check());
        assert!(!CniVersion::V1_0_0.allows_gc_and_status());
        assert!(CniVersion::V1_1_0.allows_gc_and_status());
    }

    #[test]
    fn version_answer_lists_everything() {
        let v = version_result(Some("0.4.0"));
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["supportedVersions"],
            serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        assert_eq!(version_result(None)["cniVersion"], "1.1.0");
    }
}
