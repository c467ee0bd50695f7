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
    /// Check every host dependency and print how to install what is missing.
    Doctor {
        #[arg(long, env = "EC2LOCAL_LIBVIRT_URI")]
        libvirt_uri: Option<String>,
    },
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
    /// Seconds between libvirt re-checks while it is unreachable.
    #[arg(long, env = "EC2LOCAL_LIBVIRT_RECHECK_SECS", default_value_t = 5)]
    libvirt_recheck_secs: u64,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Doctor { libvirt_uri } => {
            crate::logging::init_stderr();
            let host = Host::detect();
            let uri = libvirt_uri.unwrap_or_else(|| host.default_libvirt_uri().to_string());
            let checks = runtime.block_on(crate::doctor::run_checks(host, &uri));
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
    config.libvirt_recheck_interval = std::time::Duration::from_secs(args.libvirt_recheck_secs.max(1));
    match crate::api::serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "ec2local stopped");
            eprintln!("ec2local: {err}");
            ExitCode::FAILURE
        }
    }
}
