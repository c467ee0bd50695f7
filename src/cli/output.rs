//! How the CLI prints: aligned tables and colour for people (colour only on a terminal,
//! and never with NO_COLOR), JSON for scripts, progress on stderr.

use std::io::{IsTerminal, Write};

/// Left-aligned columns, two spaces apart, the header first.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

/// A value and the colour it is shown in on a terminal.
pub struct Cell {
    text: String,
    colour: Option<Colour>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Colour {
    Green,
    Yellow,
    Red,
    Dim,
}

impl Colour {
    fn code(self) -> &'static str {
        match self {
            Colour::Green => "32",
            Colour::Yellow => "33",
            Colour::Red => "31",
            Colour::Dim => "2",
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell { text, colour: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell { text: text.to_string(), colour: None }
    }
}

impl Cell {
    pub fn coloured(text: impl Into<String>, colour: Option<Colour>) -> Cell {
        Cell { text: text.into(), colour }
    }
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table { header: header.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// The table as text; `colour` adds terminal colours (padding is computed without them).
    pub fn render(&self, colour: bool) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.text.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<Cell> = self.header.iter().map(|h| Cell::from(*h)).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let last = i + 1 == row.len();
                let pad = if last { 0 } else { widths[i] - cell.text.chars().count() + 2 };
                match cell.colour.filter(|_| colour) {
                    Some(c) => line.push_str(&format!("\x1b[{}m{}\x1b[0m", c.code(), cell.text)),
                    None => line.push_str(&cell.text),
                }
                line.push_str(&" ".repeat(pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Whether stdout is a terminal that takes colours.
pub fn colour_on_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The colour of an instance state or status check.
pub fn colour_of(word: &str) -> Option<Colour> {
    match word {
        "running" | "ok" | "active" | "available" => Some(Colour::Green),
        "pending" | "stopping" | "initializing" | "paused" | "downloading" | "verifying" => Some(Colour::Yellow),
        "error" | "impaired" | "failed" | "pull failed" | "missing file" | "other architecture" => Some(Colour::Red),
        "stopped" | "terminated" | "not-applicable" | "not downloaded" => Some(Colour::Dim),
        _ => None,
    }
}

pub fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON values serialise"));
}

/// Progress on stderr: rewritten in place on a terminal, one line per change otherwise
/// (so logs of scripts stay readable).
pub struct Progress {
    on_terminal: bool,
    last: String,
}

impl Progress {
    pub fn new() -> Progress {
        Progress { on_terminal: std::io::stderr().is_terminal(), last: String::new() }
    }

    pub fn say(&mut self, line: &str) {
        if line == self.last {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.on_terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.last = line.to_string();
    }

    /// Ends the in-place line so what follows starts on its own.
    pub fn done(&mut self) {
        if self.on_terminal && !self.last.is_empty() {
            eprintln!();
        }
        self.last.clear();
    }
}

/// "3m 12s ago"-style age of an RFC 3339 time, for tables.
pub fn age(rfc3339: &str) -> String {
    let Ok(then) = chrono::DateTime::parse_from_rfc3339(rfc3339) else { return rfc3339.to_string() };
    let secs = (chrono::Utc::now() - then.with_timezone(&chrono::Utc)).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_without_counting_colour_codes() {
        let mut table = Table::new(&["ID", "STATE"]);
        table.row(vec!["i-0123abcd".into(), Cell::coloured("running", Some(Colour::Green))]);
        table.row(vec!["i-1".into(), "stopped".into()]);
        assert_eq!(table.render(false), "ID          STATE\ni-0123abcd  running\ni-1         stopped\n");
        let coloured = table.render(true);
        assert!(coloured.contains("i-0123abcd  \x1b[32mrunning\x1b[0m"), "{coloured:?}");
    }

    #[test]
    fn ages_are_short() {
        let an_hour_ago = (chrono::Utc::now() - chrono::Duration::seconds(3700)).to_rfc3339();
        assert_eq!(age(&an_hour_ago), "1h");
        assert_eq!(age("not a time"), "not a time");
    }
}
