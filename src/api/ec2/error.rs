//! The EC2 front end's one map from errors to statuses and EC2 codes (the REST map is
//! `api/error.rs`). 4xx for the caller's mistakes; 5xx only for ours and the host's,
//! which the SDKs retry.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};

use super::xml::Xml;
use crate::error::{AppError, ForwardError, ImageError, InstanceError, KeyPairError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Error {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl Ec2Error {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Ec2Error { status, code: code.into(), message: message.into() }
    }
    /// A mistake in the request.
    pub fn client(code: &str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }
    pub fn missing(parameter: &str) -> Self {
        Self::client("MissingParameter", format!("The request must contain the parameter {parameter}"))
    }
    pub fn invalid_value(parameter: &str, value: &str, why: &str) -> Self {
        Self::client("InvalidParameterValue", format!("Value ({value}) for parameter {parameter} is invalid: {why}"))
    }
    pub fn unsupported(what: impl Into<String>) -> Self {
        Self::client("UnsupportedOperation", what)
    }
    /// What `DryRun=true` answers when the call would have succeeded.
    pub fn dry_run() -> Self {
        Self::new(412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
    }

    /// The error document EC2 sends, with its status.
    pub fn response(&self, request_id: &str) -> Response {
        let mut xml = Xml::document();
        xml.elem("Response", |x| {
            x.elem("Errors", |x| {
                x.elem("Error", |x| {
                    x.text("Code", &self.code);
                    x.text("Message", &self.message);
                })
            });
            x.text("RequestID", request_id);
        });
        xml_response(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), xml.finish())
    }
}

/// A 200 (or error) answer with EC2's content type.
pub fn xml_response(status: StatusCode, body: String) -> Response {
    body.with_status(status).with_content_type("text/xml;charset=UTF-8").into_response()
}

pub fn ok_response(body: String) -> Response {
    xml_response(StatusCode::OK, body)
}

impl From<AppError> for Ec2Error {
    fn from(err: AppError) -> Self {
        let message = err.to_string();
        let ours = |code: &str| {
            tracing::error!(code, error = %message, "EC2 request failed");
            Ec2Error::new(500, code, message.clone())
        };
        match &err {
            AppError::Instance(e) => match e {
                InstanceError::NotFound(id) => {
                    Ec2Error::client("InvalidInstanceID.NotFound", format!("The instance ID '{id}' does not exist"))
                }
                InstanceError::MalformedId(_) => Ec2Error::client("InvalidInstanceID.Malformed", message),
                InstanceError::InvalidInstanceType(_)
                | InstanceError::InvalidParameter(_)
                | InstanceError::InvalidTag(_)
                | InstanceError::InvalidCount(_) => Ec2Error::client("InvalidParameterValue", message),
                InstanceError::InvalidUserData(_) => Ec2Error::client("InvalidUserData.Malformed", message),
                InstanceError::IncorrectState(_) => Ec2Error::client("IncorrectInstanceState", message),
                InstanceError::OperationNotPermitted(_) => Ec2Error::client("OperationNotPermitted", message),
                InstanceError::IdempotentParameterMismatch(_) => {
                    Ec2Error::client("IdempotentParameterMismatch", message)
                }
                InstanceError::InsufficientMemory(_)
                | InstanceError::InsufficientDisk(_)
                | InstanceError::AddressPoolExhausted(_) => ours("InsufficientInstanceCapacity"),
                InstanceError::NoSeedTool | InstanceError::IllegalTransition(_) => ours("InternalError"),
            },
            AppError::Image(e) => match e {
                ImageError::NotFound(id) | ImageError::NotInCatalog(id) => {
                    Ec2Error::client("InvalidAMIID.NotFound", format!("The image id '[{id}]' does not exist"))
                }
                ImageError::Unavailable(_) => Ec2Error::client("InvalidAMIID.Unavailable", message),
                ImageError::InvalidName | ImageError::Invalid(_) => Ec2Error::client("InvalidParameterValue", message),
                ImageError::Duplicate(_)
                | ImageError::NotPullable(_)
                | ImageError::PullFailed(_)
                | ImageError::ImportInProgress(_)
                | ImageError::InUse(_)
                | ImageError::TooLarge(_)
                | ImageError::UploadStalled(_) => Ec2Error::client(e.code(), message),
            },
            AppError::KeyPair(e) => match e {
                KeyPairError::NotFound(name) => {
                    Ec2Error::client("InvalidKeyPair.NotFound", format!("The key pair '{name}' does not exist"))
                }
                KeyPairError::NameTaken(name) => {
                    Ec2Error::client("InvalidKeyPair.Duplicate", format!("The keypair '{name}' already exists."))
                }
                KeyPairError::KeyTaken(_) => Ec2Error::client("InvalidKeyPair.Duplicate", message),
                KeyPairError::InvalidKeyFormat(_) => Ec2Error::client("InvalidKeyPair.Format", message),
                KeyPairError::InvalidName
                | KeyPairError::InvalidPrivateKey(_)
                | KeyPairError::PrivateKeyMismatch(_) => Ec2Error::client("InvalidParameterValue", message),
                KeyPairError::Crypto { .. } | KeyPairError::Store(_) | KeyPairError::Encoding(_) => {
                    ours("InternalError")
                }
            },
            // No EC2 action forwards ports; named so that a new refusal gets a code here too.
            AppError::Forward(e) => match e {
                ForwardError::NotFound(_)
                | ForwardError::InvalidPort(_)
                | ForwardError::PortInUse(_)
                | ForwardError::PortNotPermitted(_)
                | ForwardError::InstanceTerminated(_) => Ec2Error::client(e.code(), message),
            },
            AppError::LibvirtUnavailable(_) | AppError::NetworkUnavailable(_) | AppError::DataDirUnreachable(_) => {
                tracing::warn!(error = %message, "EC2 request refused: the host is not ready");
                Ec2Error::new(503, "Unavailable", message)
            }
            AppError::InsufficientStorage(_) => ours("InsufficientInstanceCapacity"),
            AppError::Failed(_) => ours("InternalError"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_become_ec2_codes_with_4xx_for_the_callers_mistakes() {
        let cases: [(AppError, u16, &str); 9] = [
            (InstanceError::NotFound("i-1".into()).into(), 400, "InvalidInstanceID.NotFound"),
            (InstanceError::InsufficientMemory("x".into()).into(), 500, "InsufficientInstanceCapacity"),
            (ImageError::Unavailable("pull it".into()).into(), 400, "InvalidAMIID.Unavailable"),
            (KeyPairError::NameTaken("k".into()).into(), 400, "InvalidKeyPair.Duplicate"),
            (KeyPairError::InvalidKeyFormat("x".into()).into(), 400, "InvalidKeyPair.Format"),
            (AppError::LibvirtUnavailable("down".into()), 503, "Unavailable"),
            (AppError::internal("bug"), 500, "InternalError"),
            (InstanceError::OperationNotPermitted("x".into()).into(), 400, "OperationNotPermitted"),
            (ForwardError::PortInUse("x".into()).into(), 400, "PortInUse"),
        ];
        for (err, status, code) in cases {
            let mapped = Ec2Error::from(err);
            assert_eq!((mapped.status, mapped.code.as_str()), (status, code));
        }
    }

    #[tokio::test]
    async fn the_error_document_is_ec2s_envelope() {
        let response =
            Ec2Error::client("InvalidAction", "The action Nope is not valid for this web service.").response("req-1");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.content_type(), Some("text/xml;charset=UTF-8"));
        let body = response.into_body().into_string().await.unwrap();
        assert_eq!(
            body,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>InvalidAction</Code>\
             <Message>The action Nope is not valid for this web service.</Message></Error></Errors>\
             <RequestID>req-1</RequestID></Response>"
        );
    }
}
