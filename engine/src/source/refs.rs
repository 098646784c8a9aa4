//! References inside input values: `$name`, `$node.port`, `${name}` inside
//! text, and `$$` for a literal `$`.

/// A reference to a param, a model or a node output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Param, model or node name.
    pub name: String,
    /// Output port, for `$node.port`.
    pub port: Option<String>,
    /// Character offset of the `$` within the scalar.
    pub offset: usize,
    /// Length of the reference text in characters.
    pub len: usize,
}

/// A piece of an interpolated string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// A `${...}` reference.
    Ref(Reference),
}

/// What a text scalar means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringExpr {
    /// Plain text (after `$$` unescaping).
    Text(String),
    /// The whole value is a `$reference`.
    Ref(Reference),
    /// Text with `${...}` references.
    Interp(Vec<Piece>),
}

/// A malformed reference, with its character offset in the scalar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefError {
    /// Character offset of the problem.
    pub offset: usize,
    /// Length to underline.
    pub len: usize,
    /// What is wrong.
    pub message: String,
}

/// True if `s` is a valid name for a node, param, model or port.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse_target(body: &str, offset: usize, len: usize) -> Result<Reference, RefError> {
    let (name, port) = match body.split_once('.') {
        Some((n, p)) => (n, Some(p)),
        None => (body, None),
    };
    let ok = is_identifier(name) && port.is_none_or(is_identifier);
    if !ok {
        return Err(RefError {
            offset,
            len,
            message: format!(
                "invalid reference `${body}`: write `$name` or `$node.port` (use `$$` for a literal `$`)"
            ),
        });
    }
    Ok(Reference { name: name.to_string(), port: port.map(str::to_string), offset, len })
}

/// Parses a text scalar into plain text, a reference, or an interpolation.
pub fn parse_string(s: &str) -> Result<StringExpr, RefError> {
    if !s.contains('$') {
        return Ok(StringExpr::Text(s.to_string()));
    }
    if s.starts_with('$') && !s.starts_with("$$") && !s.starts_with("${") {
        let len = s.chars().count();
        return parse_target(&s[1..], 0, len).map(StringExpr::Ref);
    }
    let chars: Vec<char> = s.chars().collect();
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '$' && chars.get(i + 1) == Some(&'$') {
            text.push('$');
            i += 2;
        } else if c == '$' && chars.get(i + 1) == Some(&'{') {
            let Some(close) = chars[i + 2..].iter().position(|&c| c == '}') else {
                return Err(RefError {
                    offset: i,
                    len: chars.len() - i,
                    message: "unclosed `${`: write `${name}` (use `$$` for a literal `$`)".into(),
                });
            };
            let body: String = chars[i + 2..i + 2 + close].iter().collect();
            let len = close + 3;
            let reference = parse_target(&body, i, len)?;
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Ref(reference));
            i += len;
        } else {
            text.push(c);
            i += 1;
        }
    }
    if pieces.is_empty() {
        return Ok(StringExpr::Text(text));
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(StringExpr::Interp(pieces))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, port: Option<&str>, offset: usize, len: usize) -> Reference {
        Reference { name: name.into(), port: port.map(Into::into), offset, len }
    }

    #[test]
    fn whole_value_references() {
        assert_eq!(parse_string("$seed").unwrap(), StringExpr::Ref(r("seed", None, 0, 5)));
        assert_eq!(parse_string("$cond.neg").unwrap(), StringExpr::Ref(r("cond", Some("neg"), 0, 9)));
        assert!(parse_string("$seed is nice").is_err());
    }

    #[test]
    fn interpolation_and_escapes() {
        assert_eq!(parse_string("costs $$5").unwrap(), StringExpr::Text("costs $5".into()));
        assert_eq!(parse_string("$$x").unwrap(), StringExpr::Text("$x".into()));
        assert_eq!(
            parse_string("out/${name}-${seed}.png").unwrap(),
            StringExpr::Interp(vec![
                Piece::Text("out/".into()),
                Piece::Ref(r("name", None, 4, 7)),
                Piece::Text("-".into()),
                Piece::Ref(r("seed", None, 12, 7)),
                Piece::Text(".png".into()),
            ])
        );
        assert!(parse_string("a ${b").is_err());
        assert!(parse_string("a ${}").is_err());
    }
}
