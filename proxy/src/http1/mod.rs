//! HTTP/1.1 as the proxy speaks it, on both sides: the pod-facing server's request heads, request
//! rules and answers, and the upstream client with its response parsing and header relay. Nothing
//! here knows about pods, policies or logs (after hyper's `proto/h1`: one codec, client and server
//! sharing it).
//!
//! - server side: [`request`] (parsing a head), [`rules`] (framing and header rules, hop-by-hop
//!   headers, what is forwarded), [`answer`] (encoding an answer, connection persistence),
//!   [`io`] (writing it, closing without a reset);
//! - client side: [`client`] (targets, the per-worker pool, one exchange under a timeout),
//!   `response` (reading a response), [`relay`] (an answer's headers as the pod gets them);
//! - [`fmt`]: numbers and dates, for the wire and the logs;
//! - [`reference`] (tests and the `reference` feature only): header-map versions of the rules.

pub mod answer;
pub mod client;
pub mod fmt;
pub mod io;
#[cfg(any(test, feature = "reference"))]
pub mod reference;
pub mod relay;
pub mod request;
mod response;
pub mod rules;

pub use answer::{encode, persistence, Answer, Persist};
pub use request::{parse, HeadError, HeadLimits, ParsedHead, MAX_HEADERS_CAP};
