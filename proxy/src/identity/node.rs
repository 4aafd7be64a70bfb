//! The node's own IMDSv2 token, credentials and region (to be written: see docs/identity.md).
