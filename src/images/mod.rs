//! Images (REQ-IMG-001..005): the built-in Ubuntu catalog for this architecture,
//! verification of the files, pulls with progress, and import of local images.

pub mod catalog;
pub mod pull;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use catalog::CatalogEntry;
use pull::{PullProgress, PullState};

use crate::db::images::{self as rows, ImageRow};
use crate::db::{Db, timestamp_now};
use crate::error::AppError;
use crate::exec::qemu_img::QemuImg;
use crate::paths::Paths;
use crate::platform::Arch;

#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub row: ImageRow,
    /// The file is in images/ and can back instances now.
    pub available: bool,
    pub unavailable_reason: Option<String>,
    /// Whether it comes from the built-in catalog (and can be pulled).
    pub in_catalog: bool,
    pub pull: Option<PullProgress>,
}

/// What a user gives to register a local image.
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    pub name: String,
    pub file_path: PathBuf,
    pub description: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
    pub architecture: Option<String>,
    pub default_user: Option<String>,
}

#[derive(Clone)]
pub struct Images {
    db: Db,
    paths: Paths,
    arch: Arch,
    catalog: Arc<Vec<CatalogEntry>>,
    qemu_img: QemuImg,
    http: reqwest::Client,
    pulls: Arc<Mutex<HashMap<String, PullProgress>>>,
}

fn not_found(id: &str) -> AppError {
    AppError::NotFound { code: "ImageNotFound", message: format!("no image with id or name {id:?}") }
}

fn invalid(message: String) -> AppError {
    AppError::InvalidInput { code: "InvalidImage", message }
}

