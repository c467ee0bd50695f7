//! HTTP: the JSON API under /api (poem-openapi), Swagger UI at /docs, the spec at
//! /openapi.json. Handlers parse and call services; `error` picks every status.

pub mod error;
pub mod host_guard;
pub mod images;
pub mod instances;
pub mod key_pairs;
pub mod system;
pub mod terminal;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpListener};
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
}

pub type Apis = (system::SystemApi, instances::InstancesApi, key_pairs::KeyPairsApi, images::ImagesApi);

pub fn openapi_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (system::SystemApi, instances::InstancesApi, key_pairs::KeyPairsApi, images::ImagesApi),
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
        .at("/api/instances/:id/terminal", get(terminal::open_terminal))
        .at("/", get(ui::index))
        .at("/assets/:name", get(ui::assets))
        .catch_all_error(error::json_error_response)
        .data(app)
        .data(terminal::BoundAddress(bind))
        .around(move |ep, req| {
            let allowed = allowed.clone();
            async move {
                let host = req.headers().get(poem::http::header::HOST).and_then(|h| h.to_str().ok());
                if !host_guard::host_is_allowed(&allowed, host) {
                    let refused = error::ApiError::new(
                        poem::http::StatusCode::FORBIDDEN,
                        "ForbiddenHost",
                        format!(
                            "Host {:?} is not this service's address; use http://localhost:{}",
                            host.unwrap_or(""),
                            bind.port()
                        ),
                    );
                    return Ok(poem::Error::from(refused).into_response());
                }
                let length = req.headers().get(poem::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
                if length.and_then(|v| v.parse::<usize>().ok()).is_some_and(|n| n > MAX_BODY_BYTES) {
                    let too_large = error::ApiError::new(
                        poem::http::StatusCode::PAYLOAD_TOO_LARGE,
                        "PayloadTooLarge",
                        format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
                    );
                    return Ok(poem::Error::from(too_large).into_response());
                }
                Ok(ep.call(req).await?.into_response())
            }
        })
}

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
    let acceptor =
        TcpListener::bind(bind).into_acceptor().await.map_err(|source| ServeError::Bind { addr: bind, source })?;
    let local = acceptor.local_addr().first().and_then(|a| a.as_socket_addr().copied()).unwrap_or(bind);
    let app = App::start(config).await?;
    // Tests and scripts read this line to learn the port when binding to port 0.
    println!("ec2local listening on http://{local}");
    tracing::info!(address = %local, "listening");
    poem::Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(routes(app, local), shutdown_signal(), Some(Duration::from_secs(5)))
        .await
        .map_err(ServeError::Server)
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
