//! Downloading a catalog image: resumable, with progress, verified against the
//! published SHA256SUMS before it is moved into images/.

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_util::StreamExt;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use super::catalog::{CatalogEntry, checksum_for};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullState {
    Downloading,
    Verifying,
    Done,
    Failed,
}

impl PullState {
    pub fn as_str(self) -> &'static str {
        match self {
            PullState::Downloading => "downloading",
            PullState::Verifying => "verifying",
            PullState::Done => "done",
            PullState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PullProgress {
    pub state: PullState,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
    /// Bytes resumed from an earlier partial download.
    pub bytes_resumed: u64,
    pub bytes_per_second: f64,
    pub eta_seconds: Option<f64>,
    pub error: Option<String>,
}

impl PullProgress {
    pub fn starting() -> Self {
        Self {
            state: PullState::Downloading,
            bytes_done: 0,
            bytes_total: None,
            bytes_resumed: 0,
            bytes_per_second: 0.0,
            eta_seconds: None,
            error: None,
        }
    }

    /// Counts `bytes` more of a transfer that started at `offset`, `elapsed` seconds ago.
    fn count(&mut self, bytes: u64, offset: u64, elapsed: f64) {
        self.bytes_done += bytes;
        if elapsed > 0.0 {
            self.bytes_per_second = (self.bytes_done - offset) as f64 / elapsed;
        }
        self.eta_seconds = self
            .bytes_total
            .filter(|_| self.bytes_per_second > 0.0)
            .map(|total| total.saturating_sub(self.bytes_done) as f64 / self.bytes_per_second);
    }

    /// One line for a terminal: `312.5 MiB / 640.0 MiB  48%  12.3 MiB/s  ETA 27s`.
    pub fn render_line(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let mut line = match self.bytes_total {
            Some(total) if total > 0 => format!(
                "{:.1} MiB / {:.1} MiB {:>4.0}%",
                mib(self.bytes_done),
                mib(total),
                100.0 * self.bytes_done as f64 / total as f64
            ),
            _ => format!("{:.1} MiB", mib(self.bytes_done)),
        };
        line.push_str(&format!("  {:.1} MiB/s", self.bytes_per_second / (1024.0 * 1024.0)));
        if let Some(eta) = self.eta_seconds {
            line.push_str(&format!("  ETA {:.0}s", eta));
        }
        line
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("downloading {url}: {detail}")]
    Http { url: String, detail: String },
    #[error("{file} is not listed in {url}")]
    NoChecksum { file: String, url: String },
    #[error("checksum mismatch for {file}: expected {expected}, got {actual}; the download was deleted")]
    ChecksumMismatch { file: String, expected: String, actual: String },
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

pub struct Downloaded {
    pub path: PathBuf,
    pub sha256: String,
    pub size_bytes: u64,
}

/// Where a pull writes: the partial download, kept between attempts, and the
/// verified image it becomes.
pub struct PullFiles {
    pub partial: PathBuf,
    pub dest: PathBuf,
}

fn http_err(url: &str, detail: impl ToString) -> PullError {
    PullError::Http { url: url.to_string(), detail: detail.to_string() }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |source| PullError::Io { path: path.to_path_buf(), source }
}

/// Downloads `entry`, resuming a partial file, verifying the checksum, and calling
/// `progress` as bytes arrive.
pub async fn download(
    client: &reqwest::Client,
    entry: &CatalogEntry,
    files: &PullFiles,
    mut progress: impl FnMut(&PullProgress),
) -> Result<Downloaded, PullError> {
    let sums_url = &entry.sha256sums_url;
    let sums = fetch_text(client, sums_url).await?;
    let expected = checksum_for(&sums, &entry.file_name)
        .ok_or_else(|| PullError::NoChecksum { file: entry.file_name.clone(), url: sums_url.clone() })?;
    let mut state = PullProgress::starting();
    fetch_into_partial(client, &entry.url, &files.partial, &mut state, &mut progress).await?;
    verify_and_place(entry, files, expected, state, progress).await
}

/// Fetches the image into the partial file, resuming from what an earlier attempt left.
async fn fetch_into_partial(
    client: &reqwest::Client,
    url: &str,
    partial: &Path,
    state: &mut PullProgress,
    progress: &mut impl FnMut(&PullProgress),
) -> Result<(), PullError> {
    let mut offset = tokio::fs::metadata(partial).await.map(|m| m.len()).unwrap_or(0);
    let mut request = client.get(url);
    if offset > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
    }
    let response = request.send().await.map_err(|e| http_err(url, e))?;
    let status = response.status();
    if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
        return Ok(()); // complete already
    }
    if status == reqwest::StatusCode::OK {
        offset = 0; // the server ignored the range: start over
    } else if status != reqwest::StatusCode::PARTIAL_CONTENT {
        return Err(http_err(url, format!("HTTP {status}")));
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(offset > 0)
        .truncate(offset == 0)
        .open(partial)
        .await
        .map_err(io_err(partial))?;
    state.bytes_resumed = offset;
    state.bytes_done = offset;
    state.bytes_total = response.content_length().map(|len| len + offset);
    progress(state);
    let started = Instant::now();
    let mut stream = response.bytes_stream();
    let mut last_report = Instant::now();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                // What arrived stays for the next attempt to resume from.
                let _ = file.flush().await;
                let detail = if e.is_timeout() {
                    format!(
                        "the mirror stopped sending after {} bytes (no data within the read timeout); \
                         pull again to resume",
                        state.bytes_done
                    )
                } else {
                    format!("{e} after {} bytes; pull again to resume", state.bytes_done)
                };
                return Err(http_err(url, detail));
            }
        };
        file.write_all(&chunk).await.map_err(io_err(partial))?;
        state.count(chunk.len() as u64, offset, started.elapsed().as_secs_f64());
        if last_report.elapsed().as_millis() >= 200 {
            progress(state);
            last_report = Instant::now();
        }
    }
    file.flush().await.map_err(io_err(partial))?;
    file.sync_all().await.map_err(io_err(partial))?;
    match state.bytes_total {
        Some(total) if state.bytes_done != total => {
            Err(http_err(url, format!("connection closed after {} of {total} bytes", state.bytes_done)))
        }
        _ => Ok(()),
    }
}

