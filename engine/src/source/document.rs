//! The graph file's structure (format version 1), read from the located YAML
//! tree. Structural mistakes are collected as diagnostics; references, ops and
//! types are checked later by validation.

use crate::diagnostics::{did_you_mean, Diagnostic, Diagnostics};
use crate::source::location::Location;
use crate::source::refs::is_identifier;
use crate::source::yaml::{self, Node, NodeKind};

/// The only format version this engine reads.
pub const FORMAT_VERSION: i64 = 1;
/// Largest graph file accepted.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

const TOP_KEYS: [&str; 7] = ["flow", "name", "description", "params", "models", "defaults", "nodes"];
const NODE_KEYS: [&str; 4] = ["op", "in", "device", "cache"];

/// A name with where it was written.
#[derive(Clone, Debug)]
pub struct Named {
    /// The name.
    pub name: String,
    /// Where it starts.
    pub loc: Location,
    /// Its length in characters.
    pub len: usize,
}

/// A node as written in the file.
#[derive(Clone, Debug)]
pub struct NodeDecl {
    /// Node id.
    pub id: Named,
    /// Op name.
    pub op: Named,
    /// Inputs: port name and value tree, in file order.
    pub inputs: Vec<(Named, Node)>,
    /// `device:` if given.
    pub device: Option<Named>,
    /// `cache:` if given.
    pub cache: Option<bool>,
}

/// A graph file as written, before validation.
#[derive(Clone, Debug, Default)]
pub struct GraphDoc {
    /// `name:`.
    pub name: Option<String>,
    /// `description:`.
    pub description: Option<String>,
    /// `params:`: name and value tree.
    pub params: Vec<(Named, Node)>,
    /// `models:`: name and reference text.
    pub models: Vec<(Named, Named)>,
    /// `defaults:`: input port name and value tree, applied to every node
    /// whose op has that input and that does not set it.
    pub defaults: Vec<(Named, Node)>,
    /// `nodes:`.
    pub nodes: Vec<NodeDecl>,
}

/// Decodes file bytes as UTF-8, or reports where the first invalid byte is.
pub fn decode_utf8(bytes: &[u8]) -> Result<&str, Diagnostic> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::general(format!(
            "graph file is {} bytes; the limit is {MAX_FILE_BYTES}",
            bytes.len()
        )));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let col = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
        Diagnostic::at(Location::new(line, col), 1, "invalid UTF-8: graph files must be UTF-8 text")
    })
}

/// Reads the structure of a graph file; every structural error goes to `diags`.
pub fn read(source: &str, diags: &mut Diagnostics) -> GraphDoc {
    let mut doc = GraphDoc::default();
    let root = match yaml::parse(source) {
        Ok(Some(root)) => root,
        Ok(None) => {
            diags.push(Diagnostic::at(Location::new(1, 1), 1, "the graph file is empty").with_help(Some(
                "a graph file starts with `flow: 1` and has a `nodes:` map".into(),
            )));
            return doc;
        }
        Err(e) => {
            diags.push(Diagnostic::at(e.loc, 1, format!("YAML syntax error: {}", e.message)));
            return doc;
        }
    };
    let NodeKind::Map(entries) = &root.kind else {
        diags.push(Diagnostic::at(root.loc, root.len, format!("a graph file is a map, not {}", root.describe())));
        return doc;
    };
    let mut version_seen = false;
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in entries {
        let Some(k) = scalar_key(key, diags) else { continue };
        if seen.contains(&k) {
            diags.push(Diagnostic::at(key.loc, key.len, format!("duplicate key `{k}`")));
            continue;
        }
        seen.push(k);
        match k {
            "flow" => {
                version_seen = true;
                read_version(value, diags);
            }
            "name" => doc.name = text_of(value, "name", diags),
            "description" => doc.description = text_of(value, "description", diags),
            "params" => doc.params = named_entries(value, "params", diags),
            "models" => doc.models = read_models(value, diags),
            "defaults" => doc.defaults = named_entries(value, "defaults", diags),
            "nodes" => doc.nodes = read_nodes(value, diags),
            other => diags.push(
                Diagnostic::at(key.loc, key.len, format!("unknown top-level key `{other}`"))
                    .with_help(did_you_mean(other, TOP_KEYS).or_else(|| Some(format!("valid keys: {}", TOP_KEYS.join(", "))))),
            ),
        }
    }
    if !version_seen {
        diags.push(
            Diagnostic::at(root.loc, 1, "missing format version `flow: 1`")
                .with_help(Some("add `flow: 1` as the first line".into())),
        );
    }
    if !seen.contains(&"nodes") {
        diags.push(Diagnostic::at(root.loc, 1, "missing `nodes:` map"));
    }
    doc
}

fn scalar_key<'a>(key: &'a Node, diags: &mut Diagnostics) -> Option<&'a str> {
    match key.as_scalar() {
        Some(k) => Some(k),
        None => {
            diags.push(Diagnostic::at(key.loc, key.len, format!("a key must be a name, not {}", key.describe())));
            None
        }
    }
}

