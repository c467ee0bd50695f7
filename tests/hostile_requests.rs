//! Hostile requests at the HTTP layer (no libvirt needed): other sites' pages, framing,
//! bodies larger than the limit however they are sent, bodies where none is taken.
//! Each refusal changes nothing. See the bad-input table in RELIABILITY.md.

mod common;

use common::{Service, client, get_json};
use serde_json::json;

use common::start_without_libvirt as start;

const PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl hostile@test";

async fn key_pair_names(service: &Service) -> Vec<String> {
    let (status, list) = get_json(&service.api("/key-pairs")).await;
    assert_eq!(status, 200);
    list.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn changes_from_other_sites_are_refused_and_change_nothing() {
    let (_tmp, service) = start();
    let url = service.api("/key-pairs");
    let body = json!({"name": "k1", "public_key": PUBLIC_KEY});
    // A form posted by another site's page, and a fetch marked cross-site by the browser.
    for (header, value) in [("origin", "http://evil.example"), ("origin", "null"), ("sec-fetch-site", "cross-site")] {
        let response = client().post(&url).header(header, value).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 403, "{header}: {value}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["code"], "ForbiddenOrigin", "{error}");
    }
    assert!(key_pair_names(&service).await.is_empty(), "a refused request stored a key pair");
    // A body-less form post to an action is refused the same way.
    let stop = client()
        .post(service.api("/instances/i-0000abcd/stop"))
        .header("origin", "https://attacker.test")
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), 403);

    // The service's own page, and tools that send no Origin, go through.
    let own = format!("http://localhost:{}", service.port);
    let response = client().post(&url).header("origin", own.as_str()).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let deleted = client().delete(service.api("/key-pairs/k1")).header("origin", "http://evil.example").send().await;
    assert_eq!(deleted.unwrap().status(), 403);
    assert_eq!(key_pair_names(&service).await, ["k1"], "a refused delete changed something");
    let deleted = client().delete(service.api("/key-pairs/k1")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    // EC2 actions: a form posted by another page is refused like any change, and so is a
    // GET carrying the action (an <img> can send one); tools pass either way.
    let ec2 = format!("{}/", service.url);
    let form = "Action=ImportKeyPair&KeyName=k2&PublicKeyMaterial=".to_string() + PUBLIC_KEY;
    let posted = client().post(&ec2).header("origin", "http://evil.example").body(form.clone()).send().await.unwrap();
    assert_eq!(posted.status(), 403);
    let query = format!("{ec2}?Action=DeleteKeyPair&KeyName=k1");
    for (header, value) in
        [("sec-fetch-site", "cross-site"), ("sec-fetch-site", "same-site"), ("origin", "http://evil.example")]
    {
        let loaded = client().get(&query).header(header, value).send().await.unwrap();
        assert_eq!(loaded.status(), 403, "{header}: {value}");
    }
    assert!(key_pair_names(&service).await.is_empty(), "a refused EC2 call changed something");
    let by_tool = client()
        .post(&ec2)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("Action=DescribeKeyPairs")
        .send()
        .await
        .unwrap();
    assert_eq!(by_tool.status(), 200);
    // Reading stays open: a cross-site GET cannot read the answer anyway (no CORS).
    let read = client().get(service.api("/key-pairs")).header("origin", "http://evil.example").send().await.unwrap();
    assert_eq!(read.status(), 200);
}

