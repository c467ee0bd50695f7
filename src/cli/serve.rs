//! `ec2local serve`: its flags, and the service's configuration made from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, NetworkConfig};
use crate::paths::Paths;
use crate::platform::{Accelerator, Host};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Keep it on loopback: the API can start VMs and open shells.
    #[arg(long, env = "EC2LOCAL_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
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
    /// Seconds between monitor ticks: leases of guests still without an address, and
    /// every instance's state while libvirt's events cannot be followed.
    #[arg(long, env = "EC2LOCAL_MONITOR_INTERVAL_SECS", default_value_t = 2)]
    monitor_interval_secs: u64,
    /// Seconds between full looks at every instance when no libvirt event asked for one
    /// (a safety net: changes made outside ec2local arrive as events).
    #[arg(long, env = "EC2LOCAL_SAFETY_POLL_SECS", default_value_t = 30)]
    safety_poll_secs: u64,
    /// Warm spares: domains of the image and type launched last, started paused ahead
    /// of any request, so that the next such launch is running in a fraction of a
    /// second. Each holds an address and a small QEMU process until it is taken.
    #[arg(long, env = "EC2LOCAL_WARM_SPARES", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=20))]
    warm_spares: u16,
    /// Seconds a launched, started or rebooted instance has for SSH to answer before its
    /// status check is `impaired`.
    #[arg(long, env = "EC2LOCAL_STATUS_TIMEOUT_SECS", default_value_t = 300)]
    status_timeout_secs: u64,
    /// Seconds between keep-alive pings of terminal sessions.
    #[arg(long, env = "EC2LOCAL_TERMINAL_KEEPALIVE_SECS", default_value_t = 30)]
    terminal_keepalive_secs: u64,
    /// Web terminal sessions open at once; one more is refused with a message.
    #[arg(long, env = "EC2LOCAL_TERMINAL_MAX_SESSIONS", default_value_t = 16)]
    terminal_max_sessions: usize,
    /// Seconds between libvirt re-checks (and health snapshots) while something is wrong;
    /// while all is well, libvirt's events say when to look again.
    #[arg(long, env = "EC2LOCAL_LIBVIRT_RECHECK_SECS", default_value_t = 5)]
    libvirt_recheck_secs: u64,
    /// macOS: socket_vmnet's socket [default: $HOMEBREW_PREFIX/var/run/socket_vmnet, then
    /// /var/run/socket_vmnet]. Without one, guests use QEMU's vmnet-shared (root only).
    #[arg(long, env = "EC2LOCAL_VMNET_SOCKET")]
    vmnet_socket: Option<PathBuf>,
    /// Address port forwards listen on. Keep it on loopback: anyone who can reach another
    /// address reaches the forwarded instance ports, without authentication.
    #[arg(long, env = "EC2LOCAL_FORWARD_BIND", default_value = "127.0.0.1")]
    pub forward_bind: std::net::IpAddr,
}

pub async fn serve(args: ServeArgs) -> ExitCode {
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
    config.safety_poll_interval = std::time::Duration::from_secs(args.safety_poll_secs.max(1));
    config.warm_spares = usize::from(args.warm_spares);
    config.status_timeout = std::time::Duration::from_secs(args.status_timeout_secs.max(1));
    config.terminal_keepalive = std::time::Duration::from_secs(args.terminal_keepalive_secs.max(1));
    config.terminal_max_sessions = args.terminal_max_sessions;
    config.libvirt_recheck_interval = std::time::Duration::from_secs(args.libvirt_recheck_secs.max(1));
    config.vmnet_socket = args.vmnet_socket;
    config.forward_bind = args.forward_bind;
    if let Err(err) = crate::forwards::check_bind_address(args.forward_bind) {
        eprintln!("ec2local: --forward-bind: {err}");
        return ExitCode::FAILURE;
    }
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
