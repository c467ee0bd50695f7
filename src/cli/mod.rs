//! Command line: `serve` and `doctor` run here; every other command is a client of the
//! running service's REST API (`--endpoint`), so it sees what the UI sees and works
//! beside a running service.

mod client;
mod forward;
mod images;
mod instances;
mod keys;
mod output;
mod serve;
mod ssh;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::paths::Paths;
use crate::platform::Host;
use client::{CliError, Client};

#[derive(Debug, Parser)]
#[command(name = "ec2local", version, about = "EC2-shaped virtual machines on your own machine, through libvirt/QEMU")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Address of the running service, for every command but serve and doctor.
    #[arg(long, global = true, env = "EC2LOCAL_ENDPOINT", default_value = "http://127.0.0.1:8000")]
    endpoint: String,
    /// Print JSON instead of tables (ls, show, keys ls, images ls, forward ls, run).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: web UI, REST API (/api, docs at /docs), EC2 API and web terminal.
    Serve(serve::ServeArgs),
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
    /// Launch an instance; with --wait, until it can be logged into.
    Run(instances::RunArgs),
    /// List instances (terminated ones with --all).
    #[command(alias = "list")]
    Ls {
        #[arg(long, short = 'a')]
        all: bool,
    },
    /// Everything about one instance.
    Show { instance: String },
    /// Start stopped instances.
    Start(ActionArgs),
    /// Stop instances (a clean shutdown, forced after the service's stop timeout).
    Stop(ActionArgs),
    /// Reboot instances.
    Reboot(ActionArgs),
    /// Terminate instances: their disks are deleted.
    Terminate(ActionArgs),
    /// The instance's serial console (the last 64 KiB); --follow keeps printing.
    Console {
        instance: String,
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Log in with the system ssh (host key checked against the one the service recorded).
    Ssh(ssh::SshArgs),
    /// Print `Host` entries for ssh, scp, rsync and VS Code; --install includes them from
    /// ~/.ssh/config.
    SshConfig {
        #[arg(long)]
        install: bool,
    },
    /// Key pairs: ls, create, import, rm.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Images: ls, pull, upload, import, rm.
    Images {
        #[command(subcommand)]
        command: images::ImagesCommand,
    },
    /// Reach a port of an instance from the host: `forward web 8080:80`, `forward ls`,
    /// `forward rm web 8080`.
    Forward(forward::ForwardArgs),
}

