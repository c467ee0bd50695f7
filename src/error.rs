//! The error every service returns to its callers (API and CLI). Each variant carries
//! a stable `code` for clients; `api::error` is the one place that maps it to HTTP.

use crate::db::DbError;
use crate::exec::ExecError;
use crate::exec::qemu_img::QemuImgError;
use crate::exec::virsh::VirshError;
use crate::render::RenderError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// libvirt cannot be reached; the request may succeed once it is back.
    #[error("{0}")]
    LibvirtUnavailable(String),
    /// The instance network cannot be used as configured; the message says how to fix it.
    #[error("{0}")]
    NetworkUnavailable(String),
    /// libvirt's QEMU user cannot reach the data dir; the message says the fix.
    #[error("{0}")]
    DataDirUnreachable(String),
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    InvalidInput { code: &'static str, message: String },
    /// The request is valid but conflicts with the current state of things.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// What was sent is larger than the service takes (or its disk can hold).
    #[error("{message}")]
    TooLarge { code: &'static str, message: String },
    /// The data dir's disk filled up while writing; nothing half-written is kept.
    #[error("{0}")]
    InsufficientStorage(String),
    /// The caller stopped sending in the middle of a request.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    pub fn code(&self) -> &'static str {
        match self {
            AppError::LibvirtUnavailable(_) => "LibvirtUnavailable",
            AppError::NetworkUnavailable(_) => "NetworkUnavailable",
            AppError::DataDirUnreachable(_) => "DataDirUnreachable",
            AppError::NotFound { code, .. }
            | AppError::InvalidInput { code, .. }
            | AppError::Conflict { code, .. }
            | AppError::TooLarge { code, .. } => code,
            AppError::InsufficientStorage(_) => "InsufficientStorage",
            AppError::RequestTimeout(_) => "RequestTimeout",
            AppError::Internal(_) => "InternalError",
        }
    }
}

impl From<VirshError> for AppError {
    fn from(err: VirshError) -> Self {
        match err {
            VirshError::Unreachable { .. } => AppError::LibvirtUnavailable(err.to_string()),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<DbError> for AppError {
    fn from(err: DbError) -> Self {
        AppError::Internal(err.to_string())
    }
}

impl From<ExecError> for AppError {
    fn from(err: ExecError) -> Self {
        AppError::Internal(err.to_string())
    }
}

impl From<QemuImgError> for AppError {
    fn from(err: QemuImgError) -> Self {
        AppError::Internal(err.to_string())
    }
}

impl From<RenderError> for AppError {
    fn from(err: RenderError) -> Self {
        AppError::Internal(err.to_string())
    }
}

impl From<std::io::Error> for AppError {
    fn from(err: std::io::Error) -> Self {
        AppError::Internal(err.to_string())
    }
}
