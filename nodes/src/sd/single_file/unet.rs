//! The UNet of an original-layout checkpoint (`model.diffusion_model.*`,
//! the LDM `openaimodel` names): its architecture read from the tensor
//! shapes as ComfyUI's `detect_unet_config` does, and the table renaming
//! its tensors to the diffusers `UNet2DConditionModel` names.
//!
//! LDM layout: `input_blocks.0` is `conv_in`; then, per resolution level,
//! one `input_blocks.k` per ResNet (`.0`, with its transformer at `.1` on
//! attention levels) and one holding the downsampler (`.0.op`) between
//! levels; `middle_block.{0,1,2}` = ResNet, transformer, ResNet;
//! `output_blocks.k` mirror the input blocks with one ResNet more per level
//! and the upsampler (`.1.conv` or `.2.conv`) closing each level but the
//! last; `time_embed.{0,2}`, `out.{0,2}` the time MLP and the output norm
//! and convolution.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::backend::{RenameTable, Source};
use super::weights::Weights;
use crate::sd::config::{PerBlock, UNetConfig};

/// How a family sets the attention heads, which the weights do not record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadRule {
    /// The same number of heads at every level (SD 1.x: 8).
    Count(usize),
    /// Heads of a fixed width (SD 2.x: 64, so heads = channels / 64).
    Width(usize),
}

/// One resolution level of the UNet as found in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Level {
    /// Output channels of the level's ResNets.
    pub channels: usize,
    /// ResNets in the down path.
    pub res_blocks: usize,
    /// Transformer blocks per attention layer (0: no attention).
    pub depth: usize,
}

/// What was inferred: the diffusers config and the renaming.
#[derive(Debug)]
pub struct UNetLayout {
    /// The equivalent `unet/config.json`.
    pub config: UNetConfig,
    /// diffusers name -> checkpoint tensor.
    pub table: RenameTable,
    /// The levels, top (full resolution) first.
    pub levels: Vec<Level>,
    /// Transformer blocks of the mid block.
    pub mid_depth: usize,
    /// Width of the text embeddings attended to.
    pub context_dim: usize,
}

/// `(k, sub, rest)` of `"{group}.{k}.{sub}.{rest}"`.
fn split_block<'a>(key: &'a str, group: &str) -> Option<(usize, usize, &'a str)> {
    let tail = key.strip_prefix(group)?.strip_prefix('.')?;
    let (k, tail) = tail.split_once('.')?;
    let (sub, rest) = tail.split_once('.')?;
    Some((k.parse().ok()?, sub.parse().ok()?, rest))
}

/// The diffusers name of an LDM `ResBlock` tensor (`rest` below the block).
fn resnet_name(rest: &str) -> Option<String> {
    const MAP: [(&str, &str); 6] = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    MAP.iter().find_map(|(from, to)| rest.strip_prefix(from).map(|tail| format!("{to}{tail}")))
}

/// Sub-blocks of one `input_blocks.k` / `output_blocks.k` / `middle_block`:
/// sub index -> tensor names below it (relative).
type Block<'a> = BTreeMap<usize, Vec<&'a str>>;

/// Tensors under `prefix` grouped by their `{group}.{k}` block.
struct Blocks<'a> {
    keys: Vec<&'a str>,
}

impl<'a> Blocks<'a> {
    fn group(&self, group: &str) -> BTreeMap<usize, Block<'a>> {
        let mut out: BTreeMap<usize, Block<'a>> = BTreeMap::new();
        for key in &self.keys {
            if let Some((k, sub, rest)) = split_block(key, group) {
                out.entry(k).or_default().entry(sub).or_default().push(rest);
            }
        }
        out
    }

    fn middle(&self) -> Block<'a> {
        let mut out: Block<'a> = BTreeMap::new();
        for key in &self.keys {
            let Some(tail) = key.strip_prefix("middle_block.") else { continue };
            if let Some((sub, rest)) = tail.split_once('.').and_then(|(s, r)| Some((s.parse().ok()?, r))) {
                out.entry(sub).or_default().push(rest);
            }
        }
        out
    }
}

