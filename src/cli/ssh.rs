//! `ec2local ssh` and `ec2local ssh-config`: the system `ssh` with the instance's user,
//! address and key, and host keys checked against what the service recorded, never
//! skipped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::client::{CliError, Client, InstanceView};
use super::instances::{Goal, wait_for};
use crate::paths::CliPaths;

#[derive(Debug, clap::Args)]
pub struct SshArgs {
    /// Instance id or name.
    pub instance: String,
    /// Private key to log in with [default: the one `ec2local keys create` saved, else ssh's own]
    #[arg(short = 'i', long = "identity")]
    pub identity: Option<PathBuf>,
    /// User to log in as [default: the image's default user]
    #[arg(short = 'l', long)]
    pub user: Option<String>,
    /// Seconds to wait for a fresh instance to answer SSH.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Command to run instead of a login shell.
    #[arg(last = true)]
    pub command: Vec<OsString>,
}

pub fn cli_paths() -> Result<CliPaths, CliError> {
    let paths = CliPaths::from_env().ok_or_else(|| CliError::Usage("HOME is not set".into()))?;
    paths.ensure().map_err(|e| CliError::local("ec2local's config directory", e))?;
    Ok(paths)
}

pub async fn ssh(client: &Client, args: SshArgs) -> Result<(), CliError> {
    let paths = cli_paths()?;
    let mut instance = client.instance(&args.instance).await?;
    match instance.state.as_str() {
        "running" => {}
        "terminated" => return Err(CliError::Usage(format!("{} is terminated", instance.id))),
        other => {
            return Err(CliError::Usage(format!(
                "{} is {other}; `ec2local start {}` first",
                instance.id, args.instance
            )));
        }
    }
    if !instance.is_ready() {
        eprintln!("{} is not ready yet; waiting", instance.id);
        instance = wait_for(client, &instance.id, Goal::Ready, Duration::from_secs(args.timeout)).await?;
    }
    write_known_hosts(&paths, client).await?;
    let entry = HostEntry::of(&instance, &paths, args.identity.as_deref())?;
    let mut argv = entry.options();
    let user = args.user.unwrap_or_else(|| instance.login_user.clone());
    argv.extend(["-l".into(), user.into(), entry.address.clone().into()]);
    if !args.command.is_empty() {
        argv.push("--".into());
        argv.extend(args.command);
    }
    let err = crate::exec::ssh_client::become_ssh(&argv);
    Err(CliError::local("could not run ssh (is OpenSSH's client installed?)", err))
}

/// What `ssh` needs for one instance: where it is and how it is trusted.
struct HostEntry {
    id: String,
    address: String,
    user: String,
    known_hosts: PathBuf,
    identity: Option<PathBuf>,
}

impl HostEntry {
    fn of(instance: &InstanceView, paths: &CliPaths, identity: Option<&Path>) -> Result<HostEntry, CliError> {
        let address = instance
            .ip_address
            .clone()
            .ok_or_else(|| CliError::Local(format!("{} has no address yet", instance.id)))?;
        if instance.host_keys.is_empty() {
            return Err(CliError::Local(format!(
                "the service has not recorded {}'s host key yet, so the guest cannot be checked; try again in a moment",
                instance.id
            )));
        }
        let identity = match identity {
            Some(path) => Some(std::path::absolute(path).unwrap_or(path.to_path_buf())),
            None => instance.key_name.as_deref().map(|k| paths.private_key(k)).filter(|p| p.is_file()),
        };
        Ok(HostEntry {
            id: instance.id.clone(),
            address,
            user: instance.login_user.clone(),
            known_hosts: paths.known_hosts(),
            identity,
        })
    }

    /// `-o` options: the guest is known by its instance id, so a new address after a
    /// restart needs no new trust, and an unknown key is refused.
    fn options(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        for (key, value) in self.settings() {
            argv.push("-o".into());
            argv.push(format!("{key}={value}").into());
        }
        argv
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        let mut settings = vec![
            ("HostKeyAlias", self.id.clone()),
            ("UserKnownHostsFile", token_quoted(&self.known_hosts)),
            ("GlobalKnownHostsFile", "/dev/null".into()),
            ("StrictHostKeyChecking", "yes".into()),
            ("CheckHostIP", "no".into()),
        ];
        if let Some(identity) = &self.identity {
            settings.push(("IdentityFile", token_quoted(identity)));
            settings.push(("IdentitiesOnly", "yes".into()));
        }
        settings
    }
}

/// A path as ssh_config reads it: in double quotes when it has spaces.
fn quoted(path: &Path) -> String {
    let text = path.display().to_string();
    if text.contains(char::is_whitespace) { format!("\"{text}\"") } else { text }
}

