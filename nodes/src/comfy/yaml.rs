//! The flow graph a workflow becomes, and its YAML text.

use std::fmt::Write as _;

/// A literal value.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    /// An integer.
    Int(i128),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Text(String),
}

/// A node input: a literal or a `$reference` to a param, model or node.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// A literal (text has its `$` doubled when written).
    Lit(Lit),
    /// `$name` or `$node.port`.
    Ref(String),
}

/// A node of the flow graph.
#[derive(Clone, Debug)]
pub struct FlowNode {
    /// Node id.
    pub name: String,
    /// The op.
    pub op: &'static str,
    /// Inputs in the order written.
    pub inputs: Vec<(&'static str, Arg)>,
    /// Where it came from (a YAML comment).
    pub comment: String,
    /// The ComfyUI node ids whose work this node does, in order (empty for
    /// the inner links of a combined conditioning chain).
    pub origins: Vec<String>,
}

/// A flow graph, ready to be written.
#[derive(Clone, Debug, Default)]
pub struct FlowGraph {
    /// A first comment line.
    pub header: String,
    /// `name:`.
    pub name: String,
    /// `description:`.
    pub description: String,
    /// Params in order.
    pub params: Vec<(String, Lit)>,
    /// Models: name, reference, comment.
    pub models: Vec<(String, String, String)>,
    /// Nodes in order.
    pub nodes: Vec<FlowNode>,
}

impl FlowGraph {
    /// The graph as a flow YAML file.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for line in self.header.lines() {
            let _ = writeln!(out, "# {line}");
        }
        let _ = writeln!(out, "flow: 1");
        let _ = writeln!(out, "name: {}", text(&self.name));
        let _ = writeln!(out, "description: {}", text(&self.description));
        if !self.params.is_empty() {
            let _ = writeln!(out, "params:");
            for (k, v) in &self.params {
                let _ = writeln!(out, "  {k}: {}", lit(v, false));
            }
        }
        if !self.models.is_empty() {
            let _ = writeln!(out, "models:");
            for (k, reference, comment) in &self.models {
                let _ = writeln!(out, "  {k}: {}  # {}", text(reference), one_line(comment));
            }
        }
        let _ = writeln!(out, "nodes:");
        for n in &self.nodes {
            let _ = writeln!(out, "  {}:  # {}", n.name, one_line(&n.comment));
            let _ = writeln!(out, "    op: {}", n.op);
            if !n.inputs.is_empty() {
                let _ = writeln!(out, "    in:");
                for (port, arg) in &n.inputs {
                    let v = match arg {
                        Arg::Lit(l) => lit(l, true),
                        Arg::Ref(r) => format!("${r}"),
                    };
                    let _ = writeln!(out, "      {port}: {v}");
                }
            }
        }
        out
    }
}

/// A comment kept on one line.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A literal as a YAML scalar; in node inputs, `$` is doubled (flow reads `$` as a reference).
fn lit(v: &Lit, in_node: bool) -> String {
    match v {
        Lit::Int(i) => i.to_string(),
        Lit::Float(x) => {
            let s = format!("{x:?}");
            if s.contains(['.', 'e']) {
                s
            } else {
                format!("{s}.0")
            }
        }
        Lit::Bool(b) => b.to_string(),
        Lit::Text(s) if in_node => text(&s.replace('$', "$$")),
        Lit::Text(s) => text(s),
    }
}

/// Text as a YAML scalar: plain when it cannot be read as anything else,
/// else double-quoted with every non-printable character escaped.
pub fn text(s: &str) -> String {
    if is_plain(s) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if printable(c) => out.push(c),
            c if (c as u32) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// YAML's printable characters (c-printable), less the BOM.
fn printable(c: char) -> bool {
    matches!(c as u32, 0x20..=0x7E | 0x85 | 0xA0..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF) && c != '\u{FEFF}'
}

/// Text that reads back as itself when written plain.
fn is_plain(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    first.is_ascii_alphabetic()
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.' | '/' | ',' | '(' | ')' | ':'))
        && !matches!(
            s,
            "true"
                | "True"
                | "TRUE"
                | "false"
                | "False"
                | "FALSE"
                | "null"
                | "Null"
                | "NULL"
                | "yes"
                | "no"
                | "on"
                | "off"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_plain_only_when_safe() {
        assert_eq!(text("euler"), "euler");
        assert_eq!(text("ckpt:tiny-sd15-s1.safetensors"), "ckpt:tiny-sd15-s1.safetensors");
        assert_eq!(text("a cat, on a mat"), "a cat, on a mat");
        assert_eq!(text("true"), "\"true\"");
        assert_eq!(text("a: b"), "\"a: b\"");
        assert_eq!(text("x # y"), "\"x # y\"");
        assert_eq!(text(""), "\"\"");
        assert_eq!(text("1.5"), "\"1.5\"");
        assert_eq!(text("say \"hi\"\n\u{7f}"), "\"say \\\"hi\\\"\\n\\u007F\"");
        assert_eq!(lit(&Lit::Text("cost $5".into()), true), "\"cost $$5\"");
        assert_eq!(lit(&Lit::Float(8.0), false), "8.0");
        assert_eq!(lit(&Lit::Float(1e-7), false), "1e-7");
    }
}