/// What one sub-block of an LDM block is.
#[derive(Debug, PartialEq, Eq)]
enum Part {
    Resnet,
    Transformer { depth: usize },
    Downsample,
    Upsample,
}

fn classify(rests: &[&str], what: &str) -> Result<Part> {
    let has = |name: &str| rests.contains(&name);
    if has("in_layers.0.weight") {
        return Ok(Part::Resnet);
    }
    if has("proj_in.weight") {
        let depth =
            (0..).take_while(|i| rests.iter().any(|r| r.starts_with(&format!("transformer_blocks.{i}.")))).count();
        return Ok(Part::Transformer { depth });
    }
    if has("op.weight") {
        return Ok(Part::Downsample);
    }
    if has("conv.weight") {
        return Ok(Part::Upsample);
    }
    bail!("{what} is neither a ResNet, a transformer nor a resampler ({})", rests.join(", "))
}

/// The tensors below a sub-block renamed into `to`.
fn rename_part(table: &mut RenameTable, prefix: &str, from: &str, rests: &[&str], part: &Part, to: &str) -> Result<()> {
    for rest in rests {
        let new = match part {
            Part::Resnet => {
                resnet_name(rest).with_context(|| format!("unexpected ResNet tensor `{prefix}{from}.{rest}`"))?
            }
            Part::Transformer { .. } => rest.to_string(),
            Part::Downsample => rest
                .strip_prefix("op.")
                .map(|t| format!("conv.{t}"))
                .with_context(|| format!("unexpected downsampler tensor `{prefix}{from}.{rest}`"))?,
            Part::Upsample => rest.to_string(),
        };
        table.insert(format!("{to}.{new}"), Source::keep(format!("{prefix}{from}.{rest}")));
    }
    Ok(())
}

