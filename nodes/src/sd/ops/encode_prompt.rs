//! `sd.encode_prompt`: prompt and negative prompt to conditioning.

use anyhow::{bail, Result};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, ValueType};

use super::{compute_dtype, model_input, precision_port, text_encoder, SdCond};

pub(super) struct EncodePrompt {
    spec: OpSpec,
}

impl EncodePrompt {
    pub(super) fn new() -> Self {
        EncodePrompt {
            spec: OpSpec {
                name: "sd.encode_prompt".into(),
                version: 2,
                doc: "Encodes a prompt and a negative prompt with the model's CLIP text encoder (final \
                      hidden state, padded to 77 tokens as diffusers does) for classifier-free guidance. \
                      `clip_skip` 2 takes the penultimate layer's output instead (then the final layer \
                      norm), as A1111's \"Clip skip: 2\" and ComfyUI's CLIPSetLastLayer -2 do; SD 2.x \
                      models already condition on OpenCLIP's penultimate layer at 1."
                    .into(),
                inputs: vec![
                    PortSpec::new("model", ValueType::Model, "a Stable Diffusion 1.x/2.x model (diffusers folder or single-file checkpoint)"),
                    PortSpec::new("prompt", ValueType::Text, "what the image should show"),
                    PortSpec::with_default("negative", ValueType::Text, "", "what to steer away from; empty is encoded too"),
                    PortSpec::with_default("clip_skip", ValueType::Int, 1i64, "1 = last text-encoder layer, 2 = penultimate, ..."),
                    precision_port(),
                ],
                outputs: vec![PortSpec::new("cond", ValueType::Cond, "the prompt and negative-prompt embeddings")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for EncodePrompt {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let clip_skip = inputs.int("clip_skip")?;
        if clip_skip < 1 {
            bail!("input `clip_skip` is {clip_skip}; it must be 1 (the last layer) or more");
        }
        let te = text_encoder(ctx, model_input(inputs, "model")?, compute_dtype(inputs, ctx)?)?;
        let (prompt, negative) = (inputs.text("prompt")?, inputs.opt_text("negative")?.unwrap_or(""));
        for (what, text) in [("prompt", prompt), ("negative prompt", negative)] {
            if let Some(warning) = te.cut_off_warning(what, text)? {
                ctx.message(&warning);
            }
        }
        let cond = te.encode_skip(prompt, clip_skip as usize)?;
        let uncond = te.encode_skip(negative, clip_skip as usize)?;
        Ok(Outputs::single("cond", SdCond::new(cond, uncond).into_value()))
    }
}
