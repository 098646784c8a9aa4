//! Located error messages: `file:line:col: error: message`, the offending
//! source line with a caret, and a did-you-mean where one is close.

use std::fmt::Write as _;

use crate::source::location::Location;

/// One error in a graph file (or on the command line, when `loc` is `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the error is; `None` for errors outside the file (e.g. `--set`).
    pub loc: Option<Location>,
    /// Characters to underline from `loc`.
    pub len: usize,
    /// What is wrong.
    pub message: String,
    /// A suggestion, e.g. "did you mean `sd.sample`?".
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `loc` spanning `len` characters.
    pub fn at(loc: Location, len: usize, message: impl Into<String>) -> Self {
        Diagnostic { loc: Some(loc), len: len.max(1), message: message.into(), help: None }
    }

    /// An error without a location in the file.
    pub fn general(message: impl Into<String>) -> Self {
        Diagnostic { loc: None, len: 1, message: message.into(), help: None }
    }

    /// Adds a help line.
    pub fn with_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }
}

/// Every error found in one graph file.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    /// The file name as shown to the user.
    pub file: String,
    /// The file's text (for quoting source lines).
    pub source: String,
    /// The errors, in file order.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// No errors yet for `file`.
    pub fn new(file: impl Into<String>, source: impl Into<String>) -> Self {
        Diagnostics { file: file.into(), source: source.into(), items: Vec::new() }
    }

    /// Records an error.
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    /// True if there is no error.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sorts errors by location (errors without location first) and drops duplicates.
    pub fn sort(&mut self) {
        self.items.sort_by(|a, b| (a.loc, &a.message).cmp(&(b.loc, &b.message)));
        self.items.dedup();
    }

    /// Renders every error for a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.items {
            self.render_one(d, &mut out);
        }
        let n = self.items.len();
        let _ = writeln!(out, "{n} error{} in {}", if n == 1 { "" } else { "s" }, self.file);
        out
    }

    fn render_one(&self, d: &Diagnostic, out: &mut String) {
        match d.loc {
            None => {
                let _ = writeln!(out, "{}: error: {}", self.file, d.message);
            }
            Some(loc) => {
                let _ = writeln!(out, "{}:{}:{}: error: {}", self.file, loc.line, loc.col, d.message);
                if let Some(line) = self.source.lines().nth(loc.line.saturating_sub(1)) {
                    let line = line.replace('\t', " ");
                    let num = loc.line.to_string();
                    let pad = " ".repeat(num.len());
                    let shown: String = line.chars().take(200).collect();
                    let _ = writeln!(out, "{pad} |");
                    let _ = writeln!(out, "{num} | {shown}");
                    let start = loc.col.saturating_sub(1).min(shown.chars().count());
                    let width = d.len.min(shown.chars().count().saturating_sub(start)).max(1);
                    let _ = writeln!(out, "{pad} | {}{}", " ".repeat(start), "^".repeat(width));
                }
            }
        }
        if let Some(help) = &d.help {
            let _ = writeln!(out, "  = help: {help}");
        }
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(&str, f64)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(word, c);
        let dist = strsim::damerau_levenshtein(word, c);
        let close = dist <= 2.max(word.len() / 4) || score >= 0.88;
        if close && best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

/// "did you mean `x`?" for the closest candidate, if any.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(closest("sd.sampel", ["sd.sample", "text.join"]), Some("sd.sample"));
        assert_eq!(closest("zzz", ["sd.sample", "text.join"]), None);
    }

    #[test]
    fn renders_file_line_col_and_caret() {
        let mut d = Diagnostics::new("g.yaml", "nodes:\n  a: { op: txt }\n");
        d.push(Diagnostic::at(Location::new(2, 12), 3, "unknown op `txt`"));
        let text = d.render();
        assert!(text.starts_with("g.yaml:2:12: error: unknown op `txt`\n"), "{text}");
        assert!(text.contains("2 |   a: { op: txt }"), "{text}");
        assert!(text.contains("  |            ^^^"), "{text}");
    }
}
