//! What the port forwarding service refuses, each with the stable code clients match on.

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A port outside 1-65535, or a required one missing.
    #[error("{0}")]
    InvalidPort(String),
    /// The host port is held by another forward or another process.
    #[error("{0}")]
    PortInUse(String),
    /// The host refuses this service the port (below 1024 without root).
    #[error("{0}")]
    PortNotPermitted(String),
    /// Forwards of a terminated instance would lead nowhere.
    #[error("{0}")]
    InstanceTerminated(String),
    /// The instance has no forward on that host port.
    #[error("{0}")]
    NotFound(String),
}

impl ForwardError {
    pub fn code(&self) -> &'static str {
        match self {
            ForwardError::InvalidPort(_) => "InvalidParameterValue",
            ForwardError::PortInUse(_) => "PortInUse",
            ForwardError::PortNotPermitted(_) => "PortNotPermitted",
            ForwardError::InstanceTerminated(_) => "IncorrectInstanceState",
            ForwardError::NotFound(_) => "ForwardNotFound",
        }
    }
}
