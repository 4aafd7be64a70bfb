//! Test harness shared by the integration and end-to-end tests (all run as root).
//!
//! Every namespace, process and file a test makes is owned by a guard whose `Drop` removes it, so
//! a failing assertion still cleans up.

pub mod bins;
pub mod cni;
pub mod corpus;
#[cfg(feature = "cri")]
pub mod cri;
pub mod fake;
pub mod moto;
pub mod netns;
pub mod observer;
pub mod packets;
pub mod proxy;
pub mod raw;
pub mod verdict;
