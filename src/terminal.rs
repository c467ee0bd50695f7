//! The web terminal's SSH side (REQ-TERM-002..012): who to log into and with which key,
//! the russh connection with a PTY and a login shell, and the relay between that
//! channel and the client. The WebSocket itself lives in `api::terminal`, behind the
//! `Client` trait; one task runs both sides, so a keystroke and its echo cross no queue
//! of the service's own, and a slow browser slows the guest's output instead of growing
//! a buffer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, client};

use crate::db::Db;
use crate::db::instances as rows;
use crate::error::{AppError, InstanceError};
use crate::instances::state::State;
use crate::instances::{Instance, Instances};
use crate::keypairs::{KeyPairs, LoginKey, PrivateKeyPem};

/// Close codes the client sees (4xxx: refused or failed, with a reason).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const BAD_REQUEST: u16 = 4400;
    pub const AUTH_FAILED: u16 = 4401;
    pub const NOT_FOUND: u16 = 4404;
    pub const NOT_READY: u16 = 4409;
    pub const HOST_KEY_CHANGED: u16 = 4495;
    pub const SSH_UNREACHABLE: u16 = 4502;
    pub const TIMEOUT: u16 = 4408;
    pub const TOO_MANY: u16 = 4429;
}

/// The largest WebSocket message (and frame) a terminal takes: keystrokes, a paste, a
/// private key. tungstenite's default would let one message take 64 MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Sessions and tasks alive now, for the health report and the leak tests.
static SESSIONS: AtomicUsize = AtomicUsize::new(0);
static TASKS: AtomicUsize = AtomicUsize::new(0);

pub fn active_sessions() -> usize {
    SESSIONS.load(Ordering::SeqCst)
}
pub fn active_tasks() -> usize {
    TASKS.load(Ordering::SeqCst)
}

/// Counts something alive for as long as the guard is.
pub struct Counted(&'static AtomicUsize);

impl Counted {
    /// A session, if fewer than `max` are open (checked and counted in one step).
    pub fn session_within(max: usize) -> Option<Self> {
        SESSIONS.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Counted(&SESSIONS))
    }
    pub fn task() -> Self {
        TASKS.fetch_add(1, Ordering::SeqCst);
        Counted(&TASKS)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A refusal or failure to show the user: a code for the close frame and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TerminalError {
    pub code: u16,
    /// Stable name, as in every error body (`InstanceNotRunning`, ...).
    pub name: &'static str,
    pub message: String,
}

impl TerminalError {
    fn new(code: u16, name: &'static str, message: impl Into<String>) -> Self {
        Self { code, name, message: message.into() }
    }
}

/// Who to log into: a running instance with an address (REQ-TERM-007/008).
#[derive(Debug, Clone)]
pub struct Target {
    pub instance: Instance,
    pub ip: String,
    /// The key the service holds for it, or why the user must give one.
    pub key: LoginKey,
}

pub async fn target(instances: &Instances, key_pairs: &KeyPairs, id: &str) -> Result<Target, TerminalError> {
    let instance = instances.get(id).await.map_err(|e| match e {
        AppError::Instance(InstanceError::NotFound(_) | InstanceError::MalformedId(_)) => {
            TerminalError::new(close_code::NOT_FOUND, "InstanceNotFound", e.to_string())
        }
        other => TerminalError::new(close_code::SSH_UNREACHABLE, "Unavailable", other.to_string()),
    })?;
    // Said before anything about its state: no key will ever open this instance.
    let (Some(key_name), Some(launched_with)) = (instance.key_name.clone(), instance.public_key.clone()) else {
        return Err(TerminalError::new(
            close_code::AUTH_FAILED,
            "NoKeyPair",
            format!(
                "instance {} was launched without a key pair, so ec2local has no SSH key that logs into it; \
                 launch instances with a key pair to use the terminal",
                instance.id
            ),
        ));
    };
    if instance.state != State::Running {
        return Err(TerminalError::new(
            close_code::NOT_READY,
            "InstanceNotRunning",
            format!("instance {} is {}; a terminal needs it running", instance.id, instance.state),
        ));
    }
    let Some(ip) = instance.ip_address.clone() else {
        return Err(TerminalError::new(
            close_code::NOT_READY,
            "InstanceHasNoAddress",
            format!("instance {} has no IP address yet; it is still booting", instance.id),
        ));
    };
    // An unreadable key file is asked for, like a missing one.
    let key = key_pairs.login_key(&key_name, &launched_with).await.unwrap_or(LoginKey::NotStored);
    Ok(Target { instance, ip, key })
}

/// Messages from the client.
#[derive(Debug)]
pub enum ClientMsg {
    Input(Vec<u8>),
    Resize { cols: u32, rows: u32 },
}

/// Messages to the client.
#[derive(Debug)]
pub enum ServerMsg {
    Output(Vec<u8>),
    Exit(u32),
}

/// The client's end of a session, as the relay sees it.
pub trait Client: Send {
    /// The next keystrokes or resize; None when the client is gone. Raced against the
    /// guest's output, so dropping it unfinished must lose no client input.
    fn recv(&mut self) -> impl Future<Output = Option<ClientMsg>> + Send;
    /// Sends output or the exit; false when the client is gone. The relay reads nothing
    /// more from the guest until this returns: that wait is the backpressure.
    fn send(&mut self, msg: ServerMsg) -> impl Future<Output = bool> + Send;
}

struct HostKeyCheck {
    /// Fingerprints the server's key may have; any, on first use.
    trusted: Vec<String>,
    seen: Arc<std::sync::Mutex<Option<String>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let fingerprint = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.fingerprint(HashAlg::Sha256).to_string(),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key().fingerprint(HashAlg::Sha256).to_string(),
        };
        *self.seen.lock().unwrap() = Some(fingerprint.clone());
        Ok(self.trusted.is_empty() || self.trusted.contains(&fingerprint))
    }
}