/// Infers the UNet under `prefix` (`model.diffusion_model.`).
pub fn infer(w: &Weights, prefix: &str, heads: HeadRule) -> Result<UNetLayout> {
    let keys: Vec<&str> = w.index().keys().filter_map(|k| k.strip_prefix(prefix)).collect();
    if keys.iter().any(|k| k.starts_with("label_emb.")) {
        bail!("this UNet is class-conditioned (`{prefix}label_emb`: SDXL, SD 2.x unCLIP); flow runs SD 1.x/2.x UNets");
    }
    let blocks = Blocks { keys: keys.clone() };
    let shape = |name: &str| w.shape(&format!("{prefix}{name}"));
    let conv_in = shape("input_blocks.0.0.weight")?.to_vec();
    if conv_in.len() != 4 {
        bail!("`{prefix}input_blocks.0.0.weight` should be a convolution, has shape {conv_in:?}");
    }
    let mut table = RenameTable::new();
    let mut put = |new: String, old: &str| table.insert(new, Source::keep(format!("{prefix}{old}")));
    for rest in ["weight", "bias"] {
        put(format!("conv_in.{rest}"), &format!("input_blocks.0.0.{rest}"));
        put(format!("time_embedding.linear_1.{rest}"), &format!("time_embed.0.{rest}"));
        put(format!("time_embedding.linear_2.{rest}"), &format!("time_embed.2.{rest}"));
        put(format!("conv_norm_out.{rest}"), &format!("out.0.{rest}"));
        put(format!("conv_out.{rest}"), &format!("out.2.{rest}"));
    }
    let time_dim = shape("time_embed.0.weight")?[0];
    let conv_out = shape("out.2.weight")?.to_vec();

    // The down path.
    let mut levels: Vec<Level> = Vec::new();
    let mut current: Option<Level> = None;
    let mut context_dim = None;
    let mut linear = None;
    let input = blocks.group("input_blocks");
    for (&k, block) in input.iter().filter(|(k, _)| **k > 0) {
        let level = levels.len();
        let parts = block
            .iter()
            .map(|(sub, rests)| Ok((*sub, classify(rests, &format!("`{prefix}input_blocks.{k}.{sub}`"))?, rests)));
        let parts: Vec<(usize, Part, &Vec<&str>)> = parts.collect::<Result<_>>()?;
        match parts.as_slice() {
            [(0, Part::Downsample, rests)] => {
                let to = format!("down_blocks.{level}.downsamplers.0");
                rename_part(&mut table, prefix, &format!("input_blocks.{k}.0"), rests, &Part::Downsample, &to)?;
                levels.push(
                    current.take().with_context(|| format!("`{prefix}input_blocks.{k}` downsamples an empty level"))?,
                );
            }
            [(0, Part::Resnet, res), rest @ ..] => {
                let channels = shape(&format!("input_blocks.{k}.0.out_layers.3.weight"))?[0];
                let depth = match rest {
                    [] => 0,
                    [(1, Part::Transformer { depth }, _)] => *depth,
                    _ => bail!("`{prefix}input_blocks.{k}` has an unexpected layout"),
                };
                let lvl = current.get_or_insert(Level { channels, res_blocks: 0, depth });
                if lvl.channels != channels || lvl.depth != depth {
                    bail!("`{prefix}input_blocks.{k}` differs from the other ResNets of its level (channels or attention)");
                }
                let j = lvl.res_blocks;
                lvl.res_blocks += 1;
                rename_part(
                    &mut table,
                    prefix,
                    &format!("input_blocks.{k}.0"),
                    res,
                    &Part::Resnet,
                    &format!("down_blocks.{level}.resnets.{j}"),
                )?;
                if let [(1, part, rests)] = rest {
                    let to = format!("down_blocks.{level}.attentions.{j}");
                    rename_part(&mut table, prefix, &format!("input_blocks.{k}.1"), rests, part, &to)?;
                    context_dim.get_or_insert(
                        shape(&format!("input_blocks.{k}.1.transformer_blocks.0.attn2.to_k.weight"))?[1],
                    );
                    linear.get_or_insert(shape(&format!("input_blocks.{k}.1.proj_in.weight"))?.len() == 2);
                }
            }
            _ => bail!("`{prefix}input_blocks.{k}` has an unexpected layout"),
        }
    }
    levels.push(current.take().with_context(|| format!("`{prefix}input_blocks` end with a downsampler"))?);
    let n = levels.len();

    // The mid block: ResNet, transformer, ResNet.
    let mid = blocks.middle();
    let mid_parts: Vec<(usize, Part, &Vec<&str>)> = mid
        .iter()
        .map(|(sub, rests)| Ok((*sub, classify(rests, &format!("`{prefix}middle_block.{sub}`"))?, rests)))
        .collect::<Result<_>>()?;
    let mid_depth = match mid_parts.as_slice() {
        [(0, Part::Resnet, a), (1, Part::Transformer { depth }, t), (2, Part::Resnet, b)] => {
            rename_part(&mut table, prefix, "middle_block.0", a, &Part::Resnet, "mid_block.resnets.0")?;
            rename_part(
                &mut table,
                prefix,
                "middle_block.1",
                t,
                &Part::Transformer { depth: *depth },
                "mid_block.attentions.0",
            )?;
            rename_part(&mut table, prefix, "middle_block.2", b, &Part::Resnet, "mid_block.resnets.1")?;
            *depth
        }
        _ => bail!(
            "the UNet's middle block is not ResNet + transformer + ResNet; flow runs the SD 1.x/2.x mid block only"
        ),
    };
    let context_dim = *context_dim.get_or_insert(shape("middle_block.1.transformer_blocks.0.attn2.to_k.weight")?[1]);
    let linear = *linear.get_or_insert(shape("middle_block.1.proj_in.weight")?.len() == 2);

    // The up path: level u mirrors down level n - 1 - u with one ResNet more.
    let mut up = 0;
    let mut j = 0;
    for (&k, block) in &blocks.group("output_blocks") {
        if up >= n {
            bail!("`{prefix}output_blocks.{k}` is past the last of the {n} levels");
        }
        let parts: Vec<(usize, Part, &Vec<&str>)> = block
            .iter()
            .map(|(sub, rests)| Ok((*sub, classify(rests, &format!("`{prefix}output_blocks.{k}.{sub}`"))?, rests)))
            .collect::<Result<_>>()?;
        let want = &levels[n - 1 - up];
        let mut upsampled = false;
        for (sub, part, rests) in &parts {
            let from = format!("output_blocks.{k}.{sub}");
            let to = match (sub, part) {
                (0, Part::Resnet) => format!("up_blocks.{up}.resnets.{j}"),
                (1, Part::Transformer { depth }) if *depth == want.depth => format!("up_blocks.{up}.attentions.{j}"),
                (1 | 2, Part::Upsample) => {
                    upsampled = true;
                    format!("up_blocks.{up}.upsamplers.0")
                }
                _ => bail!("`{prefix}{from}` does not mirror the down path (level {} of {n})", n - 1 - up),
            };
            rename_part(&mut table, prefix, &from, rests, part, &to)?;
        }
        let has_attention = parts.iter().any(|(_, p, _)| matches!(p, Part::Transformer { .. }));
        if has_attention != (want.depth > 0) {
            bail!("`{prefix}output_blocks.{k}`: attention differs from the matching down level");
        }
        j += 1;
        if upsampled || j == want.res_blocks + 1 {
            if j != want.res_blocks + 1 || (upsampled == (up + 1 == n)) {
                bail!(
                    "`{prefix}output_blocks`: level {up} of the up path has {j} ResNets, {} expected",
                    want.res_blocks + 1
                );
            }
            up += 1;
            j = 0;
        }
    }
    if up != n {
        bail!("`{prefix}output_blocks` cover {up} of the {n} levels");
    }
    if levels[n - 1].depth > 0 && levels[n - 1].depth != mid_depth {
        bail!(
            "the deepest level's transformers ({}) and the mid block's ({mid_depth}) differ in depth",
            levels[n - 1].depth
        );
    }

    let config = unet_config(&levels, mid_depth, context_dim, linear, heads, (&conv_in, &conv_out), time_dim)?;
    Ok(UNetLayout { config, table, levels, mid_depth, context_dim })
}

