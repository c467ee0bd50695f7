//! The web terminal against a real guest: a real WebSocket client (tokio-tungstenite)
//! through the service's russh relay into the guest's sshd.

mod common;

use std::time::{Duration, Instant};

use common::{
    Bench, Service, client, get_json, import_test_image, post_empty, post_json, ssh, ssh_must, wait_for, wait_instance,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sha2::Digest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const URI: &str = "qemu:///system";

async fn open(svc: &Service, id: &str, query: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{}/api/instances/{id}/terminal{query}", svc.port);
    tokio_tungstenite::connect_async(url).await.expect("WebSocket handshake").0
}

/// Reads terminal output until `needle` shows up; returns everything read.
async fn read_until(ws: &mut Ws, needle: &str, timeout: Duration) -> String {
    let mut seen = Vec::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        match next {
            Ok(Some(Ok(Message::Binary(bytes)))) => {
                // Search only the new bytes and the few before them: linear in the output.
                let from = seen.len().saturating_sub(needle.len());
                seen.extend_from_slice(&bytes);
                if seen[from..].windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    return String::from_utf8_lossy(&seen).into_owned();
                }
            }
            Ok(Some(Ok(Message::Text(text)))) => panic!("control message while waiting for {needle:?}: {text}"),
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(other) => panic!("connection ended while waiting for {needle:?}: {other:?}"),
        }
    }
    panic!("{needle:?} never came; got {:?}", String::from_utf8_lossy(&seen));
}

async fn send(ws: &mut Ws, input: &str) {
    ws.send(Message::Binary(input.as_bytes().to_vec().into())).await.unwrap();
}

/// The next control message, skipping pings.
async fn next_control(ws: &mut Ws) -> (Option<Value>, Option<(u16, String)>) {
    let mut control = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("a message") {
            Some(Ok(Message::Text(text))) => control = Some(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                return (control, frame.map(|f| (u16::from(f.code), f.reason.to_string())));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (control, None),
        }
    }
}

/// The terminal's shell in the guest and the sshd process of its connection (its
/// parent), as the shell itself says: `SHELL,SSHD`, ready for `ps -p`.
async fn session_pids(ws: &mut Ws) -> String {
    // The quotes keep the echoed command line from matching the markers.
    send(ws, "echo SESSION''PIDS=$$,$PPID,END''PIDS\n").await;
    let output = read_until(ws, ",ENDPIDS", Duration::from_secs(30)).await;
    let from = output.find("SESSIONPIDS=").expect("the session's pids") + "SESSIONPIDS=".len();
    let pids = &output[from..output.rfind(",ENDPIDS").unwrap()];
    let valid = pids.split(',').filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).count() == 2;
    assert!(valid, "not two pids: {pids:?}");
    pids.to_string()
}

/// A guest command that lists those processes that still run (pid, terminal and
/// command name), or prints `gone`.
fn session_state(pids: &str) -> String {
    format!("ps -o pid=,tty=,comm= -p {pids} || echo gone")
}

/// Runs a blocking guest command while this client keeps reading the session, so its
/// pings are answered: the service ends a session whose client stops answering.
async fn beside_session<T: Send + 'static>(ws: &mut Ws, job: impl FnOnce() -> T + Send + 'static) -> T {
    let mut job = tokio::task::spawn_blocking(job);
    loop {
        tokio::select! {
            done = &mut job => return done.unwrap(),
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => panic!("control message while a guest command ran: {text}"),
                Some(Ok(_)) => {}
                other => panic!("the session ended while a guest command ran: {other:?}"),
            },
        }
    }
}

/// Checks over a separate SSH connection that the terminal's shell runs on a
/// pseudo-terminal of the guest under its connection's sshd; on failure, says what the
/// guest has instead.
async fn assert_session_runs(ws: &mut Ws, key: &std::path::Path, ip: &str, pids: &str) {
    let (key, ip) = (key.to_path_buf(), ip.to_string());
    let state = {
        let (key, ip, command) = (key.clone(), ip.clone(), session_state(pids));
        beside_session(ws, move || ssh_must(&key, "ubuntu", &ip, &command)).await
    };
    let mut wanted = pids.split(',');
    let (shell, sshd) = (wanted.next().unwrap(), wanted.next().unwrap());
    let lines: Vec<Vec<&str>> = state.lines().map(|line| line.split_whitespace().collect()).collect();
    let shell_on_a_terminal =
        lines.iter().any(|l| l.first() == Some(&shell) && l.get(1).is_some_and(|t| t.starts_with("pts/")));
    // `sshd`, or `sshd-session` from OpenSSH 9.8 on.
    let sshd_runs = lines.iter().any(|l| l.first() == Some(&sshd) && l.last().is_some_and(|c| c.starts_with("sshd")));
    if !(shell_on_a_terminal && sshd_runs) {
        let seen = ssh_must(&key, "ubuntu", &ip, "who -a; ps -eo pid,ppid,user,tty,args");
        panic!(
            "the terminal's shell is not running on a terminal under sshd ({pids}: {state:?}); the guest has:\n{seen}"
        );
    }
}

