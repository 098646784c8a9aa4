//! `text.join`: joins the items of a list into one text.

use anyhow::Result;
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

pub(crate) struct TextJoin {
    spec: OpSpec,
}

impl TextJoin {
    pub(crate) fn new() -> Self {
        TextJoin {
            spec: OpSpec {
                name: "text.join".into(),
                version: 1,
                doc: "Joins the items of a list into one text, separated by `sep`. Items are \
                      rendered as text: text as is, numbers in literal form, lists and maps as \
                      JSON, tensors as a short description."
                    .into(),
                inputs: vec![
                    PortSpec::new("items", ValueType::List, "the values to join"),
                    PortSpec::with_default(
                        "sep",
                        ValueType::Text,
                        "",
                        "the text put between two items",
                    ),
                ],
                outputs: vec![PortSpec::new("text", ValueType::Text, "the joined text")],
                output: false,
                cost: Cost::Light,
            },
        }
    }
}

impl Op for TextJoin {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, _ctx: &OpContext) -> Result<Outputs> {
        let items = inputs.list("items")?;
        let sep = inputs.opt_text("sep")?.unwrap_or("");
        let parts: Vec<String> = items.iter().map(Value::to_display_string).collect();
        Ok(Outputs::single("text", parts.join(sep)))
    }
}
