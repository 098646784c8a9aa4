//! Stable Diffusion 1.x/2.x on candle: diffusers-directory loading, the CLIP
//! text encoder, the conditional UNet and the KL VAE, numerically matched to
//! diffusers / transformers, plus a generator for the `tiny:sd` model.

pub mod clip;
pub mod config;
mod layers;
pub mod pipeline;
pub mod scheduler;
pub mod tiny;
pub mod tokenizer;
pub mod unet;
pub mod vae;

pub use layers::Activation;
pub use pipeline::{guided_eps, StableDiffusion, TextEncoder};
