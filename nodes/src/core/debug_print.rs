//! `debug.print`: shows a value on the console and passes it on.

use anyhow::Result;
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

pub(crate) struct DebugPrint {
    spec: OpSpec,
}

impl DebugPrint {
    pub(crate) fn new() -> Self {
        DebugPrint {
            spec: OpSpec {
                name: "debug.print".into(),
                version: 1,
                doc: "Prints a value on the console (text as is, numbers in literal form, lists \
                      and maps as JSON, tensors as kind, shape and dtype) and passes it on \
                      unchanged. An output node: graphs run what it prints."
                    .into(),
                inputs: vec![PortSpec::new("value", ValueType::Any, "the value to print")],
                outputs: vec![PortSpec::new("value", ValueType::Any, "the same value")],
                output: true,
                cost: Cost::Light,
            },
        }
    }
}

impl Op for DebugPrint {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let value = inputs.get("value").cloned().unwrap_or(Value::Null);
        ctx.show(&value.to_display_string());
        Ok(Outputs::single("value", value))
    }
}