pub struct SshOptions {
    pub cols: u32,
    pub rows: u32,
    pub keepalive: Duration,
}

/// An SSH session with a PTY and a login shell, ready to relay.
pub struct Session {
    handle: client::Handle<HostKeyCheck>,
    channel: russh::Channel<client::Msg>,
}

/// Connects to the instance as its image's default user with `key`, trusting the host
/// key on first use and refusing one that is neither pinned nor among its recorded keys.
pub async fn connect(
    db: &Db,
    target: &Target,
    key: &PrivateKeyPem,
    options: &SshOptions,
) -> Result<Session, TerminalError> {
    let key = crate::keypairs::parse_private_key(&key.0)
        .map_err(|why| TerminalError::new(close_code::AUTH_FAILED, "InvalidPrivateKey", why))?;
    let mut handle = open_pinned(db, target, options).await?;
    log_in(&mut handle, &target.instance.login_user, key).await?;
    let ssh_err = |e: russh::Error| TerminalError::new(close_code::SSH_UNREACHABLE, "SshFailed", format!("SSH: {e}"));
    let channel = handle.channel_open_session().await.map_err(ssh_err)?;
    channel.request_pty(true, "xterm-256color", options.cols, options.rows, 0, 0, &[]).await.map_err(ssh_err)?;
    channel.request_shell(true).await.map_err(ssh_err)?;
    Ok(Session { handle, channel })
}

/// Connects to the guest's SSH server, refusing a host key other than the pinned one and
/// the recorded ones (when none is known, the key seen is pinned).
async fn open_pinned(
    db: &Db,
    target: &Target,
    options: &SshOptions,
) -> Result<client::Handle<HostKeyCheck>, TerminalError> {
    let id = target.instance.id.clone();
    let (pinned, trusted) = {
        let id = id.clone();
        let row = db
            .call(move |c| rows::get(c, &id))
            .await
            .map_err(|e| TerminalError::new(close_code::SSH_UNREACHABLE, "Internal", e.to_string()))?;
        let (pinned, keys) = row.map(|r| (r.host_key, r.host_public_keys)).unwrap_or_default();
        (pinned.is_some(), crate::guest_ssh::trusted_fingerprints(pinned, &keys))
    };
    let seen = Arc::new(std::sync::Mutex::new(None));
    let config = Arc::new(client_config(options.keepalive));
    let handler = HostKeyCheck { trusted: trusted.clone(), seen: seen.clone() };
    let address = (target.ip.as_str(), 22);
    let connecting = tokio::time::timeout(Duration::from_secs(15), client::connect(config, address, handler)).await;
    let handle = match connecting {
        Ok(Ok(handle)) => handle,
        Ok(Err(e)) => {
            let seen = seen.lock().unwrap().take();
            if let Some(seen) = seen.filter(|s| !trusted.is_empty() && !trusted.contains(s)) {
                return Err(TerminalError::new(
                    close_code::HOST_KEY_CHANGED,
                    "HostKeyChanged",
                    format!(
                        "the SSH host key of {id} changed (known: {}; now {seen}); refusing to connect. \
                         Check the console output for the guest's real fingerprints",
                        trusted.join(", ")
                    ),
                ));
            }
            return Err(TerminalError::new(
                close_code::SSH_UNREACHABLE,
                "SshUnreachable",
                format!("cannot reach SSH on {} ({e}); if the instance just started, it is still booting", target.ip),
            ));
        }
        Err(_) => {
            return Err(TerminalError::new(
                close_code::SSH_UNREACHABLE,
                "SshUnreachable",
                format!("SSH on {} did not answer within 15 s; the guest may still be booting", target.ip),
            ));
        }
    };
    let first_seen = seen.lock().unwrap().take();
    if !pinned && let Some(fingerprint) = first_seen {
        let _ = db.call(move |c| rows::set_host_key(c, &id, &fingerprint)).await;
    }
    Ok(handle)
}

/// The SSH client's settings. Nagle is off: a keystroke goes out at once, not after the
/// guest acknowledged the one before. Window and packet size are russh's (OpenSSH's own:
/// 2 MiB, 32 KiB), so the guest never waits on the window over a local network.
fn client_config(keepalive: Duration) -> client::Config {
    client::Config {
        keepalive_interval: Some(keepalive),
        keepalive_max: 3,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    }
}

