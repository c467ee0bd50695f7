//! What the image service refuses, each with the stable code clients match on.

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no image with id or name {0:?}")]
    NotFound(String),
    #[error("{0:?} is not in the catalog (ec2local images list)")]
    NotInCatalog(String),
    #[error("{0}")]
    Duplicate(String),
    #[error("an image name must be 1 to 64 of A-Z, a-z, 0-9, '.', '_', '-', not starting with '.'")]
    InvalidName,
    /// Not an image ec2local can boot, or a request about one that makes no sense.
    #[error("{0}")]
    Invalid(String),
    /// Known but not ready to boot (not pulled, pulling, or its file is missing).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotPullable(String),
    #[error("{0}")]
    PullFailed(String),
    #[error("an import of {0:?} is already in progress")]
    ImportInProgress(String),
    #[error("{0}")]
    InUse(String),
    /// More than the data dir can take in.
    #[error("{0}")]
    TooLarge(String),
    /// The client stopped sending an upload.
    #[error("{0}")]
    UploadStalled(String),
}

impl ImageError {
    pub fn code(&self) -> &'static str {
        match self {
            ImageError::NotFound(_) | ImageError::NotInCatalog(_) => "ImageNotFound",
            ImageError::Duplicate(_) => "ImageDuplicate",
            ImageError::InvalidName => "InvalidImageName",
            ImageError::Invalid(_) => "InvalidImage",
            ImageError::Unavailable(_) => "ImageUnavailable",
            ImageError::NotPullable(_) => "ImageNotPullable",
            ImageError::PullFailed(_) => "ImagePullFailed",
            ImageError::ImportInProgress(_) => "ImageImportInProgress",
            ImageError::InUse(_) => "ImageInUse",
            ImageError::TooLarge(_) => "ImageTooLarge",
            ImageError::UploadStalled(_) => "RequestTimeout",
        }
    }
}
