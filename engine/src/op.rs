//! What a node type is: its ports, its documentation, and the code it runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use candle_core::Tensor;

use crate::context::OpContext;
use crate::effects::Effects;
use crate::types::ValueType;
use crate::value::Value;

/// One input or output port of an op.
#[derive(Clone, Debug)]
pub struct PortSpec {
    /// Port name as written in graph files.
    pub name: &'static str,
    /// Accepted (inputs) or produced (outputs) type.
    pub ty: ValueType,
    /// Default value of an input; an input without default that is not
    /// optional is required.
    pub default: Option<Value>,
    /// Optional input: may be left out, and the op sees no value.
    pub optional: bool,
    /// One line of documentation.
    pub doc: &'static str,
    /// False for text inputs whose `${...}` and `$$` the op interprets itself
    /// (e.g. a template); a whole-value `$reference` is still resolved.
    pub interpolate: bool,
    /// The only values a text input accepts (`None`: any text). Literals are
    /// checked when the graph is validated, interpolated text when the node runs.
    pub choices: Option<&'static [&'static str]>,
}

impl PortSpec {
    /// A required input or an output.
    pub fn new(name: &'static str, ty: ValueType, doc: &'static str) -> Self {
        PortSpec { name, ty, default: None, optional: false, doc, interpolate: true, choices: None }
    }

    /// An input with a default value.
    pub fn with_default(name: &'static str, ty: ValueType, default: impl Into<Value>, doc: &'static str) -> Self {
        PortSpec { name, ty, default: Some(default.into()), optional: false, doc, interpolate: true, choices: None }
    }

    /// An optional input without default.
    pub fn optional(name: &'static str, ty: ValueType, doc: &'static str) -> Self {
        PortSpec { name, ty, default: None, optional: true, doc, interpolate: true, choices: None }
    }

    /// Leaves `${...}` and `$$` in this text input to the op.
    pub fn verbatim(mut self) -> Self {
        self.interpolate = false;
        self
    }

    /// Restricts a text input to `choices` (listed by `flow ops`; an unknown
    /// literal is a located validation error with a did-you-mean).
    pub fn one_of(mut self, choices: &'static [&'static str]) -> Self {
        self.choices = Some(choices);
        self
    }

    /// `Err` naming the valid values when `value` is text this port does not
    /// accept; values of other types pass (the type check reports those).
    pub fn check_choice(&self, value: &Value) -> Result<(), String> {
        let (Some(choices), Value::Text(text)) = (self.choices, value) else { return Ok(()) };
        if choices.contains(&&**text) {
            return Ok(());
        }
        let hint = crate::diagnostics::did_you_mean(text, choices.iter().copied())
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        Err(format!("`{text}` is not one of {}{hint}", choices.join(", ")))
    }

    /// True if a graph must give this input.
    pub fn is_required(&self) -> bool {
        self.default.is_none() && !self.optional
    }
}

/// Where an op's work runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cost {
    /// Microseconds of work: run inline on the scheduler thread.
    Light,
    /// Real computation or I/O: run on the blocking pool, holding a slot of the
    /// node's device lane.
    Heavy,
}

/// The static description of an op.
#[derive(Clone, Debug)]
pub struct OpSpec {
    /// Op name as written in graph files, e.g. `text.join`.
    pub name: String,
    /// Bumped whenever the op's results change for the same inputs; part of
    /// every cache key of the op.
    pub version: u32,
    /// Documentation shown by `flow ops`.
    pub doc: String,
    /// Input ports.
    pub inputs: Vec<PortSpec>,
    /// Output ports; the first is the one `$node` refers to.
    pub outputs: Vec<PortSpec>,
    /// Output nodes have side effects (writing files, printing); the engine
    /// runs the nodes they need.
    pub output: bool,
    /// Where the op's work runs.
    pub cost: Cost,
}

impl OpSpec {
    /// The input port called `name`.
    pub fn input(&self, name: &str) -> Option<&PortSpec> {
        self.inputs.iter().find(|p| p.name == name)
    }

