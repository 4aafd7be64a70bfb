//! Serving pods: the listening sockets ([`listen`]), the connection caps ([`limits`]), accepting
//! connections and handing each to a worker thread ([`dispatch`]), each connection's loop
//! ([`conn`]), and shutdown as a worker's connections see it ([`stop`]).

pub mod conn;
pub mod dispatch;
pub mod limits;
pub mod listen;
pub mod stop;
