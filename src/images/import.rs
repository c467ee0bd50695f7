//! Importing a local image. The bytes are first copied into a staging file that only
//! this import uses, and everything after reads that copy: the caller cannot swap the
//! file between inspection and conversion, nor make the service read what a backing
//! file points at, and an upload needs no path on this machine at all.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::error::{AppError, ImageError};
use crate::exec::ExecError;
use crate::exec::qemu_img::{QemuImg, QemuImgError};

/// Where the bytes of an import come from.
pub enum ImportSource {
    /// A regular file on this machine, by absolute path, opened once (never through a
    /// symbolic link) and read with the service's rights.
    File(PathBuf),
    /// Bytes the caller sends (the upload endpoint); `declared_len` is its Content-Length.
    Upload { body: Pin<Box<dyn AsyncRead + Send>>, declared_len: Option<u64> },
}

/// How long a refused upload's body is read and dropped so that the refusal reaches the
/// client: a server that answers and closes with the body unread resets the connection,
/// and the client sees a broken pipe instead of the reason. Loopback reads gigabytes in
/// that time; a client that pauses for a second is not waited for.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// A declared body so large that reading it is pointless (and a client that sent
/// `Expect: 100-continue` sends none).
const UNDRAINABLE_BYTES: u64 = 64 << 30;

/// Reads and drops what is left of an upload's body, within the drain time.
async fn drain(body: &mut Pin<Box<dyn AsyncRead + Send>>) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    let mut buf = vec![0u8; 1 << 20];
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), body.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
}

impl ImportSource {
    /// Lets go of a source whose import was refused before its bytes were read.
    pub async fn refuse(self) {
        if let ImportSource::Upload { mut body, declared_len } = self
            && declared_len.is_none_or(|len| len <= UNDRAINABLE_BYTES)
        {
            drain(&mut body).await;
        }
    }

    /// How messages name the source.
    pub fn describe(&self) -> String {
        match self {
            ImportSource::File(path) => path.display().to_string(),
            ImportSource::Upload { .. } => "the uploaded image".into(),
        }
    }
}

/// Free space an import leaves untouched (or a twentieth of a small file system).
const RESERVE_BYTES: u64 = 1 << 30;

/// Space promised to conversions in progress, which the free space does not show yet.
#[derive(Clone, Default)]
pub struct Reservations(Arc<Mutex<u64>>);

/// Bytes held for one conversion; given back when dropped.
pub struct Reserved {
    reservations: Reservations,
    bytes: u64,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        *self.reservations.0.lock().unwrap() -= self.bytes;
    }
}

impl Reservations {
    /// What the disk can still give an import: free space less the reserve and what
    /// conversions in progress will write.
    pub fn available(&self, images_dir: &Path) -> u64 {
        let (total, free) = crate::host::disk_space(images_dir);
        let promised = *self.0.lock().unwrap();
        free.saturating_sub(RESERVE_BYTES.min(total / 20)).saturating_sub(promised)
    }

    /// The most an import may bring in: it holds the staged bytes and the converted
    /// copy at once, so half of what is available.
    pub fn budget(&self, images_dir: &Path) -> u64 {
        self.available(images_dir) / 2
    }

    /// Holds `bytes` for a conversion, or says why the disk cannot take it (507).
    pub fn reserve(&self, images_dir: &Path, bytes: u64, what: &str) -> Result<Reserved, AppError> {
        let (total, free) = crate::host::disk_space(images_dir);
        let mut promised = self.0.lock().unwrap();
        let available = free.saturating_sub(RESERVE_BYTES.min(total / 20)).saturating_sub(*promised);
        if bytes > available {
            return Err(AppError::InsufficientStorage(format!(
                "converting {what} needs {} MiB and the data dir's disk has {} MiB to spare; free some space first",
                bytes >> 20,
                available >> 20
            )));
        }
        *promised += bytes;
        Ok(Reserved { reservations: self.clone(), bytes })
    }
}

