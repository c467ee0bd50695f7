//! The layering rules of the README's "Layout", checked on the source: each kind of
//! outside contact has one home. A rule broken by new code fails here with the file and
//! line, rather than in review.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with its production code only: a file named
/// `tests.rs`, and everything from a `#[cfg(test)]` line on, are tests.
fn production_sources() -> Vec<(PathBuf, Vec<(usize, String)>)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let lines = text
                .lines()
                .enumerate()
                .take_while(|(_, line)| line.trim() != "#[cfg(test)]")
                .filter(|(_, line)| !line.trim_start().starts_with("//"))
                .map(|(n, line)| (n + 1, line.to_string()))
                .collect();
            (path.strip_prefix(root).unwrap().to_path_buf(), lines)
        })
        .collect()
}

/// Lines matching `pattern` in files that are not allowed to have them.
fn offenders(pattern: impl Fn(&str) -> bool, allowed: impl Fn(&str) -> bool) -> Vec<String> {
    production_sources()
        .into_iter()
        .filter(|(path, _)| !allowed(&path.to_string_lossy()))
        .flat_map(|(path, lines)| {
            lines
                .into_iter()
                .filter(|(_, line)| pattern(line))
                .map(move |(n, line)| format!("{}:{n}: {}", path.display(), line.trim()))
        })
        .collect()
}

