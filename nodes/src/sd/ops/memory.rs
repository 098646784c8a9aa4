//! How much memory the SD models need for a given size, checked before a
//! node allocates anything (see `flow_engine::limits`): a size the machine
//! cannot hold fails the node with the sizes instead of aborting the process.
//!
//! The estimates count the float32 activations alive at once: at each
//! resolution level `i` (pixels / 4^i) the block's channels times a number
//! of live tensors (skip connections kept for the decoder path, a block's
//! temporaries, GEGLU's 8x-wide inner activation in the UNet). They are
//! generous on purpose (the peak RSS measured on tiny and SD 1.5-sized
//! models stays below them), since an underestimate would let the process
//! abort.

use anyhow::Result;
use flow_engine::limits::{check_image_size, check_memory};

use crate::sd::config::{UNetConfig, VaeConfig};

/// Live float32 tensors per channel and pixel of a UNet level.
const UNET_LIVE: u64 = 12;

/// Live float32 tensors per channel and pixel of a VAE level.
const VAE_LIVE: u64 = 6;

/// Channels times pixels summed over the levels of a pyramid whose first
/// level has `pixels` pixels.
fn pyramid(channels: &[usize], pixels: u64) -> u64 {
    channels.iter().enumerate().map(|(i, &c)| c as u64 * (pixels >> (2 * i))).sum()
}

/// Checks a sampling run of the UNet on latents of `dims` (`[N, C, h, w]`),
/// twice the batch with classifier-free guidance; `f` is the VAE's scale
/// factor (the image is `f` times the latent).
pub(super) fn check_unet(config: &UNetConfig, dims: &[usize], f: usize) -> Result<()> {
    let (n, h, w) = (dims[0] as u64, dims[2] as u64, dims[3] as u64);
    check_image_size(w * f as u64, h * f as u64, "the image of this latent")?;
    let bytes = 2 * n * pyramid(&config.block_out_channels, h * w) * UNET_LIVE * 4;
    check_memory(bytes, &format!("sampling a {}x{} latent (a {}x{} image)", w, h, w * f as u64, h * f as u64))
}

/// Checks a VAE pass over `n` images of `width` × `height` pixels.
pub(super) fn check_vae(config: &VaeConfig, n: usize, width: usize, height: usize, what: &str) -> Result<()> {
    let (n, w, h) = (n as u64, width as u64, height as u64);
    check_image_size(w, h, what)?;
    let bytes = n * pyramid(&config.block_out_channels, w * h) * VAE_LIVE * 4;
    check_memory(bytes, &format!("{what} ({width}x{height}, {n} image(s))"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pyramid_shrinks_four_times_a_level() {
        assert_eq!(pyramid(&[320, 640, 1280, 1280], 64 * 64), 4096 * 320 + 1024 * 640 + 256 * 1280 + 64 * 1280);
    }

    #[test]
    fn a_huge_image_is_refused_before_any_allocation() {
        let config: VaeConfig = serde_json::from_str(
            r#"{"in_channels":3,"out_channels":3,"down_block_types":[],"up_block_types":[],
                "block_out_channels":[128,256,512,512],"layers_per_block":2,"latent_channels":4,
                "norm_num_groups":32,"scaling_factor":0.18215}"#,
        )
        .unwrap();
        let err = check_vae(&config, 1, 100_000, 100_000, "the decoded image").unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{err}");
        assert!(check_vae(&config, 1, 512, 512, "the decoded image").is_ok());
    }
}
