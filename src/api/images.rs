//! /api/images: the catalog and imported images, pulls, imports, deletion.

use super::strict::{Text, field};
use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::error::ApiError;
use crate::app::App;
use crate::images::{Image, ImportRequest, ImportSource};

pub struct ImagesApi;

#[derive(Debug, Object)]
pub struct ImageDto {
    /// `ami-` + 8 hex, stable for a name and architecture.
    pub id: String,
    pub name: String,
    pub description: String,
    pub os: String,
    pub os_version: String,
    pub architecture: String,
    pub file_path: String,
    /// The user cloud-init creates and the terminal logs in as.
    pub default_user: String,
    pub created_at: String,
    /// The file is present: instances can be launched from it.
    pub available: bool,
    /// `available`; `not-downloaded` or `downloading` for a catalog image waiting for or
    /// in a pull (an ordinary state: pull it); `pull-failed`, `missing-file` (an imported
    /// image's file is gone) or `other-architecture` when something is wrong.
    pub availability: String,
    /// Why it is not available, and how to fix it.
    #[oai(skip_serializing_if_is_none)]
    pub unavailable_reason: Option<String>,
    /// From the built-in catalog (can be pulled) rather than imported.
    pub in_catalog: bool,
    #[oai(skip_serializing_if_is_none)]
    pub source_url: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub sha256: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub size_bytes: Option<i64>,
    /// The current or last pull of this image since the service started.
    #[oai(skip_serializing_if_is_none)]
    pub pull: Option<PullDto>,
}

#[derive(Debug, Object)]
pub struct PullDto {
    /// downloading, verifying, done or failed.
    pub state: String,
    pub bytes_done: u64,
    #[oai(skip_serializing_if_is_none)]
    pub bytes_total: Option<u64>,
    pub bytes_resumed: u64,
    pub bytes_per_second: f64,
    #[oai(skip_serializing_if_is_none)]
    pub eta_seconds: Option<f64>,
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<String>,
}

impl From<Image> for ImageDto {
    fn from(image: Image) -> Self {
        let row = image.row;
        ImageDto {
            id: row.id,
            name: row.name,
            description: row.description,
            os: row.os,
            os_version: row.os_version,
            architecture: row.architecture,
            file_path: row.file_path,
            default_user: row.default_user,
            created_at: row.created_at,
            available: image.available,
            availability: image.availability.as_str().into(),
            unavailable_reason: image.unavailable_reason,
            in_catalog: image.in_catalog,
            source_url: row.source_url,
            sha256: row.sha256,
            size_bytes: row.size_bytes,
            pull: image.pull.map(|p| PullDto {
                state: p.state.as_str().into(),
                bytes_done: p.bytes_done,
                bytes_total: p.bytes_total,
                bytes_resumed: p.bytes_resumed,
                bytes_per_second: p.bytes_per_second,
                eta_seconds: p.eta_seconds,
                error: p.error,
            }),
        }
    }
}

#[derive(Debug, Object)]
pub struct ImportImageRequest {
    /// 1-64 of A-Z a-z 0-9 . _ -
    pub name: Text<field::Name>,
    /// A qcow2 or raw cloud image on this machine; it is copied into images/.
    pub file_path: Text<field::FilePath>,
    pub description: Option<Text<field::Description>>,
    pub os: Option<Text<field::Os>>,
    pub os_version: Option<Text<field::OsVersion>>,
    /// x86_64 or aarch64; the host's by default.
    pub architecture: Option<Text<field::Architecture>>,
    /// The image's cloud-init default user; `ubuntu` by default.
    pub default_user: Option<Text<field::DefaultUser>>,
}

#[derive(ApiResponse)]
pub enum ImageCreated {
    /// The image was imported.
    #[oai(status = 201)]
    Created(Json<ImageDto>),
}

#[derive(ApiResponse)]
pub enum PullStarted {
    /// The pull runs in the background; GET the image to follow its progress.
    #[oai(status = 202)]
    Accepted(Json<ImageDto>),
}

