//! A local HTTP mirror of cloud-images.ubuntu.com on 127.0.0.1, with Range support,
//! for pull tests (there is no internet here, and tests must not depend on it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Body, Request, Response};

pub struct Mirror {
    pub url: String,
    range_requests: Arc<AtomicUsize>,
    stall_after: Arc<Mutex<Option<usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mirror {
    /// Serves `files` (path → content) until dropped.
    pub async fn start(files: HashMap<String, Vec<u8>>) -> Mirror {
        let files = Arc::new(files);
        let range_requests = Arc::new(AtomicUsize::new(0));
        let stall_after = Arc::new(Mutex::new(None));
        let (counter, stall) = (range_requests.clone(), stall_after.clone());
        let endpoint = poem::endpoint::make(move |req: Request| {
            let files = files.clone();
            let counter = counter.clone();
            let stall = *stall.lock().unwrap();
            async move { serve(&files, &counter, stall, &req) }
        });
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
        let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
        let task = tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(endpoint).await;
        });
        Mirror { url: format!("http://{addr}"), range_requests, stall_after, task }
    }

    /// From now on, image downloads send `bytes` and then nothing more, without closing
    /// (a stalled mirror); `None` serves them whole again.
    pub fn stall_after(&self, bytes: Option<usize>) {
        *self.stall_after.lock().unwrap() = bytes;
    }

    /// How many requests asked for a byte range (resumed downloads).
    pub fn range_requests(&self) -> usize {
        self.range_requests.load(Ordering::SeqCst)
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn serve(files: &HashMap<String, Vec<u8>>, ranges: &AtomicUsize, stall: Option<usize>, req: &Request) -> Response {
    let Some(content) = files.get(req.uri().path()) else {
        return Response::builder().status(StatusCode::NOT_FOUND).finish();
    };
    if let Some(sent) = stall.filter(|_| !req.uri().path().ends_with("SHA256SUMS")) {
        let head = content[..sent.min(content.len())].to_vec();
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) })
            .chain(futures_util::stream::pending());
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-length", content.len())
            .body(Body::from_bytes_stream(stream));
    }
    let range_start = req
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok());
    match range_start {
        None => Response::builder().status(StatusCode::OK).body(Body::from(content.clone())),
        Some(start) => {
            ranges.fetch_add(1, Ordering::SeqCst);
            if start >= content.len() {
                return Response::builder().status(StatusCode::RANGE_NOT_SATISFIABLE).finish();
            }
            Response::builder()
                .status(StatusCode::PARTIAL_CONTENT)
                .header("content-range", format!("bytes {start}-{}/{}", content.len() - 1, content.len()))
                .body(Body::from(content[start..].to_vec()))
        }
    }
}
