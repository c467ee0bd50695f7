//! The system `ssh`, for `ec2local ssh`: the CLI becomes it, so the terminal, exit code
//! and signals are ssh's own.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

/// Replaces this process with `ssh ARGS`; returns only if that could not be done.
pub fn become_ssh(args: &[OsString]) -> std::io::Error {
    std::process::Command::new("ssh").args(args).exec()
}
