//! The only place that spawns processes. Every call is an argument vector run through
//! duct (never a shell string), with a timeout and a tracing record of its duration.

pub mod iso;
pub mod qemu_img;
pub mod ssh_client;
pub mod virsh;
pub mod virsh_events;

use std::ffi::OsString;
use std::fmt;
use std::time::{Duration, Instant};

/// A command to run: program, arguments and how long it may take.
#[derive(Clone)]
pub struct ToolCommand {
    pub program: String,
    pub args: Vec<OsString>,
    pub timeout: Duration,
}

impl ToolCommand {
    pub fn new(program: impl Into<String>, timeout: Duration) -> Self {
        Self { program: program.into(), args: Vec::new(), timeout }
    }
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// The command line as a person would type it, for errors and logs.
impl fmt::Display for ToolCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        // Quoted as a shell would need it, so a logged command can be pasted and run.
        for arg in &self.args {
            let arg = arg.to_string_lossy();
            match shlex::try_quote(&arg) {
                Ok(quoted) => write!(f, " {quoted}")?,
                Err(_) => write!(f, " {arg:?}")?, // a NUL byte: no shell can take it
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ToolCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{program} is not installed or not on PATH")]
    NotFound { program: String },
    #[error("could not start `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` failed ({}): {}", exit_description(*code), stderr.trim())]
    Failed { command: String, code: Option<i32>, stderr: String },
    #[error("`{command}` did not finish within {}s and was killed", after.as_secs_f32())]
    TimedOut { command: String, after: Duration },
}

fn exit_description(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_string(),
    }
}

impl ExecError {
    /// The child's stderr, when it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            ExecError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// Runs tool commands: child processes in the service; a scripted stand-in in unit
/// tests, so that what is built on the runners is tested without libvirt.
pub trait Runner: fmt::Debug + Send + Sync + 'static {
    fn run(&self, command: ToolCommand) -> futures_util::future::BoxFuture<'static, Result<ToolOutput, ExecError>>;
}

/// Child processes through duct: the service's runner.
#[derive(Debug, Clone, Copy, Default)]
pub struct Processes;

impl Runner for Processes {
    fn run(&self, command: ToolCommand) -> futures_util::future::BoxFuture<'static, Result<ToolOutput, ExecError>> {
        Box::pin(run(command))
    }
}

/// A runner that answers from a script and records what it was asked, for unit tests
/// of the code above the runners.
#[cfg(test)]
pub mod scripted {
    use std::sync::Mutex;

    use super::{ExecError, Runner, ToolCommand, ToolOutput};

    /// Answers: the first rule whose text is in the command line wins; a rule made with
    /// `once` answers one command and is gone, so a later rule can say what comes next.
    #[derive(Debug, Default)]
    pub struct Scripted {
        rules: Mutex<Vec<Rule>>,
        calls: Mutex<Vec<String>>,
    }

    #[derive(Debug)]
    struct Rule {
        pattern: String,
        answer: Result<String, String>,
        once: bool,
    }

    impl Scripted {
        fn rule(self, pattern: &str, answer: Result<String, String>, once: bool) -> Self {
            self.rules.lock().unwrap().push(Rule { pattern: pattern.into(), answer, once });
            self
        }
        /// Commands containing `pattern` print `stdout` and succeed.
        pub fn ok(self, pattern: &str, stdout: &str) -> Self {
            self.rule(pattern, Ok(stdout.into()), false)
        }
        /// Commands containing `pattern` print `stderr` and exit 1.
        pub fn fail(self, pattern: &str, stderr: &str) -> Self {
            self.rule(pattern, Err(stderr.into()), false)
        }
        /// The next command containing `pattern` prints `stdout` and succeeds.
        pub fn once(self, pattern: &str, stdout: &str) -> Self {
            self.rule(pattern, Ok(stdout.into()), true)
        }
        /// The next command containing `pattern` prints `stderr` and exits 1.
        pub fn fail_once(self, pattern: &str, stderr: &str) -> Self {
            self.rule(pattern, Err(stderr.into()), true)
        }
        /// How many commands run so far contain `pattern`.
        pub fn count(&self, pattern: &str) -> usize {
            self.calls.lock().unwrap().iter().filter(|c| c.contains(pattern)).count()
        }
        /// Every command line run so far.
        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Runner for Scripted {
        fn run(&self, command: ToolCommand) -> futures_util::future::BoxFuture<'static, Result<ToolOutput, ExecError>> {
            let line = command.to_string();
            self.calls.lock().unwrap().push(line.clone());
            let answer = {
                let mut rules = self.rules.lock().unwrap();
                let found = rules.iter().position(|r| line.contains(r.pattern.as_str()));
                found.map(|i| if rules[i].once { rules.remove(i).answer } else { rules[i].answer.clone() })
            };
            Box::pin(async move {
                match answer {
                    Some(Ok(stdout)) => Ok(ToolOutput { stdout, stderr: String::new() }),
                    Some(Err(stderr)) => Err(ExecError::Failed { command: line, code: Some(1), stderr }),
                    None => Err(ExecError::Failed {
                        command: line.clone(),
                        code: Some(127),
                        stderr: format!("error: no scripted answer for `{line}`"),
                    }),
                }
            })
        }
    }
}