#[test]
fn child_processes_are_started_only_in_exec() {
    let found = offenders(
        |line| {
            ["process::Command", "tokio::process", "duct::", "use duct"].iter().any(|p| line.contains(p))
                // `Command::new(` of std, not our `ToolCommand::new(`.
                || line.match_indices("Command::new(").any(|(at, _)| {
                    !line[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                })
        },
        |path| path.starts_with("src/exec/"),
    );
    assert!(found.is_empty(), "start child processes through src/exec (ToolCommand):\n{}", found.join("\n"));
}

#[test]
fn sqlite_is_used_only_in_db() {
    let found = offenders(|line| line.contains("rusqlite"), |path| path.starts_with("src/db/"));
    assert!(found.is_empty(), "database access belongs in src/db:\n{}", found.join("\n"));
}

#[test]
fn operating_system_differences_live_in_platform() {
    let found = offenders(|line| line.contains("target_os"), |path| path.starts_with("src/platform/"));
    assert!(found.is_empty(), "cfg(target_os) belongs behind src/platform:\n{}", found.join("\n"));
}

#[test]
fn http_statuses_are_chosen_only_in_the_error_map() {
    // reqwest's StatusCode is what a mirror answered us, not a status we choose.
    let error_status = |line: &str| {
        (line.contains("StatusCode::") && !line.contains("reqwest::StatusCode"))
            || ["#[oai(status = 4", "#[oai(status = 5"].iter().any(|p| line.contains(p))
    };
    let found = offenders(error_status, |path| {
        // The error maps (REST and EC2); health, whose 503 is its answer rather than a failure.
        path == "src/api/error.rs" || path == "src/api/ec2/error.rs" || path == "src/api/system.rs"
    });
    assert!(found.is_empty(), "map errors to statuses in src/api/error.rs:\n{}", found.join("\n"));
}

/// Whether a line joins a path with a name written in the code: `.join("seed")`,
/// `.join(format!(…))`. A string join has a separator (`", "`, `"\n"`), not a name.
fn joins_a_written_name(line: &str) -> bool {
    line.contains(".join(format!(")
        || line.match_indices(".join(\"").any(|(at, m)| {
            let literal = line[at + m.len()..].split('"').next().unwrap_or("");
            !literal.starts_with('\\') && literal.chars().any(|c| c.is_ascii_alphanumeric())
        })
}

#[test]
fn names_under_the_data_dir_come_from_paths() {
    let found = offenders(joins_a_written_name, |path| {
        // Paths owns the data dir; platform joins the host's own (Homebrew, PATH);
        // failpoints name files in a test-only directory.
        path == "src/paths.rs" || path.starts_with("src/platform/") || path == "src/failpoint.rs"
    });
    assert!(found.is_empty(), "name files under the data dir in src/paths.rs:\n{}", found.join("\n"));
}

#[test]
fn the_rules_see_what_they_look_for() {
    assert!(joins_a_written_name(r#"let seed = dir.join("seed");"#));
    assert!(joins_a_written_name(r#"dir.join(format!(".{name}.partial"))"#));
    assert!(!joins_a_written_name(r#"known.join(", ")"#));
    assert!(!joins_a_written_name(r#"lines.join("\n")"#));
    assert!(!joins_a_written_name(r#"self.images().join(file_name)"#));
    let sources = production_sources();
    let paths = sources.iter().find(|(p, _)| p.ends_with("src/paths.rs")).expect("src/paths.rs is read");
    assert!(paths.1.iter().any(|(_, line)| joins_a_written_name(line)), "the rule would miss paths.rs's own joins");
    let exec = sources.iter().find(|(p, _)| p.starts_with("src/exec")).expect("src/exec is read");
    assert!(!exec.1.is_empty());
}

#[test]
fn the_platform_seam_is_a_leaf() {
    // Others consult the platform; it consults nobody (no cycle through it).
    let found = offenders(
        |line| line.contains("crate::") && !line.contains("crate::platform"),
        |path| !path.starts_with("src/platform/"),
    );
    assert!(found.is_empty(), "src/platform must not use other modules:\n{}", found.join("\n"));
}

#[test]
fn the_runners_use_only_the_platform() {
    let found = offenders(
        |line| line.contains("crate::") && !line.contains("crate::exec") && !line.contains("crate::platform"),
        |path| !path.starts_with("src/exec/"),
    );
    assert!(found.is_empty(), "src/exec runs tools; it must not use higher layers:\n{}", found.join("\n"));
}

#[test]
fn transactions_are_opened_only_in_db() {
    // A service that needs several writes at once asks src/db for a function that says
    // what it records (record_launch, insert_new), rather than holding a connection.
    let found = offenders(|line| line.contains(".transaction()"), |path| path.starts_with("src/db/"));
    assert!(found.is_empty(), "open transactions in src/db:\n{}", found.join("\n"));
}

/// Where a function that starts on a line (`fn name`, any visibility) ends: the first
/// later line that closes it at the same indentation.
fn function_lengths(lines: &[(usize, String)]) -> Vec<(String, usize, usize)> {
    let mut found = Vec::new();
    for (i, (start, line)) in lines.iter().enumerate() {
        let code = line.trim_start();
        let indent = &line[..line.len() - code.len()];
        let signature = ["fn ", "pub fn ", "pub(crate) fn ", "async fn ", "pub async fn ", "pub(crate) async fn "]
            .iter()
            .find_map(|p| code.strip_prefix(p));
        let Some(rest) = signature else { continue };
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let closing = format!("{indent}}}");
        if let Some((end, _)) = lines[i + 1..].iter().find(|(_, l)| *l == closing) {
            found.push((name, *start, end - start + 1));
        }
    }
    found
}

#[test]
fn functions_and_files_stay_short() {
    const MAX_FUNCTION_LINES: usize = 80;
    const MAX_FILE_LINES: usize = 500;
    let mut long = Vec::new();
    for (path, lines) in production_sources() {
        let last = lines.last().map_or(0, |(n, _)| *n);
        if last > MAX_FILE_LINES {
            long.push(format!("{}: {last} lines of production code", path.display()));
        }
        for (name, start, length) in function_lengths(&lines) {
            if length > MAX_FUNCTION_LINES {
                long.push(format!("{}:{start}: fn {name} is {length} lines", path.display()));
            }
        }
    }
    assert!(long.is_empty(), "split these at their natural steps:\n{}", long.join("\n"));
}

#[test]
fn the_length_rule_measures_functions() {
    let lines: Vec<(usize, String)> = ["pub async fn outer() {", "    fn inner() {", "    }", "    x", "}"]
        .iter()
        .enumerate()
        .map(|(n, l)| (n + 1, l.to_string()))
        .collect();
    assert_eq!(function_lengths(&lines), [("outer".to_string(), 1, 5), ("inner".to_string(), 2, 2)]);
}
