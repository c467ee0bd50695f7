//! What the key pair service refuses, each with the stable code clients match on.

#[derive(Debug, thiserror::Error)]
pub enum KeyPairError {
    #[error("no key pair named {0:?}")]
    NotFound(String),
    #[error("a key pair name must be 1 to 255 printable ASCII characters, not only spaces")]
    InvalidName,
    #[error("{0}")]
    InvalidKeyFormat(String),
    #[error("a key pair named {0:?} already exists")]
    NameTaken(String),
    #[error("this key is already imported as {0:?}")]
    KeyTaken(String),
    #[error("{0}")]
    InvalidPrivateKey(String),
    #[error("this private key does not belong to the public key of key pair {0:?}")]
    PrivateKeyMismatch(String),
    /// Making or encoding a key failed: a bug or a broken random source, not the caller's doing.
    #[error("{context}: {source}")]
    Crypto { context: &'static str, source: ssh_key::Error },
    #[error("storing the private key: {0}")]
    Store(#[source] std::io::Error),
    #[error("{0}")]
    Encoding(String),
}

use russh::keys::ssh_key;

impl KeyPairError {
    pub fn code(&self) -> &'static str {
        match self {
            KeyPairError::NotFound(_) => "KeyPairNotFound",
            KeyPairError::InvalidName => "InvalidKeyPairName",
            KeyPairError::InvalidKeyFormat(_) => "InvalidKeyFormat",
            KeyPairError::NameTaken(_) | KeyPairError::KeyTaken(_) => "KeyPairDuplicate",
            KeyPairError::InvalidPrivateKey(_) => "InvalidPrivateKey",
            KeyPairError::PrivateKeyMismatch(_) => "PrivateKeyMismatch",
            KeyPairError::Crypto { .. } | KeyPairError::Store(_) | KeyPairError::Encoding(_) => "InternalError",
        }
    }
}
