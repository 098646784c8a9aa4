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
                    PortSpec::optional(
                        "clip_layer",
                        ValueType::Int,
                        "instead of clip_skip: ComfyUI's CLIPSetLastLayer stop_at_clip_layer (-1 = last), counted over \
                         the family's whole text encoder (OpenCLIP's 24 layers for SD 2.x, whose default is -2)",
                    ),
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
        let clip_skip = match inputs.opt_int("clip_layer")? {
            None => clip_skip,
            Some(_) if clip_skip != 1 => bail!("give `clip_skip` or `clip_layer`, not both"),
            Some(layer) => skip_of_comfy_layer(layer, te.model.config().hidden_act == "gelu")?,
        };
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

/// `clip_skip` for ComfyUI's `stop_at_clip_layer` (negative, counted from
/// the end of the family's whole text encoder). SD 1.x's CLIP is loaded
/// whole (-N is clip_skip N); SD 2.x's OpenCLIP (recognised by its exact
/// GELU) is loaded without its last layer, as diffusers does and SD 2.x was
/// trained (ComfyUI's default -2 there is clip_skip 1).
fn skip_of_comfy_layer(layer: i64, open_clip: bool) -> Result<i64> {
    if layer >= 0 {
        bail!("input `clip_layer` is {layer}; ComfyUI counts layers from the end: -1 is the last, -2 the one before");
    }
    match (open_clip, -layer) {
        (false, n) => Ok(n),
        (true, 1) => bail!(
            "input `clip_layer` -1 on an SD 2.x model is OpenCLIP's very last layer, which SD 2.x models do not \
             condition on and flow does not load; -2 is their usual layer"
        ),
        (true, n) => Ok(n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::skip_of_comfy_layer;

    #[test]
    fn comfy_layers_count_over_the_whole_encoder() {
        assert_eq!(skip_of_comfy_layer(-1, false).unwrap(), 1);
        assert_eq!(skip_of_comfy_layer(-2, false).unwrap(), 2);
        assert_eq!(skip_of_comfy_layer(-2, true).unwrap(), 1);
        assert_eq!(skip_of_comfy_layer(-3, true).unwrap(), 2);
        assert!(skip_of_comfy_layer(-1, true).unwrap_err().to_string().contains("-2 is their usual layer"));
        assert!(skip_of_comfy_layer(0, false).is_err());
    }
}