#[derive(ApiResponse)]
pub enum ImageDeleted {
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/images", tag = "ApiTags::Images")]
impl ImagesApi {
    /// All images with their availability.
    #[oai(path = "/", method = "get")]
    async fn list(&self, app: Data<&Arc<App>>) -> Result<Json<Vec<ImageDto>>, ApiError> {
        Ok(Json(app.images.list().await?.into_iter().map(ImageDto::from).collect()))
    }

    /// One image by id or name, with the progress of its pull.
    #[oai(path = "/:id", method = "get")]
    async fn get(&self, app: Data<&Arc<App>>, id: Path<String>) -> Result<Json<ImageDto>, ApiError> {
        Ok(Json(app.images.get(&id.0).await?.into()))
    }

    /// Download a catalog image in the background (resumable, checksum-verified).
    #[oai(path = "/:id/pull", method = "post")]
    async fn pull(&self, app: Data<&Arc<App>>, id: Path<String>) -> Result<PullStarted, ApiError> {
        Ok(PullStarted::Accepted(Json(app.images.start_pull(&id.0).await?.into())))
    }

    /// Register a local qcow2 or raw cloud image by copying it into images/.
    #[oai(path = "/", method = "post")]
    async fn import(&self, app: Data<&Arc<App>>, body: Json<ImportImageRequest>) -> Result<ImageCreated, ApiError> {
        let b = body.0;
        let image = app
            .images
            .import(
                ImportRequest {
                    name: b.name.0,
                    description: b.description.map(Text::into_string),
                    os: b.os.map(Text::into_string),
                    os_version: b.os_version.map(Text::into_string),
                    architecture: b.architecture.map(Text::into_string),
                    default_user: b.default_user.map(Text::into_string),
                },
                ImportSource::File(b.file_path.0.into()),
            )
            .await?;
        Ok(ImageCreated::Created(Json(image.into())))
    }

    /// Upload an image (qcow2 or raw) as the request body, streamed to disk: the file
    /// need not be readable by the service, and no path on this machine is needed, e.g.
    /// `curl -T disk.qcow2 'http://localhost:8000/api/images/my-image/file?default_user=debian'`.
    /// Any Content-Type is taken. 413 `ImageTooLarge` when the data dir's disk cannot
    /// hold twice the image (said before reading when Content-Length is given), 409
    /// `ImageDuplicate` when the name is taken (nothing is replaced), 400 `InvalidImage`
    /// for anything but a standalone qcow2 or a bootable raw disk.
    #[oai(path = "/:name/file", method = "put", method = "post")]
    #[allow(clippy::too_many_arguments)]
    async fn upload(
        &self,
        app: Data<&Arc<App>>,
        request: &poem::Request,
        /// 1-64 of A-Z a-z 0-9 . _ -
        name: Path<String>,
        description: Query<Option<String>>,
        os: Query<Option<String>>,
        os_version: Query<Option<String>>,
        /// x86_64 or aarch64; the host's by default.
        architecture: Query<Option<String>>,
        /// The image's cloud-init default user; `ubuntu` by default.
        default_user: Query<Option<String>>,
        body: Binary<poem::Body>,
    ) -> Result<ImageCreated, ApiError> {
        let declared_len = request
            .headers()
            .get(poem::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let source = ImportSource::Upload { body: Box::pin(body.0.into_async_read()), declared_len };
        let image = app
            .images
            .import(
                ImportRequest {
                    name: name.0,
                    description: description.0,
                    os: os.0,
                    os_version: os_version.0,
                    architecture: architecture.0,
                    default_user: default_user.0,
                },
                source,
            )
            .await?;
        Ok(ImageCreated::Created(Json(image.into())))
    }

    /// Delete an image's file (an imported image's record too). 409 `ImageInUse` while
    /// instances that are not terminated use it.
    #[oai(path = "/:id", method = "delete")]
    async fn delete(&self, app: Data<&Arc<App>>, id: Path<String>) -> Result<ImageDeleted, ApiError> {
        let _no_spares = app.instances.without_spares_of_image(&id.0).await?;
        app.images.delete(&id.0).await?;
        Ok(ImageDeleted::NoContent)
    }
}
