//! Images (REQ-IMG-001..005): the built-in Ubuntu catalog for this architecture,
//! verification of the files, pulls with progress, and import of local images.

pub mod availability;
pub mod catalog;
pub mod error;
pub mod import;
pub mod pull;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use availability::Availability;
use catalog::CatalogEntry;
pub use import::ImportSource;
use pull::{PullProgress, PullState};

use crate::db::images::{self as rows, ImageRow};
use crate::db::{Db, timestamp_now};
use crate::error::AppError;
use crate::exec::qemu_img::QemuImg;
use crate::paths::Paths;
use crate::platform::Arch;
pub use error::ImageError;

#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub row: ImageRow,
    /// The file is in images/ and can back instances now.
    pub available: bool,
    pub availability: Availability,
    pub unavailable_reason: Option<String>,
    /// Whether it comes from the built-in catalog (and can be pulled).
    pub in_catalog: bool,
    pub pull: Option<PullProgress>,
}

/// What a user says about an image to register (its bytes come as an `ImportSource`).
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    pub name: String,
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
    /// Names with an import in progress.
    importing: Arc<Mutex<HashSet<String>>>,
    /// Space promised to conversions in progress.
    reservations: import::Reservations,
    upload_idle_timeout: Duration,
}

/// How images are fetched and received.
#[derive(Debug, Clone)]
pub struct ImagesConfig {
    /// Mirror of cloud-images.ubuntu.com.
    pub base_url: String,
    /// How long a pull waits for the next bytes before it fails (a stalled mirror), so
    /// that it can be retried and resumes.
    pub pull_read_timeout: Duration,
    /// How long an upload may send nothing before it is dropped.
    pub upload_idle_timeout: Duration,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            base_url: catalog::DEFAULT_BASE_URL.to_string(),
            pull_read_timeout: Duration::from_secs(60),
            upload_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// A name held for one import; released when dropped, however the import ends.
struct NameClaim {
    importing: Arc<Mutex<HashSet<String>>>,
    name: String,
}

impl Drop for NameClaim {
    fn drop(&mut self) {
        self.importing.lock().unwrap().remove(&self.name);
    }
}

fn duplicate(name: &str) -> AppError {
    ImageError::Duplicate(format!("an image named {name:?} already exists")).into()
}

fn not_found(id: &str) -> AppError {
    ImageError::NotFound(id.to_string()).into()
}

impl Images {
    pub fn new(db: Db, paths: Paths, arch: Arch, config: &ImagesConfig, qemu_img: QemuImg) -> Self {
        // TLS uses ring, like the rest of the crypto here; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("ec2local/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(20))
            .read_timeout(config.pull_read_timeout)
            .build()
            .expect("HTTP client");
        Self {
            db,
            paths,
            arch,
            catalog: Arc::new(catalog::catalog(arch, &config.base_url)),
            qemu_img,
            http,
            pulls: Arc::new(Mutex::new(HashMap::new())),
            importing: Arc::new(Mutex::new(HashSet::new())),
            reservations: import::Reservations::default(),
            upload_idle_timeout: config.upload_idle_timeout,
        }
    }

    fn catalog_entry(&self, id: &str) -> Option<&CatalogEntry> {
        self.catalog.iter().find(|e| e.id == id)
    }

