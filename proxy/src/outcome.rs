//! The decision recorded for each request: a small closed set, used as a log field and a metric
//! label (so its cardinality is fixed).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Forwarded upstream by a rule.
    Allow,
    /// Answered locally by a deny rule or the default deny.
    Deny,
    /// Answered locally with a fixed response.
    Respond,
    /// Forwarded upstream by a rule (or policy) in audit mode.
    Audit,
    /// Refused before policy: ambiguous target, bad framing, forwarding headers, unparsable.
    Invalid,
    /// No pod record for the source address.
    UnknownCaller,
    /// Something on our side failed: unreadable record, upstream failure.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Allow,
        Outcome::Deny,
        Outcome::Respond,
        Outcome::Audit,
        Outcome::Invalid,
        Outcome::UnknownCaller,
        Outcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Respond => "respond",
            Outcome::Audit => "audit",
            Outcome::Invalid => "invalid",
            Outcome::UnknownCaller => "unknown-caller",
            Outcome::Error => "error",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_all() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
    }
}
