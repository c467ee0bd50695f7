//! The one place that maps errors to HTTP statuses. Every error body is
//! `{"code": "...", "message": "..."}`.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use crate::error::{AppError, ForwardError, ImageError, InstanceError, KeyPairError};

#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `LibvirtUnavailable`.
    pub code: String,
    /// What went wrong and, where possible, what to do about it.
    pub message: String,
}

#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed or a value is invalid.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// The request was refused (wrong Host or Origin).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request conflicts with the current state.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The client stopped sending the request's body.
    #[oai(status = 408)]
    RequestTimeout(Json<ErrorBody>),
    /// The request body is too large.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// Something failed inside ec2local or a tool it runs.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// libvirt is unreachable; retry once it is back.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
    /// The data directory's disk cannot hold what was asked for.
    #[oai(status = 507)]
    InsufficientStorage(Json<ErrorBody>),
}

/// The status for each service error. Every variant is named, so a new refusal cannot
/// reach a client without a status chosen for it here.
pub fn status_of(err: &AppError) -> StatusCode {
    match err {
        AppError::Instance(e) => instance_status(e),
        AppError::Image(e) => image_status(e),
        AppError::KeyPair(e) => key_pair_status(e),
        AppError::Forward(e) => forward_status(e),
        AppError::LibvirtUnavailable(_) | AppError::NetworkUnavailable(_) | AppError::DataDirUnreachable(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        AppError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
        AppError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn instance_status(err: &InstanceError) -> StatusCode {
    match err {
        InstanceError::NotFound(_) => StatusCode::NOT_FOUND,
        InstanceError::MalformedId(_)
        | InstanceError::InvalidInstanceType(_)
        | InstanceError::InvalidParameter(_)
        | InstanceError::InvalidUserData(_) => StatusCode::BAD_REQUEST,
        InstanceError::InvalidTag(_) | InstanceError::InvalidCount(_) => StatusCode::BAD_REQUEST,
        InstanceError::IncorrectState(_)
        | InstanceError::InsufficientMemory(_)
        | InstanceError::InsufficientDisk(_)
        | InstanceError::AddressPoolExhausted(_)
        | InstanceError::OperationNotPermitted(_)
        | InstanceError::IdempotentParameterMismatch(_) => StatusCode::CONFLICT,
        InstanceError::NoSeedTool | InstanceError::IllegalTransition(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn image_status(err: &ImageError) -> StatusCode {
    match err {
        ImageError::NotFound(_) | ImageError::NotInCatalog(_) => StatusCode::NOT_FOUND,
        ImageError::InvalidName | ImageError::Invalid(_) => StatusCode::BAD_REQUEST,
        ImageError::Duplicate(_)
        | ImageError::Unavailable(_)
        | ImageError::NotPullable(_)
        | ImageError::PullFailed(_)
        | ImageError::ImportInProgress(_)
        | ImageError::InUse(_) => StatusCode::CONFLICT,
        ImageError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ImageError::UploadStalled(_) => StatusCode::REQUEST_TIMEOUT,
    }
}

fn key_pair_status(err: &KeyPairError) -> StatusCode {
    match err {
        KeyPairError::NotFound(_) => StatusCode::NOT_FOUND,
        KeyPairError::InvalidName
        | KeyPairError::InvalidKeyFormat(_)
        | KeyPairError::InvalidPrivateKey(_)
        | KeyPairError::PrivateKeyMismatch(_) => StatusCode::BAD_REQUEST,
        KeyPairError::NameTaken(_) | KeyPairError::KeyTaken(_) => StatusCode::CONFLICT,
        KeyPairError::Crypto { .. } | KeyPairError::Store(_) | KeyPairError::Encoding(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

fn forward_status(err: &ForwardError) -> StatusCode {
    match err {
        ForwardError::InvalidPort(_) => StatusCode::BAD_REQUEST,
        ForwardError::NotFound(_) => StatusCode::NOT_FOUND,
        ForwardError::PortInUse(_) | ForwardError::PortNotPermitted(_) | ForwardError::InstanceTerminated(_) => {
            StatusCode::CONFLICT
        }
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        let body = Json(ErrorBody { code: code.into(), message: message.into() });
        match status {
            StatusCode::BAD_REQUEST => ApiError::BadRequest(body),
            StatusCode::FORBIDDEN => ApiError::Forbidden(body),
            StatusCode::NOT_FOUND => ApiError::NotFound(body),
            StatusCode::CONFLICT => ApiError::Conflict(body),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(body),
            StatusCode::REQUEST_TIMEOUT => ApiError::RequestTimeout(body),
            StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable(body),
            StatusCode::INSUFFICIENT_STORAGE => ApiError::InsufficientStorage(body),
            _ => ApiError::Internal(body),
        }
    }
}

/// Refusals of the HTTP layer itself, made before (or instead of) asking a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpRefusal {
    /// A Host header that is not this service's address (DNS rebinding).
    ForbiddenHost(String),
    /// A state-changing request, or a terminal, from another site's page.
    ForbiddenOrigin(String),
    /// A body over the limit, declared or sent.
    PayloadTooLarge { limit: usize },
    /// The terminal endpoint asked without a WebSocket upgrade.
    WebSocketRequired,
    /// A UI asset that does not exist.
    NoSuchAsset(String),
}

impl HttpRefusal {
    pub fn status(&self) -> StatusCode {
        match self {
            HttpRefusal::ForbiddenHost(_) | HttpRefusal::ForbiddenOrigin(_) => StatusCode::FORBIDDEN,
            HttpRefusal::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HttpRefusal::WebSocketRequired => StatusCode::BAD_REQUEST,
            HttpRefusal::NoSuchAsset(_) => StatusCode::NOT_FOUND,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            HttpRefusal::ForbiddenHost(_) => "ForbiddenHost",
            HttpRefusal::ForbiddenOrigin(_) => "ForbiddenOrigin",
            HttpRefusal::PayloadTooLarge { .. } => "PayloadTooLarge",
            HttpRefusal::WebSocketRequired => "WebSocketRequired",
            HttpRefusal::NoSuchAsset(_) => "NotFound",
        }
    }

    pub fn message(&self) -> String {
        match self {
            HttpRefusal::ForbiddenHost(m) | HttpRefusal::ForbiddenOrigin(m) => m.clone(),
            HttpRefusal::PayloadTooLarge { limit } => format!("request bodies are limited to {limit} bytes"),
            HttpRefusal::WebSocketRequired => "this endpoint speaks WebSocket only".into(),
            HttpRefusal::NoSuchAsset(name) => format!("no UI file named {name:?}"),
        }
    }

    /// The JSON error response.
    pub fn response(&self) -> Response {
        json_body(self.status(), self.code(), &self.message())
    }
}

/// The status of a terminal refusal when the terminal is asked over plain HTTP; over
/// WebSocket the same refusal is a 4xxx close code.
pub fn terminal_status(close_code: u16) -> StatusCode {
    use crate::terminal::close_code as close;
    match close_code {
        close::TOO_MANY => StatusCode::TOO_MANY_REQUESTS,
        close::NOT_FOUND => StatusCode::NOT_FOUND,
        close::NOT_READY => StatusCode::CONFLICT,
        // Over plain HTTP only the instance itself refuses (no key pair): a state conflict.
        close::AUTH_FAILED => StatusCode::CONFLICT,
        close::BAD_REQUEST => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The terminal's answer: 101 and a WebSocket session, or a JSON refusal. Documented
/// here so that /openapi.json lists the terminal with the statuses chosen above.
pub struct TerminalAnswer(pub Response);

impl IntoResponse for TerminalAnswer {
    fn into_response(self) -> Response {
        self.0
    }
}

impl poem_openapi::ApiResponse for TerminalAnswer {
    fn meta() -> poem_openapi::registry::MetaResponses {
        use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses};
        use poem_openapi::types::Type;
        let refusal = |status: u16, description: &'static str| MetaResponse {
            description,
            status: Some(status),
            status_range: None,
            content: vec![MetaMediaType {
                content_type: "application/json; charset=utf-8",
                schema: ErrorBody::schema_ref(),
            }],
            headers: vec![],
        };
        MetaResponses {
            responses: vec![
                MetaResponse {
                    description: "Switching Protocols: the WebSocket session. Refusals found after the upgrade \
                                  come as an error message and a close code (4400 bad request, 4401 no usable key, \
                                  4404 no such instance, 4408 keep-alive timeout, 4409 not running or no address, \
                                  4429 too many sessions, 4495 host key changed, 4502 SSH unreachable).",
                    status: Some(101),
                    status_range: None,
                    content: vec![],
                    headers: vec![],
                },
                refusal(400, "Not a WebSocket request (`WebSocketRequired`)."),
                refusal(403, "From another site's page (`ForbiddenOrigin`)."),
                refusal(404, "No such instance (`InstanceNotFound`)."),
                refusal(409, "Not running, no address yet, or launched without a key pair."),
                refusal(429, "Too many terminal sessions (`TooManyTerminals`)."),
                refusal(503, "The instance cannot be reached."),
            ],
        }
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        <ErrorBody as poem_openapi::types::Type>::register(registry);
    }
}

/// `{"code", "message"}` with a status.
pub fn json_body(status: StatusCode, code: &str, message: &str) -> Response {
    poem::web::Json(ErrorBody { code: code.into(), message: message.into() }).with_status(status).into_response()
}

impl From<AppError> for ApiError {
    fn from(err: AppError) -> Self {
        let status = status_of(&err);
        if status.is_server_error() {
            tracing::error!(code = err.code(), error = %err, "request failed");
        }
        ApiError::new(status, err.code(), err.to_string())
    }
}

/// Code for errors raised by the HTTP layer itself (bad JSON, unknown route, ...).
fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
        StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLarge",
        s if s.is_server_error() => "InternalError",
        _ => "RequestError",
    }
}

/// Turns any error that escaped a handler into the JSON error body; responses that
/// already are JSON (our own `ApiError`s) pass through unchanged.
pub async fn json_error_response(err: poem::Error) -> Response {
    let response = err.into_response();
    let is_json = response.content_type().is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return response;
    }
    let status = response.status();
    let text = response.into_body().into_string().await.unwrap_or_default();
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text.trim().to_string()
    };
    poem::web::Json(ErrorBody { code: code_for_status(status).to_string(), message })
        .with_status(status)
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    // REQ-REL-003
    #[test]
    fn every_service_error_has_its_status() {
        let cases: [(AppError, u16); 19] = [
            (InstanceError::MalformedId("x".into()).into(), 400),
            (InstanceError::NotFound("i-0".into()).into(), 404),
            (InstanceError::InsufficientMemory("x".into()).into(), 409),
            (ImageError::InvalidName.into(), 400),
            (ImageError::InUse("x".into()).into(), 409),
            (ImageError::TooLarge("x".into()).into(), 413),
            (ImageError::UploadStalled("x".into()).into(), 408),
            (KeyPairError::NameTaken("k".into()).into(), 409),
            (KeyPairError::PrivateKeyMismatch("k".into()).into(), 400),
            (AppError::InsufficientStorage("x".into()), 507),
            (AppError::internal("x"), 500),
            (AppError::LibvirtUnavailable("libvirt down".into()), 503),
            (AppError::NetworkUnavailable("socket_vmnet is not running".into()), 503),
            (AppError::DataDirUnreachable("QEMU cannot traverse /root".into()), 503),
            (ForwardError::InvalidPort("x".into()).into(), 400),
            (ForwardError::NotFound("x".into()).into(), 404),
            (ForwardError::PortInUse("x".into()).into(), 409),
            (ForwardError::PortNotPermitted("x".into()).into(), 409),
            (ForwardError::InstanceTerminated("x".into()).into(), 409),
        ];
        for (err, status) in cases {
            assert_eq!(status_of(&err).as_u16(), status, "{err:?}");
        }
    }

    #[tokio::test]
    async fn the_body_carries_code_and_message() {
        let api: ApiError = AppError::LibvirtUnavailable("libvirt at qemu:///system is unreachable".into()).into();
        let response = poem::Error::from(api).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_str(&response.into_body().into_string().await.unwrap()).unwrap();
        assert_eq!(body["code"], "LibvirtUnavailable");
        assert_eq!(body["message"], "libvirt at qemu:///system is unreachable");
    }

    #[tokio::test]
    async fn plain_errors_become_json() {
        let response = json_error_response(poem::Error::from_status(StatusCode::NOT_FOUND)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: serde_json::Value = serde_json::from_str(&response.into_body().into_string().await.unwrap()).unwrap();
        assert_eq!(body["code"], "NotFound");
    }
}