    /// The output port called `name`.
    pub fn output_port(&self, name: &str) -> Option<&PortSpec> {
        self.outputs.iter().find(|p| p.name == name)
    }
}

/// What an op declares, beyond its inputs, that changes its result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fingerprint {
    /// The result depends on the inputs alone.
    Pure,
    /// The result also depends on outside content, summarised by this text
    /// (e.g. the content hash of a file the op reads).
    Content(String),
    /// The result cannot be predicted: the op runs every time.
    Volatile(String),
}

/// The values an op receives, by port name, with defaults filled in.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    values: BTreeMap<String, Value>,
}

impl Inputs {
    /// Inputs from a map of port name to value.
    pub fn new(values: BTreeMap<String, Value>) -> Self {
        Inputs { values }
    }

    /// The value of a port, if given (a `null` counts as not given).
    pub fn get(&self, port: &str) -> Option<&Value> {
        self.values.get(port).filter(|v| !matches!(v, Value::Null))
    }

    /// The value of a required port.
    pub fn value(&self, port: &str) -> Result<&Value> {
        self.get(port).ok_or_else(|| anyhow!("input `{port}` is missing"))
    }

    /// All given values by port name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// A required text input.
    pub fn text(&self, port: &str) -> Result<&str> {
        let v = self.value(port)?;
        v.as_text().ok_or_else(|| type_error(port, "text", v))
    }

    /// An optional text input.
    pub fn opt_text(&self, port: &str) -> Result<Option<&str>> {
        self.get(port).map(|_| self.text(port)).transpose()
    }

    /// A required int input.
    pub fn int(&self, port: &str) -> Result<i64> {
        let v = self.value(port)?;
        v.as_int().ok_or_else(|| type_error(port, "int", v))
    }

    /// An optional int input.
    pub fn opt_int(&self, port: &str) -> Result<Option<i64>> {
        self.get(port).map(|_| self.int(port)).transpose()
    }

    /// A required number input (int or float).
    pub fn float(&self, port: &str) -> Result<f64> {
        let v = self.value(port)?;
        v.as_f64().ok_or_else(|| type_error(port, "float", v))
    }

    /// An optional number input.
    pub fn opt_float(&self, port: &str) -> Result<Option<f64>> {
        self.get(port).map(|_| self.float(port)).transpose()
    }

    /// A required bool input.
    pub fn bool(&self, port: &str) -> Result<bool> {
        match self.value(port)? {
            Value::Bool(b) => Ok(*b),
            v => Err(type_error(port, "bool", v)),
        }
    }

    /// A required list input.
    pub fn list(&self, port: &str) -> Result<&[Value]> {
        match self.value(port)? {
            Value::List(items) => Ok(items),
            v => Err(type_error(port, "list", v)),
        }
    }

    /// A required tensor-like input.
    pub fn tensor(&self, port: &str) -> Result<&Tensor> {
        let v = self.value(port)?;
        v.as_tensor().ok_or_else(|| type_error(port, "tensor", v))
    }

    /// An optional tensor-like input.
    pub fn opt_tensor(&self, port: &str) -> Result<Option<&Tensor>> {
        self.get(port).map(|_| self.tensor(port)).transpose()
    }

    /// A required path input, resolved against the graph file's folder when
    /// relative.
    pub fn path(&self, port: &str, ctx: &OpContext) -> Result<PathBuf> {
        Ok(ctx.resolve_path(Path::new(self.text(port)?)))
    }
}

fn type_error(port: &str, want: &str, got: &Value) -> anyhow::Error {
    anyhow!("input `{port}` should be {want}, got {}", got.value_type())
}

/// The values an op produces, by output port name, and its [`Effects`]
/// (files written, text shown).
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    values: BTreeMap<String, Value>,
    effects: Effects,
}

impl Outputs {
    /// No outputs yet.
    pub fn new() -> Self {
        Outputs::default()
    }

