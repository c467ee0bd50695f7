//! GET /api/instances/{id}/terminal: the WebSocket side of the web terminal
//! (REQ-TERM-001). Protocol: binary frames carry terminal bytes both ways; text frames
//! carry JSON control messages. Client → `{"type":"resize","cols":N,"rows":N}`, and
//! `{"type":"auth","private_key":"..."}` when the server asks with `auth_required`.
//! Server → `{"type":"error","code":"...","message":"..."}` then a 4xxx close, and
//! `{"type":"exit","status":N}` then a normal close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::{SinkExt, StreamExt};
use poem::web::Data;
use poem::web::websocket::{CloseCode, Message, WebSocket, WebSocketConfig, WebSocketStream};
use poem::{IntoResponse, Request, Response};
use poem_openapi::OpenApi;
use poem_openapi::param::{Path, Query};
use serde::Deserialize;

use super::ApiTags;
use super::error::{HttpRefusal, TerminalAnswer, json_body, terminal_status};
use crate::app::App;
use crate::keypairs::{LoginKey, PrivateKeyPem};
use crate::terminal::{
    self as ssh_terminal, Client, ClientMsg, Counted, ServerMsg, SshOptions, Target, TerminalError, close_code,
};

/// The address the service is bound to, for the Origin check.
#[derive(Clone, Copy)]
pub struct BoundAddress(pub SocketAddr);

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Resize { cols: u32, rows: u32 },
    Auth { private_key: String },
}

pub struct TerminalApi;

#[OpenApi(prefix_path = "/instances", tag = "ApiTags::Instances")]
impl TerminalApi {
    /// The web terminal: a WebSocket to a shell on the instance
    ///
    /// REQ-TERM-001. The request upgrades to a WebSocket. Binary frames carry terminal
    /// bytes both ways; text frames carry JSON control messages.
    /// Client: `{"type":"resize","cols":N,"rows":N}`, and `{"type":"auth","private_key":"..."}`
    /// when the server asks with `{"type":"auth_required","reason":"key_not_stored"|"key_deleted"|"key_replaced"}`.
    /// Server: `{"type":"error","code":"...","message":"..."}` then a 4xxx close, and
    /// `{"type":"exit","status":N}` then a normal close.
    #[oai(path = "/:id/terminal", method = "get")]
    #[allow(clippy::too_many_arguments)]
    async fn terminal(
        &self,
        req: &Request,
        id: Path<String>,
        /// Terminal width in columns (10-1000, default 80).
        cols: Query<Option<u32>>,
        /// Terminal height in rows (5-1000, default 24).
        rows: Query<Option<u32>>,
        ws: Option<WebSocket>,
        app: Data<&Arc<App>>,
        bound: Data<&BoundAddress>,
    ) -> TerminalAnswer {
        TerminalAnswer(open_terminal(req, &id.0, (cols.0, rows.0), ws, app.0, bound.0).await)
    }
}

async fn open_terminal(
    req: &Request,
    id: &str,
    (cols, rows): (Option<u32>, Option<u32>),
    ws: Option<WebSocket>,
    app: &Arc<App>,
    bound: &BoundAddress,
) -> Response {
    let origin = req.headers().get("origin").and_then(|o| o.to_str().ok());
    if !super::host_guard::origin_is_allowed(origin, bound.0.port()) {
        let why = format!("terminals open only from this service's own pages, not from {}", origin.unwrap_or(""));
        return HttpRefusal::ForbiddenOrigin(why).response();
    }
    let max_sessions = app.config.terminal_max_sessions;
    let session = Counted::session_within(max_sessions);
    let target = match session {
        None => Err(TerminalError {
            code: close_code::TOO_MANY,
            name: "TooManyTerminals",
            message: format!(
                "{max_sessions} terminal sessions are open, the most this service takes (--terminal-max-sessions); \
                 close one first"
            ),
        }),
        Some(_) => ssh_terminal::target(&app.instances, &app.key_pairs, id).await,
    };
    let Some(ws) = ws else {
        return match target {
            Err(e) => json_body(terminal_status(e.code), e.name, &e.message),
            Ok(_) => HttpRefusal::WebSocketRequired.response(),
        };
    };
    let app = app.clone();
    let options = SshOptions {
        cols: cols.unwrap_or(80).clamp(10, 1000),
        rows: rows.unwrap_or(24).clamp(5, 1000),
        keepalive: app.config.terminal_keepalive,
    };
    let limits = WebSocketConfig::default()
        .max_message_size(Some(crate::terminal::MAX_MESSAGE_BYTES))
        .max_frame_size(Some(crate::terminal::MAX_MESSAGE_BYTES));
    ws.config(limits)
        .on_upgrade(move |socket| async move {
            let _session = session;
            match target {
                Err(e) => refuse(socket, &e).await,
                Ok(target) => run(socket, app, target, options).await,
            }
        })
        .into_response()
}