    /// Records the catalog in the database and checks which image files are present
    /// (REQ-IMG-003). Catalog images never pulled are an ordinary state, logged quietly;
    /// a lost imported file or a failed pull is a warning. Both show as unavailable.
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
                file_path: self.paths.catalog_image(&e.file_name).display().to_string(),
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
            let (name, reason) = (&image.row.name, image.unavailable_reason.as_deref().unwrap_or(""));
            match image.availability {
                Availability::Available => {
                    tracing::info!(image = %name, path = %image.row.file_path, "base image present")
                }
                problem if problem.is_problem() => tracing::warn!(image = %name, reason, "base image unavailable"),
                waiting => {
                    tracing::info!(image = %name, availability = waiting.as_str(), "base image not downloaded yet")
                }
            }
        }
        Ok(())
    }

    fn describe(&self, row: ImageRow) -> Image {
        let in_catalog = self.catalog_entry(&row.id).is_some();
        let pull = self.pulls.lock().unwrap().get(&row.id).cloned();
        let host_architecture = self.arch.libvirt_name();
        let availability = Availability::assess(availability::Facts {
            file_present: std::fs::metadata(&row.file_path).is_ok_and(|m| m.is_file() && m.len() > 0),
            in_catalog,
            host_architecture: row.architecture == host_architecture,
            pull: pull.as_ref().map(|p| p.state),
        });
        let unavailable_reason = availability.reason(&row, pull.as_ref(), host_architecture);
        Image {
            row,
            available: availability == Availability::Available,
            availability,
            unavailable_reason,
            in_catalog,
            pull,
        }
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
            Some(reason) => Err(ImageError::Unavailable(reason.clone()).into()),
        }
    }

    /// Starts pulling a catalog image in the background; progress shows on the image.
    pub async fn start_pull(&self, id_or_name: &str) -> Result<Image, AppError> {
        let image = self.get(id_or_name).await?;
        let Some(entry) = self.catalog_entry(&image.row.id).cloned() else {
            return Err(ImageError::NotPullable(format!(
                "image {} was imported, not from the catalog: there is nothing to pull",
                image.row.name
            ))
            .into());
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
        let files = pull::PullFiles {
            partial: self.paths.pull_partial(&entry.file_name),
            dest: self.paths.catalog_image(&entry.file_name),
        };
        let downloaded = pull::download(&self.http, entry, &files, progress).await.map_err(|e| {
            tracing::warn!(image = %entry.name, error = %e, "pull failed");
            ImageError::PullFailed(e.to_string())
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

    /// Registers a local image by copying (and flattening) it into images/. The name is
    /// claimed first, so concurrent imports of one name cannot both proceed; nothing of
    /// a failed import stays behind, and no other image's file or row is ever replaced.
    /// The work runs as its own task: a caller that goes away (a closed tab, a dropped
    /// request) cannot stop it between writing a file and recording it.
    pub async fn import(&self, request: ImportRequest, source: ImportSource) -> Result<Image, AppError> {
        let this = self.clone();
        tokio::spawn(async move { this.import_to_end(request, source).await }).await?
    }

    async fn import_to_end(&self, request: ImportRequest, source: ImportSource) -> Result<Image, AppError> {
        let (id, architecture, _claim) = match self.admit(&request).await {
            Ok(admitted) => admitted,
            Err(refused) => {
                source.refuse().await;
                return Err(refused);
            }
        };
        let what = source.describe();
        let token = crate::ids::random_hex(4);
        let images_dir = self.paths.images();
        let staging = import::Owned::new(self.paths.import_staging(&request.name, &token));
        let partial = import::Owned::new(self.paths.import_partial(&request.name, &token));
        let budget = self.reservations.budget(&images_dir);
        import::stage(source, staging.path(), budget, self.upload_idle_timeout).await?;
        let format = import::inspect(&self.qemu_img, staging.path(), &what).await?;
        // A compressed qcow2 grows when converted: hold what the copy will need.
        let needed = self.qemu_img.measure_qcow2(staging.path(), &format).await?;
        let _space = self.reservations.reserve(&images_dir, needed, &what)?;
        // Flattening copy: a raw image becomes a qcow2 that overlays can be made on.
        self.qemu_img
            .convert_to_qcow2(staging.path(), &format, partial.path())
            .await
            .map_err(import::conversion_failed)?;
        drop(staging);
        let (sha256, size) = pull::sha256_file(partial.path()).await?;
        let dest = self.paths.imported_image(&request.name);
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
        // The row first, then the file: a process killed in between leaves a row whose
        // file is missing, which shows as unavailable and can be deleted through the API,
        // rather than a file without a row that blocks the name for good.
        let stored = row.clone();
        if !self.db.call(move |conn| rows::insert_new(conn, &stored)).await? {
            return Err(duplicate(&request.name));
        }
        if let Err(e) = import::place(partial.path(), &dest) {
            let id = row.id.clone();
            self.db.call(move |conn| rows::delete(conn, &id)).await?;
            return Err(e);
        }
        tracing::info!(image = %row.name, id = %row.id, from = %what, size, "image imported");
        Ok(self.describe(row))
    }

    /// The checks that need no bytes of the image: a valid name and architecture, the
    /// name free and held for this import. Returns the image's id and architecture.
    async fn admit(&self, request: &ImportRequest) -> Result<(String, String, NameClaim), AppError> {
        validate_image_name(&request.name)?;
        let architecture = request.architecture.clone().unwrap_or_else(|| self.arch.libvirt_name().to_string());
        if !["x86_64", "aarch64"].contains(&architecture.as_str()) {
            return Err(
                ImageError::Invalid(format!("architecture {architecture:?} is not one of x86_64, aarch64")).into()
            );
        }
        let id = catalog::image_id(&request.name, &architecture);
        let claim = self.claim_name(&request.name)?;
        self.ensure_unused(&request.name, &id).await?;
        Ok((id, architecture, claim))
    }

    /// Holds `name` for one import until the claim is dropped.
    fn claim_name(&self, name: &str) -> Result<NameClaim, AppError> {
        let mut importing = self.importing.lock().unwrap();
        if !importing.insert(name.to_string()) {
            return Err(ImageError::ImportInProgress(name.to_string()).into());
        }
        Ok(NameClaim { importing: self.importing.clone(), name: name.to_string() })
    }

    /// 409 when the name, the id it hashes to, or its file is already someone's.
    async fn ensure_unused(&self, name: &str, id: &str) -> Result<(), AppError> {
        let (owned_name, owned_id) = (name.to_string(), id.to_string());
        let taken = self
            .db
            .call(move |conn| {
                Ok(rows::get_by_name(conn, &owned_name)?.is_some() || rows::get(conn, &owned_id)?.is_some())
            })
            .await?;
        if taken || self.paths.imported_image(name).exists() {
            return Err(duplicate(name));
        }
        Ok(())
    }

    /// Removes what interrupted imports left in images/ (called once at start).
    pub fn remove_import_leftovers(&self) -> usize {
        import::remove_leftovers(&self.paths.images())
    }

    /// Deletes an image's file (and, for an imported one, its record). Refused while
    /// instances that are not terminated use it.
    pub async fn delete(&self, id_or_name: &str) -> Result<(), AppError> {
        let image = self.get(id_or_name).await?;
        let id = image.row.id.clone();
        let users = self.db.call(move |conn| rows::instances_using(conn, &id)).await?;
        if users > 0 {
            return Err(ImageError::InUse(format!(
                "image {} is used by {users} instance(s); terminate them first",
                image.row.name
            ))
            .into());
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
    if ok { Ok(()) } else { Err(ImageError::InvalidName.into()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::instrument::WithSubscriber;

    /// Log lines, as a terminal would show them.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `work` logs at info and above.
    async fn logged<F: std::future::Future>(work: F) -> (F::Output, String) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let output = work.with_subscriber(subscriber).await;
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        (output, text)
    }

    fn service(dir: &std::path::Path) -> Images {
        let paths = Paths::new(dir);
        paths.ensure().unwrap();
        let db = Db::open(&paths.database()).unwrap();
        let arch = crate::platform::Host::detect().arch;
        Images::new(db, paths, arch, &ImagesConfig::default(), QemuImg::new(Duration::from_secs(5)))
    }

    /// An imported image's row whose file was never placed (or was removed since).
    fn imported_without_file(images: &Images, name: &str) -> ImageRow {
        let architecture = images.arch.libvirt_name().to_string();
        ImageRow {
            id: catalog::image_id(name, &architecture),
            name: name.into(),
            description: String::new(),
            os: "linux".into(),
            os_version: String::new(),
            architecture,
            file_path: images.paths.imported_image(name).display().to_string(),
            format: "qcow2".into(),
            default_user: "debian".into(),
            source_url: None,
            sha256: None,
            size_bytes: None,
            created_at: timestamp_now(),
        }
    }

    // `ec2local images list` logs at warn to stderr: a catalog image nobody pulled yet is
    // no warning, a lost file is.
    #[tokio::test]
    async fn never_pulled_catalog_images_are_quiet_and_a_lost_file_warns() {
        let dir = tempfile::tempdir().unwrap();
        let images = service(dir.path());
        let (synced, log) = logged(images.sync_catalog()).await;
        synced.unwrap();
        assert!(!log.contains("WARN"), "{log}");
        assert!(log.contains("base image not downloaded yet") && log.contains("ubuntu-22.04"), "{log}");
        let listed = images.list().await.unwrap();
        assert_eq!(listed.len(), 2);
        for image in &listed {
            assert_eq!(image.availability, Availability::NotDownloaded, "{image:?}");
            assert!(!image.available && image.in_catalog, "{image:?}");
            assert!(image.unavailable_reason.as_deref().unwrap().contains("is not downloaded"), "{image:?}");
        }

        let lost = imported_without_file(&images, "lost");
        images.db.call(move |conn| rows::insert_new(conn, &lost)).await.unwrap();
        let (synced, log) = logged(images.sync_catalog()).await;
        synced.unwrap();
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 1, "{log}");
        assert!(warnings[0].contains("lost") && warnings[0].contains("is missing"), "{log}");
        assert_eq!(images.get("lost").await.unwrap().availability, Availability::MissingFile);
    }

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
