//! HTTP: the JSON API under /api (poem-openapi), Swagger UI at /docs, the spec at
//! /openapi.json. Handlers parse and call services; `error` picks every status.

pub mod ec2;
pub mod error;
pub mod forwards;
pub mod host_guard;
pub mod images;
pub mod instances;
pub mod key_pairs;
pub mod serde_payload;
pub mod strict;
pub mod system;
pub mod terminal;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, EndpointExt, IntoResponse, Route, get};
use poem_openapi::{OpenApiService, Tags};

use crate::app::App;
use crate::config::Config;

#[derive(Tags)]
pub enum ApiTags {
    /// Health, host resources and network
    System,
    /// SSH key pairs
    KeyPairs,
    /// Base OS images
    Images,
    /// Instances and instance types
    Instances,
    /// Host ports forwarded to instance ports
    Forwards,
}

pub type Apis = (
    system::SystemApi,
    instances::InstancesApi,
    terminal::TerminalApi,
    key_pairs::KeyPairsApi,
    images::ImagesApi,
    forwards::ForwardsApi,
);

pub fn openapi_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            system::SystemApi,
            instances::InstancesApi,
            terminal::TerminalApi,
            key_pairs::KeyPairsApi,
            images::ImagesApi,
            forwards::ForwardsApi,
        ),
        "ec2local",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "EC2-shaped virtual machines on your own machine, through libvirt/QEMU. \
             Every error body is {\"code\": \"...\", \"message\": \"...\"}; \
             503 means libvirt is unreachable.",
    )
    .server("/api")
}

/// Request bodies are small JSON documents (user data is at most 16 KiB).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The whole HTTP application for a service bound to `bind`.
pub fn routes(app: Arc<App>, bind: SocketAddr) -> impl Endpoint {
    let api = openapi_service();
    let docs = api.swagger_ui();
    let spec = api.spec_endpoint();
    let allowed = Arc::new(host_guard::allowed_hosts(bind));
    Route::new()
        .nest("/api", api)
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        // The web UI, and the EC2 Query API the AWS tools send to the endpoint's root.
        .at("/", get(ec2::get_root).post(ec2::post_root))
        .at("/assets/:name", get(ui::assets))
        .catch_all_error(error::json_error_response)
        .data(app)
        .data(terminal::BoundAddress(bind))
        .around(move |ep, mut req| {
            let allowed = allowed.clone();
            async move {
                let header = |name: &str| req.headers().get(name).and_then(|h| h.to_str().ok()).map(str::to_string);
                let host = header("host");
                if !host_guard::host_is_allowed(&allowed, host.as_deref()) {
                    let refused = error::HttpRefusal::ForbiddenHost(format!(
                        "Host {:?} is not this service's address; use http://localhost:{}",
                        host.unwrap_or_default(),
                        bind.port()
                    ));
                    return Ok(refused.response());
                }
                let origin = header("origin");
                let fetch_site = header("sec-fetch-site");
                if host_guard::cross_site_refused(
                    req.method().as_str(),
                    origin.as_deref(),
                    fetch_site.as_deref(),
                    bind.port(),
                ) {
                    let refused = error::HttpRefusal::ForbiddenOrigin(format!(
                        "requests that change something are taken only from this service's own pages \
                         (http://localhost:{}), not from {}",
                        bind.port(),
                        origin.as_deref().or(fetch_site.as_deref()).unwrap_or("another site")
                    ));
                    return Ok(with_security_headers(refused.response(), false));
                }
                let action_in_query = req.uri().path() == "/"
                    && req.uri().query().is_some_and(|q| q.split('&').any(|p| p.starts_with("Action=")));
                if action_in_query
                    && host_guard::query_action_refused(origin.as_deref(), fetch_site.as_deref(), bind.port())
                {
                    let refused = error::HttpRefusal::ForbiddenOrigin(format!(
                        "EC2 actions are taken only from tools and this service's own pages (http://localhost:{}), \
                         not from another page",
                        bind.port()
                    ));
                    return Ok(with_security_headers(refused.response(), false));
                }
                if is_image_upload(&req) {
                    // The body is the image's bytes, streamed to disk and held to the free
                    // space by the import itself, whatever type the client says it is.
                    req.headers_mut().insert(
                        poem::http::header::CONTENT_TYPE,
                        poem::http::HeaderValue::from_static("application/octet-stream"),
                    );
                } else if let Some(too_large) = limit_body(&mut req).await {
                    return Ok(with_security_headers(too_large, false));
                }
                let is_ui = req.uri().path() == "/" || req.uri().path().starts_with("/assets/");
                Ok(with_security_headers(ep.call(req).await?.into_response(), is_ui))
            }
        })
}

/// `PUT`/`POST /api/images/{name}/file`: the one request whose body is not small JSON.
fn is_image_upload(req: &poem::Request) -> bool {
    let upload_method = matches!(*req.method(), poem::http::Method::PUT | poem::http::Method::POST);
    let segments: Vec<&str> = req.uri().path().split('/').collect();
    upload_method && matches!(segments.as_slice(), ["", "api", "images", name, "file"] if !name.is_empty())
}

fn payload_too_large() -> poem::Response {
    error::HttpRefusal::PayloadTooLarge { limit: MAX_BODY_BYTES }.response()
}

