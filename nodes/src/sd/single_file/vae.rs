//! The KL VAE of an original-layout checkpoint (`first_stage_model.*`) or
//! of a standalone VAE file (the same names without prefix, as in
//! ComfyUI's `models/vae/`; or a diffusers `AutoencoderKL` file), renamed to
//! the diffusers names [`crate::sd::vae::AutoencoderKl`] reads, with its
//! config from the shapes.
//!
//! LDM layout: `encoder.down.{i}.block.{j}` ResNets (`nin_shortcut` for the
//! 1x1 shortcut) and `encoder.down.{i}.downsample.conv`;
//! `decoder.up.{i}` counted from the FULL resolution (diffusers counts its
//! up blocks from the latent side); `{encoder,decoder}.mid.{block_1, attn_1,
//! block_2}` with the attention's q/k/v/proj_out stored as 1x1 convolutions
//! (linear layers in diffusers); `norm_out`; `quant_conv`, `post_quant_conv`.
//! Conventions not in the file: 32 groups per group norm, latent scaling
//! 0.18215 (SD 1.x/2.x).

use anyhow::{bail, Context, Result};

use super::backend::{Fix, RenameTable, Source};
use super::weights::Weights;
use crate::sd::config::VaeConfig;

/// What was inferred: the diffusers config and the renaming.
#[derive(Debug)]
pub struct VaeLayout {
    /// The equivalent `vae/config.json`.
    pub config: VaeConfig,
    /// diffusers name -> checkpoint tensor.
    pub table: RenameTable,
}

fn count(w: &Weights, prefix: &str) -> usize {
    (0..).take_while(|i| w.index().keys().any(|k| k.starts_with(&format!("{prefix}{i}.")))).count()
}

/// The diffusers name of an LDM VAE tensor (below the prefix); `None` for
/// names that are not part of the VAE.
fn rename(rest: &str, levels: usize) -> Result<Option<(String, Fix)>> {
    let (side, tail) = match rest.split_once('.') {
        Some((side @ ("encoder" | "decoder"), tail)) => (side, tail),
        _ if rest.starts_with("quant_conv.") || rest.starts_with("post_quant_conv.") => {
            return Ok(Some((rest.to_string(), Fix::Keep)))
        }
        _ => return Ok(None),
    };
    let resnet = |t: &str| t.replace("nin_shortcut.", "conv_shortcut.");
    let new = if let Some(t) = tail.strip_prefix("down.").or_else(|| tail.strip_prefix("up.")) {
        let (i, t) = t.split_once('.').context("level index")?;
        let i: usize = i.parse().with_context(|| format!("level `{i}`"))?;
        let (group, i) = if side == "encoder" {
            ("down_blocks", i)
        } else {
            ("up_blocks", levels.checked_sub(i + 1).context("level")?)
        };
        if let Some(t) = t.strip_prefix("block.") {
            format!("{group}.{i}.resnets.{}", resnet(t))
        } else if let Some(t) = t.strip_prefix("downsample.").or_else(|| t.strip_prefix("upsample.")) {
            format!("{group}.{i}.{}.0.{t}", if side == "encoder" { "downsamplers" } else { "upsamplers" })
        } else {
            bail!("unexpected VAE tensor `{rest}`")
        }
    } else if let Some(t) = tail.strip_prefix("mid.") {
        if let Some(t) = t.strip_prefix("block_1.") {
            format!("mid_block.resnets.0.{}", resnet(t))
        } else if let Some(t) = t.strip_prefix("block_2.") {
            format!("mid_block.resnets.1.{}", resnet(t))
        } else if let Some(t) = t.strip_prefix("attn_1.") {
            let (part, p) = t.split_once('.').context("attention tensor")?;
            let (to, fix) = match part {
                "norm" => ("group_norm", Fix::Keep),
                "q" => ("to_q", Fix::Squeeze),
                "k" => ("to_k", Fix::Squeeze),
                "v" => ("to_v", Fix::Squeeze),
                "proj_out" => ("to_out.0", Fix::Squeeze),
                _ => bail!("unexpected VAE attention tensor `{rest}`"),
            };
            return Ok(Some((format!("{side}.mid_block.attentions.0.{to}.{p}"), fix)));
        } else {
            bail!("unexpected VAE tensor `{rest}`")
        }
    } else if let Some(t) = tail.strip_prefix("norm_out.") {
        format!("conv_norm_out.{t}")
    } else if tail.starts_with("conv_in.") || tail.starts_with("conv_out.") {
        tail.to_string()
    } else {
        bail!("unexpected VAE tensor `{rest}`")
    };
    Ok(Some((format!("{side}.{new}"), Fix::Keep)))
}

