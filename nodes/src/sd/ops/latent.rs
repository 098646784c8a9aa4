//! `sd.empty_latent` and `latent.upscale`.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use flow_engine::limits::{check_image_size, check_memory};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

use super::{model_input, vae_config};
use crate::image::interpolate::{center_crop, crop, interpolate, Mode};

pub(super) struct EmptyLatent {
    spec: OpSpec,
}

impl EmptyLatent {
    pub(super) fn new() -> Self {
        EmptyLatent {
            spec: OpSpec {
                name: "sd.empty_latent".into(),
                version: 1,
                doc: "A zero latent for an image of the given size (txt2img starts from it; `sd.sample` adds the \
                      noise). The latent is the image size divided by the model's VAE scale factor \
                      (2^(VAE blocks - 1): 8 for real SD models), with the VAE's latent channels; without a \
                      model, 4 channels and a factor of 8."
                    .into(),
                inputs: vec![
                    PortSpec::optional("model", ValueType::Model, "the model the latent is for"),
                    PortSpec::with_default("width", ValueType::Int, 512i64, "image width in pixels, a multiple of the factor"),
                    PortSpec::with_default("height", ValueType::Int, 512i64, "image height in pixels, a multiple of the factor"),
                    PortSpec::with_default("batch", ValueType::Int, 1i64, "number of images"),
                ],
                outputs: vec![PortSpec::new("latent", ValueType::Latent, "zeros [batch, 4, height/f, width/f]")],
                output: false,
                cost: Cost::Light,
            },
        }
    }
}

impl Op for EmptyLatent {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let (channels, f) = match inputs.get("model") {
            Some(_) => {
                let cfg = vae_config(model_input(inputs, "model")?)?;
                (cfg.latent_channels, cfg.scale_factor())
            }
            None => (4, 8),
        };
        let (width, height, batch) = (inputs.int("width")?, inputs.int("height")?, inputs.int("batch")?);
        for (name, v) in [("width", width), ("height", height)] {
            if v <= 0 || v % f as i64 != 0 {
                bail!("input `{name}` is {v}; it must be a positive multiple of {f}");
            }
        }
        if !(1..=4096).contains(&batch) {
            bail!("input `batch` is {batch}; it must be between 1 and 4096");
        }
        check_image_size(width as u64, height as u64, "the image of this latent")?;
        let shape = (batch as usize, channels, height as usize / f, width as usize / f);
        check_memory((batch as u64) * (channels * (height as usize / f) * (width as usize / f)) as u64 * 4, "the latent")?;
        let latent = Tensor::zeros(shape, DType::F32, ctx.device())?;
        Ok(Outputs::single("latent", Value::tensor(ValueType::Latent, latent)))
    }
}

pub(super) struct LatentUpscale {
    spec: OpSpec,
}

/// The methods of `latent.upscale`.
const METHODS: &[&str] = &["nearest", "nearest-exact", "bilinear", "bicubic", "area"];

