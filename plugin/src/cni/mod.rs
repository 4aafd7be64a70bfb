//! The CNI protocol as metaguard speaks it: environment, versions, errors and results.
//!
//! Nothing here knows about rules or pods; `commands` puts the pieces together.

pub mod env;
pub mod error;
pub mod result;
pub mod version;

pub use env::{CniArgs, Command, Env};
pub use error::CniError;
pub use version::CniVersion;