async fn log_in(handle: &mut client::Handle<HostKeyCheck>, user: &str, key: PrivateKey) -> Result<(), TerminalError> {
    let hash = handle.best_supported_rsa_hash().await.ok().flatten().flatten();
    let auth = handle
        .authenticate_publickey(user.to_string(), PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await
        .map_err(|e| {
        TerminalError::new(close_code::AUTH_FAILED, "AuthFailed", format!("SSH authentication failed: {e}"))
    })?;
    if !auth.success() {
        return Err(TerminalError::new(
            close_code::AUTH_FAILED,
            "AuthFailed",
            format!("the guest refused the key for user {user}: is it the instance's key pair?"),
        ));
    }
    Ok(())
}

/// Output that has already arrived behind a piece being sent on is joined to it, up to
/// this many bytes: bulk output goes to the browser in fewer, larger frames. Nothing is
/// waited for, so a keystroke's echo still goes alone and at once.
const OUTPUT_BATCH_BYTES: usize = 64 * 1024;

/// Appends to `out` the output already waiting on `channel`, until `OUTPUT_BATCH_BYTES`.
/// Returns the first message that is not output (`Some(None)`: the channel ended), to be
/// handled next.
fn join_ready(channel: &mut russh::Channel<client::Msg>, out: &mut Vec<u8>) -> Option<Option<ChannelMsg>> {
    use futures_util::FutureExt;
    while out.len() < OUTPUT_BATCH_BYTES {
        match channel.wait().now_or_never()? {
            Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                out.extend_from_slice(&data)
            }
            other => return Some(other),
        }
    }
    None
}

impl Session {
    /// Relays until either side ends (REQ-TERM-003..006, 009, 010). What one session
    /// holds is bounded whatever the guest writes: the piece being sent to the client
    /// (at most `OUTPUT_BATCH_BYTES`), russh's buffer (`channel_buffer_size` messages of
    /// at most 32 KiB) and the 2 MiB SSH window; past that the guest's sshd waits. The
    /// SSH channel and connection are closed before this returns.
    pub async fn relay(mut self, client: &mut impl Client) {
        let mut exit_status = None;
        // A message read while joining output, handled before the channel is read again.
        let mut held: Option<Option<ChannelMsg>> = None;
        loop {
            let channel = &mut self.channel;
            tokio::select! {
                msg = client.recv() => match msg {
                    Some(ClientMsg::Input(bytes)) => {
                        if channel.data_bytes(bytes).await.is_err() { break; }
                    }
                    Some(ClientMsg::Resize { cols, rows }) => {
                        let _ = channel.window_change(cols, rows, 0, 0).await;
                    }
                    None => break,
                },
                msg = async { match held.take() { Some(msg) => msg, None => channel.wait().await } } => match msg {
                    Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                        let mut out = data.to_vec();
                        held = join_ready(channel, &mut out);
                        if !client.send(ServerMsg::Output(out)).await { break; }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status: status }) => exit_status = Some(status),
                    Some(ChannelMsg::Eof) => {}
                    Some(ChannelMsg::Close) | None => {
                        client.send(ServerMsg::Exit(exit_status.unwrap_or(0))).await;
                        break;
                    }
                    Some(_) => {}
                },
            }
        }
        let _ = self.channel.close().await;
        let _ = self.handle.disconnect(Disconnect::ByApplication, "terminal closed", "en").await;
    }
}

#[cfg(test)]
mod backpressure;

#[cfg(test)]
mod tests {
    use russh::client::Handler as _;
    use russh::keys::PublicKey;

    use super::*;
    use crate::guest_ssh::test_sshd::random_key;
    use crate::guest_ssh::{HostKey, trusted_fingerprints};

    fn offered(key: &PublicKey) -> PublicKeyOrCertificate {
        PublicKeyOrCertificate::PublicKey { key: key.clone(), hash_alg: None }
    }

    // issue 16: the terminal accepts any of the host keys the status check recorded.
    #[tokio::test]
    async fn a_server_key_among_the_recorded_host_keys_is_accepted() {
        let (ecdsa, ed25519, stranger) = (random_key(), random_key(), random_key());
        let recorded = [&ecdsa, &ed25519].map(|k| HostKey::from_public(k.public_key()).unwrap().openssh);
        let trusted = trusted_fingerprints(None, &recorded);
        let mut check = HostKeyCheck { trusted, seen: Arc::default() };
        assert!(check.check_server_key(&offered(ed25519.public_key())).await.unwrap());
        assert!(check.check_server_key(&offered(ecdsa.public_key())).await.unwrap());
        assert!(!check.check_server_key(&offered(stranger.public_key())).await.unwrap());
        // Nothing known yet: trusted on first use, and what was seen is kept for the pin.
        let mut first_use = HostKeyCheck { trusted: Vec::new(), seen: Arc::default() };
        assert!(first_use.check_server_key(&offered(stranger.public_key())).await.unwrap());
        let pinned = first_use.seen.lock().unwrap().clone().unwrap();
        assert_eq!(pinned, HostKey::from_public(stranger.public_key()).unwrap().fingerprint);
    }
}