#[tokio::test]
async fn responses_cannot_be_framed_or_sniffed_and_the_ui_loads_nothing_from_elsewhere() {
    let (_tmp, service) = start();
    let page = client().get(format!("{}/", service.url)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers();
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in ["default-src 'self'", "frame-ancestors 'none'", "script-src 'self'", "object-src 'none'"] {
        assert!(csp.contains(directive), "{directive} missing from {csp}");
    }
    assert!(!csp.contains("http"), "the UI's policy names another origin: {csp}");
    for path in ["/api/health", "/docs", "/assets/app.js"] {
        let response = client().get(format!("{}{path}", service.url)).send().await.unwrap();
        assert_eq!(response.headers()["x-frame-options"], "DENY", "{path}");
        let csp = response.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    }
}

#[tokio::test]
async fn chunked_bodies_over_the_limit_are_refused_and_bodies_where_none_is_taken_get_an_answer() {
    let (_tmp, service) = start();
    // 8 MiB sent chunked: no Content-Length to check up front. More than the sockets
    // buffer, so the client is still sending when the service refuses: the service reads
    // the rest and drops it, and the client gets the 413, not a reset connection.
    let chunks = (0..128).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024]));
    let response = client()
        .post(service.api("/key-pairs"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .expect("an answer, not a reset connection");
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "PayloadTooLarge");
    assert!(key_pair_names(&service).await.is_empty());
    // The same with its length said up front.
    let response = client()
        .post(service.api("/key-pairs"))
        .header("content-type", "application/json")
        .body(vec![b' '; 8 << 20])
        .send()
        .await
        .expect("an answer, not a reset connection");
    assert_eq!(response.status(), 413);

    // A small chunked body within the limit still works.
    let json = serde_json::to_vec(&json!({"name": "chunked", "public_key": PUBLIC_KEY})).unwrap();
    let response = client()
        .post(service.api("/key-pairs"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(json)])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // 512 KiB to an action that takes no body: an answer, not a reset connection.
    let response = client()
        .post(service.api("/instances/i-0000abcd/stop"))
        .body(vec![b'x'; 512 * 1024])
        .send()
        .await
        .expect("an answer, not a reset connection");
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "InvalidInstanceID.NotFound");
}

#[tokio::test]
async fn a_number_or_boolean_where_a_string_belongs_is_refused_with_the_field_named() {
    let (_tmp, service) = start();
    let cases = [
        ("/instances", json!({"instance_type": "t2.nano", "image_id": "ami-1", "name": true}), "name"),
        ("/instances", json!({"instance_type": "t2.nano", "image_id": "ami-1", "user_data": 5}), "user_data"),
        ("/instances", json!({"instance_type": "t2.nano", "image_id": "ami-1", "key_name": 7}), "key_name"),
        ("/instances", json!({"instance_type": "t2.nano", "image_id": 7}), "image_id"),
        ("/key-pairs", json!({"name": 7, "public_key": PUBLIC_KEY}), "name"),
        ("/key-pairs", json!({"name": "k", "public_key": false}), "public_key"),
        ("/images", json!({"name": 1, "file_path": "/nonexistent.qcow2"}), "name"),
    ];
    for (path, body, field) in cases {
        let response = client().post(service.api(path)).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{path} {body}");
        let error: serde_json::Value = response.json().await.unwrap();
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(field) && message.contains("expected a string"), "{path} {body}: {message}");
    }
    assert!(key_pair_names(&service).await.is_empty());
    let (_, instances) = get_json(&service.api("/instances?include_terminated=true")).await;
    assert_eq!(instances, json!([]));
}

#[tokio::test]
async fn terminal_sessions_beyond_the_cap_are_refused_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let service = Service::start(
        &tmp.path().join("data"),
        &[("EC2LOCAL_LIBVIRT_URI", common::NO_LIBVIRT), ("EC2LOCAL_TERMINAL_MAX_SESSIONS", "0")],
    );
    // Without a WebSocket upgrade: 429 with the reason.
    let response = client().get(service.api("/instances/i-0000abcd/terminal")).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "TooManyTerminals");
    assert!(body["message"].as_str().unwrap().contains("--terminal-max-sessions"), "{body}");

    // A WebSocket client is told why, then closed with 4429.
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://127.0.0.1:{}/api/instances/i-0000abcd/terminal", service.port);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let Some(Ok(Message::Text(text))) = socket.next().await else { panic!("no error message") };
    let message: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!((message["type"].as_str(), message["code"].as_str()), (Some("error"), Some("TooManyTerminals")));
    let Some(Ok(Message::Close(Some(frame)))) = socket.next().await else { panic!("no close frame") };
    assert_eq!(u16::from(frame.code), 4429);
    let (_, health) = get_json(&service.api("/health")).await;
    assert_eq!(health["terminal"]["sessions"], 0, "a refused session is still counted");
}
