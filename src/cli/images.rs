//! `ec2local images`: the service's images through the REST API: list, pull with a
//! progress line, upload or import a local file (streamed: the service need not be able
//! to read it), remove.

use std::path::PathBuf;
use std::time::Duration;

use super::client::{CliError, Client, ImageView, PullView};
use super::output::{Cell, Progress, Table, colour_of, colour_on_stdout, print_json};

#[derive(Debug, clap::Subcommand)]
pub enum ImagesCommand {
    /// Show every image and whether it can be launched.
    #[command(alias = "list")]
    Ls,
    /// Download a catalog image (e.g. ubuntu-24.04) through the service, resuming a
    /// partial download and verifying its SHA256 against the published list.
    Pull { name: String },
    /// Upload a local qcow2 or raw image to the service, streamed with a progress line.
    Upload {
        file: PathBuf,
        #[command(flatten)]
        facts: ImageFacts,
    },
    /// The same as `upload`, with the file given as `--file`.
    Import {
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        facts: ImageFacts,
    },
    /// Remove an image that no instance uses.
    #[command(alias = "delete")]
    Rm { name: String },
}

/// What a user says about an image they bring in.
#[derive(Debug, clap::Args)]
pub struct ImageFacts {
    #[arg(long)]
    name: String,
    #[arg(long)]
    description: Option<String>,
    #[arg(long)]
    os: Option<String>,
    #[arg(long)]
    os_version: Option<String>,
    /// x86_64 or aarch64 [default: the host's]
    #[arg(long)]
    arch: Option<String>,
    /// The image's cloud-init default user [default: ubuntu]
    #[arg(long)]
    default_user: Option<String>,
}

pub async fn images(client: &Client, command: ImagesCommand, json: bool) -> Result<(), CliError> {
    match command {
        ImagesCommand::Ls => list(client, json).await,
        ImagesCommand::Pull { name } => pull(client, &name).await,
        ImagesCommand::Upload { file, facts } | ImagesCommand::Import { file, facts } => {
            let name = facts.name.clone();
            let id = upload_image(client, &facts, &file).await?;
            println!("uploaded {name} as {id}");
            Ok(())
        }
        ImagesCommand::Rm { name } => {
            client.delete(&["api", "images", &name]).await?;
            println!("removed {name}");
            Ok(())
        }
    }
}

async fn list(client: &Client, json: bool) -> Result<(), CliError> {
    if json {
        let raw: serde_json::Value = client.get(&["api", "images"]).await?;
        print_json(&raw);
        return Ok(());
    }
    let images: Vec<ImageView> = client.get(&["api", "images"]).await?;
    let mut table = Table::new(&["ID", "NAME", "ARCH", "STATE", "NOTE"]);
    for image in &images {
        let (state, note) = availability(image);
        let colour = colour_of(&state);
        table.row(vec![
            image.id.as_str().into(),
            image.name.as_str().into(),
            image.architecture.as_str().into(),
            Cell::coloured(state, colour),
            note.into(),
        ]);
    }
    print!("{}", table.render(colour_on_stdout()));
    Ok(())
}

/// A word for the image's state and what to know about it.
fn availability(image: &ImageView) -> (String, String) {
    let reason = image.unavailable_reason.clone().unwrap_or_default();
    match (image.availability.as_deref(), &image.pull) {
        (Some("available"), _) => ("available".into(), String::new()),
        (Some("downloading"), Some(pull)) => ("downloading".into(), pull_line(pull)),
        (Some("not-downloaded"), _) => ("not downloaded".into(), format!("ec2local images pull {}", image.name)),
        (Some(other), _) => (other.replace('-', " "), reason),
        // A service from before `availability`.
        (None, _) if image.available => ("available".into(), String::new()),
        (None, _) => ("unavailable".into(), reason),
    }
}

/// The pull's progress in the words `PullProgress` uses for a terminal.
fn pull_line(pull: &PullView) -> String {
    let progress = crate::images::pull::PullProgress {
        bytes_done: pull.bytes_done,
        bytes_total: pull.bytes_total,
        bytes_per_second: pull.bytes_per_second,
        eta_seconds: pull.eta_seconds,
        ..crate::images::pull::PullProgress::starting()
    };
    progress.render_line()
}

