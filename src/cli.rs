//! Command line: parse, set up logging, dispatch to the services.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::paths::Paths;
use crate::platform::{Accelerator, Host};

#[derive(Debug, Parser)]
#[command(
    name = "ec2local",
    version,
    about = "EC2-shaped virtual machines on your own machine, through libvirt/QEMU"
)]
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
            if crate::doctor::print_report(&checks) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let Some(root) = args.data_dir.or_else(Paths::default_root) else {
        eprintln!("ec2local: no home directory; pass --data-dir or set EC2_AS_SERVICE_HOME");
        return ExitCode::FAILURE;
    };
    let paths = Paths::new(root);
    if let Err(err) = paths
        .ensure()
        .and_then(|()| crate::logging::init(&paths.log_file()))
    {
        eprintln!("ec2local: cannot set up {}: {err}", paths.root().display());
        return ExitCode::FAILURE;
    }
    let host = Host::detect();
    let uri = args
        .libvirt_uri
        .unwrap_or_else(|| host.default_libvirt_uri().to_string());
    let mut config = Config::new(args.bind, paths, uri);
    config.accelerator = args.accelerator;
    config.libvirt_recheck_interval =
        std::time::Duration::from_secs(args.libvirt_recheck_secs.max(1));
    match crate::api::serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "ec2local stopped");
            eprintln!("ec2local: {err}");
            ExitCode::FAILURE
        }
    }
}