/// The diffusers config of the levels found.
fn unet_config(
    levels: &[Level],
    mid_depth: usize,
    context_dim: usize,
    linear: bool,
    heads: HeadRule,
    (conv_in, conv_out): (&[usize], &[usize]),
    time_dim: usize,
) -> Result<UNetConfig> {
    let channels: Vec<usize> = levels.iter().map(|l| l.channels).collect();
    let head_counts = match heads {
        HeadRule::Count(h) => PerBlock::One(h),
        HeadRule::Width(width) => {
            if let Some(c) = channels.iter().find(|c| *c % width != 0) {
                bail!("{c} UNet channels cannot be split into attention heads of width {width}");
            }
            PerBlock::Many(channels.iter().map(|c| c / width).collect())
        }
    };
    let down = |l: &Level| if l.depth > 0 { "CrossAttnDownBlock2D" } else { "DownBlock2D" }.to_string();
    let up = |l: &Level| if l.depth > 0 { "CrossAttnUpBlock2D" } else { "UpBlock2D" }.to_string();
    Ok(UNetConfig {
        in_channels: conv_in[1],
        out_channels: conv_out[0],
        conv_in_kernel: conv_in[2],
        conv_out_kernel: conv_out.get(2).copied().unwrap_or(3),
        down_block_types: levels.iter().map(down).collect(),
        up_block_types: levels.iter().rev().map(up).collect(),
        block_out_channels: channels.clone(),
        layers_per_block: PerBlock::Many(levels.iter().map(|l| l.res_blocks).collect()),
        // Levels without attention carry the mid block's depth: the mid
        // block reads the deepest level's value.
        transformer_layers_per_block: PerBlock::Many(
            levels.iter().map(|l| if l.depth > 0 { l.depth } else { mid_depth }).collect(),
        ),
        cross_attention_dim: PerBlock::One(context_dim),
        attention_head_dim: match heads {
            HeadRule::Count(_) => head_counts.clone(),
            HeadRule::Width(w) => PerBlock::One(w),
        },
        num_attention_heads: match heads {
            HeadRule::Count(_) => None,
            HeadRule::Width(_) => Some(head_counts),
        },
        use_linear_projection: linear,
        time_embedding_dim: (time_dim != 4 * channels[0]).then_some(time_dim),
        ..UNetConfig::default()
    })
}
