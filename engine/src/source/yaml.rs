//! A YAML document as a tree whose every node knows where it is in the file.
//!
//! Built from saphyr-parser's event stream without recursion, with limits on
//! nesting depth and node count, so no input can overflow the stack or hang.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::location::Location;

/// Deepest nesting of lists and maps accepted in a graph file.
pub const MAX_DEPTH: usize = 64;
/// Most YAML nodes accepted in a graph file.
pub const MAX_NODES: usize = 2_000_000;

/// A YAML node with its location.
#[derive(Clone, Debug)]
pub struct Node {
    /// Where the node starts.
    pub loc: Location,
    /// Length of the node's source text in characters on its first line (for carets).
    pub len: usize,
    /// The node itself.
    pub kind: NodeKind,
}

/// What a YAML node is.
#[derive(Clone, Debug)]
pub enum NodeKind {
    /// A scalar; `plain` is false for quoted and block scalars, which are
    /// always text.
    Scalar { text: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<(Node, Node)>),
}

/// A YAML syntax error.
#[derive(Clone, Debug)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub loc: Location,
    /// What it says.
    pub message: String,
}

impl Node {
    /// The scalar text, if this is a scalar.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A short word for what this node is ("a list", "a map", "text").
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a map",
        }
    }
}

enum Frame {
    Seq { start: Span, items: Vec<Node> },
    Map { start: Span, entries: Vec<(Node, Node)>, pending_key: Option<Node> },
}

/// Parses the first document of `source`. An empty document yields `None`.
pub fn parse(source: &str) -> Result<Option<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(source);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut count = 0usize;
    loop {
        let (event, span) = match parser.next_event() {
            None => break,
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                let m = e.marker();
                return Err(SyntaxError {
                    loc: Location::new(m.line(), m.col() + 1),
                    message: e.info().to_string(),
                });
            }
        };
        count += 1;
        if count > MAX_NODES {
            return Err(SyntaxError { loc: loc_of(&span), message: "graph file has too many YAML nodes".into() });
        }
        let finished = match event {
            Event::StreamStart | Event::DocumentStart(_) | Event::Nothing => continue,
            Event::DocumentEnd | Event::StreamEnd => break,
            Event::Alias(_) => {
                return Err(SyntaxError {
                    loc: loc_of(&span),
                    message: "YAML aliases (*name) are not supported in graph files".into(),
                })
            }
            Event::Scalar(text, style, _, _) => Node {
                loc: loc_of(&span),
                len: scalar_len(&text, &span),
                kind: NodeKind::Scalar {
                    text: text.into_owned(),
                    plain: matches!(style, ScalarStyle::Plain),
                },
            },
            Event::SequenceStart(_, _) | Event::MappingStart(_, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        loc: loc_of(&span),
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                    });
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq { start: span, items: Vec::new() }
                } else {
                    Frame::Map { start: span, entries: Vec::new(), pending_key: None }
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq { start, items }) => {
                    Node { loc: loc_of(&start), len: 1, kind: NodeKind::Seq(items) }
                }
                Some(Frame::Map { start, entries, .. }) => {
                    Node { loc: loc_of(&start), len: 1, kind: NodeKind::Map(entries) }
                }
                None => continue,
            },
        };
        match stack.last_mut() {
            None => {
                root = Some(finished);
                // Only the first document counts; stop reading.
                break;
            }
            Some(Frame::Seq { items, .. }) => items.push(finished),
            Some(Frame::Map { entries, pending_key, .. }) => match pending_key.take() {
                None => *pending_key = Some(finished),
                Some(key) => entries.push((key, finished)),
            },
        }
    }
    Ok(root)
}

fn loc_of(span: &Span) -> Location {
    Location::new(span.start.line(), span.start.col() + 1)
}

fn scalar_len(text: &str, span: &Span) -> usize {
    let on_line = if span.end.line() == span.start.line() {
        span.end.col().saturating_sub(span.start.col())
    } else {
        0
    };
    if on_line > 0 {
        on_line
    } else {
        text.lines().next().map(|l| l.chars().count()).unwrap_or(0).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_one_based() {
        let root = parse("a: 1\nb:\n  - x\n").unwrap().unwrap();
        let NodeKind::Map(entries) = root.kind else { panic!("not a map") };
        assert_eq!(entries[1].0.loc, Location::new(2, 1));
        let NodeKind::Seq(items) = &entries[1].1.kind else { panic!("not a seq") };
        assert_eq!(items[0].loc, Location::new(3, 5));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = "[".repeat(100_000);
        assert!(parse(&src).is_err());
    }

    #[test]
    fn quoted_scalars_are_not_plain() {
        let root = parse("a: '1'").unwrap().unwrap();
        let NodeKind::Map(entries) = root.kind else { panic!("not a map") };
        assert!(matches!(entries[0].1.kind, NodeKind::Scalar { plain: false, .. }));
    }
}
