//! Writing an answer to a pod's socket and closing it without losing the answer.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a closing connection is drained (and a refused one may take to read its answer).
pub const LINGER: Duration = Duration::from_millis(500);

/// Writes the whole answer. The first attempt needs no timer (an answer nearly always fits in the
/// socket buffer); a pod that stops reading gets `timeout` to take the rest.
pub async fn write_answer(
    stream: &mut TcpStream,
    out: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    let n = match stream.try_write(out) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    let Some(rest) = out.get(n..).filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    match tokio::time::timeout(timeout, stream.write_all(rest)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Half-closes and reads what the pod still sends until it closes (at most [`LINGER`]): closing
/// with unread input would send a reset that can destroy the answer before it is read.
pub async fn linger_close(mut stream: TcpStream) {
    let _ = tokio::time::timeout(LINGER, async {
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}
