//! Logging: tracing to stderr, and to `logs/app.log` (REQ-LOG-001) which is rotated
//! when it passes 10 MB (REQ-LOG-002), started afresh each day (REQ-LOG-003), and whose
//! rotated files are removed 7 days after their last line (REQ-LOG-004).
//!
//! file-rotate does the size rotation, the timestamped names and the pruning by age;
//! this module adds the daily roll-over, which file-rotate cannot combine with a size
//! limit, behind an injectable clock so it is tested without waiting for midnight.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Local, NaiveDate};
use file_rotate::suffix::{AppendTimestamp, DateFrom, FileLimit};
use file_rotate::{ContentLimit, FileRotate, compression::Compression};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Suffix of rotated files: `app.log.20261126T101500`. Lexical order is time order.
pub const ROTATED_SUFFIX_FORMAT: &str = "%Y%m%dT%H%M%S";

#[derive(Debug, Clone, Copy)]
pub struct LogPolicy {
    pub max_bytes: usize,
    pub max_age_days: i64,
}

impl Default for LogPolicy {
    fn default() -> Self {
        Self { max_bytes: 10 * 1024 * 1024, max_age_days: 7 }
    }
}

pub trait Clock: Send + 'static {
    fn now(&self) -> DateTime<Local>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Local> {
        Local::now()
    }
}

/// `app.log` with size and daily rotation and age-based retention.
pub struct RotatingLog<C: Clock = SystemClock> {
    inner: FileRotate<AppendTimestamp>,
    path: std::path::PathBuf,
    policy: LogPolicy,
    max_age: chrono::Duration,
    day: NaiveDate,
    clock: C,
}

/// The size-rotating writer. Its rotations happen as a line is written, so their
/// time of rotation is the time of the file's last line.
fn size_rotating(path: &Path, policy: LogPolicy) -> FileRotate<AppendTimestamp> {
    let mut options = OpenOptions::new();
    options.read(true).create(true).append(true).mode(0o600);
    FileRotate::new(
        path,
        AppendTimestamp::with_format(
            ROTATED_SUFFIX_FORMAT,
            FileLimit::Age(chrono::Duration::days(policy.max_age_days)),
            DateFrom::Now,
        ),
        ContentLimit::BytesSurpassed(policy.max_bytes),
        Compression::None,
        Some(options),
    )
}

fn modified(path: &Path) -> io::Result<DateTime<Local>> {
    std::fs::metadata(path).and_then(|m| m.modified()).map(DateTime::<Local>::from)
}

impl<C: Clock> RotatingLog<C> {
    pub fn open(path: &Path, policy: LogPolicy, clock: C) -> io::Result<Self> {
        // The day of the current file: a file last written yesterday is rolled over at
        // the first write today, even across a restart.
        let today = clock.now().date_naive();
        let day = modified(path).map(|t| t.date_naive()).unwrap_or(today);
        let max_age = chrono::Duration::days(policy.max_age_days);
        let inner = size_rotating(path, policy);
        let mut log = Self { inner, path: path.to_path_buf(), policy, max_age, day, clock };
        log.roll_over_if_new_day()?;
        log.remove_expired();
        Ok(log)
    }

    /// The daily roll-over names the file by the time of its last line, not by now:
    /// after days the service was down, `app.log.20261120T…` still holds the 20th's lines.
    fn roll_over_if_new_day(&mut self) -> io::Result<()> {
        let today = self.clock.now().date_naive();
        if today == self.day {
            return Ok(());
        }
        self.day = today;
        self.inner.flush()?;
        let holds_lines = std::fs::metadata(&self.path).is_ok_and(|m| m.len() > 0);
        if holds_lines {
            let last_line = modified(&self.path)?;
            std::fs::rename(&self.path, self.rotated_name(last_line))?;
            // file-rotate keeps its own list of rotated files: a fresh one reads the new name.
            self.inner = size_rotating(&self.path, self.policy);
        }
        self.remove_expired();
        Ok(())
    }

    /// `app.log.<stamp>`, or `app.log.<stamp>.N` when a size rotation took that second.
    fn rotated_name(&self, last_line: DateTime<Local>) -> std::path::PathBuf {
        let base = format!("{}.{}", self.path.display(), last_line.format(ROTATED_SUFFIX_FORMAT));
        let mut candidate = std::path::PathBuf::from(&base);
        let mut n = 1;
        while candidate.exists() {
            candidate = format!("{base}.{n}").into();
            n += 1;
        }
        candidate
    }

