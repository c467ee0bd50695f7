//! Status-check contact with a guest's SSH server (issue 16): a plain TCP connect, or an
//! SSH handshake that stops after the key exchange, never authenticating, to see sshd
//! answer and learn its host key. The terminal's login sessions are `terminal.rs`'s.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::{HashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{Disconnect, client};
use tokio::net::TcpStream;

/// An SSH host public key, as a known_hosts line takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// `ssh-ed25519 AAAA…`, without comment.
    pub openssh: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it and the terminal pins it.
    pub fingerprint: String,
}

impl HostKey {
    pub fn from_public(key: &PublicKey) -> Option<HostKey> {
        let mut key = key.clone();
        key.set_comment("");
        let openssh = key.to_openssh().ok()?;
        Some(HostKey { openssh, fingerprint: key.fingerprint(HashAlg::Sha256).to_string() })
    }

    /// A `TYPE BASE64 [COMMENT]` line; None for anything that is not a valid key.
    pub fn parse(line: &str) -> Option<HostKey> {
        HostKey::from_public(&PublicKey::from_openssh(line.trim()).ok()?)
    }
}

/// The fingerprints a guest's server key may have: the pinned one and those of the
/// recorded host keys. Empty when nothing is known yet (the first key is trusted).
pub fn trusted_fingerprints(pinned: Option<String>, host_public_keys: &[String]) -> Vec<String> {
    let recorded = host_public_keys.iter().filter_map(|line| HostKey::parse(line)).map(|k| k.fingerprint);
    pinned.into_iter().chain(recorded).collect()
}

/// Whether something accepts TCP connections at `address` within `timeout`.
pub async fn accepts(address: SocketAddr, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, TcpStream::connect(address)).await, Ok(Ok(_)))
}

/// What an SSH handshake with a guest found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// The host key the server showed in its key exchange.
    Key(HostKey),
    /// Nothing accepted a connection within the connect timeout.
    NoAnswer,
    /// A connection was accepted but no key exchange completed in time: a server still
    /// starting, or a guest too busy to start one.
    Slow,
}

/// The host key an SSH server at `address` shows in its key exchange, stopping there.
pub async fn host_key(address: SocketAddr, connect_timeout: Duration, handshake_timeout: Duration) -> Handshake {
    let Ok(Ok(stream)) = tokio::time::timeout(connect_timeout, TcpStream::connect(address)).await else {
        return Handshake::NoAnswer;
    };
    let seen = Arc::new(Mutex::new(None));
    let config = Arc::new(client::Config { inactivity_timeout: Some(handshake_timeout), ..Default::default() });
    let handshake = client::connect_stream(config, stream, KeyRecorder { seen: seen.clone() });
    let Ok(Ok(handle)) = tokio::time::timeout(handshake_timeout, handshake).await else {
        return Handshake::Slow;
    };
    let _ = handle.disconnect(Disconnect::ByApplication, "status check", "en").await;
    let key = seen.lock().unwrap_or_else(|p| p.into_inner()).take();
    key.map_or(Handshake::Slow, Handshake::Key)
}

/// Accepts any server key and keeps it: judging it is the caller's business.
struct KeyRecorder {
    seen: Arc<Mutex<Option<HostKey>>>,
}

impl client::Handler for KeyRecorder {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => HostKey::from_public(key),
            PublicKeyOrCertificate::Certificate(cert) => {
                HostKey::from_public(&PublicKey::from(cert.public_key().clone()))
            }
        };
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(true)
    }
}

/// A loopback SSH server for tests: it shows its host key and lets nobody in.
#[cfg(test)]
pub(crate) mod test_sshd {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use russh::keys::{Algorithm, PrivateKey};
    use russh::server;
    use tokio::net::TcpListener;

    use super::HostKey;

    pub struct Sshd {
        pub address: SocketAddr,
        pub host_key: HostKey,
        connections: Arc<AtomicUsize>,
    }

    struct Refusing;
    impl server::Handler for Refusing {
        type Error = russh::Error;
    }

    pub fn random_key() -> PrivateKey {
        PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap()
    }

    impl Sshd {
        /// Serves on 127.0.0.1 with a fresh ed25519 host key until the runtime ends.
        pub async fn start() -> Sshd {
            let key = random_key();
            let host_key = HostKey::from_public(key.public_key()).unwrap();
            let config = Arc::new(server::Config { keys: vec![key], ..Default::default() });
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let connections = Arc::new(AtomicUsize::new(0));
            let counted = connections.clone();
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let config = config.clone();
                    tokio::spawn(async move {
                        if let Ok(session) = server::run_stream(config, socket, Refusing).await {
                            let _ = session.await;
                        }
                    });
                }
            });
            Sshd { address, host_key, connections }
        }

        /// TCP connections accepted so far.
        pub fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_sshd::{Sshd, random_key};
    use super::*;
    use tokio::net::TcpListener;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_handshake_learns_the_servers_host_key_without_logging_in() {
        let sshd = Sshd::start().await;
        let Handshake::Key(seen) = host_key(sshd.address, SECOND, 5 * SECOND).await else { panic!("sshd answered") };
        assert_eq!(seen, sshd.host_key);
        assert!(seen.openssh.starts_with("ssh-ed25519 AAAA") && !seen.openssh.ends_with(' '), "{}", seen.openssh);
        assert!(seen.fingerprint.starts_with("SHA256:"), "{}", seen.fingerprint);
        assert!(accepts(sshd.address, SECOND).await);
    }

    #[tokio::test]
    async fn nothing_listening_is_no_answer_and_a_silent_listener_is_slow() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(!accepts(closed, SECOND).await);
        assert_eq!(host_key(closed, SECOND, SECOND).await, Handshake::NoAnswer);
        // Accepts connections but never speaks SSH: the handshake's bound ends the wait.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = silent.local_addr().unwrap();
        assert!(accepts(address, SECOND).await);
        let started = std::time::Instant::now();
        assert_eq!(host_key(address, SECOND, SECOND / 2).await, Handshake::Slow);
        assert!(started.elapsed() < 3 * SECOND, "{:?}", started.elapsed());
    }

    #[test]
    fn host_keys_parse_from_lines_with_or_without_comment() {
        let bare = HostKey::from_public(random_key().public_key()).unwrap();
        assert_eq!(HostKey::parse(&format!("{} root@i-1a2b3c4d\n", bare.openssh)), Some(bare.clone()));
        assert_eq!(HostKey::parse("ssh-ed25519 not-base64"), None);
        assert_eq!(HostKey::parse("256 SHA256:abc root@host (ED25519)"), None);
        let trusted = trusted_fingerprints(Some("SHA256:pinned".into()), &[bare.openssh.clone(), "junk".into()]);
        assert_eq!(trusted, ["SHA256:pinned".to_string(), bare.fingerprint]);
        assert!(trusted_fingerprints(None, &[]).is_empty());
    }
}
