//! Stable Diffusion 1.x/2.x on candle: diffusers-directory loading, the CLIP
//! text encoder, the conditional UNet and the KL VAE, numerically matched to
//! diffusers / transformers, the ops that use them, and a generator for the
//! `tiny:sd` model.

pub mod clip;
pub mod config;
mod cpu;
pub mod guidance;
pub mod kdiffusion;
mod layers;
pub mod ops;
pub mod pipeline;
pub mod scheduler;
pub mod single_file;
pub mod tiny;
pub mod tokenizer;
pub mod unet;
pub mod vae;

pub use layers::Activation;
pub use ops::{register, SdCond};
pub use guidance::guided_eps;
pub use pipeline::{StableDiffusion, TextEncoder};