#[derive(Debug, clap::Args)]
struct ActionArgs {
    /// Instance ids or names.
    #[arg(required = true)]
    instances: Vec<String>,
    /// Wait until each has settled (start and reboot: until it can be logged into).
    #[arg(long)]
    wait: bool,
    /// Seconds --wait waits at most for each.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_)) {
        crate::platform::allocator::tune_for_service();
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve::serve(args)),
        Command::Doctor { libvirt_uri, data_dir, vmnet_socket } => {
            crate::logging::init_stderr();
            let host = Host::detect();
            let uri = libvirt_uri.unwrap_or_else(|| host.default_libvirt_uri().to_string());
            let data_dir = data_dir.or_else(Paths::default_root);
            let checks =
                runtime.block_on(crate::doctor::run_checks(host, &uri, data_dir.as_deref(), vmnet_socket.as_deref()));
            if crate::doctor::print_report(&checks) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        command => match runtime.block_on(as_client(command, &cli.endpoint, cli.json)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("ec2local: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The commands that talk to the service.
async fn as_client(command: Command, endpoint: &str, json: bool) -> Result<(), CliError> {
    let client = Client::new(endpoint)?;
    let client = &client;
    let act = |action, args: ActionArgs| async move {
        instances::act(client, action, &args.instances, args.wait, Duration::from_secs(args.timeout)).await
    };
    match command {
        Command::Serve(_) | Command::Doctor { .. } => unreachable!("run without a service"),
        Command::Run(args) => instances::run(client, args, json).await,
        Command::Ls { all } => instances::list(client, all, json).await,
        Command::Show { instance } => instances::show(client, &instance, json).await,
        Command::Start(args) => act(instances::Action::Start, args).await,
        Command::Stop(args) => act(instances::Action::Stop, args).await,
        Command::Reboot(args) => act(instances::Action::Reboot, args).await,
        Command::Terminate(args) => act(instances::Action::Terminate, args).await,
        Command::Console { instance, follow } => instances::console(client, &instance, follow).await,
        Command::Ssh(args) => ssh::ssh(client, args).await,
        Command::SshConfig { install } => ssh::ssh_config(client, install).await,
        Command::Keys { command } => keys::keys(client, command, json).await,
        Command::Images { command } => images::images(client, command, json).await,
        Command::Forward(args) => forward::forward(client, args, json).await,
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    // REQ-USE-001: the service listens on loopback unless told otherwise.
    #[test]
    fn serve_binds_to_loopback_port_8000_by_default() {
        let Cli { command: Command::Serve(args), .. } = Cli::try_parse_from(["ec2local", "serve"]).unwrap() else {
            panic!("not the serve command");
        };
        // clap reads EC2LOCAL_BIND too: a developer's own setting wins over the default.
        let expected = std::env::var("EC2LOCAL_BIND").unwrap_or_else(|_| "127.0.0.1:8000".into());
        assert_eq!(args.bind, expected.parse::<SocketAddr>().unwrap());
        let Cli { command: Command::Serve(args), .. } =
            Cli::try_parse_from(["ec2local", "serve", "--bind", "127.0.0.1:0"]).unwrap()
        else {
            panic!("not the serve command");
        };
        assert_eq!(args.bind.port(), 0);
    }

    /// The default a `serve` flag has, whatever the environment of the test says.
    fn serve_default(id: &str) -> String {
        use clap::CommandFactory;
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let arg = serve.get_arguments().find(|a| a.get_id() == id).unwrap();
        arg.get_default_values()[0].to_string_lossy().into_owned()
    }

    // issue 16: port forwards listen on loopback unless told otherwise.
    #[test]
    fn forwards_listen_on_loopback_by_default() {
        assert_eq!(serve_default("forward_bind"), "127.0.0.1");
        assert_eq!(serve_default("bind"), "127.0.0.1:8000");
        let Command::Serve(args) = parse(&["serve", "--forward-bind", "0.0.0.0"]) else { panic!() };
        assert!(args.forward_bind.is_unspecified());
        assert!(Cli::try_parse_from(["ec2local", "serve", "--forward-bind", "localhost:80"]).is_err());
    }

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("ec2local").chain(args.iter().copied())).unwrap().command
    }

    #[test]
    fn ssh_takes_a_command_after_the_double_dash() {
        let Command::Ssh(args) = parse(&["ssh", "web", "-i", "k", "--", "uname", "-a"]) else { panic!() };
        assert_eq!((args.instance.as_str(), args.identity.unwrap()), ("web", PathBuf::from("k")));
        assert_eq!(args.command, ["uname", "-a"]);
    }

    #[test]
    fn forward_takes_ports_or_a_subcommand() {
        let Command::Forward(args) = parse(&["forward", "web", "8080:80"]) else { panic!() };
        assert_eq!((args.instance.as_deref(), args.ports.as_deref()), (Some("web"), Some("8080:80")));
        let Command::Forward(args) = parse(&["forward", "ls"]) else { panic!() };
        assert!(matches!(args.command, Some(forward::ForwardCommand::Ls { instance: None })));
        let Command::Forward(args) = parse(&["forward", "rm", "web", "8080"]) else { panic!() };
        assert!(matches!(args.command, Some(forward::ForwardCommand::Rm { host_port: 8080, .. })));
        assert!(Cli::try_parse_from(["ec2local", "forward", "web"]).is_err(), "ports are required");
    }

    #[test]
    fn actions_take_several_instances() {
        let Command::Stop(args) = parse(&["stop", "web", "i-0123abcd", "--wait"]) else { panic!() };
        assert_eq!(args.instances, ["web", "i-0123abcd"]);
        assert!(args.wait);
        assert!(Cli::try_parse_from(["ec2local", "terminate"]).is_err(), "an instance is required");
    }
}
