//! metaguard-proxy: the host daemon that answers pods' instance-metadata requests under each pod's
//! policy (docs/proxy.md).
//!
//! # Layers
//!
//! Each layer imports only from the layers below it (`scripts/check-import-cycles.py` checks that
//! no module imports another in a circle). From the top:
//!
//! | layer | modules | what |
//! |---|---|---|
//! | command line | [`cli`] | flags over the file; check a policy, or run the daemon |
//! | lifecycle | [`lifecycle`] | start-up, worker threads, signals, reload, shutdown |
//! | admin | [`admin`] | the admin listener: `/metrics`, `/healthz`, `/readyz` |
//! | serving | [`server`] | listening sockets, connection caps, dispatch to workers, the connection loop |
//! | pipeline | [`pipeline`] | one request: canonicalise, check, identify, select, decide, answer, record; a worker's state ([`pipeline::worker`]), the answer cache |
//! | shared state | [`app`] | what every worker shares: policy store, records, decision log, metrics, targets, long polls, rate limits |
//! | rate limits | [`ratelimit`] | one token bucket per pod address, shared by the workers |
//! | identity | [`records`] | source address -> pod record -> identity, AWS role and selected policy, cached; the state directory watched so a change counts at once |
//! | AWS identity | [`identity`] | per-pod IMDSv2 tokens, the pod's role and session, the credential cache and its prefetch, the node's own token and credentials, STS; its own thread (`[aws]`) |
//! | observability | [`decision_log`], [`metrics`], [`logger`] | decision lines, counters, the stderr log |
//! | policy | [`policy`] | compiled policies, selection, decisions; the set in force ([`policy::store`]) |
//! | HTTP/1 | [`http1`] | request heads and rules, answers, the upstream client and relay, numbers and dates |
//! | long polls | [`longpoll`] | which requests wait for a change, their upstream deadline, the caps on how many hang |
//! | base | [`config`], [`canon`], [`outcome`] | the configuration file; the canonical request target; the closed sets requests are recorded with |
//!
//! # One request's path
//!
//! 1. [`server::dispatch::accept_loop`] accepts a pod's connection (within [`server::limits`]) and
//!    hands it to the worker with the fewest connections; [`server::dispatch::run_worker`] lends it
//!    that worker's state ([`pipeline::worker::Worker`]: upstream pools, answer cache, counter
//!    shard). The connection never leaves that thread.
//! 2. [`server::conn::serve_connection`] reads a head with [`http1::request::parse`].
//! 3. [`pipeline::handle`]: [`canon::canonicalize_str`], [`http1::rules::check_request_headers`],
//!    [`records::RecordCache::lookup_at`] (who is calling, and the policy their record selects under
//!    the snapshot from [`policy::store::PolicyStore::current`]), the pod's token
//!    ([`ratelimit::RateLimiter::check`]; over its limit: 429); on the AWS endpoints with `[aws]`,
//!    the pod's IMDSv2 token and its own `iam/` tree ([`pipeline::imds`]);
//!    [`policy::Policy::decide`]; then a local answer ([`pipeline::local`]), a cached one
//!    ([`pipeline::cache`]), or one forwarded by [`http1::client::Upstream::send_encoded`] and
//!    relayed ([`http1::relay`]) (a long poll takes a slot and its own deadline from [`longpoll`]
//!    first, and skips the cache); last, the decision line ([`decision_log`]) and the counters
//!    ([`metrics`]), written in one place.
//! 4. [`http1::answer::encode`] writes the [`http1::Answer`] (local or relayed) with one `write`;
//!    the connection stays open or closes ([`http1::answer::persistence`]).

pub mod admin;
pub mod app;
pub mod canon;
pub mod cli;
pub mod config;
pub mod decision_log;
pub mod http1;
pub mod identity;
pub mod lifecycle;
pub mod logger;
pub mod longpoll;
pub mod metrics;
pub mod outcome;
pub mod pipeline;
pub mod policy;
pub mod ratelimit;
pub mod records;
pub mod server;
#[cfg(test)]
mod testing;
