//! The diffusers `AutoencoderKL` (SD 1.x/2.x VAE).
//!
//! [`AutoencoderKl::encode`] and [`AutoencoderKl::decode`] work on the raw
//! (unscaled) latent `z`, as the diffusers module does; the pipeline-level
//! [`AutoencoderKl::image_to_latent`] and [`AutoencoderKl::latent_to_image`]
//! apply `scaling_factor` and the [0, 1] <-> [-1, 1] image mapping where the
//! diffusers pipelines do.

mod decoder;
mod encoder;
mod mid;

use anyhow::Result;
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use self::decoder::Decoder;
use self::encoder::Encoder;
use super::config::VaeConfig;
use super::layers::{conv2d, Activation, Conv2d, ResnetConfig};

/// The diagonal Gaussian the encoder predicts, over the raw latent `z`.
#[derive(Clone, Debug)]
pub struct LatentDist {
    /// `latent_dist.mean`, `(N, latent_channels, h, w)`.
    pub mean: Tensor,
    /// `latent_dist.std = exp(0.5 * clamp(logvar, -30, 20))`.
    pub std: Tensor,
}

impl LatentDist {
    /// `mean + std * eps` for a standard normal `eps` shaped like the mean.
    pub fn sample(&self, eps: &Tensor) -> Result<Tensor> {
        Ok((&self.mean + (&self.std * eps.to_dtype(self.std.dtype())?)?)?)
    }
}

/// The VAE.
#[derive(Clone, Debug)]
pub struct AutoencoderKl {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    config: VaeConfig,
    dtype: DType,
}

impl AutoencoderKl {
    /// Builds the VAE described by `config` from `vb` (the weights of
    /// `vae/diffusion_pytorch_model.safetensors`).
    pub fn new(config: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let resnet = ResnetConfig {
            groups: config.norm_num_groups,
            eps: 1e-6,
            temb_channels: None,
            act: Activation::parse(&config.act_fn)?,
            output_scale_factor: 1.0,
        };
        let lc = config.latent_channels;
        let quant_conv =
            if config.use_quant_conv { Some(conv2d(2 * lc, 2 * lc, 1, 1, 0, vb.pp("quant_conv"))?) } else { None };
        let post_quant_conv =
            if config.use_post_quant_conv { Some(conv2d(lc, lc, 1, 1, 0, vb.pp("post_quant_conv"))?) } else { None };
        Ok(AutoencoderKl {
            encoder: Encoder::new(config, resnet, vb.pp("encoder"))?,
            decoder: Decoder::new(config, resnet, vb.pp("decoder"))?,
            quant_conv,
            post_quant_conv,
            config: config.clone(),
            dtype: vb.dtype(),
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Image pixels per latent pixel (`2^(blocks - 1)`).
    pub fn scale_factor(&self) -> usize {
        self.config.scale_factor()
    }

    /// `vae.encode(x).latent_dist` for an image `x: (N, C, H, W)` in [-1, 1].
    pub fn encode(&self, x: &Tensor) -> Result<LatentDist> {
        let mut moments = self.encoder.forward(&x.to_dtype(self.dtype)?)?;
        if let Some(q) = &self.quant_conv {
            moments = q.forward(&moments)?;
        }
        let lc = self.config.latent_channels;
        let mean = moments.narrow(1, 0, lc)?.contiguous()?;
        let logvar = moments.narrow(1, lc, lc)?.clamp(-30f32, 20f32)?;
        let std = (logvar * 0.5)?.exp()?;
        Ok(LatentDist { mean, std })
    }

    /// `vae.decode(z).sample` for a raw latent `z` (already divided by
    /// `scaling_factor`): the image in about [-1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let mut z = z.to_dtype(self.dtype)?;
        if let Some(q) = &self.post_quant_conv {
            z = q.forward(&z)?;
        }
        Ok(self.decoder.forward(&z)?)
    }

    /// The pipeline's decode: `clamp(decode(latent / scaling_factor) / 2 +
    /// 0.5, 0, 1)` as float32, an image in [0, 1].
    pub fn latent_to_image(&self, latent: &Tensor) -> Result<Tensor> {
        let raw = self.decode(&(latent / self.config.scaling_factor)?)?;
        Ok(raw.to_dtype(DType::F32)?.affine(0.5, 0.5)?.clamp(0f32, 1f32)?)
    }

    /// The pipeline's encode of an image in [0, 1]: the latent distribution
    /// of `2 * image - 1`, scaled by `scaling_factor` (so its mean, or a
    /// sample, is what the UNet takes).
    pub fn image_to_latent(&self, image: &Tensor) -> Result<LatentDist> {
        let dist = self.encode(&image.affine(2.0, -1.0)?)?;
        let s = self.config.scaling_factor;
        Ok(LatentDist { mean: (dist.mean * s)?.to_dtype(DType::F32)?, std: (dist.std * s)?.to_dtype(DType::F32)? })
    }
}
