//! Shared by the tests and `examples/bench_terminal.rs` (which cannot use the rest of
//! `tests/common`: it needs the binary path Cargo gives only to tests).

/// `ssh` options for throw-away test guests: no prompts, no known_hosts, and a guest
/// that reboots under an open session does not hang the caller.
pub const SSH_OPTIONS: [&str; 14] = [
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=5",
    "-o",
    "ServerAliveInterval=3",
    "-o",
    "ServerAliveCountMax=3",
];