    /// Removes rotated files whose last line is older than the retention (REQ-LOG-004).
    /// Age is the file's modification time, the time of its last line, not the time it
    /// was rotated: a file rotated today after a week of downtime holds week-old lines.
    /// Runs at start and at each daily roll-over, so days the service was down count.
    fn remove_expired(&mut self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else { return };
        let prefix = format!("{}.", name.to_string_lossy());
        let oldest_kept = self.clock.now() - self.max_age;
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let modified = entry.metadata().and_then(|m| m.modified()).map(DateTime::<Local>::from);
            if modified.is_ok_and(|t| t < oldest_kept) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Rotated files, oldest first.
    pub fn rotated_files(&mut self) -> Vec<std::path::PathBuf> {
        self.inner.log_paths()
    }
}

impl<C: Clock> Write for RotatingLog<C> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.roll_over_if_new_day()?;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Installs the global subscriber: stderr at `RUST_LOG` (default info), and the log
/// file at info and above (warnings and errors always).
pub fn init(log_file: &Path) -> io::Result<()> {
    let file = RotatingLog::open(log_file, LogPolicy::default(), SystemClock)?;
    let stderr_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let file_layer =
        tracing_subscriber::fmt::layer().with_ansi(false).with_writer(Mutex::new(file)).with_filter(LevelFilter::INFO);
    let stderr_layer = tracing_subscriber::fmt::layer().with_writer(io::stderr).with_filter(stderr_filter);
    tracing_subscriber::registry().with(stderr_layer).with(file_layer).try_init().map_err(io::Error::other)
}

/// Stderr only, for commands that do not own a data dir (doctor).
pub fn init_stderr() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_writer(io::stderr).with_env_filter(filter).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// A clock the test moves by hand.
    #[derive(Clone)]
    struct FakeClock(Arc<AtomicI64>);
    impl FakeClock {
        fn at(t: DateTime<Local>) -> Self {
            Self(Arc::new(AtomicI64::new(t.timestamp())))
        }
        fn advance_days(&self, days: i64) {
            self.0.fetch_add(days * 86_400, Ordering::SeqCst);
        }
    }
    impl Clock for FakeClock {
        fn now(&self) -> DateTime<Local> {
            DateTime::from_timestamp(self.0.load(Ordering::SeqCst), 0).unwrap().with_timezone(&Local)
        }
    }

