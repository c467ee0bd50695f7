//! `ec2local run, ls, show, start, stop, reboot, terminate, console`: instances through
//! the REST API, with waits that show progress.

use std::time::{Duration, Instant};

use super::client::{CliError, Client, ImageView, InstanceView};
use super::output::{Cell, Progress, Table, age, colour_of, colour_on_stdout, print_json};

/// What `--wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// Running, idle and its status check `ok`: SSH answers and cloud-init has finished.
    Ready,
    Stopped,
    Terminated,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// t2.nano, t2.micro, t2.small, t2.medium or t2.large.
    #[arg(long = "type", default_value = "t2.micro")]
    pub instance_type: String,
    /// Image name or id (`ami-…`) [default: the only available image, else the newest Ubuntu]
    #[arg(long)]
    pub image: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    /// Key pair whose public key is installed for the image's default user.
    #[arg(long)]
    pub key: Option<String>,
    /// cloud-init user data file (`-` for stdin).
    #[arg(long)]
    pub user_data: Option<std::path::PathBuf>,
    /// Wait until the instance can be logged into, with progress.
    #[arg(long)]
    pub wait: bool,
    /// Seconds `--wait` waits at most.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
}

pub async fn run(client: &Client, args: RunArgs, json: bool) -> Result<(), CliError> {
    let image = match args.image {
        Some(image) => image,
        None => default_image(client).await?,
    };
    let user_data = match &args.user_data {
        Some(path) => Some(read_user_data(path)?),
        None => None,
    };
    let body = serde_json::json!({
        "instance_type": args.instance_type,
        "image_id": image,
        "name": args.name,
        "key_name": args.key,
        "user_data": user_data,
    });
    let launched: InstanceView = client.post(&["api", "instances"], &body).await?;
    let instance = if args.wait {
        wait_for(client, &launched.id, Goal::Ready, Duration::from_secs(args.timeout)).await?
    } else {
        launched
    };
    if json {
        let raw: serde_json::Value = client.get(&["api", "instances", &instance.id]).await?;
        print_json(&raw);
    } else if args.wait {
        super::ssh::refresh_installed_config(client).await;
        print_ready(&instance);
    } else {
        println!("{}", instance.id);
        eprintln!("launching {} ({}); `ec2local show {}` follows it", instance.name, instance.image_name, instance.id);
    }
    Ok(())
}

fn print_ready(instance: &InstanceView) {
    let who =
        if instance.name.is_empty() { instance.id.clone() } else { format!("{} ({})", instance.name, instance.id) };
    println!("{who} is ready at {}", instance.ip_address.as_deref().unwrap_or("-"));
    println!("log in with: ec2local ssh {}", handle(instance));
}

/// How to name an instance on the command line: its name when it is one word.
fn handle(instance: &InstanceView) -> &str {
    let plain =
        !instance.name.is_empty() && instance.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if plain { &instance.name } else { &instance.id }
}

fn read_user_data(path: &std::path::Path) -> Result<String, CliError> {
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map_err(|e| CliError::local("stdin", e))?;
        buf
    } else {
        std::fs::read(path).map_err(|e| CliError::local(path.display(), e))?
    };
    String::from_utf8(bytes).map_err(|_| CliError::Usage(format!("{}: user data must be UTF-8 text", path.display())))
}

/// The image a `run` without `--image` uses, said on stderr.
async fn default_image(client: &Client) -> Result<String, CliError> {
    let images: Vec<ImageView> = client.get(&["api", "images"]).await?;
    let available: Vec<&ImageView> = images.iter().filter(|i| i.available).collect();
    let ubuntu = available.iter().filter(|i| i.name.starts_with("ubuntu-")).max_by(|a, b| a.name.cmp(&b.name));
    let chosen = match available.as_slice() {
        [only] => Some(*only),
        _ => ubuntu.copied(),
    };
    match chosen {
        Some(image) => {
            eprintln!("using image {} ({})", image.name, image.id);
            Ok(image.name.clone())
        }
        None if available.is_empty() => Err(CliError::Usage(
            "no image is available yet: `ec2local images pull ubuntu-24.04` or `ec2local images import`".into(),
        )),
        None => {
            let names: Vec<&str> = available.iter().map(|i| i.name.as_str()).collect();
            Err(CliError::Usage(format!("pass --image, one of: {}", names.join(", "))))
        }
    }
}

