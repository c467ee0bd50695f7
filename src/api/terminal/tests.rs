//! The WebSocket side of the relay, over in-memory socket halves: when a client is kept,
//! when it is dropped, and what it is told.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Sink, Stream};
use poem::web::websocket::Message;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::WsClient;
use crate::terminal::{Client, ClientMsg, ServerMsg, close_code};

const INTERVAL: Duration = Duration::from_millis(100);

type TestSink = Pin<Box<dyn Sink<Message, Error = ()> + Send>>;
type TestStream = Pin<Box<dyn Stream<Item = Result<Message, ()>> + Send>>;

/// The browser's end: frames it sends, and what the server sent it, held `capacity`
/// deep, so that a client that reads nothing fills up as a TCP window would.
struct Browser {
    sends: mpsc::UnboundedSender<Message>,
    reads: mpsc::Receiver<Message>,
}

fn socket(capacity: usize) -> (TestSink, TestStream, Browser) {
    let (to_browser, reads) = mpsc::channel(capacity);
    let (sends, from_browser) = mpsc::unbounded_channel();
    let sink = futures_util::sink::unfold(to_browser, |tx: mpsc::Sender<Message>, msg| async move {
        tx.send(msg).await.map_err(|_| ())?;
        Ok::<_, ()>(tx)
    });
    let stream =
        futures_util::stream::unfold(from_browser, |mut rx| async move { rx.recv().await.map(|m| (Ok(m), rx)) });
    (Box::pin(sink), Box::pin(stream), Browser { sends, reads })
}

#[tokio::test]
async fn a_client_that_takes_no_output_is_dropped_after_its_patience() {
    let (mut sink, mut stream, _browser) = socket(1);
    let mut client = WsClient::new(&mut sink, &mut stream, INTERVAL);
    assert!(client.send(ServerMsg::Output(b"fills what the client holds".to_vec())).await);
    let (patience, started) = (client.patience(), Instant::now());
    let sent = tokio::time::timeout(patience * 3, client.send(ServerMsg::Output(b"never taken".to_vec()))).await;
    assert_eq!(sent.ok(), Some(false), "a client that reads nothing was kept");
    assert!(started.elapsed() >= patience, "dropped after {:?}", started.elapsed());
    assert_eq!(client.close, None, "no close frame for a client that reads nothing");
}

#[tokio::test]
async fn a_client_that_answers_no_ping_is_closed_as_timed_out() {
    let (mut sink, mut stream, mut browser) = socket(64);
    let mut client = WsClient::new(&mut sink, &mut stream, INTERVAL);
    let (patience, started) = (client.patience(), Instant::now());
    let received = tokio::time::timeout(patience * 3, client.recv()).await;
    assert!(matches!(received, Ok(None)), "a client answering no ping was kept");
    assert!(started.elapsed() >= patience, "closed after {:?}", started.elapsed());
    assert_eq!(client.close.as_ref().map(|(code, _)| *code), Some(close_code::TIMEOUT));
    let mut pings = 0;
    while let Ok(Message::Ping(_)) = browser.reads.try_recv() {
        pings += 1;
    }
    assert!(pings >= 3, "{pings} pings before giving up");
}

#[tokio::test]
async fn a_client_that_answers_pings_is_kept_and_its_keystrokes_arrive() {
    let (mut sink, mut stream, mut browser) = socket(64);
    let keys = browser.sends.clone();
    tokio::spawn(async move {
        while let Some(msg) = browser.reads.recv().await {
            if let Message::Ping(data) = msg {
                let _ = browser.sends.send(Message::Pong(data));
            }
        }
    });
    let mut client = WsClient::new(&mut sink, &mut stream, INTERVAL);
    let quiet = tokio::time::timeout(client.patience() * 2, client.recv()).await;
    assert!(quiet.is_err(), "a client answering pings was let go");
    keys.send(Message::Binary(b"ls\n".to_vec())).unwrap();
    assert!(matches!(client.recv().await, Some(ClientMsg::Input(bytes)) if bytes == b"ls\n"));
    assert!(client.close.as_ref().is_some_and(|(code, _)| *code == close_code::NORMAL));
}

#[tokio::test]
async fn a_resize_is_clamped_an_unknown_message_answered_and_the_exit_told() {
    let (mut sink, mut stream, mut browser) = socket(64);
    browser.sends.send(Message::Text(json!({"type": "dance"}).to_string())).unwrap();
    browser.sends.send(Message::Text(json!({"type": "resize", "cols": 3, "rows": 5000}).to_string())).unwrap();
    let mut client = WsClient::new(&mut sink, &mut stream, INTERVAL);
    assert!(matches!(client.recv().await, Some(ClientMsg::Resize { cols: 10, rows: 1000 })));
    let note = browser.reads.try_recv().unwrap();
    assert!(matches!(&note, Message::Text(t) if t.contains("BadControlMessage")), "{note:?}");
    assert!(client.send(ServerMsg::Exit(3)).await);
    let exit = browser.reads.try_recv().unwrap();
    assert!(matches!(&exit, Message::Text(t) if t == &json!({"type": "exit", "status": 3}).to_string()), "{exit:?}");
}

#[tokio::test]
async fn a_client_that_left_gets_no_close_frame() {
    let (mut sink, mut stream, browser) = socket(64);
    drop(browser);
    let mut client = WsClient::new(&mut sink, &mut stream, INTERVAL);
    assert!(client.recv().await.is_none());
    assert_eq!(client.close, None);
    assert!(!client.send(ServerMsg::Output(b"to no one".to_vec())).await);
}