    /// Outputs with a single port.
    pub fn single(port: &str, value: impl Into<Value>) -> Self {
        let mut out = Outputs::new();
        out.set(port, value);
        out
    }

    /// Sets the value of a port.
    pub fn set(&mut self, port: &str, value: impl Into<Value>) {
        self.values.insert(port.to_string(), value.into());
    }

    /// The value of a port.
    pub fn get(&self, port: &str) -> Option<&Value> {
        self.values.get(port)
    }

    /// All values by port name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of ports set.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True if no port is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// What the op did besides computing values (the engine records it).
    pub fn effects(&self) -> &Effects {
        &self.effects
    }

    /// Records the op's effects (the engine does this after the op ran).
    pub fn set_effects(&mut self, effects: Effects) {
        self.effects = effects;
    }

    /// Approximate bytes held (for cache budgets).
    pub fn byte_size(&self) -> usize {
        self.effects.byte_size() + self.values.iter().map(|(k, v)| k.len() + v.byte_size()).sum::<usize>()
    }

    /// Bytes of the outputs' tensors that live on a GPU (part of
    /// [`Outputs::byte_size`]).
    pub fn device_byte_size(&self) -> usize {
        self.values.values().map(Value::device_byte_size).sum()
    }

    /// Checks that every declared output is present with an acceptable type.
    pub fn check_against(&self, spec: &OpSpec) -> Result<()> {
        for port in &spec.outputs {
            match self.values.get(port.name) {
                None => bail!("op `{}` produced no value for output `{}`", spec.name, port.name),
                Some(v) if !port.ty.accepts(v.value_type()) => bail!(
                    "op `{}` produced {} for output `{}` of type {}",
                    spec.name,
                    v.value_type(),
                    port.name,
                    port.ty
                ),
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// The code behind a node type.
pub trait Op: Send + Sync + 'static {
    /// Ports, documentation and scheduling class.
    fn spec(&self) -> &OpSpec;

    /// Computes the outputs from the inputs. Long-running ops report progress
    /// and check for cancellation through `ctx` between steps.
    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs>;

    /// Declares what outside the inputs changes the result. Called while
    /// planning, with the node's literal inputs only (inputs fed by links are
    /// absent): an op that needs a linked value to fingerprint itself returns
    /// [`Fingerprint::Volatile`]. `graph_dir` resolves relative paths.
    fn fingerprint(&self, _literal_inputs: &Inputs, _graph_dir: &Path) -> Result<Fingerprint> {
        Ok(Fingerprint::Pure)
    }

    /// True for ops whose result is text the user reads as it is produced
    /// (an LLM's answer). A cached node of such an op is looked up even when
    /// nothing that runs needs its value, so that its text is shown again.
    fn shows_result(&self) -> bool {
        false
    }

    /// Local files and folders whose edits change this node's result (files
    /// it reads, its script): `flow watch` re-runs when one is saved. Called
    /// with the node's literal inputs, like [`Op::fingerprint`].
    fn watched_paths(&self, _literal_inputs: &Inputs, _graph_dir: &Path) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// A shared op.
pub type OpRef = Arc<dyn Op>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_accept_listed_text_and_name_the_others() {
        let port = PortSpec::with_default("mode", ValueType::Text, "fast", "how").one_of(&["fast", "exact"]);
        assert_eq!(port.check_choice(&Value::text("exact")), Ok(()));
        let err = port.check_choice(&Value::text("exakt")).unwrap_err();
        assert_eq!(err, "`exakt` is not one of fast, exact (did you mean `exact`?)");
        let err = port.check_choice(&Value::text("zzz")).unwrap_err();
        assert_eq!(err, "`zzz` is not one of fast, exact");
        // Other types are the type check's business.
        assert_eq!(port.check_choice(&Value::Int(3)), Ok(()));
        let free = PortSpec::new("text", ValueType::Text, "any");
        assert_eq!(free.check_choice(&Value::text("anything")), Ok(()));
    }
}