    fn rotated(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("app.log."))
            .collect();
        names.sort();
        names
    }

    // REQ-LOG-002
    #[test]
    fn rotates_when_the_file_passes_the_size_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("app.log");
        let policy = LogPolicy { max_bytes: 1000, max_age_days: 7 };
        let mut log = RotatingLog::open(&path, policy, SystemClock).unwrap();
        let line = [b'x'; 99];
        for _ in 0..10 {
            log.write_all(&line).unwrap();
            log.write_all(b"\n").unwrap();
        }
        assert!(rotated(tmp.path()).is_empty(), "rotated at exactly the limit");
        log.write_all(b"one more line\n").unwrap();
        log.write_all(b"and the next\n").unwrap();
        log.flush().unwrap();
        let files = rotated(tmp.path());
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(std::fs::metadata(tmp.path().join(&files[0])).unwrap().len() >= 1000);
        assert!(std::fs::metadata(&path).unwrap().len() < 1000);
    }

    // REQ-LOG-003
    #[test]
    fn starts_a_new_file_each_day() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("app.log");
        let clock = FakeClock::at(Local::now());
        let mut log = RotatingLog::open(&path, LogPolicy::default(), clock.clone()).unwrap();
        log.write_all(b"day one\n").unwrap();
        log.write_all(b"day one again\n").unwrap();
        assert!(rotated(tmp.path()).is_empty());
        clock.advance_days(1);
        log.write_all(b"day two\n").unwrap();
        log.flush().unwrap();
        let files = rotated(tmp.path());
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(std::fs::read_to_string(tmp.path().join(&files[0])).unwrap(), "day one\nday one again\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "day two\n");
    }

    // REQ-LOG-003
    #[test]
    fn a_file_left_from_an_earlier_day_is_rolled_over_at_start() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("app.log");
        std::fs::write(&path, "yesterday\n").unwrap();
        let clock = FakeClock::at(Local::now());
        clock.advance_days(1);
        let mut log = RotatingLog::open(&path, LogPolicy::default(), clock).unwrap();
        log.write_all(b"today\n").unwrap();
        log.flush().unwrap();
        assert_eq!(rotated(tmp.path()).len(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "today\n");
    }

    // REQ-LOG-003
    #[test]
    fn rotated_files_are_named_by_the_time_of_their_last_line() {
        use chrono::Timelike;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("app.log");
        // Left by a service that stopped three days ago: rolled over at start under its own date.
        std::fs::write(&path, "three days ago\n").unwrap();
        let three_days_ago = Local::now() - chrono::Duration::days(3);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(three_days_ago.into()).unwrap();
        let clock = FakeClock::at(Local::now());
        let mut log = RotatingLog::open(&path, LogPolicy::default(), clock.clone()).unwrap();
        let expected = format!("app.log.{}", three_days_ago.format(ROTATED_SUFFIX_FORMAT));
        assert_eq!(rotated(tmp.path()), std::slice::from_ref(&expected));
        assert_eq!(std::fs::read_to_string(tmp.path().join(&expected)).unwrap(), "three days ago\n");
        // Lines whose last one was written two hours ago, rolled over at the next day's
        // first write: the name is the time of that last line, not of the roll-over.
        log.write_all(b"today\n").unwrap();
        log.flush().unwrap();
        let last_line = (Local::now() - chrono::Duration::hours(2)).with_nanosecond(0).unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(last_line.into()).unwrap();
        clock.advance_days(1);
        log.write_all(b"tomorrow\n").unwrap();
        log.flush().unwrap();
        let named = format!("app.log.{}", last_line.format(ROTATED_SUFFIX_FORMAT));
        assert_eq!(rotated(tmp.path()), [expected, named.clone()]);
        assert_eq!(std::fs::read_to_string(tmp.path().join(&named)).unwrap(), "today\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "tomorrow\n");
    }

    // REQ-LOG-004
    #[test]
    fn rotated_files_older_than_seven_days_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("app.log");
        let stamp =
            |days_ago: i64| (Local::now() - chrono::Duration::days(days_ago)).format(ROTATED_SUFFIX_FORMAT).to_string();
        let old = [format!("app.log.{}", stamp(8)), format!("app.log.{}", stamp(30))];
        let recent = [format!("app.log.{}", stamp(1)), format!("app.log.{}", stamp(6))];
        for name in old.iter().chain(&recent) {
            std::fs::write(tmp.path().join(name), "old lines\n").unwrap();
        }
        let policy = LogPolicy { max_bytes: 10, max_age_days: 7 };
        let mut log = RotatingLog::open(&path, policy, SystemClock).unwrap();
        log.write_all(b"enough bytes to rotate\n").unwrap();
        log.write_all(b"x\n").unwrap();
        log.flush().unwrap();
        let files = rotated(tmp.path());
        for name in &old {
            assert!(!files.contains(name), "{name} was kept: {files:?}");
        }
        for name in &recent {
            assert!(files.contains(name), "{name} was removed: {files:?}");
        }
        assert_eq!(files.len(), 3, "{files:?}");
    }

    // REQ-LOG-004
    #[test]
    fn age_is_counted_from_the_last_line_at_start_and_at_each_roll_over() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("app.log");
        let set_mtime = |name: &str, days_ago: i64| {
            let file = std::fs::File::options().write(true).open(tmp.path().join(name)).unwrap();
            let when = std::time::SystemTime::now() - std::time::Duration::from_secs(days_ago as u64 * 86_400);
            file.set_modified(when).unwrap();
        };
        // Rotated yesterday by its name, but its last line is ten days old (the service
        // was down in between): removed at start, before anything is written.
        let yesterday = (Local::now() - chrono::Duration::days(1)).format(ROTATED_SUFFIX_FORMAT).to_string();
        let stale = format!("app.log.{yesterday}");
        std::fs::write(tmp.path().join(&stale), "ten days old\n").unwrap();
        set_mtime(&stale, 10);
        let fresh = format!("app.log.{}", Local::now().format(ROTATED_SUFFIX_FORMAT));
        std::fs::write(tmp.path().join(&fresh), "recent\n").unwrap();
        set_mtime(&fresh, 2);
        let clock = FakeClock::at(Local::now());
        let mut log = RotatingLog::open(&path, LogPolicy::default(), clock.clone()).unwrap();
        assert_eq!(rotated(tmp.path()), std::slice::from_ref(&fresh), "the stale file outlived the start");
        // Six days later, at the daily roll-over, the fresh one (now 8 days old) goes too.
        log.write_all(b"today\n").unwrap();
        clock.advance_days(6);
        log.write_all(b"six days later\n").unwrap();
        log.flush().unwrap();
        let files = rotated(tmp.path());
        assert!(!files.contains(&fresh), "{fresh} outlived its retention: {files:?}");
        assert_eq!(files.len(), 1, "only the file rotated now is kept: {files:?}");
    }

    // REQ-LOG-001
    #[test]
    fn the_log_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("app.log");
        let mut log = RotatingLog::open(&path, LogPolicy::default(), SystemClock).unwrap();
        log.write_all(b"x\n").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
