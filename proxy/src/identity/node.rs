//! The node's own IMDSv2 token, credentials and region (placeholder until the STS branch lands).

use std::sync::Arc;

pub struct NodeSource;

impl NodeSource {
    pub fn current_token(&self) -> Option<Arc<str>> {
        None
    }
}
