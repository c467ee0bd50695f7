//! Command line: parse, set up logging, dispatch to the services.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, NetworkConfig};
use crate::paths::Paths;
use crate::platform::{Accelerator, Host};

#[derive(Debug, Parser)]
#[command(name = "ec2local", version, about = "EC2-shaped virtual machines on your own machine, through libvirt/QEMU")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: web UI, REST API (/api, docs at /docs) and web terminal.
    Serve(ServeArgs),
    /// List, pull and import base images.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
        /// Data directory [default: ~/.ec2-as-service]
        #[arg(long, global = true, env = "EC2_AS_SERVICE_HOME")]
        data_dir: Option<PathBuf>,
        /// Mirror of cloud-images.ubuntu.com to pull from.
        #[arg(long, global = true, env = "EC2LOCAL_IMAGE_BASE_URL", default_value = crate::images::catalog::DEFAULT_BASE_URL)]
        image_base_url: String,
        /// Seconds a pull waits for the mirror's next bytes before it fails (and can be retried).
        #[arg(long, global = true, env = "EC2LOCAL_PULL_READ_TIMEOUT_SECS", default_value_t = 60)]
        pull_read_timeout_secs: u64,
    },
    /// Check every host dependency and print how to install what is missing.
    Doctor {
        #[arg(long, env = "EC2LOCAL_LIBVIRT_URI")]
        libvirt_uri: Option<String>,
        /// Data directory to check [default: ~/.ec2-as-service]
        #[arg(long, env = "EC2_AS_SERVICE_HOME")]
        data_dir: Option<PathBuf>,
        /// macOS: socket_vmnet's socket [default: the usual places]
        #[arg(long, env = "EC2LOCAL_VMNET_SOCKET")]
        vmnet_socket: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ImagesCommand {
    /// Show every image and whether it is available.
    List,
    /// Download a catalog image (e.g. ubuntu-22.04), resuming a partial download and
    /// verifying its SHA256 against the published list.
    Pull { name: String },
    /// Upload a local qcow2 or raw image to the running service, streamed with a
    /// progress line: the service itself need not be able to read the file.
    Upload {
        file: PathBuf,
        #[command(flatten)]
        facts: ImageFacts,
        /// Address of the running service.
        #[arg(long, env = "EC2LOCAL_ENDPOINT", default_value = "http://127.0.0.1:8000")]
        endpoint: String,
    },
    /// Register a local qcow2 or raw cloud image by copying it into images/.
    Import {
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        facts: ImageFacts,
    },
}

/// What a user says about an image they bring in.
#[derive(Debug, clap::Args)]
struct ImageFacts {
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

impl ImageFacts {
    fn into_request(self) -> crate::images::ImportRequest {
        crate::images::ImportRequest {
            name: self.name,
            description: self.description,
            os: self.os,
            os_version: self.os_version,
            architecture: self.arch,
            default_user: self.default_user,
        }
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on. Keep it on loopback: the API can start VMs and open shells.
    #[arg(long, env = "EC2LOCAL_BIND", default_value = "127.0.0.1:8000")]
    bind: SocketAddr,
    /// Data directory [default: ~/.ec2-as-service]
    #[arg(long, env = "EC2_AS_SERVICE_HOME")]
    data_dir: Option<PathBuf>,
    /// libvirt connection URI [default: qemu:///system on Linux, qemu:///session on macOS]
    #[arg(long, env = "EC2LOCAL_LIBVIRT_URI")]
    libvirt_uri: Option<String>,
    /// Force an accelerator (kvm, hvf, tcg) instead of detecting one.
    #[arg(long, env = "EC2LOCAL_ACCELERATOR")]
    accelerator: Option<Accelerator>,
    /// Name of the libvirt NAT network for instances.
    #[arg(long, env = "EC2LOCAL_NETWORK_NAME", default_value = "ec2-as-service")]
    network_name: String,
    /// Bridge device of that network (at most 15 characters).
    #[arg(long, env = "EC2LOCAL_NETWORK_BRIDGE", default_value = "ec2br0")]
    network_bridge: String,
    /// Gateway address and prefix of that network.
    #[arg(long, env = "EC2LOCAL_NETWORK_GATEWAY", default_value = "192.168.100.1/24")]
    network_gateway: String,
    /// DHCP range of that network, FIRST-LAST.
    #[arg(long, env = "EC2LOCAL_DHCP_RANGE", default_value = "192.168.100.10-192.168.100.254")]
    dhcp_range: String,
    /// Name of the libvirt storage pool on the data directory's storage/.
    #[arg(long, env = "EC2LOCAL_POOL_NAME", default_value = ".ec2-as-service")]
    pool_name: String,
    /// Mirror of cloud-images.ubuntu.com to pull catalog images from.
    #[arg(long, env = "EC2LOCAL_IMAGE_BASE_URL", default_value = crate::images::catalog::DEFAULT_BASE_URL)]
    image_base_url: String,
    /// Seconds a pull waits for the mirror's next bytes before it fails (and can be retried).
    #[arg(long, env = "EC2LOCAL_PULL_READ_TIMEOUT_SECS", default_value_t = 60)]
    pull_read_timeout_secs: u64,
    /// Seconds an image upload may send nothing before it is dropped (408).
    #[arg(long, env = "EC2LOCAL_UPLOAD_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    upload_idle_timeout_secs: u64,
    /// Refuse new instances when the host has less memory available than this (MiB).
    #[arg(long, env = "EC2LOCAL_MIN_AVAILABLE_MEMORY_MIB", default_value_t = 4096)]
    min_available_memory_mib: u64,
    /// Refuse new instances unless free disk exceeds the instance's disk plus this (GiB).
    #[arg(long, env = "EC2LOCAL_DISK_HEADROOM_GIB", default_value_t = 5)]
    disk_headroom_gib: u64,
    /// Seconds a guest gets to shut down or reboot before it is forced.
    #[arg(long, env = "EC2LOCAL_STOP_TIMEOUT_SECS", default_value_t = 60)]
    stop_timeout_secs: u64,
    /// Seconds a terminated guest gets to shut down (ACPI) before it is destroyed.
    #[arg(long, env = "EC2LOCAL_TERMINATE_GRACE_SECS", default_value_t = 10)]
    terminate_grace_secs: u64,
    /// Seconds between refreshes of every instance's state and address.
    #[arg(long, env = "EC2LOCAL_MONITOR_INTERVAL_SECS", default_value_t = 5)]
    monitor_interval_secs: u64,
    /// Seconds between keep-alive pings of terminal sessions.
    #[arg(long, env = "EC2LOCAL_TERMINAL_KEEPALIVE_SECS", default_value_t = 30)]
    terminal_keepalive_secs: u64,
    /// Web terminal sessions open at once; one more is refused with a message.
    #[arg(long, env = "EC2LOCAL_TERMINAL_MAX_SESSIONS", default_value_t = 16)]
    terminal_max_sessions: usize,
    /// Seconds between libvirt re-checks while it is unreachable.
    #[arg(long, env = "EC2LOCAL_LIBVIRT_RECHECK_SECS", default_value_t = 5)]
    libvirt_recheck_secs: u64,
    /// macOS: socket_vmnet's socket [default: $HOMEBREW_PREFIX/var/run/socket_vmnet, then
    /// /var/run/socket_vmnet]. Without one, guests use QEMU's vmnet-shared (root only).
    #[arg(long, env = "EC2LOCAL_VMNET_SOCKET")]
    vmnet_socket: Option<PathBuf>,
    /// Address port forwards listen on. Keep it on loopback: anyone who can reach another
    /// address reaches the forwarded instance ports, without authentication.
    #[arg(long, env = "EC2LOCAL_FORWARD_BIND", default_value = "127.0.0.1")]
    forward_bind: std::net::IpAddr,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Images { command, data_dir, image_base_url, pull_read_timeout_secs } => {
            crate::logging::init_stderr();
            let config = crate::images::ImagesConfig {
                base_url: image_base_url,
                pull_read_timeout: std::time::Duration::from_secs(pull_read_timeout_secs.max(1)),
                ..Default::default()
            };
            runtime.block_on(images(command, data_dir, &config))
        }
        Command::Doctor { libvirt_uri, data_dir, vmnet_socket } => {
            crate::logging::init_stderr();
            let host = Host::detect();
            let uri = libvirt_uri.unwrap_or_else(|| host.default_libvirt_uri().to_string());
            let data_dir = data_dir.or_else(Paths::default_root);
            let checks =
                runtime.block_on(crate::doctor::run_checks(host, &uri, data_dir.as_deref(), vmnet_socket.as_deref()));
            if crate::doctor::print_report(&checks) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let Some(root) = args.data_dir.or_else(Paths::default_root) else {
        eprintln!("ec2local: no home directory; pass --data-dir or set EC2_AS_SERVICE_HOME");
        return ExitCode::FAILURE;
    };
    let paths = Paths::new(root);
    if let Err(err) = paths.ensure().and_then(|()| crate::logging::init(&paths.log_file())) {
        eprintln!("ec2local: cannot set up {}: {err}", paths.root().display());
        return ExitCode::FAILURE;
    }
    let host = Host::detect();
    let uri = args.libvirt_uri.unwrap_or_else(|| host.default_libvirt_uri().to_string());
    let network =
        match NetworkConfig::parse(&args.network_name, &args.network_bridge, &args.network_gateway, &args.dhcp_range) {
            Ok(network) => network,
            Err(err) => {
                eprintln!("ec2local: {err}");
                return ExitCode::FAILURE;
            }
        };
    let mut config = Config::new(args.bind, paths, uri);
    config.network = network;
    config.pool_name = args.pool_name;
    config.accelerator = args.accelerator;
    config.images = crate::images::ImagesConfig {
        base_url: args.image_base_url,
        pull_read_timeout: std::time::Duration::from_secs(args.pull_read_timeout_secs.max(1)),
        upload_idle_timeout: std::time::Duration::from_secs(args.upload_idle_timeout_secs.max(1)),
    };
    config.limits = crate::config::Limits {
        min_available_memory_mib: args.min_available_memory_mib,
        disk_headroom_gib: args.disk_headroom_gib,
    };
    config.stop_timeout = std::time::Duration::from_secs(args.stop_timeout_secs.max(1));
    config.terminate_grace = std::time::Duration::from_secs(args.terminate_grace_secs);
    config.monitor_interval = std::time::Duration::from_secs(args.monitor_interval_secs.max(1));
    config.terminal_keepalive = std::time::Duration::from_secs(args.terminal_keepalive_secs.max(1));
    config.terminal_max_sessions = args.terminal_max_sessions;
    config.libvirt_recheck_interval = std::time::Duration::from_secs(args.libvirt_recheck_secs.max(1));
    config.vmnet_socket = args.vmnet_socket;
    config.forward_bind = args.forward_bind;
    if let Some(warning) = crate::forwards::exposure_warning(args.forward_bind) {
        tracing::warn!(address = %args.forward_bind, "{warning}");
        eprintln!("ec2local: warning: {warning}");
    }
    match crate::api::serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "ec2local stopped");
            eprintln!("ec2local: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn images(command: ImagesCommand, data_dir: Option<PathBuf>, config: &crate::images::ImagesConfig) -> ExitCode {
    if let ImagesCommand::Upload { file, facts, endpoint } = command {
        let name = facts.name.clone();
        let request = facts.into_request();
        return match upload_image(&endpoint, &request, &file).await {
            Ok(id) => {
                println!("uploaded {name} as {id}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("\nec2local: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let images = match local_images(data_dir, config) {
        Ok(images) => images,
        Err(err) => {
            eprintln!("ec2local: {err}");
            return ExitCode::FAILURE;
        }
    };
    match images_locally(command, &images).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nec2local: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The image service over the data dir's own database, for commands run without a service.
fn local_images(
    data_dir: Option<PathBuf>,
    config: &crate::images::ImagesConfig,
) -> Result<crate::images::Images, String> {
    let root =
        data_dir.or_else(Paths::default_root).ok_or("no home directory; pass --data-dir or set EC2_AS_SERVICE_HOME")?;
    let paths = Paths::new(root);
    paths.ensure().map_err(|e| e.to_string())?;
    let db = crate::db::Db::open(&paths.database()).map_err(|e| e.to_string())?;
    Ok(crate::images::Images::new(
        db,
        paths,
        Host::detect().arch,
        config,
        crate::exec::qemu_img::QemuImg::new(std::time::Duration::from_secs(3600)),
    ))
}

async fn images_locally(command: ImagesCommand, images: &crate::images::Images) -> Result<(), crate::error::AppError> {
    images.sync_catalog().await?;
    match command {
        ImagesCommand::List => {
            for image in images.list().await? {
                let state = if image.available { "available" } else { "unavailable" };
                println!("{:<14} {:<20} {:<8} {}", image.row.id, image.row.name, image.row.architecture, state);
                if let Some(reason) = image.unavailable_reason {
                    println!("{:<14} {reason}", "");
                }
            }
        }
        ImagesCommand::Pull { name } => {
            let Some(entry) = images.catalog_lookup(&name) else {
                return Err(crate::error::ImageError::NotInCatalog(name).into());
            };
            eprintln!("pulling {} from {}", entry.name, entry.url);
            images
                .pull(&entry, |p| {
                    use std::io::Write;
                    eprint!("\r\x1b[2K{} {:<9} {}", entry.name, p.state.as_str(), p.render_line());
                    let _ = std::io::stderr().flush();
                })
                .await?;
            eprintln!();
            println!("{} is ready", entry.name);
        }
        ImagesCommand::Upload { .. } => unreachable!("sent to the service, without the database"),
        ImagesCommand::Import { file, facts } => {
            // A path typed on the command line is relative to where it was typed.
            let source = crate::images::ImportSource::File(std::path::absolute(&file).unwrap_or(file));
            let image = images.import(facts.into_request(), source).await?;
            println!("imported {} as {}", image.row.name, image.row.id);
        }
    }
    Ok(())
}

/// Streams `file` to `PUT /api/images/{name}/file` with a progress line on stderr;
/// returns the new image's id.
async fn upload_image(
    endpoint: &str,
    request: &crate::images::ImportRequest,
    file: &std::path::Path,
) -> Result<String, String> {
    let name = request.name.as_str();
    crate::images::validate_image_name(name).map_err(|e| e.to_string())?;
    let opened = tokio::fs::File::open(file).await.map_err(|e| format!("{}: {e}", file.display()))?;
    let total = opened.metadata().await.map_err(|e| format!("{}: {e}", file.display()))?.len();
    let about = [
        ("description", &request.description),
        ("os", &request.os),
        ("os_version", &request.os_version),
        ("architecture", &request.architecture),
        ("default_user", &request.default_user),
    ];
    let query: Vec<(&str, &str)> = about.iter().filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))).collect();
    let base = reqwest::Url::parse(endpoint).map_err(|e| format!("endpoint {endpoint}: {e}"))?;
    let url_of = |segments: &[&str]| {
        let mut url = base.clone();
        url.path_segments_mut().expect("an http URL").pop_if_empty().extend(segments);
        url
    };
    let mut url = url_of(&["api", "images", name, "file"]);
    url.query_pairs_mut().extend_pairs(&query);
    // TLS uses ring, like the rest of the crypto here; installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let unreachable = |e: reqwest::Error| format!("could not reach {base}: {e} (is `ec2local serve` running there?)");
    // Refusals the service would give, said before any byte is sent.
    let existing = client.get(url_of(&["api", "images", name])).send().await.map_err(unreachable)?;
    if existing.status().is_success() {
        return Err(format!("an image named {name:?} already exists"));
    }
    let host: serde_json::Value =
        client.get(url_of(&["api", "host"])).send().await.map_err(unreachable)?.json().await.unwrap_or_default();
    if let Some(free) = host["disk_available_bytes"].as_u64()
        && free < total.saturating_mul(2)
    {
        return Err(format!(
            "{} is {} MiB; an import needs twice that, and the service's disk has {} MiB free",
            file.display(),
            total >> 20,
            free >> 20
        ));
    }
    let response = client
        .put(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(reqwest::header::CONTENT_LENGTH, total)
        .body(reqwest::Body::wrap_stream(read_with_progress(opened, total)))
        .send()
        .await
        .map_err(|e| format!("could not upload to {url}: {e} (is `ec2local serve` running there?)"))?;
    eprintln!();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status.is_success() {
        Ok(body["id"].as_str().unwrap_or_default().to_string())
    } else {
        Err(body["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("HTTP {status}")))
    }
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

    // REQ-USE-001: the service listens on loopback unless told otherwise.
    #[test]
    fn serve_binds_to_loopback_port_8000_by_default() {
        let Cli { command: Command::Serve(args) } = Cli::try_parse_from(["ec2local", "serve"]).unwrap() else {
            panic!("not the serve command");
        };
        // clap reads EC2LOCAL_BIND too: a developer's own setting wins over the default.
        let expected = std::env::var("EC2LOCAL_BIND").unwrap_or_else(|_| "127.0.0.1:8000".into());
        assert_eq!(args.bind, expected.parse::<SocketAddr>().unwrap());
        let Cli { command: Command::Serve(args) } =
            Cli::try_parse_from(["ec2local", "serve", "--bind", "127.0.0.1:0"]).unwrap()
        else {
            panic!("not the serve command");
        };
        assert_eq!(args.bind.port(), 0);
    }

    // issue 16: port forwards listen on loopback unless told otherwise.
    #[test]
    fn forwards_listen_on_loopback_by_default() {
        let Cli { command: Command::Serve(args) } = Cli::try_parse_from(["ec2local", "serve"]).unwrap() else {
            panic!("not the serve command");
        };
        let expected = std::env::var("EC2LOCAL_FORWARD_BIND").unwrap_or_else(|_| "127.0.0.1".into());
        assert_eq!(args.forward_bind, expected.parse::<std::net::IpAddr>().unwrap());
        let Cli { command: Command::Serve(args) } =
            Cli::try_parse_from(["ec2local", "serve", "--forward-bind", "0.0.0.0"]).unwrap()
        else {
            panic!("not the serve command");
        };
        assert!(args.forward_bind.is_unspecified());
        assert!(Cli::try_parse_from(["ec2local", "serve", "--forward-bind", "localhost:80"]).is_err());
    }
}
