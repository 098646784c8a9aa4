//! `text.template`: fills `${name}` placeholders from a map of values.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

pub(crate) struct TextTemplate {
    spec: OpSpec,
}

impl TextTemplate {
    pub(crate) fn new() -> Self {
        TextTemplate {
            spec: OpSpec {
                name: "text.template".into(),
                version: 1,
                doc: "Fills `${name}` placeholders in a template with the values of `vars` \
                      (rendered as text: numbers in literal form, lists and maps as JSON). \
                      `$$` stands for `$`; a `$` followed by anything else is kept as is. A \
                      name not in `vars` is taken from the graph's params (the engine puts the \
                      params a template names into the node's cache key); a name in neither \
                      is an error."
                    .into(),
                inputs: vec![
                    PortSpec::new(
                        "template",
                        ValueType::Text,
                        "the text with `${name}` placeholders (not interpolated by the engine)",
                    )
                    .verbatim(),
                    PortSpec::optional(
                        "vars",
                        ValueType::Map,
                        "values for the placeholders, by name",
                    ),
                ],
                outputs: vec![PortSpec::new("text", ValueType::Text, "the filled-in text")],
                output: false,
                cost: Cost::Light,
            },
        }
    }
}

impl Op for TextTemplate {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let template = inputs.text("template")?;
        let vars = match inputs.get("vars") {
            None => None,
            Some(Value::Map(map)) => Some(&**map),
            Some(v) => bail!("input `vars` should be map, got {}", v.value_type()),
        };
        let param = |name: &str| ctx.provenance().params.get(name).map(Value::from_json);
        Ok(Outputs::single("text", render(template, vars, &param)?))
    }
}

/// Renders `template`, replacing `${name}` by `vars[name]` and `$$` by `$`;
/// then by the graph param `param(name)`.
fn render(
    template: &str,
    vars: Option<&BTreeMap<String, Value>>,
    param: &dyn Fn(&str) -> Option<Value>,
) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let offset = template.len() - rest.len() + dollar;
            let end = tail.find('}').ok_or_else(|| {
                anyhow!(
                    "template has a `${{` without its closing `}}` at byte {offset}: `{}`",
                    excerpt(&template[offset..])
                )
            })?;
            let name = tail[..end].trim();
            if name.is_empty() {
                bail!(
                    "template has an empty placeholder `${{{}}}` at byte {offset}",
                    &tail[..end]
                );
            }
            let value = vars
                .and_then(|vars| vars.get(name).cloned())
                .or_else(|| param(name))
                .ok_or_else(|| unknown_name(name, vars))?;
            out.push_str(&value.to_display_string());
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn unknown_name(name: &str, vars: Option<&BTreeMap<String, Value>>) -> anyhow::Error {
    let missing = match vars {
        Some(vars) if !vars.is_empty() => {
            let known: Vec<&str> = vars.keys().map(String::as_str).collect();
            format!(
                "template refers to `${{{name}}}`, which is not in `vars` (vars has: {})",
                known.join(", ")
            )
        }
        _ => format!("template refers to `${{{name}}}`, but no `vars` were given"),
    };
    anyhow!("{missing}, and the graph has no param `{name}`")
}

/// The first few characters of `s`, for error messages.
fn excerpt(s: &str) -> String {
    const MAX: usize = 24;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_vars(template: &str, vars: Option<&BTreeMap<String, Value>>) -> Result<String> {
        render(template, vars, &|name| (name == "seed").then_some(Value::Int(7)))
    }

    fn vars(entries: &[(&str, Value)]) -> BTreeMap<String, Value> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn fills_placeholders_and_escapes() {
        let v = vars(&[
            ("who", "world".into()),
            ("n", 3i64.into()),
            ("cfg", 7.5.into()),
        ]);
        assert_eq!(
            render_vars(
                "Hello ${who}, ${ n }x, cfg ${cfg}, $$5 costs $5 $",
                Some(&v)
            )
            .unwrap(),
            "Hello world, 3x, cfg 7.5, $5 costs $5 $"
        );
        assert_eq!(render_vars("$${who}", Some(&v)).unwrap(), "${who}");
        assert_eq!(
            render_vars("no placeholders", None).unwrap(),
            "no placeholders"
        );
        assert_eq!(render_vars("ünï ${who}ç", Some(&v)).unwrap(), "ünï worldç");
    }

    #[test]
    fn lists_render_as_json() {
        let v = vars(&[("xs", Value::list(vec![1i64.into(), "a".into()]))]);
        assert_eq!(render_vars("${xs}", Some(&v)).unwrap(), r#"[1,"a"]"#);
    }

    #[test]
    fn unknown_names_are_errors() {
        let v = vars(&[("a", 1i64.into()), ("b", 2i64.into())]);
        let err = render_vars("x ${c} y", Some(&v)).unwrap_err().to_string();
        assert_eq!(
            err,
            "template refers to `${c}`, which is not in `vars` (vars has: a, b), and the graph has no param `c`"
        );
        let err = render_vars("${c}", None).unwrap_err().to_string();
        assert_eq!(
            err,
            "template refers to `${c}`, but no `vars` were given, and the graph has no param `c`"
        );
    }

    #[test]
    fn params_fill_names_missing_from_vars() {
        let v = vars(&[("seed", 1i64.into())]);
        assert_eq!(render_vars("${seed}", Some(&v)).unwrap(), "1");
        assert_eq!(render_vars("${seed}", None).unwrap(), "7");
    }

    #[test]
    fn malformed_placeholders_are_errors() {
        let err = render_vars("ab ${name and more", None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "template has a `${` without its closing `}` at byte 3: `${name and more`"
        );
        let err = render_vars("x${ }", None).unwrap_err().to_string();
        assert_eq!(err, "template has an empty placeholder `${ }` at byte 1");
    }
}
