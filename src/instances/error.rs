//! What the instance service refuses, each with the stable code clients match on.

use super::state::{IllegalTransition, IncorrectState};

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("no instance {0}")]
    NotFound(String),
    #[error("{0}")]
    MalformedId(String),
    #[error("{0}")]
    InvalidInstanceType(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    InvalidUserData(String),
    #[error(transparent)]
    IncorrectState(#[from] IncorrectState),
    #[error("{0}")]
    InsufficientMemory(String),
    #[error("{0}")]
    InsufficientDisk(String),
    #[error("{0}")]
    AddressPoolExhausted(String),
    /// Protected against this action (DisableApiTermination / DisableApiStop).
    #[error("{0}")]
    OperationNotPermitted(String),
    /// A client token used before with other launch parameters.
    #[error("{0}")]
    IdempotentParameterMismatch(String),
    #[error("{0}")]
    InvalidTag(String),
    /// MinCount/MaxCount out of range.
    #[error("{0}")]
    InvalidCount(String),
    /// None of mkisofs, genisoimage or hdiutil is installed.
    #[error("no ISO tool to build the cloud-init seed; run `ec2local doctor`")]
    NoSeedTool,
    /// A move the lifecycle does not have: a bug, never the caller's doing.
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
}

impl InstanceError {
    pub fn code(&self) -> &'static str {
        match self {
            InstanceError::NotFound(_) => "InvalidInstanceID.NotFound",
            InstanceError::MalformedId(_) => "InvalidInstanceID.Malformed",
            InstanceError::InvalidInstanceType(_) => "InvalidInstanceType",
            InstanceError::InvalidParameter(_) => "InvalidParameterValue",
            InstanceError::InvalidUserData(_) => "InvalidUserData.Malformed",
            InstanceError::IncorrectState(_) => "IncorrectInstanceState",
            InstanceError::InsufficientMemory(_) => "InsufficientMemory",
            InstanceError::InsufficientDisk(_) => "InsufficientDisk",
            InstanceError::AddressPoolExhausted(_) => "AddressPoolExhausted",
            InstanceError::OperationNotPermitted(_) => "OperationNotPermitted",
            InstanceError::IdempotentParameterMismatch(_) => "IdempotentParameterMismatch",
            InstanceError::InvalidTag(_) | InstanceError::InvalidCount(_) => "InvalidParameterValue",
            InstanceError::NoSeedTool => "NoSeedTool",
            InstanceError::IllegalTransition(_) => "InternalError",
        }
    }
}

impl InstanceError {
    /// Whether the host, not the request, is short (memory, disk or addresses).
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            InstanceError::InsufficientMemory(_)
                | InstanceError::InsufficientDisk(_)
                | InstanceError::AddressPoolExhausted(_)
        )
    }
}