fn invalid(message: String) -> AppError {
    ImageError::Invalid(message).into()
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// An upload larger than the disk can take: the request is what is too large (413).
fn upload_too_large(size: Option<u64>, budget: u64) -> AppError {
    let size = size.map(|s| format!(" ({:.2} GiB)", gib(s))).unwrap_or_default();
    ImageError::TooLarge(format!(
        "the uploaded image{size} does not fit: an import needs twice its size on the data dir's disk, \
         and at most {:.2} GiB can be imported now; free some space first",
        gib(budget)
    ))
    .into()
}

/// A file on this machine larger than the disk can take: the disk is short (507).
fn file_too_large(what: &str, size: u64, budget: u64) -> AppError {
    AppError::InsufficientStorage(format!(
        "{what} ({:.2} GiB) does not fit: an import needs twice its size on the data dir's disk, \
         and at most {:.2} GiB can be imported now; free some space first",
        gib(size),
        gib(budget)
    ))
}

/// A write that failed: a full disk is said as such (507), anything else is ours (500).
fn write_failed(path: &Path, err: std::io::Error) -> AppError {
    if err.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) {
        AppError::InsufficientStorage(format!("the data dir's disk is full (writing {})", path.display()))
    } else {
        crate::error::Failure::File { doing: format!("writing {}", path.display()), source: err }.into()
    }
}

/// A file only an import owns; removed when dropped unless kept, so an import that
/// fails, or whose request is dropped half-way, leaves nothing behind.
pub struct Owned {
    path: PathBuf,
    keep: bool,
}

impl Owned {
    pub fn new(path: PathBuf) -> Self {
        Self { path, keep: false }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Copies the source into `staging` (created new, 0600), at most `budget` bytes; an
/// upload that sends nothing for `idle` fails.
pub async fn stage(source: ImportSource, staging: &Path, budget: u64, idle: Duration) -> Result<u64, AppError> {
    match source {
        ImportSource::File(path) => {
            let staging = staging.to_path_buf();
            tokio::task::spawn_blocking(move || stage_file(&path, &staging, budget)).await?
        }
        ImportSource::Upload { body, declared_len } => stage_upload(body, declared_len, staging, budget, idle).await,
    }
}

fn create_staging(staging: &Path) -> Result<std::fs::File, AppError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(staging)
        .map_err(|e| write_failed(staging, e))
}

fn stage_file(path: &Path, staging: &Path, budget: u64) -> Result<u64, AppError> {
    let shown = path.display();
    // A path, never a protocol (`json:`, `nbd:`) that qemu-img would follow.
    if !path.is_absolute() {
        return Err(invalid(format!("{shown} is not an absolute path")));
    }
    // Opened once: no symbolic link followed, no FIFO waited on; every later step
    // reads the copy, so swapping the file after this changes nothing.
    let flags = (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32;
    let mut file =
        std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(|e| match e.raw_os_error() {
            Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => {
                invalid(format!("{shown} is a symbolic link; give the file it points to"))
            }
            Some(code) if code == rustix::io::Errno::ACCESS.raw_os_error() => invalid(format!(
                "ec2local cannot read {shown}; upload it instead (`ec2local images upload`, or Upload in the UI)"
            )),
            _ => invalid(format!("{shown} is not a file: {e}")),
        })?;
    let meta = file.metadata().map_err(|e| invalid(format!("{shown}: {e}")))?;
    if !meta.is_file() {
        return Err(invalid(format!("{shown} is not a regular file")));
    }
    if meta.len() > budget {
        return Err(file_too_large(&shown.to_string(), meta.len(), budget));
    }
    let mut out = create_staging(staging)?;
    // Read and write errors apart: the first is the caller's file, the second our disk.
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| invalid(format!("reading {shown}: {e}")))?;
        if n == 0 {
            break;
        }
        copied += n as u64;
        if copied > budget {
            // It grew while it was read.
            return Err(file_too_large(&shown.to_string(), copied, budget));
        }
        out.write_all(&buf[..n]).map_err(|e| write_failed(staging, e))?;
    }
    Ok(copied)
}

