//! The `ec2local` client commands run as a user would: the real binary, its own HOME
//! (so ~/.config/ec2local and ~/.ssh/config are the test's), against a service.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct CliUser {
    pub endpoint: String,
    pub home: PathBuf,
}

/// What one command did.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    fn from(output: Output) -> Ran {
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics with the command's output unless it exited 0; returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self.stdout
    }

    /// Panics unless it exited 1; returns stderr.
    pub fn failed(self) -> String {
        assert_eq!(self.code, Some(1), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self.stderr
    }
}

impl CliUser {
    pub fn new(endpoint: &str, home: &Path) -> CliUser {
        std::fs::create_dir_all(home).unwrap();
        CliUser { endpoint: endpoint.to_string(), home: home.to_path_buf() }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ec2local"));
        cmd.args(args)
            .env("HOME", &self.home)
            .env("EC2LOCAL_ENDPOINT", &self.endpoint)
            .env_remove("EC2LOCAL_CLI_HOME")
            .env_remove("NO_COLOR");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Ran {
        Ran::from(self.command(args).output().expect("run ec2local"))
    }

    /// Runs in the background (a wait that another command ends).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn ec2local")
    }

    pub fn config_dir(&self) -> PathBuf {
        self.home.join(".config/ec2local")
    }
}
