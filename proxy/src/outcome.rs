//! The closed sets requests and connections are recorded with: the decision, what the answer
//! cache did, why an upstream exchange failed, why a connection was refused. Each is a log field
//! or a metric label (so its cardinality is fixed), and a value the layers below observability
//! (the HTTP/1 client, the connection caps) can produce without depending on it.

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
    /// An allowed long poll refused because its pod (or every pod together) already holds as many
    /// as the long-poll caps allow (`crate::longpoll`).
    LongPollLimited,
    /// Refused with 429: the pod address is over its policy's rate limit (`ratelimit`).
    RateLimited,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Allow,
        Outcome::Deny,
        Outcome::Respond,
        Outcome::Audit,
        Outcome::Invalid,
        Outcome::UnknownCaller,
        Outcome::Error,
        Outcome::LongPollLimited,
        Outcome::RateLimited,
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
            Outcome::LongPollLimited => "long-poll-limited",
            Outcome::RateLimited => "rate-limited",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What the cache did for a request (decision log field `cache`, metric label `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Answered from the cache; upstream was not contacted.
    Hit,
    /// The rule caches, but nothing usable was stored: forwarded (and stored if it is a 200).
    Miss,
    /// Not cacheable: no `cache_ttl_ms` on the rule, not a GET, caching disabled, or not an allow.
    Off,
}

impl CacheUse {
    pub const ALL: [CacheUse; 3] = [CacheUse::Hit, CacheUse::Miss, CacheUse::Off];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::Off => "off",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why an upstream exchange failed (label `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    Connect,
    Timeout,
    Oversize,
    Reset,
}

impl UpstreamFailure {
    pub const ALL: [UpstreamFailure; 4] = [
        UpstreamFailure::Connect,
        UpstreamFailure::Timeout,
        UpstreamFailure::Oversize,
        UpstreamFailure::Reset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Oversize => "oversize",
            UpstreamFailure::Reset => "reset",
        }
    }
}

/// Why a connection was refused at accept (label `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    Total,
    PerSource,
}

impl ConnRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnRefusal::Total => "total",
            ConnRefusal::PerSource => "per_source",
        }
    }
}

/// Which long-poll cap refused a long poll (label `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongPollRefusal {
    Total,
    PerSource,
}

impl LongPollRefusal {
    pub const ALL: [LongPollRefusal; 2] = [LongPollRefusal::Total, LongPollRefusal::PerSource];

    pub fn as_str(self) -> &'static str {
        match self {
            LongPollRefusal::Total => "total",
            LongPollRefusal::PerSource => "per_source",
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
        for (i, c) in CacheUse::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        for (i, r) in LongPollRefusal::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