async fn stage_upload(
    mut body: Pin<Box<dyn AsyncRead + Send>>,
    declared_len: Option<u64>,
    staging: &Path,
    budget: u64,
    idle: Duration,
) -> Result<u64, AppError> {
    // Said before the body is read (a client that sent `Expect: 100-continue` sends none).
    if let Some(len) = declared_len.filter(|len| *len > budget) {
        // A body that could never be drained is not waited for.
        if len <= UNDRAINABLE_BYTES {
            drain(&mut body).await;
        }
        return Err(upload_too_large(declared_len, budget));
    }
    if declared_len == Some(0) {
        return Err(invalid("the upload is empty: send the image's bytes as the request body".into()));
    }
    let mut out = tokio::fs::File::from_std(create_staging(staging)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut received = 0u64;
    loop {
        let n = match tokio::time::timeout(idle, body.read(&mut buf)).await {
            Ok(read) => read.map_err(|e| invalid(format!("the upload broke off after {received} bytes: {e}")))?,
            Err(_) => {
                return Err(ImageError::UploadStalled(format!(
                    "the upload sent nothing for {}s after {received} bytes; it was dropped",
                    idle.as_secs()
                ))
                .into());
            }
        };
        if n == 0 {
            break;
        }
        received += n as u64;
        if received > budget {
            drain(&mut body).await;
            return Err(upload_too_large(None, budget));
        }
        out.write_all(&buf[..n]).await.map_err(|e| write_failed(staging, e))?;
    }
    out.flush().await.map_err(|e| write_failed(staging, e))?;
    if received == 0 {
        return Err(invalid("the upload is empty: send the image's bytes as the request body".into()));
    }
    if let Some(len) = declared_len
        && received != len
    {
        return Err(invalid(format!("the upload ended after {received} of {len} bytes")));
    }
    Ok(received)
}

/// Checks the staged copy and returns its format: qcow2 or a bootable raw disk, with
/// no backing file and no external data file, whose bytes would be read with the
/// service's rights (an overlay on someone's ~/.ssh/id_rsa flattens it into an image).
pub async fn inspect(qemu_img: &QemuImg, staged: &Path, what: &str) -> Result<String, AppError> {
    let info = qemu_img.info(staged).await.map_err(|e| match e {
        // qemu-img ran and could not read it: the image is the problem.
        QemuImgError::Exec(ExecError::Failed { ref stderr, .. }) => {
            invalid(format!("{what} is not a disk image qemu-img can read: {}", brief(stderr, staged, what)))
        }
        // qemu-img missing or hung: ours.
        other => AppError::from(other),
    })?;
    if info.format != "qcow2" && info.format != "raw" {
        return Err(invalid(format!("{what} is {}; only qcow2 and raw images are supported", info.format)));
    }
    if let Some(backing) = info.full_backing_filename.as_ref().or(info.backing_filename.as_ref()) {
        return Err(invalid(format!(
            "{what} is an overlay on the backing file {backing}; import a standalone image \
             (`qemu-img convert -O qcow2 OVERLAY standalone.qcow2`)"
        )));
    }
    if let Some(data_file) = info.external_data_file() {
        return Err(invalid(format!(
            "{what} keeps its data in the external file {data_file}; import a standalone image"
        )));
    }
    if info.format == "raw" && !has_boot_signature(staged)? {
        return Err(invalid(format!("{what} is not a bootable disk image (no partition table)")));
    }
    Ok(info.format)
}

/// The conversion's failure: a full disk is 507, anything else is ours.
pub fn conversion_failed(err: QemuImgError) -> AppError {
    let text = err.to_string();
    if text.contains("No space left on device") {
        AppError::InsufficientStorage("the data dir's disk filled up while the image was converted".into())
    } else {
        AppError::from(err)
    }
}

/// The first line of qemu-img's complaint, naming the caller's image rather than our
/// staging file.
fn brief(stderr: &str, staged: &Path, what: &str) -> String {
    let line = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
    line.replace(&staged.display().to_string(), what).trim().to_string()
}

/// Moves the finished image to `dest` unless something is there already: an import
/// never replaces another image's file.
pub fn place(partial: &Path, dest: &Path) -> Result<(), AppError> {
    match std::fs::hard_link(partial, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(ImageError::Duplicate(format!("{} already exists", dest.display())).into())
        }
        Err(e) => Err(write_failed(dest, e)),
    }
}

/// Whether a raw file starts with an MBR/GPT boot signature (0x55AA at byte 510).
fn has_boot_signature(path: &Path) -> Result<bool, AppError> {
    let mut sector = [0u8; 512];
    let mut file = std::fs::File::open(path)?;
    Ok(file.read_exact(&mut sector).is_ok() && sector[510] == 0x55 && sector[511] == 0xAA)
}