/// Polls the instance until it reaches `goal`, with a progress line; an instance that
/// ends in `error`, or whose host key changed, ends the wait with its reason. A service
/// restarting or libvirt blinking meanwhile ends nothing: it is asked again.
pub async fn wait_for(client: &Client, id: &str, goal: Goal, timeout: Duration) -> Result<InstanceView, CliError> {
    let started = Instant::now();
    let mut progress = Progress::new();
    let mut last = String::from("unknown");
    loop {
        let waited = started.elapsed().as_secs();
        match current(client, id).await {
            Ok(instance) => {
                last = describe_progress(&instance);
                progress.say(&format!("{id} {last} ({waited}s)"));
                if let Some(outcome) = outcome(&instance, goal) {
                    progress.done();
                    return outcome.map(|()| instance);
                }
            }
            Err(err @ (CliError::Unreachable { .. } | CliError::Refused { status: 500..=599, .. })) => {
                progress.say(&format!("{id} {last}; asking again: {err} ({waited}s)"));
            }
            Err(other) => return Err(other),
        }
        if started.elapsed() >= timeout {
            progress.done();
            return Err(CliError::Local(format!("{id} is still {last} after {}s (--timeout)", timeout.as_secs())));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The instance as the service's database has it: the list reads no libvirt, so a
/// wait costs no virsh call per second.
async fn current(client: &Client, id: &str) -> Result<InstanceView, CliError> {
    let all: Vec<InstanceView> = client.get_query(&["api", "instances"], &[("include_terminated", "true")]).await?;
    all.into_iter().find(|i| i.id == id).ok_or_else(|| CliError::Local(format!("{id} is no longer listed")))
}

/// Whether a wait for `goal` is over: Some(Ok) reached, Some(Err) never will be.
fn outcome(instance: &InstanceView, goal: Goal) -> Option<Result<(), CliError>> {
    let reason = || instance.state_reason.clone().or(instance.status_reason.clone()).unwrap_or_default();
    let idle = instance.task.is_none();
    match (goal, instance.state.as_str()) {
        (_, "error") if idle => Some(Err(CliError::Local(format!("{} failed: {}", instance.id, reason())))),
        // Other impairments (SSH or cloud-init late) may still clear: the wait goes on, showing them.
        (Goal::Ready, "running") if idle && host_key_changed(instance) => Some(Err(CliError::Local(format!(
            "{} is impaired: {}",
            instance.id,
            instance.status_reason.as_deref().unwrap_or("")
        )))),
        (Goal::Ready, _) if instance.is_ready() => Some(Ok(())),
        (Goal::Ready, "stopped" | "terminated") if idle => {
            Some(Err(CliError::Local(format!("{} is {}: {}", instance.id, instance.state, reason()))))
        }
        (Goal::Stopped, "stopped") | (Goal::Terminated, "terminated") if idle => Some(Ok(())),
        (Goal::Stopped, "terminated") => Some(Err(CliError::Local(format!("{} was terminated", instance.id)))),
        _ => None,
    }
}

fn host_key_changed(instance: &InstanceView) -> bool {
    instance.status.as_deref() == Some("impaired")
        && instance.status_reason.as_deref().is_some_and(|r| r.contains("host key changed"))
}

/// "running at 10.0.0.5, initializing: waiting for SSH".
fn describe_progress(instance: &InstanceView) -> String {
    let mut line = instance.state.clone();
    if let Some(task) = &instance.task {
        line.push_str(&format!(" ({task})"));
    }
    if let Some(ip) = &instance.ip_address {
        line.push_str(&format!(" at {ip}"));
    }
    if instance.state == "running" {
        if let Some(status) = &instance.status {
            line.push_str(&format!(", {status}"));
        }
        if let Some(reason) = instance.status_reason.as_deref().filter(|_| instance.status.as_deref() != Some("ok")) {
            line.push_str(&format!(": {reason}"));
        }
    }
    line
}

pub async fn list(client: &Client, all: bool, json: bool) -> Result<(), CliError> {
    let query = [("include_terminated", if all { "true" } else { "false" })];
    if json {
        let raw: serde_json::Value = client.get_query(&["api", "instances"], &query).await?;
        print_json(&raw);
        return Ok(());
    }
    let instances: Vec<InstanceView> = client.get_query(&["api", "instances"], &query).await?;
    if instances.is_empty() {
        eprintln!(
            "no instances{}; `ec2local run --wait` launches one",
            if all { "" } else { " (--all shows terminated ones)" }
        );
        return Ok(());
    }
    print!("{}", instance_table(&instances).render(colour_on_stdout()));
    Ok(())
}

/// The columns of the web UI's table.
fn instance_table(instances: &[InstanceView]) -> Table {
    let mut table = Table::new(&["ID", "NAME", "TYPE", "STATE", "STATUS", "IP", "IMAGE", "KEY", "AGE"]);
    for i in instances {
        let state = match &i.task {
            Some(task) => format!("{} ({task})", i.state),
            None => i.state.clone(),
        };
        let status = i.status.clone().filter(|_| i.state == "running").unwrap_or_else(|| "-".into());
        table.row(vec![
            i.id.as_str().into(),
            i.name.as_str().into(),
            i.instance_type.as_str().into(),
            Cell::coloured(state, colour_of(&i.state)),
            Cell::coloured(status.clone(), colour_of(&status)),
            i.ip_address.as_deref().unwrap_or("-").into(),
            i.image_name.as_str().into(),
            i.key_name.as_deref().unwrap_or("-").into(),
            age(&i.created_at).into(),
        ]);
    }
    table
}

pub async fn show(client: &Client, id_or_name: &str, json: bool) -> Result<(), CliError> {
    let instance = client.instance(id_or_name).await?;
    let raw: serde_json::Value = client.get(&["api", "instances", &instance.id]).await?;
    if json {
        print_json(&raw);
        return Ok(());
    }
    let Some(fields) = raw.as_object() else { return Err(CliError::Local("the service sent no instance".into())) };
    let width = fields.keys().map(String::len).max().unwrap_or(0);
    for (key, value) in fields {
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(items) if items.is_empty() => continue,
            serde_json::Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(&format!("\n{:width$}  ", "")),
            other => other.to_string(),
        };
        println!("{key:width$}  {text}");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    Start,
    Stop,
    Reboot,
    Terminate,
}

/// Asks for `action` on each instance in turn; with `wait`, waits for each to settle.
/// Every instance is tried; the exit is a failure if any one failed.
pub async fn act(
    client: &Client,
    action: Action,
    targets: &[String],
    wait: bool,
    timeout: Duration,
) -> Result<(), CliError> {
    let mut failures = Vec::new();
    for target in targets {
        match act_on(client, action, target, wait, timeout).await {
            Ok(line) => println!("{line}"),
            Err(err) => {
                eprintln!("ec2local: {target}: {err}");
                failures.push(target.as_str());
            }
        }
    }
    match failures.as_slice() {
        [] => Ok(()),
        _ => Err(CliError::Local(format!("{} of {} failed: {}", failures.len(), targets.len(), failures.join(" ")))),
    }
}

async fn act_on(
    client: &Client,
    action: Action,
    target: &str,
    wait: bool,
    timeout: Duration,
) -> Result<String, CliError> {
    let instance = client.instance(target).await?;
    let id = instance.id.as_str();
    let empty = serde_json::json!({});
    let (verb, goal) = match action {
        Action::Start => ("start", Goal::Ready),
        Action::Stop => ("stop", Goal::Stopped),
        Action::Reboot => ("reboot", Goal::Ready),
        Action::Terminate => ("terminate", Goal::Terminated),
    };
    let _: InstanceView = match action {
        Action::Terminate => {
            let response = client
                .http()
                .delete(client.url(&["api", "instances", id]))
                .send()
                .await
                .map_err(|e| client.unreachable(e))?;
            Client::refusal(response).await?.json().await.map_err(|e| CliError::local("the service's answer", e))?
        }
        _ => client.post(&["api", "instances", id, verb], &empty).await?,
    };
    if !wait {
        return Ok(format!("{id}: {verb} asked"));
    }
    let settled = wait_for(client, id, goal, timeout).await?;
    if goal == Goal::Ready {
        super::ssh::refresh_installed_config(client).await;
    }
    Ok(format!("{id}: {}", settled.state))
}

/// The serial console; with `follow`, keeps printing what the guest writes.
pub async fn console(client: &Client, id_or_name: &str, follow: bool) -> Result<(), CliError> {
    #[derive(serde::Deserialize)]
    struct Console {
        output: String,
    }
    let instance = client.instance(id_or_name).await?;
    let mut shown = String::new();
    loop {
        let console: Console = client.get(&["api", "instances", &instance.id, "console-output"]).await?;
        let new = new_console_text(&shown, &console.output);
        if !new.is_empty() {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(new.as_bytes());
            let _ = out.flush();
        }
        shown = console.output;
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What `now` (the console's last 64 KiB) has that `before` did not: the tail may
/// have moved on, so the end of `before` is looked for in `now`.
pub fn new_console_text<'a>(before: &str, now: &'a str) -> &'a str {
    if before.is_empty() {
        return now;
    }
    if let Some(rest) = now.strip_prefix(before) {
        return rest;
    }
    let mut anchor_start = before.len().saturating_sub(256);
    while !before.is_char_boundary(anchor_start) {
        anchor_start += 1;
    }
    let anchor = &before[anchor_start..];
    match now.rfind(anchor) {
        Some(at) => &now[at + anchor.len()..],
        None => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(state: &str, task: Option<&str>, status: Option<&str>) -> InstanceView {
        InstanceView {
            id: "i-0123abcd".into(),
            name: "web".into(),
            instance_type: "t2.micro".into(),
            state: state.into(),
            task: task.map(str::to_string),
            state_reason: None,
            ip_address: Some("192.168.100.10".into()),
            key_name: None,
            image_name: "ubuntu-24.04".into(),
            login_user: "ubuntu".into(),
            created_at: "2026-11-26T10:00:00Z".into(),
            status: status.map(str::to_string),
            status_reason: Some("waiting for SSH".into()),
            host_keys: vec![],
        }
    }

    #[test]
    fn a_wait_ends_only_when_the_goal_is_reached_or_out_of_reach() {
        let pending = |goal| outcome(&instance("pending", Some("launching"), None), goal).is_none();
        assert!(pending(Goal::Ready) && pending(Goal::Stopped));
        assert!(outcome(&instance("running", None, Some("initializing")), Goal::Ready).is_none());
        assert!(matches!(outcome(&instance("running", None, Some("ok")), Goal::Ready), Some(Ok(()))));
        // A reboot in flight keeps the wait going even while the old status says ok.
        assert!(outcome(&instance("running", Some("rebooting"), Some("ok")), Goal::Ready).is_none());
        // SSH late is shown and waited through; a changed host key is not.
        assert!(outcome(&instance("running", None, Some("impaired")), Goal::Ready).is_none());
        let mut rekeyed = instance("running", None, Some("impaired"));
        rekeyed.status_reason = Some("host key changed: SHA256:abc is not the recorded key".into());
        assert!(matches!(outcome(&rekeyed, Goal::Ready), Some(Err(_))));
        assert!(matches!(outcome(&instance("error", None, None), Goal::Ready), Some(Err(_))));
        assert!(matches!(outcome(&instance("stopped", None, None), Goal::Ready), Some(Err(_))));
        assert!(outcome(&instance("stopping", Some("stopping"), None), Goal::Stopped).is_none());
        assert!(matches!(outcome(&instance("stopped", None, None), Goal::Stopped), Some(Ok(()))));
        assert!(matches!(outcome(&instance("terminated", None, None), Goal::Terminated), Some(Ok(()))));
    }

    #[test]
    fn progress_says_where_the_instance_is() {
        assert_eq!(
            describe_progress(&instance("pending", Some("launching"), None)),
            "pending (launching) at 192.168.100.10"
        );
        assert_eq!(
            describe_progress(&instance("running", None, Some("initializing"))),
            "running at 192.168.100.10, initializing: waiting for SSH"
        );
        assert_eq!(describe_progress(&instance("running", None, Some("ok"))), "running at 192.168.100.10, ok");
    }

    #[test]
    fn the_console_follower_prints_only_what_is_new() {
        assert_eq!(new_console_text("", "boot\n"), "boot\n");
        assert_eq!(new_console_text("boot\n", "boot\nlogin:"), "login:");
        // The 64 KiB window moved: the start of what was shown is gone.
        let before = format!("{}{}tail-of-before", "a".repeat(300), "b".repeat(300));
        let now = format!("{}tail-of-before and more", "b".repeat(300));
        assert_eq!(new_console_text(&before, &now), " and more");
        assert_eq!(new_console_text("unrelated", "fresh"), "fresh");
    }

    #[test]
    fn the_table_has_the_ui_columns() {
        let text = instance_table(&[instance("running", None, Some("ok"))]).render(false);
        let header = text.lines().next().unwrap();
        assert_eq!(
            header.split_whitespace().collect::<Vec<_>>(),
            ["ID", "NAME", "TYPE", "STATE", "STATUS", "IP", "IMAGE", "KEY", "AGE"]
        );
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[..8], ["i-0123abcd", "web", "t2.micro", "running", "ok", "192.168.100.10", "ubuntu-24.04", "-"]);
    }
}
