//! Types shared by the `metaguard` CNI plugin and `metaguard-proxy`.
//!
//! The plugin writes one [`record::PodRecord`] per attachment into a state directory; the proxy reads
//! them to learn which pod owns a source address. Both sides agree on the metadata endpoints and the
//! proxy port that stands for each one ([`endpoints`]), so the proxy can tell which endpoint a pod
//! addressed from the port the connection arrived on, without trusting the Host header.

pub mod endpoints;
pub mod ids;
pub mod record;
pub mod state;
