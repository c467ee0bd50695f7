//! A session whose browser reads nothing holds a bounded amount of output, whatever the
//! guest writes (issue 17, item 6): the backpressure reaches the guest's sshd through
//! the SSH window instead of a buffer growing in the service. The guest here is a russh
//! server that writes as fast as the window lets it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use russh::server::{self, Auth, ChannelOpenHandle, Msg};
use russh::{Channel, ChannelId};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::guest_ssh::test_sshd::random_key;

const CHUNK: usize = 16 * 1024;

/// From the shell request on, writes output until the channel goes away; counts it.
struct Flood {
    channel: Option<Channel<Msg>>,
    sent: Arc<AtomicUsize>,
}

impl server::Handler for Flood {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        self.channel = Some(channel);
        reply.accept().await;
        Ok(())
    }

    async fn shell_request(&mut self, id: ChannelId, session: &mut server::Session) -> Result<(), Self::Error> {
        session.channel_success(id)?;
        let (channel, sent) = (self.channel.take().expect("a session channel"), self.sent.clone());
        tokio::spawn(async move {
            // The window is what stops this: data_bytes waits until the client grants more.
            while channel.data_bytes(vec![b'y'; CHUNK]).await.is_ok() {
                sent.fetch_add(CHUNK, Ordering::SeqCst);
            }
        });
        Ok(())
    }
}

/// A client at the end of two queues; the one for output holds this many messages.
struct Queued(mpsc::Receiver<ClientMsg>, mpsc::Sender<ServerMsg>);
const QUEUED: usize = 8;

impl Client for Queued {
    async fn recv(&mut self) -> Option<ClientMsg> {
        self.0.recv().await
    }
    async fn send(&mut self, msg: ServerMsg) -> bool {
        self.1.send(msg).await.is_ok()
    }
}

/// A relaying session to a flooding guest; returns the guest's count of bytes written.
async fn session_to_flood() -> (Session, Arc<AtomicUsize>) {
    let sent = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let config = Arc::new(server::Config { keys: vec![random_key()], ..Default::default() });
    let handler = Flood { channel: None, sent: sent.clone() };
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        if let Ok(session) = server::run_stream(config, socket, handler).await {
            let _ = session.await;
        }
    });
    let check = HostKeyCheck { trusted: Vec::new(), seen: Arc::default() };
    let config = Arc::new(client_config(Duration::from_secs(60)));
    let mut handle = client::connect(config, address, check).await.unwrap();
    assert!(handle.authenticate_none("ubuntu").await.unwrap().success());
    let channel = handle.channel_open_session().await.unwrap();
    channel.request_shell(true).await.unwrap();
    (Session { handle, channel }, sent)
}

/// What the guest has written once it stops advancing (nothing more in half a second).
async fn stalled(sent: &AtomicUsize) -> usize {
    let mut last = usize::MAX;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = sent.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the guest never stopped writing ({last} bytes so far): nothing holds it back");
}

#[tokio::test]
async fn a_client_that_reads_nothing_stops_the_guest_not_the_services_memory() {
    let (session, sent) = session_to_flood().await;
    let (client_tx, client_rx) = mpsc::channel(64);
    let (server_tx, mut server_rx) = mpsc::channel(QUEUED);
    let relay = tokio::spawn(async move { session.relay(&mut Queued(client_rx, server_tx)).await });

    // Nobody reads: what the guest got out is the window, russh's buffer and the client's queue.
    let held = stalled(&sent).await;
    assert!(held > 0, "the flood never started");
    assert!(held < 16 << 20, "{held} bytes written that nobody read");
    // Reading lets it go on: it was held back, not ended. Each message is one batch.
    let mut read = 0;
    while read < 4 * held {
        match server_rx.recv().await {
            Some(ServerMsg::Output(bytes)) => {
                assert!(bytes.len() < OUTPUT_BATCH_BYTES + CHUNK, "a batch of {}", bytes.len());
                read += bytes.len();
            }
            other => panic!("expected output, got {other:?}"),
        }
    }
    assert!(sent.load(Ordering::SeqCst) > held);

    drop((client_tx, server_rx));
    relay.await.unwrap();
}