/// Runs a command to completion on a blocking thread.
pub async fn run(command: ToolCommand) -> Result<ToolOutput, ExecError> {
    tokio::task::spawn_blocking(move || run_blocking(&command)).await.expect("the process runner does not panic")
}

/// `command` as a duct expression: stdin closed, stderr kept, a failure not an error
/// (callers read the status), and the C locale, since output is parsed (virsh's states,
/// qemu-img's errors).
fn expression(command: &ToolCommand) -> duct::Expression {
    duct::cmd(&command.program, &command.args).env("LC_ALL", "C").stdin_null().stderr_capture().unchecked()
}

/// Why `command` could not start: not installed, or another reason.
fn spawn_error(command: &ToolCommand, source: std::io::Error) -> ExecError {
    if source.kind() == std::io::ErrorKind::NotFound {
        ExecError::NotFound { program: command.program.clone() }
    } else {
        ExecError::Spawn { command: command.to_string(), source }
    }
}

/// Runs a command to completion, killing it at its timeout.
pub fn run_blocking(command: &ToolCommand) -> Result<ToolOutput, ExecError> {
    let started = Instant::now();
    let shown = command.to_string();
    let handle = expression(command).stdout_capture().start().map_err(|source| spawn_error(command, source))?;
    let waited =
        handle.wait_timeout(command.timeout).map_err(|source| ExecError::Spawn { command: shown.clone(), source })?;
    let Some(output) = waited else {
        let _ = handle.kill();
        tracing::warn!(command = %shown, timeout_s = command.timeout.as_secs_f32(), "command timed out");
        return Err(ExecError::TimedOut { command: shown, after: command.timeout });
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() {
        tracing::debug!(command = %shown, elapsed_ms, "command ran");
        Ok(ToolOutput { stdout, stderr })
    } else {
        tracing::debug!(command = %shown, elapsed_ms, code = ?output.status.code(), stderr = %stderr.trim(), "command failed");
        Err(ExecError::Failed { command: shown, code: output.status.code(), stderr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_arguments_with_spaces() {
        let cmd =
            ToolCommand::new("virsh", Duration::from_secs(1)).args(["-c", "qemu:///system", "net-info", "a b", ""]);
        assert_eq!(cmd.to_string(), "virsh -c qemu:///system net-info 'a b' ''");
    }

    #[test]
    fn failure_keeps_command_exit_code_and_stderr() {
        let cmd = ToolCommand::new("sh", Duration::from_secs(5)).args(["-c", "echo oops >&2; exit 3"]);
        match run_blocking(&cmd) {
            Err(ExecError::Failed { command, code, stderr }) => {
                assert!(command.starts_with("sh -c"));
                assert_eq!(code, Some(3));
                assert_eq!(stderr.trim(), "oops");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn arguments_are_never_interpreted_by_a_shell() {
        let out = run_blocking(&ToolCommand::new("echo", Duration::from_secs(5)).arg("$(id); rm -rf /")).unwrap();
        assert_eq!(out.stdout, "$(id); rm -rf /\n");
    }

    #[test]
    fn a_slow_command_is_killed_at_its_timeout() {
        let started = Instant::now();
        let err = run_blocking(&ToolCommand::new("sleep", Duration::from_millis(200)).arg("10")).unwrap_err();
        assert!(matches!(err, ExecError::TimedOut { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_program_is_reported_as_not_found() {
        let err = run_blocking(&ToolCommand::new("ec2local-no-such-tool", Duration::from_secs(1))).unwrap_err();
        assert!(matches!(err, ExecError::NotFound { .. }), "{err:?}");
    }
}