impl LatentUpscale {
    pub(super) fn new() -> Self {
        LatentUpscale {
            spec: OpSpec {
                name: "latent.upscale".into(),
                version: 2,
                doc: "Resizes latents (hires-fix style: upscale, then `sd.sample` with denoise < 1), as torch's \
                      `F.interpolate` does (align_corners false, no antialiasing) and so as ComfyUI's \
                      LatentUpscale / LatentUpscaleBy do. The size: `scale` times the latent (round half to \
                      even, at least 1; 2 when nothing is given), or `width` / `height` in image pixels \
                      (the latent is 1/8 of them, rounded down); with only one of them, the other follows \
                      the aspect ratio and is at least 64 pixels, as in ComfyUI. `crop: center` first cuts \
                      the latent to the new aspect ratio. Methods: `nearest` (torch `nearest`), \
                      `nearest-exact`, `bilinear`, `bicubic` (A = -0.75) and `area` (adaptive average \
                      pooling)."
                    .into(),
                inputs: vec![
                    PortSpec::new("latent", ValueType::Latent, "latents [N, C, h, w]"),
                    PortSpec::optional("scale", ValueType::Float, "the factor, > 0 (default 2 without width or height)"),
                    PortSpec::optional("width", ValueType::Int, "the new width in image pixels (8 per latent pixel)"),
                    PortSpec::optional("height", ValueType::Int, "the new height in image pixels (8 per latent pixel)"),
                    PortSpec::with_default("method", ValueType::Text, "nearest", "how to resample").one_of(METHODS),
                    PortSpec::with_default("crop", ValueType::Text, "disabled", "`center`: cut to the new aspect ratio first")
                        .one_of(&["disabled", "center"]),
                ],
                outputs: vec![PortSpec::new("latent", ValueType::Latent, "the resized latents")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

/// The latent size (h, w) for the inputs, from a latent of `h` × `w`.
fn target_size((h, w): (usize, usize), scale: Option<f64>, width: Option<i64>, height: Option<i64>) -> Result<(usize, usize)> {
    let px = |name: &str, v: i64| -> Result<usize> {
        if v < 8 {
            bail!("input `{name}` is {v}; it must be at least 8 pixels (one latent pixel)");
        }
        Ok(v as usize)
    };
    // ComfyUI: the missing side is max(64, round(latent side * given / other latent side)) pixels.
    let follow = |side: usize, given: usize, other: usize| ((side as f64 * given as f64 / other as f64).round_ties_even() as usize).max(64);
    match (width, height) {
        (None, None) => {
            let s = scale.unwrap_or(2.0);
            if !(s.is_finite() && s > 0.0) {
                bail!("input `scale` is {s}; it must be a positive number");
            }
            let size = |v: usize| ((v as f64 * s).round_ties_even() as usize).max(1);
            Ok((size(h), size(w)))
        }
        _ if scale.is_some() => bail!("give either `scale` or `width`/`height`, not both"),
        (Some(wd), Some(ht)) => Ok((px("height", ht)? / 8, px("width", wd)? / 8)),
        (Some(wd), None) => {
            let wd = px("width", wd)?;
            Ok((follow(h, wd, w) / 8, wd / 8))
        }
        (None, Some(ht)) => {
            let ht = px("height", ht)?;
            Ok((ht / 8, follow(w, ht, h) / 8))
        }
    }
}

impl Op for LatentUpscale {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, _ctx: &OpContext) -> Result<Outputs> {
        let latent = inputs.tensor("latent")?;
        let (n, c, h, w) = latent.dims4()?;
        let (th, tw) = target_size((h, w), inputs.opt_float("scale")?, inputs.opt_int("width")?, inputs.opt_int("height")?)?;
        // The SD convention: an image is 8 times its latent.
        check_image_size(tw as u64 * 8, th as u64 * 8, "the image of the upscaled latent")?;
        check_memory((n * c) as u64 * (th * tw) as u64 * 4, "the upscaled latent")?;
        let method = inputs.opt_text("method")?.unwrap_or("nearest");
        let center = inputs.opt_text("crop")?.unwrap_or("disabled") == "center";
        let margins = if center { center_crop((w, h), (tw, th)) } else { (0, 0) };
        let out = if method == "nearest" {
            let cropped = latent.narrow(3, margins.0, w - 2 * margins.0)?.narrow(2, margins.1, h - 2 * margins.1)?;
            cropped.upsample_nearest2d(th, tw)?
        } else {
            let mode = match method {
                "nearest-exact" => Mode::NearestExact,
                "bilinear" => Mode::Bilinear,
                "bicubic" => Mode::Bicubic,
                "area" => Mode::Area,
                other => bail!("input `method` is `{other}`; use one of {}", METHODS.join(", ")),
            };
            let data = latent.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let (data, (ch, cw)) = if center {
                (crop(&data, n * c, (h, w), margins), (h - 2 * margins.1, w - 2 * margins.0))
            } else {
                (data, (h, w))
            };
            let resized = interpolate(&data, n * c, (ch, cw), (th, tw), mode);
            Tensor::from_vec(resized, (n, c, th, tw), latent.device())?
        };
        Ok(Outputs::single("latent", Value::tensor(ValueType::Latent, out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_comfyui() {
        let t = |s, w, h| target_size((8, 12), s, w, h).unwrap();
        assert_eq!(t(None, None, None), (16, 24));
        assert_eq!(t(Some(1.5), None, None), (12, 18));
        assert_eq!(t(Some(0.3125), None, None), (2, 4), "2.5 and 3.75 round half to even");
        assert_eq!(t(None, Some(200), Some(100)), (12, 25));
        assert_eq!(t(None, None, Some(128)), (16, 24));
        assert_eq!(t(None, Some(16), None), (8, 2), "the other side is at least 64 pixels");
        assert!(target_size((8, 8), Some(2.0), Some(64), None).is_err());
        assert!(target_size((8, 8), None, Some(4), None).is_err());
        assert!(target_size((8, 8), Some(f64::NAN), None, None).is_err());
    }

    #[test]
    fn bilinear_agrees_with_candles_torch_port() {
        let x: Vec<f32> = (0..2 * 4 * 5 * 7).map(|i| ((i * 37) % 23) as f32 / 7.0 - 1.0).collect();
        let t = Tensor::from_vec(x.clone(), (2, 4, 5, 7), &candle_core::Device::Cpu).unwrap();
        for (oh, ow) in [(8, 11), (3, 4), (10, 14)] {
            let want = t.upsample_bilinear2d(oh, ow, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let got = interpolate(&x, 8, (5, 7), (oh, ow), Mode::Bilinear);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{oh}x{ow}: {a} vs {b}");
            }
        }
    }
}