/// Infers the VAE under `prefix` (`first_stage_model.`, or `""` for a
/// standalone VAE file).
pub fn infer(w: &Weights, prefix: &str) -> Result<VaeLayout> {
    if w.meta(&format!("{prefix}encoder.down_blocks.0.resnets.0.conv1.weight")).is_some() {
        return infer_diffusers(w, prefix);
    }
    let shape = |name: &str| w.shape(&format!("{prefix}{name}"));
    let levels = count(w, &format!("{prefix}encoder.down."));
    if levels == 0 {
        bail!("no VAE encoder levels (`{prefix}encoder.down.0.*`) in `{}`", w.path().display());
    }
    let channels = (0..levels)
        .map(|i| Ok(shape(&format!("encoder.down.{i}.block.0.conv1.weight"))?[0]))
        .collect::<Result<Vec<_>>>()?;
    let layers = count(w, &format!("{prefix}encoder.down.0.block."));
    let up_levels = count(w, &format!("{prefix}decoder.up."));
    if up_levels != levels {
        bail!("the VAE encoder has {levels} levels and its decoder {up_levels}");
    }
    let mut table = RenameTable::new();
    for key in w.index().keys() {
        let Some(rest) = key.strip_prefix(prefix) else { continue };
        if let Some((name, fix)) = rename(rest, levels)? {
            table.insert(name, Source { name: key.clone(), fix });
        }
    }
    let config = VaeConfig {
        in_channels: shape("encoder.conv_in.weight")?[1],
        out_channels: shape("decoder.conv_out.weight")?[0],
        down_block_types: vec!["DownEncoderBlock2D".into(); levels],
        up_block_types: vec!["UpDecoderBlock2D".into(); levels],
        block_out_channels: channels,
        layers_per_block: layers,
        latent_channels: shape("decoder.conv_in.weight")?[1],
        use_quant_conv: w.meta(&format!("{prefix}quant_conv.weight")).is_some(),
        use_post_quant_conv: w.meta(&format!("{prefix}post_quant_conv.weight")).is_some(),
        mid_block_add_attention: w.meta(&format!("{prefix}encoder.mid.attn_1.q.weight")).is_some(),
        ..VaeConfig::default()
    };
    Ok(VaeLayout { config, table })
}

/// A VAE already in diffusers names (a diffusers `vae/` weights file).
fn infer_diffusers(w: &Weights, prefix: &str) -> Result<VaeLayout> {
    let shape = |name: &str| w.shape(&format!("{prefix}{name}"));
    let levels = count(w, &format!("{prefix}encoder.down_blocks."));
    let channels = (0..levels)
        .map(|i| Ok(shape(&format!("encoder.down_blocks.{i}.resnets.0.conv1.weight"))?[0]))
        .collect::<Result<Vec<_>>>()?;
    let table = w
        .index()
        .keys()
        .filter_map(|k| {
            let rest = k.strip_prefix(prefix)?;
            // Older diffusers files keep the attention as 1x1 convolutions.
            let fix = if rest.contains(".attentions.") { Fix::Squeeze } else { Fix::Keep };
            Some((rest.to_string(), Source { name: k.clone(), fix }))
        })
        .collect();
    let has = |name: &str| w.meta(&format!("{prefix}{name}")).is_some();
    let config = VaeConfig {
        in_channels: shape("encoder.conv_in.weight")?[1],
        out_channels: shape("decoder.conv_out.weight")?[0],
        down_block_types: vec!["DownEncoderBlock2D".into(); levels],
        up_block_types: vec!["UpDecoderBlock2D".into(); levels],
        block_out_channels: channels,
        layers_per_block: count(w, &format!("{prefix}encoder.down_blocks.0.resnets.")),
        latent_channels: shape("decoder.conv_in.weight")?[1],
        use_quant_conv: has("quant_conv.weight"),
        use_post_quant_conv: has("post_quant_conv.weight"),
        mid_block_add_attention: count(w, &format!("{prefix}encoder.mid_block.attentions.")) > 0,
        ..VaeConfig::default()
    };
    Ok(VaeLayout { config, table })
}
