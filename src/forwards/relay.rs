//! One relayed connection: bytes copied both ways through fixed buffers, so a slow
//! reader slows its writer down (backpressure) instead of filling memory. When one side
//! shuts its write half, the other side's write half is shut and the opposite
//! direction goes on until it ends too.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// Bytes buffered per direction of a connection.
const BUFFER_BYTES: usize = 64 * 1024;

/// How a relayed connection ended.
#[derive(Debug)]
pub struct Relayed {
    pub to_guest: u64,
    pub to_client: u64,
}

/// Copies between `client` and `guest` until both directions have ended.
pub async fn relay(mut client: TcpStream, mut guest: TcpStream) -> std::io::Result<Relayed> {
    // Small writes (keystrokes, requests) go out at once.
    client.set_nodelay(true)?;
    guest.set_nodelay(true)?;
    let (to_guest, to_client) =
        tokio::io::copy_bidirectional_with_sizes(&mut client, &mut guest, BUFFER_BYTES, BUFFER_BYTES).await?;
    Ok(Relayed { to_guest, to_client })
}

/// Connects to the guest, giving up after `timeout` (a guest whose network is down
/// drops packets rather than refusing them).
pub async fn connect(target: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(connected) => connected,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from {target} within {}s", timeout.as_secs()),
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An echo server on 127.0.0.1: each connection gets back what it sends, and its
    /// write half is shut when the client shuts its own.
    pub(crate) async fn echo_server() -> SocketAddr {
        echo_server_at("127.0.0.1:0".parse().unwrap()).await
    }

    /// `echo_server` on `addr` (port 0: any).
    pub(crate) async fn echo_server_at(addr: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.split();
                    // A client cut off (a forward removed under it) is no failure here.
                    if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
                        let _ = writer.shutdown().await;
                    }
                });
            }
        });
        addr
    }

    /// A relay in front of `guest`: each accepted client is relayed to it.
    async fn relay_to(guest: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    match connect(guest, Duration::from_secs(5)).await {
                        Ok(guest) => drop(relay(client, guest).await),
                        Err(_) => drop(client),
                    }
                });
            }
        });
        addr
    }

    fn pattern(seed: usize, len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 31 + seed * 7) % 251) as u8).collect()
    }

    /// Sends `data`, shuts the write half, and reads until the other side closes.
    pub(crate) async fn round_trip(addr: SocketAddr, data: Vec<u8>) -> Vec<u8> {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let sender = tokio::spawn(async move {
            writer.write_all(&data).await.unwrap();
            writer.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        reader.read_to_end(&mut back).await.unwrap();
        sender.await.unwrap();
        back
    }

    #[tokio::test]
    async fn fifty_parallel_connections_of_a_mebibyte_each_come_back_intact() {
        let front = relay_to(echo_server().await).await;
        let mut connections = tokio::task::JoinSet::new();
        for n in 0..50 {
            connections.spawn(async move {
                let sent = pattern(n, 1 << 20);
                (round_trip(front, sent.clone()).await == sent, n)
            });
        }
        while let Some(done) = connections.join_next().await {
            let (intact, n) = done.unwrap();
            assert!(intact, "connection {n} came back altered");
        }
    }

    #[tokio::test]
    async fn a_half_close_reaches_the_guest_and_its_answer_still_comes_back() {
        // The guest answers only once the client has finished sending (like `wc`).
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let guest = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            stream.read_to_end(&mut request).await.unwrap();
            stream.write_all(format!("got {} bytes", request.len()).as_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
        });
        let front = relay_to(guest).await;
        let answer = round_trip(front, vec![7; 1000]).await;
        assert_eq!(String::from_utf8(answer).unwrap(), "got 1000 bytes");
    }

    #[tokio::test]
    async fn a_guest_that_closes_first_ends_the_clients_reading() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let guest = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"bye").await.unwrap();
            stream.shutdown().await.unwrap();
            // Keeps reading: the client may still send after the guest said all it had.
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"late");
        });
        let front = relay_to(guest).await;
        let mut client = TcpStream::connect(front).await.unwrap();
        let mut greeting = Vec::new();
        client.read_to_end(&mut greeting).await.unwrap();
        assert_eq!(greeting, b"bye");
        client.write_all(b"late").await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_guest_closes_the_client_at_once() {
        // A port nothing listens on: bound, then released.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let front = relay_to(closed).await;
        let mut client = TcpStream::connect(front).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf)).await;
        let closed_promptly = matches!(read, Ok(Ok(0)) | Ok(Err(_)));
        assert!(closed_promptly, "the client was not closed: {read:?}");
    }

    /// A guest that writes to each connection for as long as it can, and reports how
    /// many bytes each write call has taken so far.
    async fn firehose() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let written = std::sync::Arc::new(AtomicU64::new(0));
        let count = written.clone();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let chunk = vec![7u8; 64 * 1024];
            while stream.write_all(&chunk).await.is_ok() {
                count.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        });
        (addr, written)
    }

    // A client that never reads stalls its own guest's writes (the relay holds one
    // buffer, not everything the guest sends), while other connections go on unharmed.
    #[tokio::test]
    async fn a_client_that_does_not_read_holds_back_only_its_own_guest() {
        use std::sync::atomic::Ordering;
        let (guest, written) = firehose().await;
        let front = relay_to(guest).await;
        let _stalled = TcpStream::connect(front).await.unwrap();
        // Let the socket buffers on both sides of the relay fill up.
        let mut previous = u64::MAX;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = written.load(Ordering::SeqCst);
            if now == previous {
                break;
            }
            previous = now;
        }
        let stalled_at = written.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(written.load(Ordering::SeqCst), stalled_at, "the guest kept writing to a client that reads nothing");
        // Kernel buffers on two loopback sockets plus the relay's 64 KiB: a few MiB at
        // most, nowhere near what the guest would have sent unchecked.
        assert!(stalled_at < 64 << 20, "{stalled_at} bytes were taken from the guest");
        let other = relay_to(echo_server().await).await;
        let data = pattern(3, 1 << 20);
        assert_eq!(round_trip(other, data.clone()).await, data);
    }
}
