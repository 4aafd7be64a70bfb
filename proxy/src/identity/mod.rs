//! Each pod its own AWS identity (docs/identity.md): IMDSv2 tokens bound to the pod, and role
//! credentials from `sts:AssumeRole` vended per pod, prefetched when its record appears.
//!
//! | module | what |
//! |---|---|
//! | [`token`] | pod-bound IMDSv2 tokens: minted and checked with an HMAC under an in-memory key |
//! | [`node`] | the node's own IMDSv2 token, credentials and region, read from the metadata service |
//! | [`sts`] | one `AssumeRole` call: the form, its SigV4 signature, the answer parsed |
//! | [`creds`] | the per-identity credential cache: prefetch, one call per identity, refresh, wait |
//!
//! The pipeline (`pipeline::imds`) answers pods from here; nothing here answers a pod itself.

pub mod creds;
pub mod node;
pub mod prefetch;
pub mod role;
pub mod service;
pub mod sts;
pub mod token;

use std::time::SystemTime;

/// Credentials with a secret part: what the node holds and what STS returns.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Absent for long-term keys (an IAM user's).
    pub session_token: Option<String>,
    /// `None` for long-term keys.
    pub expiration: Option<SystemTime>,
}

impl std::fmt::Debug for Credentials {
    /// Never prints the secret or the token (logs and panics would leak them).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// What one successful AssumeRole gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleCredentials {
    pub credentials: Credentials,
    /// `AssumedRoleUser.Arn`: `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub assumed_role_arn: String,
}

/// What the pipeline needs to answer the AWS endpoints per pod (`[aws]` enabled).
pub struct AwsIdentity {
    /// Indexed like the configuration's endpoints: whether each is EC2's metadata service.
    pub endpoints: Vec<bool>,
    pub tokens: token::TokenKeys,
    pub creds: std::sync::Arc<creds::CredStore>,
    /// The node's own token, put on forwarded requests instead of the pod's.
    pub node: std::sync::Arc<node::NodeSource>,
    /// Notify after a policy reload: the prefetch reads every record again (roles may change).
    pub rescan: std::sync::Arc<tokio::sync::Notify>,
}

impl AwsIdentity {
    /// Whether requests to endpoint `i` get per-pod IMDSv2 and role answers.
    pub fn serves(&self, i: usize) -> bool {
        self.endpoints.get(i).copied().unwrap_or(false)
    }
}
