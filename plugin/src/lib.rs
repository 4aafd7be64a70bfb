//! metaguard CNI plugin library. `main.rs` is a thin wrapper around [`run`].

pub mod netns;
pub mod nft;
pub mod rules;
