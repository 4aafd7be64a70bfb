//! metaguard-proxy library.
pub mod canon;
pub mod headers;
pub mod policy;

// The daemon (request pipeline, identity, limits, logs, metrics, lifecycle).
pub mod admin;
pub mod app;
pub mod cache;
pub mod cli;
pub mod config;
pub mod decision_log;
pub mod fasthash;
pub mod front;
pub mod handler;
pub mod lifecycle;
pub mod limits;
pub mod listen;
pub mod logger;
pub mod metrics;
pub mod outcome;
pub mod policy_store;
pub mod records;
pub mod relay;
pub mod serve;
pub mod upstream;