/// Checks the whole file against the published checksum and moves it into place; a
/// mismatch removes it, so the next pull starts clean.
async fn verify_and_place(
    entry: &CatalogEntry,
    files: &PullFiles,
    expected: String,
    mut state: PullProgress,
    mut progress: impl FnMut(&PullProgress),
) -> Result<Downloaded, PullError> {
    let partial = &files.partial;
    state.state = PullState::Verifying;
    state.eta_seconds = None;
    progress(&state);
    let (actual, size_bytes) = sha256_file(partial).await.map_err(io_err(partial))?;
    if actual != expected {
        let _ = tokio::fs::remove_file(partial).await;
        return Err(PullError::ChecksumMismatch { file: entry.file_name.clone(), expected, actual });
    }
    let path = files.dest.clone();
    tokio::fs::rename(partial, &path).await.map_err(io_err(&path))?;
    state.state = PullState::Done;
    state.bytes_done = size_bytes;
    state.bytes_total = Some(size_bytes);
    progress(&state);
    Ok(Downloaded { path, sha256: actual, size_bytes })
}

async fn fetch_text(client: &reqwest::Client, url: &str) -> Result<String, PullError> {
    let response = client.get(url).send().await.map_err(|e| http_err(url, e))?;
    if !response.status().is_success() {
        return Err(http_err(url, format!("HTTP {}", response.status())));
    }
    response.text().await.map_err(|e| http_err(url, e))
}

/// SHA-256 (hex) and size of a file, read on a blocking thread.
pub async fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
        Ok((hex::encode(hasher.finalize()), size))
    })
    .await
    .expect("hashing does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_show_size_rate_and_eta() {
        let p = PullProgress {
            state: PullState::Downloading,
            bytes_done: 50 << 20,
            bytes_total: Some(100 << 20),
            bytes_resumed: 0,
            bytes_per_second: 10.0 * 1024.0 * 1024.0,
            eta_seconds: Some(5.0),
            error: None,
        };
        assert_eq!(p.render_line(), "50.0 MiB / 100.0 MiB   50%  10.0 MiB/s  ETA 5s");
    }
}