/// A path for a file option that expands `%` tokens (IdentityFile, UserKnownHostsFile):
/// `%` doubled, as saved key names may hold `%2F`-style escapes.
fn token_quoted(path: &Path) -> String {
    quoted(Path::new(&path.display().to_string().replace('%', "%%")))
}

/// Rewrites the CLI's known_hosts with every instance's recorded host keys, by id.
async fn write_known_hosts(paths: &CliPaths, client: &Client) -> Result<Vec<InstanceView>, CliError> {
    let instances: Vec<InstanceView> = client.get(&["api", "instances"]).await?;
    let text = known_hosts_text(&instances);
    write_private(&paths.known_hosts(), &text)?;
    Ok(instances)
}

pub fn known_hosts_text(instances: &[InstanceView]) -> String {
    let mut text =
        String::from("# Written by ec2local from the host keys its service recorded; rewritten on each use.\n");
    for instance in instances {
        for key in &instance.host_keys {
            text.push_str(&format!("{} {}\n", instance.id, key.trim()));
        }
    }
    text
}

/// Replaces `path` with `text`, private to the user, unless it holds that already. A
/// file of its own is staged and renamed over, so that two commands at once never leave
/// a half-written file for ssh to read.
fn write_private(path: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write;
    if std::fs::read_to_string(path).is_ok_and(|existing| existing == text) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut staged = tempfile::NamedTempFile::new_in(dir).map_err(|e| CliError::local(dir.display(), e))?;
    staged.write_all(text.as_bytes()).map_err(|e| CliError::local(staged.path().display(), e))?;
    staged.persist(path).map_err(|e| CliError::local(path.display(), e.error))?;
    Ok(())
}

/// `Host` entries for every running instance that has an address and a recorded host
/// key, by name (when the name is one word and unique) and by id.
pub fn ssh_config_text(instances: &[InstanceView], paths: &CliPaths, endpoint: &str) -> String {
    let mut text = format!("# ec2local instances of {endpoint}; `ec2local ssh-config --install` rewrites this.\n");
    for instance in instances.iter().filter(|i| i.state == "running") {
        let Ok(entry) = HostEntry::of(instance, paths, None) else { continue };
        let unique = instances.iter().filter(|i| i.name == instance.name && i.state == "running").count() == 1;
        let plain = instance.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        let mut patterns = vec![entry.id.clone()];
        if unique && plain && !instance.name.is_empty() && instance.name != entry.id {
            patterns.insert(0, instance.name.clone());
        }
        text.push_str(&format!(
            "\nHost {}\n    HostName {}\n    User {}\n",
            patterns.join(" "),
            entry.address,
            entry.user
        ));
        for (key, value) in entry.settings() {
            text.push_str(&format!("    {key} {value}\n"));
        }
    }
    text
}

/// Prints the `Host` entries; with `install`, writes them to the CLI's ssh_config and
/// includes that from ~/.ssh/config (once).
pub async fn ssh_config(client: &Client, install: bool) -> Result<(), CliError> {
    let paths = cli_paths()?;
    let instances = write_known_hosts(&paths, client).await?;
    let text = ssh_config_text(&instances, &paths, client.endpoint().as_str());
    if !install {
        print!("{text}");
        return Ok(());
    }
    write_private(&paths.ssh_config(), &text)?;
    let user_config = paths.user_ssh_config();
    if include_once(&user_config, &paths.ssh_config())? {
        println!("added `Include {}` to {}", quoted(&paths.ssh_config()), user_config.display());
    }
    let hosts = text.lines().filter(|l| l.starts_with("Host ")).count();
    println!(
        "{} has {hosts} instance(s); re-run `ec2local ssh-config --install` after launching more",
        paths.ssh_config().display()
    );
    Ok(())
}

/// Puts `Include FILE` first in `config` unless it is already there; true if added.
/// First, because an Include after a `Host` line would apply to that host only.
fn include_once(config: &Path, file: &Path) -> Result<bool, CliError> {
    let line = format!("Include {}", quoted(file));
    let existing = match std::fs::read_to_string(config) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(CliError::local(config.display(), e)),
    };
    if existing.lines().any(|l| l.trim() == line) {
        return Ok(false);
    }
    // A ~/.ssh/config kept elsewhere and linked (dotfile managers) is changed where it is.
    let config = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
    let config = config.as_path();
    if let Some(dir) = config.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CliError::local(dir.display(), e))?;
    }
    let text = format!("# Added by `ec2local ssh-config --install`.\n{line}\n\n{existing}");
    write_private(config, &text)?;
    Ok(true)
}

