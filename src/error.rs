//! The error every service returns to its callers (API and CLI): a refusal of one
//! service (its own enum, codes as variants), a host condition, or a failure of a lower
//! layer kept with its source. `api::error` is the one place that maps it to HTTP.

use crate::db::DbError;
use crate::exec::ExecError;
use crate::exec::qemu_img::QemuImgError;
use crate::exec::virsh::VirshError;
pub use crate::forwards::error::ForwardError;
pub use crate::images::error::ImageError;
pub use crate::instances::error::InstanceError;
pub use crate::keypairs::error::KeyPairError;
use crate::render::RenderError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    KeyPair(#[from] KeyPairError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// libvirt cannot be reached; the request may succeed once it is back.
    #[error("{0}")]
    LibvirtUnavailable(String),
    /// The instance network cannot be used as configured; the message says how to fix it.
    #[error("{0}")]
    NetworkUnavailable(String),
    /// libvirt's QEMU user cannot reach the data dir; the message says the fix.
    #[error("{0}")]
    DataDirUnreachable(String),
    /// The data dir's disk cannot hold what was asked for; nothing half-written is kept.
    #[error("{0}")]
    InsufficientStorage(String),
    /// Ours: a lower layer failed, or a state ec2local should never reach. Kept with its
    /// source; clients get a 500.
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// What failed inside ec2local or a tool it runs.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A virsh command failed for a reason other than libvirt being away.
    #[error(transparent)]
    Virsh(VirshError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    QemuImg(#[from] QemuImgError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A file operation that failed, with what it was doing.
    #[error("{doing}: {source}")]
    File { doing: String, source: std::io::Error },
    /// Work moved off the runtime panicked or was cancelled.
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A state ec2local should never reach; the message says which.
    #[error("{0}")]
    Internal(String),
}

/// Each lower layer's error is one of ours.
macro_rules! failure_from {
    ($($source:ty),*) => {$(
        impl From<$source> for AppError {
            fn from(err: $source) -> Self {
                AppError::Failed(err.into())
            }
        }
    )*};
}
failure_from!(DbError, ExecError, QemuImgError, RenderError, std::io::Error, tokio::task::JoinError);

impl AppError {
    /// A state ec2local should never reach.
    pub fn internal(message: impl Into<String>) -> Self {
        AppError::Failed(Failure::Internal(message.into()))
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::Instance(e) => e.code(),
            AppError::Image(e) => e.code(),
            AppError::KeyPair(e) => e.code(),
            AppError::Forward(e) => e.code(),
            AppError::LibvirtUnavailable(_) => "LibvirtUnavailable",
            AppError::NetworkUnavailable(_) => "NetworkUnavailable",
            AppError::DataDirUnreachable(_) => "DataDirUnreachable",
            AppError::InsufficientStorage(_) => "InsufficientStorage",
            AppError::Failed(_) => "InternalError",
        }
    }
}

impl From<VirshError> for AppError {
    fn from(err: VirshError) -> Self {
        match err {
            VirshError::Unreachable { .. } => AppError::LibvirtUnavailable(err.to_string()),
            other => AppError::Failed(Failure::Virsh(other)),
        }
    }
}