/// Waits until `command`, run on the guest over a separate SSH connection, prints `wanted`.
async fn wait_for_guest(what: &str, key: &std::path::Path, ip: &str, command: &str, wanted: &str, timeout: Duration) {
    wait_for(what, timeout, Duration::from_millis(500), || {
        let (key, ip, command) = (key.to_path_buf(), ip.to_string(), command.to_string());
        async move {
            let out = tokio::task::spawn_blocking(move || ssh(&key, "ubuntu", &ip, &command)).await.unwrap()?;
            (out.trim() == wanted).then_some(())
        }
    })
    .await;
}

async fn health_terminal(svc: &Service) -> (u64, u64) {
    let (_, h) = get_json(&svc.api("/health")).await;
    (h["terminal"]["sessions"].as_u64().unwrap(), h["terminal"]["tasks"].as_u64().unwrap())
}

// REQ-TERM-001, REQ-TERM-002, REQ-TERM-003, REQ-TERM-004, REQ-TERM-005, REQ-TERM-006, REQ-TERM-007,
// REQ-TERM-008, REQ-TERM-009, REQ-TERM-010, REQ-TERM-011, REQ-TERM-012
#[tokio::test]
#[ignore = "needs the test bench: run scripts/test"]
async fn a_browser_terminal_reaches_the_guest_shell() {
    let bench = Bench::from_env();
    let tmp = tempfile::tempdir().unwrap();
    // A network of its own: it runs beside other tests' services (scripts/test's lanes).
    let mut env: Vec<(String, String)> = [
        ("EC2LOCAL_LIBVIRT_URI", URI),
        ("EC2LOCAL_POOL_NAME", "ec2-bench-terminal"),
        ("EC2LOCAL_MONITOR_INTERVAL_SECS", "2"),
        ("EC2LOCAL_TERMINAL_KEEPALIVE_SECS", "3"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    env.extend(common::own_network("term", 89));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let svc = Service::start(&tmp.path().join("data"), &env);
    import_test_image(&svc, &bench).await;
    let (status, pair) = post_json(&svc.api("/key-pairs"), &json!({"name": "term"})).await;
    assert_eq!(status, 201, "{pair}");
    let key = tmp.path().join("term.pem");
    std::fs::write(&key, pair["private_key"].as_str().unwrap()).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    // Unknown instances are refused with a message, over WebSocket and over plain HTTP.
    let mut ws = open(&svc, "i-0badf00d", "").await;
    let (control, close) = next_control(&mut ws).await;
    assert_eq!(control.unwrap()["code"], "InstanceNotFound");
    assert_eq!(close.unwrap().0, 4404);
    let (status, body) = get_json(&svc.api("/instances/i-0badf00d/terminal")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("InstanceNotFound")));

    // An instance launched without a key pair: said at once, nothing asked.
    let (status, keyless) =
        post_json(&svc.api("/instances"), &json!({"instance_type": "t2.nano", "image_id": "debian-12-test"})).await;
    assert_eq!(status, 202, "{keyless}");
    let keyless = keyless["id"].as_str().unwrap().to_string();
    let mut ws = open(&svc, &keyless, "").await;
    let (control, close) = next_control(&mut ws).await;
    let control = control.unwrap();
    assert_eq!(control["code"], "NoKeyPair", "{control}");
    assert!(control["message"].as_str().unwrap().contains("without a key pair"), "{control}");
    assert_eq!(close.unwrap().0, 4401);
    let response = client().delete(svc.api(&format!("/instances/{keyless}"))).send().await.unwrap();
    assert_eq!(response.status(), 202);

    let (status, launched) = post_json(
        &svc.api("/instances"),
        &json!({"instance_type": "t2.nano", "image_id": "debian-12-test", "key_name": "term"}),
    )
    .await;
    assert_eq!(status, 202, "{launched}");
    let id = launched["id"].as_str().unwrap().to_string();
    // Running but without an address yet (DHCP comes tens of seconds into the boot).
    let early = wait_instance(&svc, &id, "running", Duration::from_secs(120), |i| i["state"] == "running").await;
    assert_eq!(early["ip_address"], Value::Null, "the guest got an address too fast to test the refusal");
    let mut ws = open(&svc, &id, "").await;
    let (control, close) = next_control(&mut ws).await;
    assert_eq!(control.unwrap()["code"], "InstanceHasNoAddress");
    assert_eq!(close.unwrap().0, 4409);

    let running =
        wait_instance(&svc, &id, "an address", Duration::from_secs(300), |i| i["ip_address"].is_string()).await;
    let ip = running["ip_address"].as_str().unwrap().to_string();
    wait_for("SSH", Duration::from_secs(300), Duration::from_secs(3), || {
        let (key, ip) = (key.clone(), ip.clone());
        async move { tokio::task::spawn_blocking(move || ssh(&key, "ubuntu", &ip, "true")).await.unwrap() }
    })
    .await;

    // A cross-origin page cannot open a terminal.
    let mut request = format!("ws://127.0.0.1:{}/api/instances/{id}/terminal", svc.port).into_client_request().unwrap();
    request.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("cross-origin upgrade was not refused: {:?}", other.map(|_| ())),
    }

    // The file for the bulk transfer is made before the session: a blocking SSH call
    // would stop this client from answering the session's pings.
    let sum =
        ssh_must(&key, "ubuntu", &ip, "head -c 7500000 /dev/urandom | base64 -w0 > /tmp/big && sha256sum < /tmp/big");
    let expected = sum.split_whitespace().next().unwrap().to_string();

    let baseline = health_terminal(&svc).await;
    assert_eq!(baseline, (0, 0));
    let mut ws = open(&svc, &id, "?cols=100&rows=30").await;
    // The prompt follows the MOTD after the guest starts a login shell: slow when both lanes load the host.
    read_until(&mut ws, "$ ", Duration::from_secs(120)).await;
    assert_eq!(health_terminal(&svc).await, (1, 1));
    send(&mut ws, "echo $((6*7))\n").await;
    read_until(&mut ws, "42\r\n", Duration::from_secs(30)).await;
    send(&mut ws, "stty size\n").await;
    read_until(&mut ws, "30 100", Duration::from_secs(30)).await;
    ws.send(Message::Text(json!({"type": "resize", "cols": 120, "rows": 40}).to_string().into())).await.unwrap();
    send(&mut ws, "stty size\n").await;
    read_until(&mut ws, "40 120", Duration::from_secs(30)).await;
    let session = session_pids(&mut ws).await;
    assert_session_runs(&mut ws, &key, &ip, &session).await;

    // 10 MB through the relay arrive intact.
    send(&mut ws, "stty -echo; printf 'BEG''IN\\n'; cat /tmp/big; printf '\\nEN''D\\n'; stty echo\n").await;
    let output = read_until(&mut ws, "END\r\n", Duration::from_secs(300)).await;
    let start = output.find("BEGIN\r\n").expect("begin marker") + "BEGIN\r\n".len();
    let end = output[start..].find("\r\nEND").expect("end marker") + start;
    let received = &output.as_bytes()[start..end];
    assert_eq!(received.len(), 10_000_000);
    assert_eq!(hex::encode(sha2::Sha256::digest(received)), expected);

    // Keep-alive pings every 3 s (the configured interval).
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(Ok(Message::Ping(_)))) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            pings += 1;
        }
    }
    assert!((2..=4).contains(&pings), "{pings} pings in 10 s at a 3 s interval");

    // `exit` ends the session: an exit message, then a normal close.
    send(&mut ws, "exit\n").await;
    let (control, close) = next_control(&mut ws).await;
    assert_eq!(control.unwrap(), json!({"type": "exit", "status": 0}));
    assert_eq!(close.unwrap().0, 1000);

    // Closing the WebSocket ends the guest's session and frees every task.
    let mut ws = open(&svc, &id, "").await;
    // The prompt follows the MOTD after the guest starts a login shell: slow when both lanes load the host.
    read_until(&mut ws, "$ ", Duration::from_secs(120)).await;
    let session = session_pids(&mut ws).await;
    assert_session_runs(&mut ws, &key, &ip, &session).await;
    ws.close(None).await.unwrap();
    drop(ws);
    // The shell and its connection's sshd end in the guest.
    wait_for_guest("the guest's session to end", &key, &ip, &session_state(&session), "gone", Duration::from_secs(20))
        .await;
    wait_for("the service to release the session", Duration::from_secs(10), Duration::from_millis(200), || async {
        (health_terminal(&svc).await == baseline).then_some(())
    })
    .await;

    // A message far larger than a terminal needs (the cap is 64 KiB) ends the session
    // rather than being buffered.
    let mut greedy = open(&svc, &id, "").await;
    read_until(&mut greedy, "$ ", Duration::from_secs(30)).await;
    let _ = greedy.send(Message::Binary(vec![b'x'; 1024 * 1024].into())).await;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), greedy.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break Some(frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => break Some(None),
            Err(_) => break None,
        }
    };
    assert!(ended.is_some(), "a 1 MiB message did not end the session");
    wait_for("the oversized session to be released", Duration::from_secs(10), Duration::from_millis(200), || async {
        (health_terminal(&svc).await == baseline).then_some(())
    })
    .await;

    // A client that stops answering pings is disconnected.
    let mut silent = open(&svc, &id, "").await;
    tokio::time::sleep(Duration::from_secs(16)).await;
    // The server ends it: a 4408 close, or a reset when our unread data is in the way.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), silent.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break Some(frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => break Some(None),
            Err(_) => break None,
        }
    };
    assert!(matches!(ended, Some(None) | Some(Some(4408))), "a silent client was not disconnected: {ended:?}");
    wait_for("the silent session to be released", Duration::from_secs(10), Duration::from_millis(200), || async {
        (health_terminal(&svc).await == baseline).then_some(())
    })
    .await;

    // A client that keeps its connection but reads nothing while the guest writes without
    // end is dropped once the output has waited three keep-alive intervals: the session
    // and the guest's shell are not held for ever.
    let mut flooded = open(&svc, &id, "").await;
    read_until(&mut flooded, "$ ", Duration::from_secs(120)).await;
    send(&mut flooded, "yes\n").await;
    wait_for("the flooded session to be released", Duration::from_secs(120), Duration::from_millis(500), || async {
        (health_terminal(&svc).await == baseline).then_some(())
    })
    .await;
    drop(flooded);
    wait_for_guest("the guest's yes to end", &key, &ip, "pgrep -x yes || echo none", "none", Duration::from_secs(30))
        .await;

    // The pair is deleted and made again under the same name: its new key is not used
    // for the instance launched with the old one; the old key, given by the user, is.
    let response = client().delete(svc.api("/key-pairs/term")).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let (status, again) = post_json(&svc.api("/key-pairs"), &json!({"name": "term"})).await;
    assert_eq!(status, 201, "{again}");
    let mut ws = open(&svc, &id, "").await;
    let asked = match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<Value>(&text).unwrap(),
        other => panic!("expected auth_required, got {other:?}"),
    };
    assert_eq!((asked["type"].as_str(), asked["reason"].as_str()), (Some("auth_required"), Some("key_replaced")));
    assert!(asked["message"].as_str().unwrap().contains("made again"), "{asked}");
    let original = std::fs::read_to_string(&key).unwrap();
    ws.send(Message::Text(json!({"type": "auth", "private_key": original}).to_string().into())).await.unwrap();
    // The prompt follows the MOTD after the guest starts a login shell: slow when both lanes load the host.
    read_until(&mut ws, "$ ", Duration::from_secs(120)).await;
    send(&mut ws, "exit\n").await;
    let (control, _) = next_control(&mut ws).await;
    assert_eq!(control.unwrap(), json!({"type": "exit", "status": 0}));

    // A stopped instance refuses terminals.
    let (status, _) = post_empty(&svc.api(&format!("/instances/{id}/stop"))).await;
    assert_eq!(status, 202);
    wait_instance(&svc, &id, "stopped", Duration::from_secs(120), |i| i["state"] == "stopped").await;
    let mut ws = open(&svc, &id, "").await;
    let (control, close) = next_control(&mut ws).await;
    let control = control.unwrap();
    assert_eq!(control["code"], "InstanceNotRunning");
    assert!(control["message"].as_str().unwrap().contains("stopped"), "{control}");
    assert_eq!(close.unwrap().0, 4409);
    let (status, body) = get_json(&svc.api(&format!("/instances/{id}/terminal"))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("InstanceNotRunning")));

    let response = client().delete(svc.api(&format!("/instances/{id}"))).send().await.unwrap();
    assert_eq!(response.status(), 202);
    wait_instance(&svc, &id, "terminated", Duration::from_secs(120), |i| i["state"] == "terminated").await;
}