async fn refuse(socket: WebSocketStream, e: &TerminalError) {
    let (mut sink, _) = socket.split();
    let body = serde_json::json!({"type": "error", "code": e.name, "message": e.message});
    let _ = sink.send(Message::Text(body.to_string())).await;
    // Close reasons are limited to 123 bytes.
    let reason: String = e.message.chars().take(120).collect();
    let _ = sink.send(Message::Close(Some((CloseCode::from(e.code), reason)))).await;
}

type Sink = futures_util::stream::SplitSink<WebSocketStream, Message>;
type Stream = futures_util::stream::SplitStream<WebSocketStream>;

async fn run(socket: WebSocketStream, app: Arc<App>, target: Target, options: SshOptions) {
    let (mut sink, mut stream) = socket.split();
    let key = match login_key(&mut sink, &mut stream, &target).await {
        Ok(key) => key,
        Err(e) => return refuse(sink.reunite(stream).expect("same socket"), &e).await,
    };
    let session = match ssh_terminal::connect(&app.db, &target, &key, &options).await {
        Ok(session) => session,
        Err(e) => return refuse(sink.reunite(stream).expect("same socket"), &e).await,
    };
    tracing::info!(instance = %target.instance.id, "terminal session opened");
    let _task = Counted::task();
    let mut client = WsClient::new(&mut sink, &mut stream, app.config.terminal_keepalive);
    session.relay(&mut client).await;
    let close = client.close;
    if let Some((code, reason)) = close.clone() {
        // Bounded: a client that stopped answering pings may read nothing at all.
        let closing = sink.send(Message::Close(Some((CloseCode::from(code), reason))));
        let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
    }
    tracing::info!(instance = %target.instance.id, close = ?close, "terminal session closed");
}

/// The key to log in with: the one the service holds, or one the user sends after
/// being told why it is needed (used for this session only).
async fn login_key(sink: &mut Sink, stream: &mut Stream, target: &Target) -> Result<PrivateKeyPem, TerminalError> {
    let key_name = target.instance.key_name.clone().unwrap_or_default();
    let (reason, why) = match target.key.clone() {
        LoginKey::Stored(key) => return Ok(key),
        LoginKey::Replaced => (
            "key_replaced",
            format!(
                "key pair {key_name:?} was deleted and made again after this instance was launched; \
                 its key now does not open this instance. Give the private key it was launched with"
            ),
        ),
        LoginKey::Deleted => (
            "key_deleted",
            format!("key pair {key_name:?} was deleted after this instance was launched; give its private key"),
        ),
        LoginKey::NotStored => {
            ("key_not_stored", format!("ec2local has only the public half of key pair {key_name:?}"))
        }
    };
    let ask = serde_json::json!({
        "type": "auth_required",
        "reason": reason,
        "key_name": key_name,
        "message": format!("{why}; send it as {{\"type\":\"auth\",\"private_key\":...}} (used for this session only)"),
    });
    let _ = sink.send(Message::Text(ask.to_string())).await;
    wait_for_key(stream).await.ok_or_else(|| TerminalError {
        code: close_code::AUTH_FAILED,
        name: "NoPrivateKey",
        message: "no private key was given for this instance".into(),
    })
}

