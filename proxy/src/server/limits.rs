//! Connection caps: in total, and per source address so one pod cannot starve the others.
//!
//! A slowloris pod opening many connections and sending nothing is held to
//! `max_connections_per_source` of them, and each is closed by the header-read timeout (which
//! also restarts before every request on a kept-alive connection, so idle connections go too).
//! Other pods keep their own share of `max_connections`.
//!
//! The total cap is a semaphore; shutdown uses the same semaphore to wait for every connection
//! to finish (acquiring all permits succeeds only when none is held).

use crate::outcome::ConnRefusal;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

pub struct ConnLimits {
    total: Arc<Semaphore>,
    /// Refused connections being answered (see [`ConnLimits::refusal_slot`]).
    refusals: Arc<Semaphore>,
    max_total: u32,
    per_source_max: usize,
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

/// Held for the life of one connection; releases both caps when dropped.
pub struct ConnPermit {
    _total: OwnedSemaphorePermit,
    source: IpAddr,
    limits: Arc<ConnLimits>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.limits.release_source(self.source);
    }
}

impl ConnLimits {
    pub fn new(max_total: usize, per_source_max: usize) -> Arc<ConnLimits> {
        let max_total = u32::try_from(max_total.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        Arc::new(ConnLimits {
            total: Arc::new(Semaphore::new(max_total as usize)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_ANSWERED)),
            max_total,
            per_source_max,
            per_source: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a slot for a new connection from `source`, or says which cap is full.
    pub fn try_acquire(self: &Arc<Self>, source: IpAddr) -> Result<ConnPermit, ConnRefusal> {
        // Per-source first: a pod at its cap must not consume a total slot even briefly.
        {
            let mut map = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(source).or_insert(0);
            if *n >= self.per_source_max {
                return Err(ConnRefusal::PerSource);
            }
            *n += 1;
        }
        match self.total.clone().try_acquire_owned() {
            Ok(p) => Ok(ConnPermit {
                _total: p,
                source,
                limits: self.clone(),
            }),
            Err(TryAcquireError::NoPermits) | Err(TryAcquireError::Closed) => {
                self.release_source(source);
                Err(ConnRefusal::Total)
            }
        }
    }

    /// Gives back one per-source slot of `source` (dropping its entry at zero).
    fn release_source(&self, source: IpAddr) {
        let mut map = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                map.remove(&source);
            }
        }
    }

    /// A slot to answer one refused connection politely (write the refusal, half-close, drain
    /// what the client sent so closing does not turn into a reset that eats the answer). Bounded,
    /// so refusing never costs more than [`MAX_REFUSALS_ANSWERED`] sockets; beyond that refused
    /// connections are just closed.
    pub fn refusal_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.refusals.clone().try_acquire_owned().ok()
    }

    /// Connections open now.
    pub fn in_use(&self) -> usize {
        self.max_total as usize - self.total.available_permits()
    }

    /// Waits until every connection is gone, or `timeout`. Returns whether all finished.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        match tokio::time::timeout(timeout, self.total.acquire_many(self.max_total)).await {
            Ok(Ok(permits)) => {
                // Give them back: nothing should accept after this, but don't leave the
                // semaphore empty in case something does.
                drop(permits);
                true
            }
            Ok(Err(_)) | Err(_) => false,
        }
    }
}

/// Refused connections answered at once, at most.
pub const MAX_REFUSALS_ANSWERED: usize = 64;
/// How long a refused connection may take to read its answer.
pub const REFUSAL_LINGER: Duration = crate::http1::io::LINGER;

/// The short answer written (best effort, without waiting) to a connection refused at accept.
pub fn refusal_response(why: ConnRefusal) -> &'static [u8] {
    match why {
        ConnRefusal::PerSource => {
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\ncontent-length: 44\r\nconnection: close\r\n\r\ntoo many open connections from this address\n"
        }
        ConnRefusal::Total => {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 26\r\nconnection: close\r\n\r\ntoo many open connections\n"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_source_cap_leaves_room_for_others() {
        let l = ConnLimits::new(4, 2);
        let a1 = l.try_acquire(ip("10.0.0.1")).unwrap();
        let _a2 = l.try_acquire(ip("10.0.0.1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("10.0.0.1")).err(),
            Some(ConnRefusal::PerSource)
        );
        let _b1 = l.try_acquire(ip("10.0.0.2")).unwrap();
        let _b2 = l.try_acquire(ip("10.0.0.2")).unwrap();
        assert_eq!(l.in_use(), 4);
        assert_eq!(
            l.try_acquire(ip("10.0.0.3")).err(),
            Some(ConnRefusal::Total)
        );
        // The refused total attempt must not leak a per-source slot.
        assert!(!l.per_source.lock().unwrap().contains_key(&ip("10.0.0.3")));
        drop(a1);
        assert_eq!(l.in_use(), 3);
        let _a3 = l.try_acquire(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn map_is_emptied() {
        let l = ConnLimits::new(10, 10);
        let p = l.try_acquire(ip("10.0.0.1")).unwrap();
        drop(p);
        assert!(l.per_source.lock().unwrap().is_empty());
        assert_eq!(l.in_use(), 0);
    }

    #[test]
    fn refusal_responses_have_exact_lengths() {
        for why in [ConnRefusal::PerSource, ConnRefusal::Total] {
            let r = std::str::from_utf8(refusal_response(why)).unwrap();
            let (head, body) = r.split_once("\r\n\r\n").unwrap();
            let cl: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(cl, body.len(), "{r:?}");
        }
    }

    #[tokio::test]
    async fn wait_idle_sees_connections_finish() {
        let l = ConnLimits::new(3, 3);
        let p = l.try_acquire(ip("10.0.0.1")).unwrap();
        assert!(!l.wait_idle(Duration::from_millis(20)).await);
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.wait_idle(Duration::from_secs(5)).await });
        drop(p);
        assert!(waiter.await.unwrap());
    }
}
