//! The text encoder of an original-layout checkpoint, renamed to the
//! transformers `CLIPTextModel` names (inside `text_model.`) that
//! [`crate::sd::clip::ClipTextModel`] reads, with its config from the shapes.
//!
//! * SD 1.x: `cond_stage_model.transformer.[text_model.]*` is already a
//!   transformers CLIP (OpenAI CLIP ViT-L/14's text tower); only the prefix
//!   goes. Conventions: heads of width 64, quick_gelu.
//! * SD 2.x: `cond_stage_model.model.*` is an OpenCLIP text tower
//!   (`transformer.resblocks.{i}` with fused `attn.in_proj_weight/bias`,
//!   `ln_1`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`, `positional_embedding`,
//!   `ln_final`). SD 2.x conditions on the penultimate layer's output
//!   followed by `ln_final`, so the model is built without its last layer
//!   (diffusers' SD 2.x text encoder has 23 of OpenCLIP ViT-H's 24).
//!   Conventions: heads of width 64, exact (erf) GELU.

use anyhow::{bail, Result};

use super::backend::{Fix, RenameTable, Source};
use super::weights::Weights;
use crate::sd::config::ClipTextConfig;

/// Width of one attention head in both families' text encoders.
const HEAD_WIDTH: usize = 64;

/// Layers present in the file under `prefix` + `layers.` style names.
fn count_layers(w: &Weights, prefix: &str) -> usize {
    (0..).take_while(|i| w.index().keys().any(|k| k.starts_with(&format!("{prefix}{i}.")))).count()
}

fn heads(hidden: usize) -> Result<usize> {
    if hidden % HEAD_WIDTH != 0 {
        bail!("the text encoder is {hidden} wide, not a multiple of the SD head width {HEAD_WIDTH}");
    }
    Ok(hidden / HEAD_WIDTH)
}

/// The SD 1.x CLIP under `prefix` (`cond_stage_model.transformer.`, with or
/// without `text_model.` below it).
pub fn infer_clip(w: &Weights, prefix: &str) -> Result<(ClipTextConfig, RenameTable)> {
    let inner = format!("{prefix}text_model.");
    let base =
        if w.meta(&format!("{inner}embeddings.token_embedding.weight")).is_some() { inner } else { prefix.to_string() };
    let token = w.shape(&format!("{base}embeddings.token_embedding.weight"))?.to_vec();
    let positions = w.shape(&format!("{base}embeddings.position_embedding.weight"))?[0];
    let layers = count_layers(w, &format!("{base}encoder.layers."));
    let intermediate = w.shape(&format!("{base}encoder.layers.0.mlp.fc1.weight"))?[0];
    let config = ClipTextConfig {
        vocab_size: token[0],
        hidden_size: token[1],
        intermediate_size: intermediate,
        num_hidden_layers: layers,
        num_attention_heads: heads(token[1])?,
        max_position_embeddings: positions,
        hidden_act: "quick_gelu".into(),
        ..ClipTextConfig::default()
    };
    let table = w
        .index()
        .keys()
        .filter_map(|k| k.strip_prefix(base.as_str()).map(|rest| (rest.to_string(), Source::keep(k.clone()))))
        .collect();
    Ok((config, table))
}

/// The SD 2.x OpenCLIP text tower under `prefix` (`cond_stage_model.model.`).
pub fn infer_open_clip(w: &Weights, prefix: &str) -> Result<(ClipTextConfig, RenameTable)> {
    let token = w.shape(&format!("{prefix}token_embedding.weight"))?.to_vec();
    let positions = w.shape(&format!("{prefix}positional_embedding"))?[0];
    let blocks = format!("{prefix}transformer.resblocks.");
    let stored = count_layers(w, &blocks);
    if stored < 2 {
        bail!("the OpenCLIP text encoder has {stored} layer(s); SD 2.x uses the penultimate one");
    }
    let intermediate = w.shape(&format!("{blocks}0.mlp.c_fc.weight"))?[0];
    let config = ClipTextConfig {
        vocab_size: token[0],
        hidden_size: token[1],
        intermediate_size: intermediate,
        num_hidden_layers: stored - 1,
        num_attention_heads: heads(token[1])?,
        max_position_embeddings: positions,
        hidden_act: "gelu".into(),
        ..ClipTextConfig::default()
    };
    let mut table = RenameTable::new();
    let mut put = |new: String, old: String, fix: Fix| table.insert(new, Source { name: old, fix });
    put("embeddings.token_embedding.weight".into(), format!("{prefix}token_embedding.weight"), Fix::Keep);
    put("embeddings.position_embedding.weight".into(), format!("{prefix}positional_embedding"), Fix::Keep);
    for p in ["weight", "bias"] {
        put(format!("final_layer_norm.{p}"), format!("{prefix}ln_final.{p}"), Fix::Keep);
    }
    for i in 0..stored - 1 {
        let (from, to) = (format!("{blocks}{i}."), format!("encoder.layers.{i}."));
        for p in ["weight", "bias"] {
            put(format!("{to}layer_norm1.{p}"), format!("{from}ln_1.{p}"), Fix::Keep);
            put(format!("{to}layer_norm2.{p}"), format!("{from}ln_2.{p}"), Fix::Keep);
            put(format!("{to}mlp.fc1.{p}"), format!("{from}mlp.c_fc.{p}"), Fix::Keep);
            put(format!("{to}mlp.fc2.{p}"), format!("{from}mlp.c_proj.{p}"), Fix::Keep);
            put(format!("{to}self_attn.out_proj.{p}"), format!("{from}attn.out_proj.{p}"), Fix::Keep);
            for (index, qkv) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                let fix = Fix::Chunk { index, parts: 3 };
                put(format!("{to}self_attn.{qkv}.{p}"), format!("{from}attn.in_proj_{p}"), fix);
            }
        }
    }
    Ok((config, table))
}