/// The browser's end of a session: keystrokes and resizes from the WebSocket, output to
/// it, and a ping every `interval` while waiting for the client. Generic over the
/// socket's halves so that its timing can be tested without a network.
struct WsClient<'a, S, R> {
    sink: &'a mut S,
    stream: &'a mut R,
    ping: tokio::time::Interval,
    interval: Duration,
    last_pong: Instant,
    /// The close frame to send when the relay ends; None when the client left.
    close: Option<(u16, String)>,
}

impl<'a, S, R> WsClient<'a, S, R> {
    fn new(sink: &'a mut S, stream: &'a mut R, interval: Duration) -> Self {
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        // After a long send, one ping, not a burst of the missed ones.
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            sink,
            stream,
            ping,
            interval,
            last_pong: Instant::now(),
            close: Some((close_code::NORMAL, "session ended".into())),
        }
    }

    /// How long the client may go without answering a ping, or without taking output:
    /// three pings missed (a busy client may read one late, behind output).
    fn patience(&self) -> Duration {
        self.interval * 3 + Duration::from_secs(1)
    }

    fn gone(&mut self) -> bool {
        self.close = None;
        false
    }
}

impl<S, R, E> Client for WsClient<'_, S, R>
where
    S: futures_util::Sink<Message> + Unpin + Send,
    R: futures_util::Stream<Item = Result<Message, E>> + Unpin + Send,
    E: Send,
{
    /// Dropped unfinished, it loses at most a ping or a note on a bad control message:
    /// both the stream's next frame and the interval's tick are cancel-safe.
    async fn recv(&mut self) -> Option<ClientMsg> {
        loop {
            tokio::select! {
                // A pong already waiting counts before a ping falls due.
                biased;
                msg = self.stream.next() => match msg {
                    Some(Ok(Message::Binary(bytes))) => {
                        self.last_pong = Instant::now(); // any frame shows the client is alive
                        return Some(ClientMsg::Input(bytes));
                    }
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<Control>(&text) {
                        Ok(Control::Resize { cols, rows }) => {
                            return Some(ClientMsg::Resize { cols: cols.clamp(10, 1000), rows: rows.clamp(5, 1000) });
                        }
                        Ok(Control::Auth { .. }) => {}
                        Err(_) => {
                            let note = serde_json::json!({"type": "error", "code": "BadControlMessage", "message": "unknown control message; expected {\"type\":\"resize\",\"cols\":N,\"rows\":N}"});
                            let _ = self.sink.send(Message::Text(note.to_string())).await;
                        }
                    },
                    Some(Ok(Message::Pong(_))) => self.last_pong = Instant::now(),
                    Some(Ok(_)) => {}
                    // The client left: no close frame to send back.
                    Some(Err(_)) | None => { self.gone(); return None; }
                },
                _ = self.ping.tick() => {
                    if self.last_pong.elapsed() > self.patience() {
                        self.close = Some((close_code::TIMEOUT, "the client stopped answering keep-alive pings".into()));
                        return None;
                    }
                    if self.sink.send(Message::Ping(b"ec2local".to_vec())).await.is_err() { self.gone(); return None; }
                }
            }
        }
    }

    async fn send(&mut self, msg: ServerMsg) -> bool {
        let message = match msg {
            ServerMsg::Output(bytes) => Message::Binary(bytes),
            ServerMsg::Exit(status) => Message::Text(serde_json::json!({"type": "exit", "status": status}).to_string()),
        };
        match tokio::time::timeout(self.patience(), self.sink.send(message)).await {
            Ok(sent) => sent.is_ok() || self.gone(),
            // A client that keeps its connection but reads nothing would hold the session
            // and the guest's sshd for ever; a close frame would wait like the output.
            Err(_) => {
                tracing::info!(patience = ?self.patience(), "the terminal's client took no output; dropping it");
                self.gone()
            }
        }
    }
}

/// The first control message must bring the key when the service has none.
async fn wait_for_key(stream: &mut Stream) -> Option<PrivateKeyPem> {
    let deadline = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return None,
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(Control::Auth { private_key }) = serde_json::from_str(&text) {
                        return Some(PrivateKeyPem(private_key));
                    }
                }
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests;