/// After a body is refused as too large, up to this much more of it is read and
/// dropped, for at most `DRAIN_TIME`: a client still sending it then reads the 413
/// instead of a reset connection. Past that the connection is closed.
const DRAIN_BYTES: usize = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Holds every request body to `MAX_BODY_BYTES`, whether it says its length or comes
/// chunked: the body is read (up to the limit) before any handler sees it, so a
/// handler that takes no body still answers, and a large one never reaches memory.
async fn limit_body(req: &mut poem::Request) -> Option<poem::Response> {
    use futures_util::StreamExt;
    let length = req.headers().get(poem::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    if let Some(length) = length.and_then(|v| v.parse::<usize>().ok()).filter(|n| *n > MAX_BODY_BYTES) {
        if length <= DRAIN_BYTES {
            drain(req.take_body().into_bytes_stream(), 0).await;
        }
        return Some(payload_too_large());
    }
    // WebSocket upgrades carry no body; reading one would wait on the connection.
    if req.headers().contains_key(poem::http::header::UPGRADE) {
        return None;
    }
    let mut stream = std::pin::pin!(req.take_body().into_bytes_stream());
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => return Some(poem::Error::from(poem::error::ReadBodyError::Io(e)).into_response()),
        };
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            drain(stream, body.len() + chunk.len()).await;
            return Some(payload_too_large());
        }
        body.extend_from_slice(&chunk);
    }
    req.set_body(body);
    None
}

/// Reads and drops what is left of a refused body (`read` bytes of it came already),
/// within `DRAIN_BYTES` and `DRAIN_TIME`.
async fn drain<B: AsRef<[u8]>>(stream: impl futures_util::Stream<Item = std::io::Result<B>>, mut read: usize) {
    use futures_util::StreamExt;
    let mut stream = std::pin::pin!(stream);
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while read <= DRAIN_BYTES {
            match stream.next().await {
                Some(Ok(chunk)) => read += chunk.as_ref().len(),
                _ => return,
            }
        }
    })
    .await;
}

/// What a browser may do with our responses. Every response: no framing by other
/// sites (clickjacking), no content sniffing. The UI's pages also get a policy that
/// loads nothing from elsewhere (xterm.js sets inline styles, hence `'unsafe-inline'`
/// for styles only). Swagger UI at /docs keeps its own inline script, so it gets no CSP.
fn with_security_headers(mut response: poem::Response, is_ui: bool) -> poem::Response {
    let headers = response.headers_mut();
    headers.insert("x-frame-options", poem::http::HeaderValue::from_static("DENY"));
    headers.insert("x-content-type-options", poem::http::HeaderValue::from_static("nosniff"));
    if is_ui {
        headers.insert("content-security-policy", poem::http::HeaderValue::from_static(UI_CONTENT_SECURITY_POLICY));
    } else {
        headers.insert("content-security-policy", poem::http::HeaderValue::from_static("frame-ancestors 'none'"));
    }
    response
}

pub const UI_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server: {0}")]
    Server(std::io::Error),
}

/// Starts the service and serves until SIGINT/SIGTERM.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let bind = config.bind;
    let acceptor = NoDelay(
        TcpListener::bind(bind).into_acceptor().await.map_err(|source| ServeError::Bind { addr: bind, source })?,
    );
    let local = acceptor.local_addr().first().and_then(|a| a.as_socket_addr().copied()).unwrap_or(bind);
    let app = App::start(config).await?;
    // Tests and scripts read this line to learn the port when binding to port 0.
    println!("ec2local listening on http://{local}");
    tracing::info!(address = %local, "listening");
    let served = poem::Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(routes(app.clone(), local), shutdown_signal(), Some(Duration::from_secs(5)))
        .await;
    if tokio::time::timeout(SPARES_SHUTDOWN, app.instances.discard_spares_at_shutdown()).await.is_err() {
        tracing::warn!("warm spares are left for the next start to discard");
    }
    served.map_err(ServeError::Server)
}

/// How long a shutdown waits for the warm spares to go (about a second each).
const SPARES_SHUTDOWN: Duration = Duration::from_secs(30);

/// poem's TCP acceptor with Nagle's algorithm off on every connection: the web terminal
/// sends a keystroke's echo and each piece of output as a small WebSocket frame, which
/// Nagle would hold back until the browser acknowledged the one before (issue 17, item 6).
struct NoDelay(TcpAcceptor);

impl Acceptor for NoDelay {
    type Io = tokio::net::TcpStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.0.local_addr()
    }

    async fn accept(&mut self) -> std::io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.0.accept().await?;
        io.set_nodelay(true)?;
        Ok((io, local, remote, scheme))
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    // issue 17, item 6: terminal output is not held back by Nagle's algorithm.
    #[tokio::test]
    async fn connections_are_accepted_with_nagle_off() {
        let mut acceptor = NoDelay(TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap());
        let address = *acceptor.local_addr()[0].as_socket_addr().unwrap();
        let client = tokio::net::TcpStream::connect(address).await.unwrap();
        let (accepted, _, remote, _) = acceptor.accept().await.unwrap();
        assert_eq!(remote.as_socket_addr(), Some(&client.local_addr().unwrap()));
        assert!(accepted.nodelay().unwrap());
    }
}
