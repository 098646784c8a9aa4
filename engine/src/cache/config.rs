//! Where the cache lives and how much memory it may use, from the
//! environment.

use std::env;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Memory budget when `FLOW_MEMORY_BUDGET` is not set: 4 GiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 4 << 30;

/// The disk cache folder: `$FLOW_CACHE_DIR`, else `$XDG_CACHE_HOME/flow`,
/// else `$HOME/.cache/flow` (else `flow-cache` in the temporary folder).
/// Empty variables count as unset.
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(
        env::var_os("FLOW_CACHE_DIR"),
        env::var_os("XDG_CACHE_HOME"),
        env::var_os("HOME"),
    )
}

fn cache_dir_from(
    flow: Option<OsString>,
    xdg: Option<OsString>,
    home: Option<OsString>,
) -> PathBuf {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(flow) {
        dir
    } else if let Some(xdg) = set(xdg) {
        xdg.join("flow")
    } else if let Some(home) = set(home) {
        home.join(".cache").join("flow")
    } else {
        env::temp_dir().join("flow-cache")
    }
}

/// The memory budget: `$FLOW_MEMORY_BUDGET` read by [`parse_bytes`], else
/// [`DEFAULT_MEMORY_BUDGET`]. An unreadable value also gives the default.
pub fn default_memory_budget() -> usize {
    env::var("FLOW_MEMORY_BUDGET")
        .ok()
        .and_then(|v| parse_bytes(&v).ok())
        .unwrap_or(DEFAULT_MEMORY_BUDGET)
}

/// What flow keeps resident on each GPU when neither `--vram-budget` nor
/// `$FLOW_VRAM_BUDGET` says otherwise: 8 GiB, room for SD 1.5 or SDXL's UNet
/// in f16 with its VAE and text encoders on a 12 GB card, leaving the rest
/// to the nodes' own work.
pub const DEFAULT_VRAM_BUDGET: u64 = 8 << 30;

/// The GPU budget: `$FLOW_VRAM_BUDGET` read by [`parse_bytes`], else
/// [`DEFAULT_VRAM_BUDGET`].
pub fn default_vram_budget() -> Result<u64> {
    match env::var("FLOW_VRAM_BUDGET") {
        Ok(v) if !v.is_empty() => parse_bytes(&v).map(|b| b as u64).context("FLOW_VRAM_BUDGET"),
        _ => Ok(DEFAULT_VRAM_BUDGET),
    }
}

/// The disk budget: `$FLOW_DISK_BUDGET` read by [`parse_bytes`], else
/// [`super::DEFAULT_DISK_BUDGET`].
pub fn default_disk_budget() -> Result<u64> {
    match env::var("FLOW_DISK_BUDGET") {
        Ok(v) if !v.is_empty() => parse_bytes(&v).map(|b| b as u64).context("FLOW_DISK_BUDGET"),
        _ => Ok(super::DEFAULT_DISK_BUDGET),
    }
}

/// Reads a byte count: plain bytes (`1048576`) or a number with a binary
/// unit, case-insensitive: `K`, `M`, `G`, `T`, optionally followed by `B` or
/// `iB` (`512M`, `4G`, `1.5GiB`, `64kb`).
pub fn parse_bytes(text: &str) -> Result<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => bail!("unknown unit `{other}` in byte size `{text}` (use K, M, G or T)"),
    };
    let unit_bytes = 1u64 << shift;
    let bytes = if number.contains('.') {
        let n: f64 = number
            .parse()
            .with_context(|| format!("invalid byte size `{text}`"))?;
        let bytes = (n * unit_bytes as f64).round();
        if !(bytes >= 0.0 && bytes < u64::MAX as f64) {
            bail!("byte size `{text}` is out of range");
        }
        bytes as u64
    } else {
        let n: u64 = number
            .parse()
            .with_context(|| format!("invalid byte size `{text}`"))?;
        n.checked_mul(unit_bytes)
            .with_context(|| format!("byte size `{text}` is out of range"))?
    };
    usize::try_from(bytes).with_context(|| format!("byte size `{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_suffixed_sizes() {
        assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("512M").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("4G").unwrap(), 4 << 30);
        assert_eq!(parse_bytes(" 4 gib ").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("64kb").unwrap(), 64 << 10);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("0").unwrap(), 0);
        assert_eq!(parse_bytes("12B").unwrap(), 12);
    }

    #[test]
    fn rejects_bad_sizes() {
        for bad in [
            "",
            "G",
            "-1G",
            "4X",
            "1.2.3M",
            "99999999999999999999",
            "20000000000T",
            "lots",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cache_dir_follows_the_precedence() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            cache_dir_from(os("/f"), os("/x"), os("/h")),
            PathBuf::from("/f")
        );
        assert_eq!(
            cache_dir_from(None, os("/x"), os("/h")),
            PathBuf::from("/x/flow")
        );
        assert_eq!(
            cache_dir_from(os(""), os(""), os("/h")),
            PathBuf::from("/h/.cache/flow")
        );
        assert_eq!(
            cache_dir_from(None, None, None),
            env::temp_dir().join("flow-cache")
        );
    }
}