fn read_version(value: &Node, diags: &mut Diagnostics) {
    let ok = matches!(&value.kind, NodeKind::Scalar { text, plain: true } if text.trim() == FORMAT_VERSION.to_string());
    if !ok {
        let shown = value.as_scalar().unwrap_or("?");
        diags.push(
            Diagnostic::at(value.loc, value.len, format!("unsupported format version `{shown}`"))
                .with_help(Some(format!("this flow reads version {FORMAT_VERSION}: write `flow: {FORMAT_VERSION}`"))),
        );
    }
}

fn text_of(value: &Node, what: &str, diags: &mut Diagnostics) -> Option<String> {
    match value.as_scalar() {
        Some(s) => Some(s.to_string()),
        None => {
            diags.push(Diagnostic::at(value.loc, value.len, format!("`{what}` must be text, not {}", value.describe())));
            None
        }
    }
}

fn map_entries<'a>(value: &'a Node, what: &str, diags: &mut Diagnostics) -> &'a [(Node, Node)] {
    match &value.kind {
        NodeKind::Map(entries) => entries,
        NodeKind::Scalar { text, plain: true } if text.is_empty() || text == "~" || text == "null" => &[],
        _ => {
            diags.push(Diagnostic::at(value.loc, value.len, format!("`{what}` must be a map, not {}", value.describe())));
            &[]
        }
    }
}

/// Entries of a map whose keys are identifiers; bad or duplicate keys are reported.
fn named_entries(value: &Node, what: &str, diags: &mut Diagnostics) -> Vec<(Named, Node)> {
    let mut out: Vec<(Named, Node)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (key, v) in map_entries(value, what, diags) {
        let Some(k) = scalar_key(key, diags) else { continue };
        if !is_identifier(k) {
            diags.push(
                Diagnostic::at(key.loc, key.len, format!("invalid name `{k}` in `{what}`"))
                    .with_help(Some("names start with a letter or `_` and contain letters, digits, `_` or `-`".into())),
            );
            continue;
        }
        if !seen.insert(k) {
            diags.push(Diagnostic::at(key.loc, key.len, format!("duplicate key `{k}` in `{what}`")));
            continue;
        }
        out.push((Named { name: k.to_string(), loc: key.loc, len: key.len }, v.clone()));
    }
    out
}

fn read_models(value: &Node, diags: &mut Diagnostics) -> Vec<(Named, Named)> {
    let mut out = Vec::new();
    for (name, v) in named_entries(value, "models", diags) {
        match v.as_scalar() {
            Some(r) if !r.trim().is_empty() => {
                out.push((name, Named { name: r.trim().to_string(), loc: v.loc, len: v.len }))
            }
            _ => diags.push(Diagnostic::at(
                v.loc,
                v.len,
                format!("model `{}` must be a reference text (a path, `hf:org/repo`, a catalog name or `tiny:KIND`)", name.name),
            )),
        }
    }
    out
}

fn read_nodes(value: &Node, diags: &mut Diagnostics) -> Vec<NodeDecl> {
    let mut out = Vec::new();
    for (id, body) in named_entries(value, "nodes", diags) {
        if let Some(node) = read_node(id, &body, diags) {
            out.push(node);
        }
    }
    out
}

fn read_node(id: Named, body: &Node, diags: &mut Diagnostics) -> Option<NodeDecl> {
    let NodeKind::Map(entries) = &body.kind else {
        diags.push(
            Diagnostic::at(body.loc, body.len, format!("node `{}` must be a map with `op:` and `in:`, not {}", id.name, body.describe())),
        );
        return None;
    };
    let mut op = None;
    let mut inputs = Vec::new();
    let mut device = None;
    let mut cache = None;
    let mut seen: Vec<&str> = Vec::new();
    for (key, v) in entries {
        let Some(k) = scalar_key(key, diags) else { continue };
        if seen.contains(&k) {
            diags.push(Diagnostic::at(key.loc, key.len, format!("duplicate key `{k}` in node `{}`", id.name)));
            continue;
        }
        seen.push(k);
        match k {
            "op" => match v.as_scalar() {
                Some(name) => op = Some(Named { name: name.to_string(), loc: v.loc, len: v.len }),
                None => diags.push(Diagnostic::at(v.loc, v.len, format!("`op` must be an op name, not {}", v.describe()))),
            },
            "in" => inputs = named_entries(v, "in", diags),
            "device" => match v.as_scalar() {
                Some(d) => device = Some(Named { name: d.to_string(), loc: v.loc, len: v.len }),
                None => diags.push(Diagnostic::at(v.loc, v.len, "`device` must be `cpu`, `cuda:N` or `auto`")),
            },
            "cache" => match v.as_scalar() {
                Some("true") => cache = Some(true),
                Some("false") => cache = Some(false),
                _ => diags.push(Diagnostic::at(v.loc, v.len, "`cache` must be `true` or `false`")),
            },
            other => diags.push(
                Diagnostic::at(key.loc, key.len, format!("unknown key `{other}` in node `{}`", id.name))
                    .with_help(did_you_mean(other, NODE_KEYS).or_else(|| Some(format!("valid keys: {}", NODE_KEYS.join(", "))))),
            ),
        }
    }
    let Some(op) = op else {
        diags.push(Diagnostic::at(id.loc, id.len, format!("node `{}` has no `op:`", id.name)));
        return None;
    };
    Some(NodeDecl { id, op, inputs, device, cache })
}
