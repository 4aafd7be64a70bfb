//! Listening sockets.
//!
//! One socket per (listen address, endpoint proxy port). IP_FREEBIND / IPV6_FREEBIND let the
//! daemon bind the bridge gateway address before the bridge exists (it appears with the first
//! pod), so the daemon can start first and never has to rebind. IPv6 sockets are V6ONLY so `::`
//! and `0.0.0.0` can share a port and IPv4 callers are never seen as mapped addresses.

use std::io;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Listen backlog: bursts of pods starting together connect at once.
pub const BACKLOG: i32 = 1024;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ListenError {
    pub addr: SocketAddr,
    pub source: io::Error,
}

/// Binds and listens on `addr`; must be called inside a Tokio runtime.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    let err = |source| ListenError { addr, source };
    let std_listener = bind_std(addr).map_err(err)?;
    TcpListener::from_std(std_listener).map_err(err)
}

fn bind_std(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = Domain::for_address(addr);
    let sock = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    // A restarted daemon must rebind at once even while old connections sit in TIME_WAIT.
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
        sock.set_freebind_ipv6(true)?;
    } else {
        sock.set_freebind(true)?;
    }
    sock.set_nodelay(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_an_address_that_does_not_exist_yet() {
        // 192.0.2.0/24 (TEST-NET-1) is on no interface here: FREEBIND makes the bind succeed.
        // Nothing is sent to it.
        let l = bind("192.0.2.77:0".parse().unwrap()).unwrap();
        assert_eq!(l.local_addr().unwrap().ip().to_string(), "192.0.2.77");
        let l6 = bind("[2001:db8::77]:0".parse().unwrap()).unwrap();
        assert_eq!(l6.local_addr().unwrap().ip().to_string(), "2001:db8::77");
    }

    #[tokio::test]
    async fn v4_and_v6_wildcards_share_a_port() {
        let l4 = bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = l4.local_addr().unwrap().port();
        let l6 = bind(SocketAddr::new("::".parse().unwrap(), port));
        // Without V6ONLY this would fail with EADDRINUSE.
        assert!(l6.is_ok(), "{:?}", l6.err());
    }

    #[tokio::test]
    async fn busy_port_names_the_address() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let e = bind(addr).err().unwrap();
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }
}
