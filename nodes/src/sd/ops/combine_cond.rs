//! `sd.combine_cond`: ComfyUI's ConditioningCombine for flow's conds.

use anyhow::{Context, Result};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, ValueType};

use super::SdCond;

pub(super) struct CombineCond {
    spec: OpSpec,
}

impl CombineCond {
    pub(super) fn new() -> Self {
        CombineCond {
            spec: OpSpec {
                name: "sd.combine_cond".into(),
                version: 1,
                doc: "Combines two conds (ComfyUI's ConditioningCombine): the sampler runs every prompt \
                      embedding of both and averages their predictions, the negative prompts likewise, \
                      before guidance. An embedding already present on its side is not added twice."
                    .into(),
                inputs: vec![
                    PortSpec::new("a", ValueType::Cond, "conditioning from sd.encode_prompt or sd.combine_cond"),
                    PortSpec::new("b", ValueType::Cond, "conditioning to combine with `a`"),
                ],
                outputs: vec![PortSpec::new("cond", ValueType::Cond, "the combined conditioning")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

/// The conditioning of input `port`.
fn cond_input<'a>(inputs: &'a Inputs, port: &str) -> Result<&'a SdCond> {
    inputs
        .value(port)?
        .as_object::<SdCond>()
        .with_context(|| format!("input `{port}` should be conditioning from sd.encode_prompt"))
}

impl Op for CombineCond {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, _ctx: &OpContext) -> Result<Outputs> {
        let combined = cond_input(inputs, "a")?.combine(cond_input(inputs, "b")?)?;
        Ok(Outputs::single("cond", combined.into_value()))
    }
}
