//! `tiny:KIND` models: deterministic, seeded, random-weight models of a real
//! architecture, written once by a generator that a node library registers
//! with [`super::ModelStore::register_tiny`].
//!
//! A generator writes the model's files into the (empty) folder it is given.
//! The store runs it in a temp folder under `models/.tmp/`, records the
//! result's fingerprint in a `.flow-tiny.json` marker, and renames the folder
//! to `models/tiny/<kind>-v<version>/`; later resolutions read the marker and
//! never run the generator again. Bump the version whenever the generator's
//! output changes.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::fingerprint::Fingerprinter;
use super::fsutil::TempDir;
use crate::files::write_atomic;

/// Writes a tiny model's files into `dir` (an existing, empty folder).
pub type TinyGenerator = fn(dir: &Path) -> anyhow::Result<()>;

/// Name of the marker written (last) into a generated tiny model.
pub const TINY_MARKER: &str = ".flow-tiny.json";

/// What the marker records.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TinyMarker {
    /// The kind (`sd`, ...).
    pub kind: String,
    /// The generator version.
    pub version: u32,
    /// Fingerprint of the generated files.
    pub fingerprint: String,
}

/// The folder of a tiny model: `models/tiny/<kind>-v<version>`.
pub fn tiny_dir(models_dir: &Path, kind: &str, version: u32) -> PathBuf {
    models_dir.join("tiny").join(format!("{kind}-v{version}"))
}

/// The marker of an already generated model, if it is complete.
pub fn read_marker(dir: &Path) -> Option<TinyMarker> {
    let bytes = fs::read(dir.join(TINY_MARKER)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Runs `generator` for `kind` in a temp folder and moves the result to its
/// final folder; returns the marker. If another thread or process finished
/// first, its model is kept and ours is discarded.
pub(crate) fn generate(
    models_dir: &Path,
    kind: &str,
    version: u32,
    generator: TinyGenerator,
    fingerprints: &Fingerprinter,
) -> Result<TinyMarker> {
    let dest = tiny_dir(models_dir, kind, version);
    let mut tmp = TempDir::new_in(models_dir, &format!("tiny-{kind}"))
        .with_context(|| format!("cannot create a temp folder under {}", models_dir.display()))?;
    let work = tmp.path().join("model");
    fs::create_dir(&work)?;
    let ran = catch_unwind(AssertUnwindSafe(|| generator(&work)));
    match ran {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.context(format!("the generator of `tiny:{kind}` failed"))),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            bail!("the generator of `tiny:{kind}` panicked: {msg}");
        }
    }
    let fingerprint = fingerprints
        .fingerprint(&work, &mut |_, _| {})
        .map_err(|e| anyhow!("the generator of `tiny:{kind}` wrote no usable files: {e:#}"))?;
    let marker = TinyMarker { kind: kind.to_string(), version, fingerprint };
    write_atomic(&work.join(TINY_MARKER), &serde_json::to_vec_pretty(&marker)?)?;
    if dest.exists() && read_marker(&dest).is_none() {
        // An incomplete leftover (written by hand or by an old flow): replace it.
        fs::remove_dir_all(&dest).with_context(|| format!("cannot remove {}", dest.display()))?;
    }
    if tmp.persist_as(Some("model"), &dest).with_context(|| format!("cannot move the model to {}", dest.display()))? {
        Ok(marker)
    } else {
        read_marker(&dest).ok_or_else(|| anyhow!("{} exists but is not a complete tiny model", dest.display()))
    }
}