impl Images {
    pub fn new(db: Db, paths: Paths, arch: Arch, base_url: &str, qemu_img: QemuImg) -> Self {
        // TLS uses ring, like the rest of the crypto here; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("ec2local/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(20))
            .build()
            .expect("HTTP client");
        Self {
            db,
            paths,
            arch,
            catalog: Arc::new(catalog::catalog(arch, base_url)),
            qemu_img,
            http,
            pulls: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn catalog_entry(&self, id: &str) -> Option<&CatalogEntry> {
        self.catalog.iter().find(|e| e.id == id)
    }

    /// Records the catalog in the database and checks which image files are present
    /// (REQ-IMG-003). Missing ones are logged; they show as unavailable.
    pub async fn sync_catalog(&self) -> Result<(), AppError> {
        let now = timestamp_now();
        let rows: Vec<ImageRow> = self
            .catalog
            .iter()
            .map(|e| ImageRow {
                id: e.id.clone(),
                name: e.name.clone(),
                description: e.description.clone(),
                os: e.os.clone(),
                os_version: e.os_version.clone(),
                architecture: e.architecture.clone(),
                file_path: self.paths.images().join(&e.file_name).display().to_string(),
                format: "qcow2".into(),
                default_user: e.default_user.clone(),
                source_url: Some(e.url.clone()),
                sha256: None,
                size_bytes: None,
                created_at: now.clone(),
            })
            .collect();
        self.db
            .call(move |conn| {
                for row in &rows {
                    rows::upsert(conn, row)?;
                }
                Ok(())
            })
            .await?;
        for image in self.list().await? {
            if image.available {
                tracing::info!(image = %image.row.name, path = %image.row.file_path, "base image present");
            } else {
                tracing::warn!(image = %image.row.name, reason = image.unavailable_reason.as_deref().unwrap_or(""), "base image unavailable");
            }
        }
        Ok(())
    }

    fn describe(&self, row: ImageRow) -> Image {
        let in_catalog = self.catalog_entry(&row.id).is_some();
        let pull = self.pulls.lock().unwrap().get(&row.id).cloned();
        let present = std::fs::metadata(&row.file_path).is_ok_and(|m| m.is_file() && m.len() > 0);
        let unavailable_reason = if present {
            None
        } else if row.architecture != self.arch.libvirt_name() {
            Some(format!("image {} is for {}, this host is {}", row.name, row.architecture, self.arch.libvirt_name()))
        } else if in_catalog {
            Some(format!(
                "image {} is not downloaded: run `ec2local images pull {}` or POST /api/images/{}/pull",
                row.name, row.name, row.id
            ))
        } else {
            Some(format!("the file of image {} is missing: {}", row.name, row.file_path))
        };
        let available = unavailable_reason.is_none();
        Image { row, available, unavailable_reason, in_catalog, pull }
    }

    pub async fn list(&self) -> Result<Vec<Image>, AppError> {
        let rows = self.db.call(|conn| rows::list(conn)).await?;
        Ok(rows.into_iter().map(|r| self.describe(r)).collect())
    }

    /// An image by id (`ami-…`) or by name.
    pub async fn get(&self, id_or_name: &str) -> Result<Image, AppError> {
        let key = id_or_name.to_string();
        let row = self
            .db
            .call(move |conn| match rows::get(conn, &key)? {
                Some(row) => Ok(Some(row)),
                None => rows::get_by_name(conn, &key),
            })
            .await?;
        row.map(|r| self.describe(r)).ok_or_else(|| not_found(id_or_name))
    }

    /// The image to launch an instance from, checked now, not trusted from start-up
    /// (REQ-IMG-004): 404 when unknown, 409 `ImageUnavailable` when its file is missing.
    pub async fn resolve_for_launch(&self, id_or_name: &str) -> Result<Image, AppError> {
        let image = self.get(id_or_name).await?;
        match &image.unavailable_reason {
            None => Ok(image),
            Some(reason) => Err(AppError::Conflict { code: "ImageUnavailable", message: reason.clone() }),
        }
    }

    /// Starts pulling a catalog image in the background; progress shows on the image.
    pub async fn start_pull(&self, id_or_name: &str) -> Result<Image, AppError> {
        let image = self.get(id_or_name).await?;
        let Some(entry) = self.catalog_entry(&image.row.id).cloned() else {
            return Err(AppError::Conflict {
                code: "ImageNotPullable",
                message: format!(
                    "image {} was imported, not from the catalog: there is nothing to pull",
                    image.row.name
                ),
            });
        };
        {
            let mut pulls = self.pulls.lock().unwrap();
            let running =
                pulls.get(&entry.id).is_some_and(|p| matches!(p.state, PullState::Downloading | PullState::Verifying));
            if !running {
                pulls.insert(entry.id.clone(), PullProgress::starting());
                let this = self.clone();
                tokio::spawn(async move {
                    let pulls = this.pulls.clone();
                    let id = entry.id.clone();
                    let result = this.pull(&entry, |p| {
                        pulls.lock().unwrap().insert(id.clone(), p.clone());
                    });
                    if let Err(err) = result.await {
                        let mut pulls = this.pulls.lock().unwrap();
                        let state = pulls.entry(entry.id.clone()).or_insert_with(PullProgress::starting);
                        state.state = PullState::Failed;
                        state.error = Some(err.to_string());
                    }
                });
            }
        }
        self.get(&image.row.id).await
    }

    /// Pulls a catalog image to completion (the CLI calls this directly).
    pub async fn pull(&self, entry: &CatalogEntry, progress: impl FnMut(&PullProgress)) -> Result<(), AppError> {
        tracing::info!(image = %entry.name, url = %entry.url, "pull started");
        let downloaded = pull::download(&self.http, entry, &self.paths.images(), progress).await.map_err(|e| {
            tracing::warn!(image = %entry.name, error = %e, "pull failed");
            AppError::Conflict { code: "ImagePullFailed", message: e.to_string() }
        })?;
        let (id, sha, size) = (entry.id.clone(), downloaded.sha256.clone(), downloaded.size_bytes as i64);
        self.db.call(move |conn| rows::set_file_facts(conn, &id, Some(&sha), Some(size))).await?;
        tracing::info!(image = %entry.name, sha256 = %downloaded.sha256, size = downloaded.size_bytes, "pull done");
        Ok(())
    }

    /// The catalog entry for a name or id, for the CLI.
    pub fn catalog_lookup(&self, id_or_name: &str) -> Option<CatalogEntry> {
        self.catalog.iter().find(|e| e.id == id_or_name || e.name == id_or_name).cloned()
    }

    /// Registers a local image by copying (and flattening) it into images/.
    pub async fn import(&self, request: ImportRequest) -> Result<Image, AppError> {
        validate_image_name(&request.name)?;
        let source = request.file_path.clone();
        // An absolute path to a regular file, never a protocol (`json:`, `nbd:`), a
        // device or a symbolic link that could be pointed elsewhere.
        if !source.is_absolute() {
            return Err(invalid(format!("{} is not an absolute path", source.display())));
        }
        let kind = std::fs::symlink_metadata(&source).map(|m| m.file_type());
        if !kind.as_ref().is_ok_and(|k| k.is_file()) {
            let what = match kind {
                Ok(k) if k.is_symlink() => "a symbolic link; give the file it points to",
                Ok(_) => "not a regular file",
                Err(_) => "not a file",
            };
            return Err(invalid(format!("{} is {what}", source.display())));
        }
        let info = self
            .qemu_img
            .info(&source)
            .await
            .map_err(|e| invalid(format!("{} is not a disk image qemu-img can read: {e}", source.display())))?;
        if info.format != "qcow2" && info.format != "raw" {
            return Err(invalid(format!(
                "{} is {}; only qcow2 and raw images are supported",
                source.display(),
                info.format
            )));
        }
        // Importing reads every file the image refers to, with the service's rights: an
        // overlay on someone's ~/.ssh/id_rsa would be flattened into a registered image.
        if let Some(backing) = info.full_backing_filename.as_ref().or(info.backing_filename.as_ref()) {
            return Err(invalid(format!(
                "{} is an overlay on the backing file {backing}; import a standalone image \
                 (`qemu-img convert -O qcow2 {} standalone.qcow2`)",
                source.display(),
                source.display()
            )));
        }
        if let Some(data_file) = info.external_data_file() {
            return Err(invalid(format!(
                "{} keeps its data in the external file {data_file}; import a standalone image",
                source.display()
            )));
        }
        // From here on the format is pinned: a second look must agree with the first.
        let pinned = self
            .qemu_img
            .info_as(&source, Some(&info.format))
            .await
            .map_err(|e| invalid(format!("{} changed while it was being imported: {e}", source.display())))?;
        if pinned.full_backing_filename.is_some()
            || pinned.backing_filename.is_some()
            || pinned.external_data_file().is_some()
        {
            return Err(invalid(format!("{} changed while it was being imported", source.display())));
        }
        if info.format == "raw" && !has_boot_signature(&source)? {
            return Err(invalid(format!("{} is not a bootable disk image (no partition table)", source.display())));
        }
        let architecture = request.architecture.clone().unwrap_or_else(|| self.arch.libvirt_name().to_string());
        if !["x86_64", "aarch64"].contains(&architecture.as_str()) {
            return Err(invalid(format!("architecture {architecture:?} is not one of x86_64, aarch64")));
        }
        let id = catalog::image_id(&request.name, &architecture);
        let name = request.name.clone();
        let taken = self.db.call(move |conn| Ok(rows::get_by_name(conn, &name)?.is_some())).await?;
        if taken {
            return Err(AppError::Conflict {
                code: "ImageDuplicate",
                message: format!("an image named {:?} already exists", request.name),
            });
        }
        let dest = self.paths.images().join(format!("{}.qcow2", request.name));
        if dest.exists() {
            return Err(AppError::Conflict {
                code: "ImageDuplicate",
                message: format!("{} already exists", dest.display()),
            });
        }
        // Flattening copy: an overlay keeps working after its backing file moves, and a
        // raw image becomes a qcow2 that overlays can be made on.
        let partial = self.paths.images().join(format!(".{}.importing", request.name));
        let copied = async {
            self.qemu_img.convert_to_qcow2(&source, &info.format, &partial).await?;
            let (sha256, size) = pull::sha256_file(&partial).await?;
            tokio::fs::rename(&partial, &dest).await?;
            Ok::<_, AppError>((sha256, size))
        }
        .await;
        let (sha256, size) = match copied {
            Ok(facts) => facts,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        let row = ImageRow {
            id,
            name: request.name.clone(),
            description: request.description.unwrap_or_default(),
            os: request.os.unwrap_or_else(|| "linux".into()),
            os_version: request.os_version.unwrap_or_default(),
            architecture,
            file_path: dest.display().to_string(),
            format: "qcow2".into(),
            default_user: request.default_user.unwrap_or_else(|| "ubuntu".into()),
            source_url: None,
            sha256: Some(sha256),
            size_bytes: Some(size as i64),
            created_at: timestamp_now(),
        };
        let stored = row.clone();
        if let Err(e) = self.db.call(move |conn| rows::upsert(conn, &stored)).await {
            let _ = std::fs::remove_file(&dest);
            return Err(e.into());
        }
        tracing::info!(image = %row.name, id = %row.id, from = %source.display(), "image imported");
        Ok(self.describe(row))
    }

    /// Deletes an image's file (and, for an imported one, its record). Refused while
    /// instances that are not terminated use it.
    pub async fn delete(&self, id_or_name: &str) -> Result<(), AppError> {
        let image = self.get(id_or_name).await?;
        let id = image.row.id.clone();
        let users = self.db.call(move |conn| rows::instances_using(conn, &id)).await?;
        if users > 0 {
            return Err(AppError::Conflict {
                code: "ImageInUse",
                message: format!("image {} is used by {users} instance(s); terminate them first", image.row.name),
            });
        }
        // Off the runtime: unlinking a multi-GB image can take a while.
        match tokio::fs::remove_file(&image.row.file_path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let id = image.row.id.clone();
        if image.in_catalog {
            self.db.call(move |conn| rows::set_file_facts(conn, &id, None, None)).await?;
        } else {
            self.db.call(move |conn| rows::delete(conn, &id)).await?;
        }
        tracing::info!(image = %image.row.name, "image deleted");
        Ok(())
    }
}

/// Image names become file names: 1–64 of `A-Z a-z 0-9 . _ -`, not starting with a dot.
pub fn validate_image_name(name: &str) -> Result<(), AppError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AppError::InvalidInput {
            code: "InvalidImageName",
            message: "an image name must be 1 to 64 of A-Z, a-z, 0-9, '.', '_', '-', not starting with '.'".into(),
        })
    }
}

/// Whether a raw file starts with an MBR/GPT boot signature (0x55AA at byte 510).
fn has_boot_signature(path: &Path) -> Result<bool, AppError> {
    let mut sector = [0u8; 512];
    let mut file = std::fs::File::open(path)?;
    Ok(file.read_exact(&mut sector).is_ok() && sector[510] == 0x55 && sector[511] == 0xAA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_are_file_name_safe() {
        for ok in ["debian-12", "my_image.v2", "A"] {
            assert!(validate_image_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "../x", "with space", &"x".repeat(65)] {
            assert!(validate_image_name(bad).is_err(), "{bad:?}");
        }
    }
}
