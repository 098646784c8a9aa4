//! Sizes a user controls (image sides, tensor shapes, files) are checked
//! before anything is allocated for them: an allocation the machine cannot
//! satisfy would abort the whole process (Rust cannot recover from it), so
//! an op estimates what it needs and fails its node with a clear message
//! instead.
//!
//! The check is against the memory available now: `MemAvailable` of
//! `/proc/meminfo`, lowered to what a cgroup (v2) memory limit leaves.
//! Where neither can be read, only the ops' own documented limits apply.

use std::fs;

use anyhow::{bail, Result};

/// Bytes of memory available to this process now, if the system says.
pub fn available_memory() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())?
        * 1024;
    let cgroup = (|| {
        let max = fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?.trim().parse::<u64>().ok()?;
        let current = fs::read_to_string("/sys/fs/cgroup/memory.current").ok()?.trim().parse::<u64>().ok()?;
        Some(max.saturating_sub(current))
    })();
    Some(cgroup.map_or(available, |c| c.min(available)))
}

/// Fails unless `bytes` fit in the memory available now; `what` says what
/// needs them ("a 4096x4096 image").
pub fn check_memory(bytes: u64, what: &str) -> Result<()> {
    if let Some(available) = available_memory() {
        if bytes > available {
            bail!(
                "{what} needs about {} of memory, more than the {} available",
                human_bytes(bytes),
                human_bytes(available)
            );
        }
    }
    Ok(())
}

/// Most pixels of an image an op reads or makes (64 megapixels, 8192 ×
/// 8192) unless `FLOW_MAX_IMAGE_PIXELS` says otherwise.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 1 << 26;

/// The image pixel limit: `$FLOW_MAX_IMAGE_PIXELS`, else
/// [`DEFAULT_MAX_IMAGE_PIXELS`].
pub fn max_image_pixels() -> u64 {
    std::env::var("FLOW_MAX_IMAGE_PIXELS").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_MAX_IMAGE_PIXELS)
}

/// Fails if a `width` × `height` image (`what`: "the decoded image") is over
/// the pixel limit.
pub fn check_image_size(width: u64, height: u64, what: &str) -> Result<()> {
    let max = max_image_pixels();
    match width.checked_mul(height) {
        Some(pixels) if pixels <= max => Ok(()),
        _ => bail!(
            "{what} would be {width}x{height} pixels, over the limit of {max} pixels \
             (about {}x{}); set FLOW_MAX_IMAGE_PIXELS to allow more",
            (max as f64).sqrt() as u64,
            (max as f64).sqrt() as u64
        ),
    }
}

/// Bytes with a binary unit, one decimal (`1.5 GiB`).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `dims` multiplied, or `None` on overflow: sizes from users are checked
/// with this before they are used.
pub fn checked_product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_cannot_fit_is_refused_with_the_sizes() {
        if available_memory().is_none() {
            return;
        }
        assert!(check_memory(1 << 20, "a small tensor").is_ok());
        let err = check_memory(1 << 60, "a 100000x100000 image").unwrap_err().to_string();
        assert!(err.starts_with("a 100000x100000 image needs about 1024.0 PiB of memory, more than the"), "{err}");
    }

    #[test]
    fn images_over_the_pixel_limit_are_refused() {
        assert!(check_image_size(8192, 8192, "an image").is_ok());
        let err = check_image_size(100_000, 100_000, "the latent's image").unwrap_err().to_string();
        assert!(err.contains("100000x100000 pixels, over the limit of 67108864 pixels (about 8192x8192)"), "{err}");
        assert!(check_image_size(u64::MAX, 2, "x").is_err());
    }

    #[test]
    fn units_and_products() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(checked_product(&[2, 3, 4]), Some(24));
        assert_eq!(checked_product(&[usize::MAX, 2]), None);
        assert_eq!(checked_product(&[]), Some(1));
    }
}
