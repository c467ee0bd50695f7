//! `ec2local keys`: key pairs through the REST API. A created pair's private key is
//! saved in the CLI's keys/ so that `ec2local ssh` logs in with it.

use std::path::PathBuf;

use super::client::{CliError, Client, KeyPairView};
use super::output::{Table, age, colour_on_stdout, print_json};
use super::ssh::cli_paths;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Every key pair.
    #[command(alias = "list")]
    Ls,
    /// Create an ed25519 pair; its private key is saved for `ec2local ssh`.
    Create { name: String },
    /// Import a public key [default: ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub].
    Import { name: String, public_key_file: Option<PathBuf> },
    /// Delete a key pair (instances launched with it keep working) and its saved private key.
    #[command(alias = "delete")]
    Rm { name: String },
}

pub async fn keys(client: &Client, command: KeysCommand, json: bool) -> Result<(), CliError> {
    match command {
        KeysCommand::Ls => list(client, json).await,
        KeysCommand::Create { name } => create(client, &name, json).await,
        KeysCommand::Import { name, public_key_file } => {
            let file = match public_key_file {
                Some(file) => file,
                None => default_public_key()?,
            };
            let public_key = std::fs::read_to_string(&file).map_err(|e| CliError::local(file.display(), e))?;
            let body = serde_json::json!({ "name": name, "public_key": public_key.trim() });
            let pair: KeyPairView = client.post(&["api", "key-pairs"], &body).await?;
            println!("imported {} from {} ({})", pair.name, file.display(), pair.fingerprint_sha256);
            Ok(())
        }
        KeysCommand::Rm { name } => {
            client.delete(&["api", "key-pairs", &name]).await?;
            let saved = cli_paths()?.private_key(&name);
            match std::fs::remove_file(&saved) {
                Ok(()) => println!("deleted {name} and {}", saved.display()),
                Err(_) => println!("deleted {name}"),
            }
            Ok(())
        }
    }
}

async fn list(client: &Client, json: bool) -> Result<(), CliError> {
    if json {
        let raw: serde_json::Value = client.get(&["api", "key-pairs"]).await?;
        print_json(&raw);
        return Ok(());
    }
    let pairs: Vec<KeyPairView> = client.get(&["api", "key-pairs"]).await?;
    let paths = cli_paths()?;
    let mut table = Table::new(&["NAME", "TYPE", "FINGERPRINT", "PRIVATE KEY", "AGE"]);
    for pair in &pairs {
        let saved = paths.private_key(&pair.name);
        let private = match (saved.is_file(), pair.has_private_key) {
            (true, _) => saved.display().to_string(),
            (false, true) => "held by the service".into(),
            (false, false) => "-".into(),
        };
        table.row(vec![
            pair.name.as_str().into(),
            pair.key_type.as_str().into(),
            pair.fingerprint_sha256.as_str().into(),
            private.into(),
            age(&pair.created_at).into(),
        ]);
    }
    print!("{}", table.render(colour_on_stdout()));
    Ok(())
}

async fn create(client: &Client, name: &str, json: bool) -> Result<(), CliError> {
    let paths = cli_paths()?;
    let file = paths.private_key(name);
    if file.exists() {
        return Err(CliError::Usage(format!("{} already exists; remove it first", file.display())));
    }
    let pair: KeyPairView = client.post(&["api", "key-pairs"], &serde_json::json!({ "name": name })).await?;
    let private = pair.private_key.clone().ok_or_else(|| CliError::Local("the service sent no private key".into()))?;
    write_new_private_key(&file, &private)?;
    if json {
        print_json(
            &serde_json::json!({ "name": pair.name, "fingerprint_sha256": pair.fingerprint_sha256, "private_key_file": file }),
        );
    } else {
        println!("created {} ({}); private key saved to {}", pair.name, pair.fingerprint_sha256, file.display());
    }
    Ok(())
}

fn write_new_private_key(file: &std::path::Path, private: &str) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| CliError::local(file.display(), e))?;
    out.write_all(private.as_bytes()).map_err(|e| CliError::local(file.display(), e))
}

fn default_public_key() -> Result<PathBuf, CliError> {
    cli_paths()?
        .user_public_keys()
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| CliError::Usage("no ~/.ssh/id_*.pub found; name the public key file".into()))
}