/// After a launch or start with --wait: keeps an installed ssh_config current.
pub async fn refresh_installed_config(client: &Client) {
    let Some(paths) = CliPaths::from_env() else { return };
    if !paths.ssh_config().is_file() {
        return;
    }
    let refreshed = match write_known_hosts(&paths, client).await {
        Ok(instances) => {
            let text = ssh_config_text(&instances, &paths, client.endpoint().as_str());
            write_private(&paths.ssh_config(), &text)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = refreshed {
        eprintln!("ec2local: could not refresh {}: {e}", paths.ssh_config().display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(id: &str, name: &str, keys: &[&str]) -> InstanceView {
        InstanceView {
            id: id.into(),
            name: name.into(),
            instance_type: "t2.micro".into(),
            state: "running".into(),
            task: None,
            state_reason: None,
            ip_address: Some("192.168.100.10".into()),
            key_name: None,
            image_name: "debian-12".into(),
            login_user: "debian".into(),
            created_at: "2026-11-26T10:00:00Z".into(),
            status: Some("ok".into()),
            status_reason: None,
            host_keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn paths(home: &Path) -> CliPaths {
        CliPaths::new(home.join(".config/ec2local"), home)
    }

    #[test]
    fn host_keys_are_known_by_instance_id() {
        let text =
            known_hosts_text(&[running("i-0123abcd", "web", &["ssh-ed25519 AAAAC3 ", "ecdsa-sha2-nistp256 AAAAE2"])]);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines, ["i-0123abcd ssh-ed25519 AAAAC3", "i-0123abcd ecdsa-sha2-nistp256 AAAAE2"]);
    }

    #[test]
    fn the_ssh_config_names_each_running_instance_and_checks_its_key() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = paths(tmp.path());
        let mut stopped = running("i-00000003", "db", &["ssh-ed25519 C"]);
        stopped.state = "stopped".into();
        let instances = [
            running("i-00000001", "web", &["ssh-ed25519 A"]),
            running("i-00000002", "my box", &["ssh-ed25519 B"]),
            stopped,
            running("i-00000004", "fresh", &[]),
        ];
        let text = ssh_config_text(&instances, &paths, "http://127.0.0.1:8000/");
        let hosts: Vec<&str> = text.lines().filter(|l| l.starts_with("Host ")).collect();
        // A name with a space cannot be a Host pattern; a stopped instance or one whose
        // host key is not known yet gets no entry.
        assert_eq!(hosts, ["Host web i-00000001", "Host i-00000002"]);
        for needed in [
            "    HostName 192.168.100.10",
            "    User debian",
            "    HostKeyAlias i-00000001",
            "    StrictHostKeyChecking yes",
            &format!("    UserKnownHostsFile {}", paths.known_hosts().display()),
        ] {
            assert!(text.lines().any(|l| l == needed), "{needed:?} missing from\n{text}");
        }
        assert!(!text.contains("StrictHostKeyChecking no"));
    }

    #[test]
    fn file_options_keep_percent_signs_literal() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = paths(tmp.path());
        let entry =
            HostEntry::of(&running("i-00000001", "web", &["ssh-ed25519 A"]), &paths, Some(&paths.private_key("a/b")))
                .unwrap();
        let identity = entry.settings().into_iter().find(|(k, _)| *k == "IdentityFile").unwrap().1;
        assert!(identity.ends_with("/keys/a%%2Fb"), "{identity}");
    }

    #[test]
    fn the_include_is_added_once_and_first() {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join(".ssh/config");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, "Host old\n    User me\n").unwrap();
        let included = tmp.path().join("ec2local/ssh_config");
        assert!(include_once(&config, &included).unwrap());
        assert!(!include_once(&config, &included).unwrap());
        let text = std::fs::read_to_string(&config).unwrap();
        let include = format!("Include {}", included.display());
        assert_eq!(text.matches(&include).count(), 1, "{text}");
        assert!(text.find(&include).unwrap() < text.find("Host old").unwrap(), "{text}");
        // A missing ~/.ssh is made, private.
        let fresh = tmp.path().join("other/.ssh/config");
        assert!(include_once(&fresh, &included).unwrap());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(fresh.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o600);
        // A linked ~/.ssh/config stays a link; the file it points at gets the line.
        let real = tmp.path().join("dotfiles/ssh_config");
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, "Host kept\n").unwrap();
        let linked = tmp.path().join("linked/.ssh/config");
        std::fs::create_dir_all(linked.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&real, &linked).unwrap();
        assert!(include_once(&linked, &included).unwrap());
        assert!(std::fs::symlink_metadata(&linked).unwrap().file_type().is_symlink());
        assert!(std::fs::read_to_string(&real).unwrap().starts_with("# Added by"));
    }
}