/// Starts (or joins) the service's pull and follows it to the end.
async fn pull(client: &Client, name: &str) -> Result<(), CliError> {
    let started: ImageView = client.post(&["api", "images", name, "pull"], &serde_json::json!({})).await?;
    let mut progress = Progress::new();
    loop {
        let image: ImageView = client.get(&["api", "images", &started.id]).await?;
        match &image.pull {
            Some(pull) => progress.say(&format!("{} {:<11} {}", image.name, pull.state, pull_line(pull))),
            None => progress.say(&format!("{} waiting", image.name)),
        }
        match image.pull.as_ref().map(|p| p.state.as_str()) {
            Some("done") => {
                progress.done();
                println!("{} is ready", image.name);
                return Ok(());
            }
            Some("failed") => {
                progress.done();
                let error = image.pull.and_then(|p| p.error).unwrap_or_default();
                return Err(CliError::Local(format!("pulling {} failed: {error}", image.name)));
            }
            _ if image.available => {
                progress.done();
                println!("{} is ready", image.name);
                return Ok(());
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Streams `file` to `PUT /api/images/{name}/file` with a progress line on stderr;
/// returns the new image's id. Refusals the service would give are said before any
/// byte is sent.
async fn upload_image(client: &Client, facts: &ImageFacts, file: &std::path::Path) -> Result<String, CliError> {
    let name = facts.name.as_str();
    crate::images::validate_image_name(name).map_err(|e| CliError::Usage(e.to_string()))?;
    let opened = tokio::fs::File::open(file).await.map_err(|e| CliError::local(file.display(), e))?;
    let total = opened.metadata().await.map_err(|e| CliError::local(file.display(), e))?.len();
    match client.get::<ImageView>(&["api", "images", name]).await {
        Ok(_) => return Err(CliError::Usage(format!("an image named {name:?} already exists"))),
        Err(CliError::Refused { status: 404, .. }) => {}
        Err(other) => return Err(other),
    }
    let host: serde_json::Value = client.get(&["api", "host"]).await?;
    if let Some(free) = host["disk_available_bytes"].as_u64()
        && free < total.saturating_mul(2)
    {
        return Err(CliError::Usage(format!(
            "{} is {} MiB; an import needs twice that, and the service's disk has {} MiB free",
            file.display(),
            total >> 20,
            free >> 20
        )));
    }
    let about = [
        ("description", &facts.description),
        ("os", &facts.os),
        ("os_version", &facts.os_version),
        ("architecture", &facts.arch),
        ("default_user", &facts.default_user),
    ];
    let query: Vec<(&str, &str)> = about.iter().filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))).collect();
    let mut url = client.url(&["api", "images", name, "file"]);
    url.query_pairs_mut().extend_pairs(&query);
    let response = client
        .http()
        .put(url)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(reqwest::header::CONTENT_LENGTH, total)
        .body(reqwest::Body::wrap_stream(read_with_progress(opened, total)))
        .send()
        .await
        .map_err(|e| client.unreachable(e));
    eprintln!();
    let image: ImageView =
        Client::refusal(response?).await?.json().await.map_err(|e| CliError::local("the service's answer", e))?;
    Ok(image.id)
}

/// The file in 1 MiB chunks, with a progress line on stderr as they are taken.
fn read_with_progress(
    file: tokio::fs::File,
    total: u64,
) -> futures_util::stream::BoxStream<'static, std::io::Result<Vec<u8>>> {
    use futures_util::StreamExt;
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    futures_util::stream::unfold((file, 0u64), move |(mut f, sent)| async move {
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                let sent = sent + n as u64;
                let rate = sent as f64 / started.elapsed().as_secs_f64().max(0.001) / (1024.0 * 1024.0);
                eprint!(
                    "\r\x1b[2Kuploading {:.1} / {:.1} MiB {:>4.0}%  {rate:.1} MiB/s",
                    sent as f64 / (1024.0 * 1024.0),
                    total as f64 / (1024.0 * 1024.0),
                    100.0 * sent as f64 / total.max(1) as f64
                );
                Some((Ok(buf), (f, sent)))
            }
            Err(e) => Some((Err(e), (f, sent))),
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(availability: &str, pull: Option<&str>) -> ImageView {
        ImageView {
            id: "ami-0123abcd".into(),
            name: "ubuntu-24.04".into(),
            architecture: "x86_64".into(),
            available: availability == "available",
            availability: Some(availability.into()),
            unavailable_reason: Some("the file images/x.qcow2 is missing".into()),
            pull: pull.map(|state| PullView {
                state: state.into(),
                bytes_done: 3 << 20,
                bytes_total: Some(6 << 20),
                bytes_per_second: (1 << 20) as f64,
                eta_seconds: Some(3.0),
                error: Some("checksum mismatch".into()),
            }),
        }
    }

    #[test]
    fn a_catalog_image_never_pulled_is_not_downloaded_not_an_error() {
        let said = |availability, pull| {
            let (state, note) = super::availability(&image(availability, pull));
            (state, note)
        };
        assert_eq!(said("not-downloaded", None), ("not downloaded".into(), "ec2local images pull ubuntu-24.04".into()));
        assert_eq!(said("available", Some("done")), ("available".into(), String::new()));
        assert_eq!(
            said("downloading", Some("downloading")),
            ("downloading".into(), "3.0 MiB / 6.0 MiB   50%  1.0 MiB/s  ETA 3s".into())
        );
        assert_eq!(said("missing-file", None), ("missing file".into(), "the file images/x.qcow2 is missing".into()));
    }
}
