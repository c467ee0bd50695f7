//! `ec2local forward`: TCP ports of the host relayed to ports of an instance, kept by
//! the service (across stops and restarts) until removed or the instance is terminated.

use super::client::{CliError, Client, ForwardView};
use super::output::{Cell, Table, colour_of, colour_on_stdout, print_json};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ForwardArgs {
    #[command(subcommand)]
    pub command: Option<ForwardCommand>,
    /// Instance id or name.
    #[arg(required = true)]
    pub instance: Option<String>,
    /// HOST_PORT:INSTANCE_PORT, or INSTANCE_PORT alone for a free host port.
    #[arg(required = true)]
    pub ports: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ForwardCommand {
    /// Every forward, or one instance's.
    #[command(alias = "list")]
    Ls { instance: Option<String> },
    /// Stop forwarding a host port.
    #[command(alias = "delete")]
    Rm { instance: String, host_port: u16 },
}

/// `8080:80` → (Some(8080), 80); `80` or `:80` → (None, 80).
pub fn parse_ports(spec: &str) -> Result<(Option<u16>, u16), CliError> {
    let port = |text: &str| {
        text.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
            CliError::Usage(format!("{spec:?}: ports are 1 to 65535, as HOST_PORT:INSTANCE_PORT or INSTANCE_PORT"))
        })
    };
    match spec.split_once(':') {
        Some(("", instance)) => Ok((None, port(instance)?)),
        Some((host, instance)) => Ok((Some(port(host)?), port(instance)?)),
        None => Ok((None, port(spec)?)),
    }
}

pub async fn forward(client: &Client, args: ForwardArgs, json: bool) -> Result<(), CliError> {
    match (args.command, args.instance, args.ports) {
        (Some(ForwardCommand::Ls { instance }), _, _) => list(client, instance.as_deref(), json).await,
        (Some(ForwardCommand::Rm { instance, host_port }), _, _) => {
            let instance = client.instance(&instance).await?;
            client.delete(&["api", "instances", &instance.id, "forwards", &host_port.to_string()]).await?;
            println!("stopped forwarding port {host_port} to {}", instance.id);
            Ok(())
        }
        (None, Some(instance), Some(ports)) => {
            let (host_port, instance_port) = parse_ports(&ports)?;
            let instance = client.instance(&instance).await?;
            let body = serde_json::json!({ "host_port": host_port, "instance_port": instance_port });
            let raw: serde_json::Value = client.post(&["api", "instances", &instance.id, "forwards"], &body).await?;
            let made: ForwardView =
                serde_json::from_value(raw.clone()).map_err(|e| CliError::local("the service's answer", e))?;
            if json {
                print_json(&raw);
            } else {
                println!(
                    "{}:{} -> {} port {} ({})",
                    made.bind_address, made.host_port, instance.id, made.instance_port, made.state
                );
            }
            Ok(())
        }
        _ => Err(CliError::Usage("usage: ec2local forward ID|NAME HOST_PORT:INSTANCE_PORT".into())),
    }
}

async fn list(client: &Client, instance: Option<&str>, json: bool) -> Result<(), CliError> {
    let path: Vec<String> = match instance {
        Some(name) => {
            let id = client.instance(name).await?.id;
            ["api", "instances", id.as_str(), "forwards"].map(String::from).to_vec()
        }
        None => ["api", "forwards"].map(String::from).to_vec(),
    };
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    if json {
        let raw: serde_json::Value = client.get(&segments).await?;
        print_json(&raw);
        return Ok(());
    }
    let forwards: Vec<ForwardView> = client.get(&segments).await?;
    let mut table = Table::new(&["HOST", "INSTANCE", "PORT", "STATE", "CONNECTIONS", "NOTE"]);
    for f in &forwards {
        table.row(vec![
            format!("{}:{}", f.bind_address, f.host_port).into(),
            f.instance_id.as_str().into(),
            f.instance_port.to_string().into(),
            Cell::coloured(f.state.clone(), colour_of(&f.state)),
            f.connections.to_string().into(),
            f.state_reason.as_deref().unwrap_or("").into(),
        ]);
    }
    print!("{}", table.render(colour_on_stdout()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_read_like_ssh_forwards() {
        assert_eq!(parse_ports("8080:80").unwrap(), (Some(8080), 80));
        assert_eq!(parse_ports("80").unwrap(), (None, 80));
        assert_eq!(parse_ports(":443").unwrap(), (None, 443));
        for bad in ["0", "8080:0", "65536:80", "a:80", "80:", ""] {
            assert!(matches!(parse_ports(bad), Err(CliError::Usage(_))), "{bad}");
        }
    }
}
