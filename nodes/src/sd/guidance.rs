//! Classifier-free guidance around the UNet: one batched UNet call for the
//! positive and negative prompt embeddings, the outputs of several
//! embeddings of one side averaged (ComfyUI's `calc_cond_batch` for
//! full-area conds of strength 1), and diffusers' mix
//! `uncond + cfg * (cond - uncond)`.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

use super::unet::UNet2DConditionModel;

/// The UNet outputs for `latents: (N, C, H, W)` at `timestep`: the average
/// over the `positive` embeddings and, when `negative` is given, the
/// average over those. Embeddings are `(1, L, D)` (or `(N, L, D)`) and are
/// moved to the latents' device; everything runs in one UNet batch. The
/// results are float32.
pub fn predict(
    unet: &UNet2DConditionModel,
    latents: &Tensor,
    timestep: f64,
    positive: &[Tensor],
    negative: Option<&[Tensor]>,
) -> Result<(Tensor, Option<Tensor>)> {
    if positive.is_empty() || negative.is_some_and(|n| n.is_empty()) {
        bail!("guidance needs at least one prompt embedding on each side");
    }
    let n = latents.dim(0)?;
    let expand = |t: &Tensor| -> Result<Tensor> {
        let t = t.to_device(latents.device())?;
        Ok(if t.dim(0)? == n { t } else { t.repeat((n, 1, 1))? })
    };
    let negative = negative.unwrap_or(&[]);
    let embeddings: Vec<Tensor> = negative.iter().chain(positive).map(expand).collect::<Result<_>>()?;
    let groups = embeddings.len();
    let context = if groups == 1 { embeddings[0].clone() } else { Tensor::cat(&embeddings, 0)? };
    let input = if groups == 1 { latents.clone() } else { Tensor::cat(&vec![latents; groups], 0)? };
    let out = unet.forward(&input, timestep, &context)?.to_dtype(DType::F32)?;
    let average = |first: usize, count: usize| -> Result<Tensor> {
        if count == 1 {
            return Ok(out.narrow(0, first * n, n)?);
        }
        let mut sum = out.narrow(0, first * n, n)?;
        for g in first + 1..first + count {
            sum = (sum + out.narrow(0, g * n, n)?)?;
        }
        Ok((sum / count as f64)?)
    };
    let uncond = if negative.is_empty() { None } else { Some(average(0, negative.len())?) };
    Ok((average(negative.len(), positive.len())?, uncond))
}

/// diffusers' classifier-free guidance over several embeddings per side:
/// with `cfg > 1` `uncond + cfg * (cond - uncond)` of the averaged outputs,
/// otherwise the positive outputs alone (the negative side is not run).
pub fn guided_prediction(
    unet: &UNet2DConditionModel,
    latents: &Tensor,
    timestep: f64,
    positive: &[Tensor],
    negative: &[Tensor],
    cfg: f64,
) -> Result<Tensor> {
    if cfg <= 1.0 {
        return Ok(predict(unet, latents, timestep, positive, None)?.0);
    }
    let (c, u) = predict(unet, latents, timestep, positive, Some(negative))?;
    let u = u.expect("the negative side was run");
    Ok((&u + ((c - &u)? * cfg)?)?)
}

/// The classifier-free-guided model output for `latents: (N, C, H, W)` at
/// `timestep` for one prompt and one negative prompt embedding
/// (`(1, L, D)` or `(N, L, D)`). With `cfg > 1` the UNet runs once on the
/// batch `[uncond x N, cond x N]` and the result is
/// `uncond + cfg * (cond - uncond)`, as diffusers does; otherwise it runs on
/// `cond` alone. The result is float32.
pub fn guided_eps(
    unet: &UNet2DConditionModel,
    latents: &Tensor,
    timestep: f64,
    cond: &Tensor,
    uncond: &Tensor,
    cfg: f64,
) -> Result<Tensor> {
    guided_prediction(unet, latents, timestep, std::slice::from_ref(cond), std::slice::from_ref(uncond), cfg)
}