/// Removes staging and conversion files that no import owns any more: left by a crash,
/// and untouched for ten minutes (an import beside this process keeps writing its own).
pub fn remove_leftovers(images_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(images_dir) else { return 0 };
    let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !crate::paths::Paths::is_import_leftover(&name.to_string_lossy()) {
            continue;
        }
        let untouched = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < stale);
        if untouched && std::fs::remove_file(entry.path()).is_ok() {
            tracing::info!(file = %entry.path().display(), "removed a leftover of an interrupted import");
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_staged_only_when_it_is_a_regular_file_within_the_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("disk.img");
        std::fs::write(&source, vec![7u8; 4096]).unwrap();
        let staging = tmp.path().join("staging");
        assert_eq!(stage_file(&source, &staging, 4096).unwrap(), 4096);
        assert_eq!(std::fs::read(&staging).unwrap(), vec![7u8; 4096]);

        let again = tmp.path().join("staging2");
        let err = stage_file(&source, &again, 4095).unwrap_err();
        assert!(matches!(err, AppError::InsufficientStorage(_)), "{err:?}");
        assert!(!again.exists(), "nothing is staged for a file over the budget");

        let link = tmp.path().join("link.img");
        std::os::unix::fs::symlink(&source, &link).unwrap();
        let err = stage_file(&link, &again, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let fifo = tmp.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
        let err = stage_file(&fifo, &again, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = stage_file(Path::new("relative.img"), &again, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
        assert!(!again.exists());
    }

    #[tokio::test]
    async fn an_upload_is_held_to_the_budget_and_its_declared_length() {
        let tmp = tempfile::tempdir().unwrap();
        let body = |bytes: Vec<u8>| -> Pin<Box<dyn AsyncRead + Send>> { Box::pin(std::io::Cursor::new(bytes)) };
        let idle = Duration::from_secs(5);
        let staging = tmp.path().join("a");
        assert_eq!(stage_upload(body(vec![1; 3000]), Some(3000), &staging, 4096, idle).await.unwrap(), 3000);
        let err = stage_upload(body(vec![1; 10]), Some(5000), &tmp.path().join("b"), 4096, idle).await.unwrap_err();
        assert!(matches!(err, AppError::Image(ImageError::TooLarge(_))), "{err:?}");
        assert!(!tmp.path().join("b").exists(), "refused before anything was written");
        // No length given: counted as it arrives.
        let err = stage_upload(body(vec![1; 5000]), None, &tmp.path().join("c"), 4096, idle).await.unwrap_err();
        assert!(matches!(err, AppError::Image(ImageError::TooLarge(_))), "{err:?}");
        let err = stage_upload(body(vec![1; 100]), Some(200), &tmp.path().join("d"), 4096, idle).await.unwrap_err();
        assert!(err.to_string().contains("100 of 200"), "{err}");
        let err = stage_upload(body(vec![]), None, &tmp.path().join("e"), 4096, idle).await.unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        // A sender that goes quiet is dropped after the idle time.
        let (_quiet_writer, quiet) = tokio::io::duplex(64);
        let quiet_file = tmp.path().join("f");
        let stalled = stage_upload(Box::pin(quiet), None, &quiet_file, 4096, Duration::from_millis(200)).await;
        assert!(matches!(stalled.unwrap_err(), AppError::Image(ImageError::UploadStalled(_))));
    }

    #[test]
    fn conversions_in_progress_hold_their_space() {
        let tmp = tempfile::tempdir().unwrap();
        let reservations = Reservations::default();
        let available = reservations.available(tmp.path());
        assert!(available > 0);
        // Half is held; three quarters more cannot be promised until it is given back.
        let held = reservations.reserve(tmp.path(), available / 2, "a").unwrap();
        let err = reservations.reserve(tmp.path(), available / 4 * 3, "b").err().unwrap();
        assert!(matches!(err, AppError::InsufficientStorage(_)), "{err:?}");
        assert!(err.to_string().contains("converting b needs"), "{err}");
        drop(held);
        assert!(reservations.reserve(tmp.path(), available / 4 * 3, "c").is_ok());
    }

    #[test]
    fn an_import_never_replaces_a_file_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let (partial, dest) = (tmp.path().join("p"), tmp.path().join("d"));
        std::fs::write(&partial, "new").unwrap();
        std::fs::write(&dest, "someone else's").unwrap();
        assert!(matches!(place(&partial, &dest), Err(AppError::Image(ImageError::Duplicate(_)))));
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "someone else's");
        std::fs::remove_file(&dest).unwrap();
        place(&partial, &dest).unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
    }

    #[test]
    fn only_stale_import_files_are_removed_as_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let write = |name: &str, stale: bool| {
            let path = tmp.path().join(name);
            std::fs::write(&path, "x").unwrap();
            if stale {
                std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
            }
        };
        write(".debian.0a1b2c3d.upload", true);
        write(".debian.0a1b2c3d.importing", true);
        write(".other.99999999.upload", false); // an import in progress elsewhere
        write(".jammy.img.partial", true); // a pull to resume
        write("debian.qcow2", true);
        assert_eq!(remove_leftovers(tmp.path()), 2);
        let mut left: Vec<_> =
            std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, [".jammy.img.partial", ".other.99999999.upload", "debian.qcow2"]);
    }
}
