//! /api/key-pairs: import, create, list, get, delete, attach a private key.

use super::strict::{Text, field};
use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::error::ApiError;
use crate::app::App;
use crate::keypairs::KeyPair;

pub struct KeyPairsApi;

#[derive(Debug, Object)]
pub struct KeyPairRequest {
    /// 1 to 255 printable ASCII characters, unique.
    pub name: Text<field::Name>,
    /// An OpenSSH public key line (`TYPE BASE64 [COMMENT]`) to import. Leave it out to
    /// have ec2local create a new ed25519 pair and return its private key once.
    pub public_key: Option<Text<field::PublicKey>>,
}

#[derive(Debug, Object)]
pub struct PrivateKeyRequest {
    /// The OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`), without passphrase.
    pub private_key: Text<field::PrivateKey>,
}

#[derive(Debug, Object)]
pub struct KeyPairDto {
    pub name: String,
    /// ssh-ed25519, ssh-rsa or ecdsa-sha2-nistp256/384/521.
    pub key_type: String,
    /// MD5 of the key, colon-separated hex (as `ssh-keygen -l -E md5`, without `MD5:`).
    pub fingerprint: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint_sha256: String,
    pub public_key: String,
    pub created_at: String,
    /// Whether ec2local holds the private key (for the web terminal).
    pub has_private_key: bool,
    /// Only in the answer to a create, and only then: save it, it is not shown again.
    #[oai(skip_serializing_if_is_none)]
    pub private_key: Option<String>,
}

impl From<KeyPair> for KeyPairDto {
    fn from(k: KeyPair) -> Self {
        KeyPairDto {
            name: k.name,
            key_type: k.key_type,
            fingerprint: k.fingerprint_md5,
            fingerprint_sha256: k.fingerprint_sha256,
            public_key: k.public_key,
            created_at: k.created_at,
            has_private_key: k.has_private_key,
            private_key: None,
        }
    }
}

#[derive(ApiResponse)]
pub enum CreatedKeyPair {
    /// The key pair was imported or created.
    #[oai(status = 201)]
    Created(Json<KeyPairDto>),
}

#[derive(ApiResponse)]
pub enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/key-pairs", tag = "ApiTags::KeyPairs")]
impl KeyPairsApi {
    /// Import a public key (with `public_key`) or create a new ed25519 key pair
    /// (without it; the answer then holds the private key, once). 400 for an invalid key
    /// or name, 409 `KeyPairDuplicate` for a name or key already stored.
    #[oai(path = "/", method = "post")]
    async fn create(&self, app: Data<&Arc<App>>, body: Json<KeyPairRequest>) -> Result<CreatedKeyPair, ApiError> {
        let body = body.0;
        let dto = match body.public_key {
            Some(public_key) => app.key_pairs.import(&body.name.0, &public_key.0).await?.into(),
            None => {
                let (pair, private) = app.key_pairs.create(&body.name.0, crate::keypairs::KeyKind::Ed25519).await?;
                KeyPairDto { private_key: Some(private.0), ..pair.into() }
            }
        };
        Ok(CreatedKeyPair::Created(Json(dto)))
    }

    /// All key pairs, by name.
    #[oai(path = "/", method = "get")]
    async fn list(&self, app: Data<&Arc<App>>) -> Result<Json<Vec<KeyPairDto>>, ApiError> {
        Ok(Json(app.key_pairs.list().await?.into_iter().map(KeyPairDto::from).collect()))
    }

    /// One key pair; 404 `KeyPairNotFound`.
    #[oai(path = "/:name", method = "get")]
    async fn get(&self, app: Data<&Arc<App>>, name: Path<String>) -> Result<Json<KeyPairDto>, ApiError> {
        Ok(Json(app.key_pairs.get(&name.0).await?.into()))
    }

    /// Delete a key pair and its private key. Instances launched with it keep working.
    #[oai(path = "/:name", method = "delete")]
    async fn delete(&self, app: Data<&Arc<App>>, name: Path<String>) -> Result<Deleted, ApiError> {
        app.key_pairs.delete(&name.0).await?;
        Ok(Deleted::NoContent)
    }

    /// Attach the private half of an imported key so the web terminal can log in with
    /// it. 400 `PrivateKeyMismatch` unless it matches the stored public key.
    #[oai(path = "/:name/private-key", method = "put")]
    async fn attach_private_key(
        &self,
        app: Data<&Arc<App>>,
        name: Path<String>,
        body: Json<PrivateKeyRequest>,
    ) -> Result<Json<KeyPairDto>, ApiError> {
        Ok(Json(app.key_pairs.attach_private_key(&name.0, &body.0.private_key.0).await?.into()))
    }
}
