//! Where an SD model's components come from: a diffusers directory
//! (`text_encoder/`, `unet/`, `vae/`, `scheduler/`) or a single-file
//! checkpoint (a model whose path is a file). The ops ask for components
//! the same way for both; pool keys, fingerprints and cache keys do not
//! depend on the layout.
//!
//! Opened checkpoints (header, inferred configs and renamings, the memory
//! map) are kept per file and fingerprint, so the cheap questions (VAE
//! config, scheduler config) do not re-read the file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Result;
use candle_core::{DType, Device};
use flow_engine::models::ResolvedModel;

use crate::sd::config::{read_json, VaeConfig};
use crate::sd::pipeline::{load_unet, load_vae_folder, weight_files, TextEncoder};
use crate::sd::scheduler::SchedulerConfig;
use crate::sd::single_file::{Checkpoint, StandaloneVae};
use crate::sd::unet::UNet2DConditionModel;
use crate::sd::vae::AutoencoderKl;

/// Opened checkpoints kept at once (older ones are dropped first).
const KEEP_OPEN: usize = 8;

/// A component of an SD model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Component {
    /// Tokenizer and CLIP text model.
    TextEncoder,
    /// The UNet.
    Unet,
    /// The VAE.
    Vae,
}

/// An SD model's layout.
pub(super) enum SdSource {
    /// A diffusers directory.
    Dir(PathBuf),
    /// A single-file checkpoint, opened.
    File(Arc<Checkpoint>),
}

/// (key, checkpoint) in opening order.
type Opened = Vec<(String, Arc<Checkpoint>)>;

fn opened() -> &'static Mutex<Opened> {
    static OPENED: OnceLock<Mutex<Opened>> = OnceLock::new();
    OPENED.get_or_init(|| Mutex::new(Vec::new()))
}

/// The checkpoint at `path` with `fingerprint`, opened once.
fn open_checkpoint(path: &Path, fingerprint: &str) -> Result<Arc<Checkpoint>> {
    let key = format!("{fingerprint}|{}", path.display());
    let lock = || opened().lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, c)) = lock().iter().find(|(k, _)| *k == key) {
        return Ok(c.clone());
    }
    let ckpt = Arc::new(Checkpoint::open(path)?);
    let mut list = lock();
    if !list.iter().any(|(k, _)| *k == key) {
        if list.len() >= KEEP_OPEN {
            list.remove(0);
        }
        list.push((key, ckpt.clone()));
    }
    Ok(ckpt)
}

/// The layout of `model`: a file is a single-file checkpoint.
pub(super) fn source(model: &ResolvedModel) -> Result<SdSource> {
    if model.path.is_file() {
        Ok(SdSource::File(open_checkpoint(&model.path, &model.fingerprint)?))
    } else {
        Ok(SdSource::Dir(model.dir().to_path_buf()))
    }
}

/// Bytes the weights of a diffusers component folder take once loaded as
/// `dtype` (fp16 files count twice their size in float32).
fn folder_bytes(dir: &Path, stem: &str, dtype: DType) -> u64 {
    let f32_bytes: u64 = weight_files(dir, stem)
        .map(|files| {
            files
                .iter()
                .map(|f| {
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    let half = f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(".fp16."));
                    if half {
                        2 * len
                    } else {
                        len
                    }
                })
                .sum()
        })
        .unwrap_or(0);
    f32_bytes / 4 * dtype.size_in_bytes() as u64
}

impl SdSource {
    /// Bytes `component` takes once loaded as `dtype`.
    pub(super) fn bytes(&self, component: Component, dtype: DType) -> u64 {
        match self {
            SdSource::Dir(dir) => match component {
                Component::TextEncoder => folder_bytes(&dir.join("text_encoder"), "model", dtype),
                Component::Unet => folder_bytes(&dir.join("unet"), "diffusion_pytorch_model", dtype),
                Component::Vae => folder_bytes(&dir.join("vae"), "diffusion_pytorch_model", dtype),
            },
            SdSource::File(ckpt) => {
                let [unet, text, vae] = ckpt.component_bytes(dtype);
                match component {
                    Component::TextEncoder => text,
                    Component::Unet => unet,
                    Component::Vae => vae,
                }
            }
        }
    }

    /// Loads the tokenizer and text encoder.
    pub(super) fn text_encoder(&self, device: &Device, dtype: DType) -> Result<TextEncoder> {
        match self {
            SdSource::Dir(dir) => TextEncoder::load(dir, device, dtype),
            SdSource::File(ckpt) => ckpt.text_encoder(device, dtype),
        }
    }

    /// Loads the UNet.
    pub(super) fn unet(&self, device: &Device, dtype: DType) -> Result<UNet2DConditionModel> {
        match self {
            SdSource::Dir(dir) => load_unet(dir, device, dtype),
            SdSource::File(ckpt) => ckpt.unet(device, dtype),
        }
    }

    /// Loads the VAE.
    pub(super) fn vae(&self, device: &Device, dtype: DType) -> Result<AutoencoderKl> {
        match self {
            SdSource::Dir(dir) => load_vae_folder(&dir.join("vae"), device, dtype),
            SdSource::File(ckpt) => ckpt.vae(device, dtype),
        }
    }

    /// The VAE config (no weights loaded).
    pub(super) fn vae_config(&self) -> Result<VaeConfig> {
        match self {
            SdSource::Dir(dir) => read_json(&dir.join("vae").join("config.json")),
            SdSource::File(ckpt) => Ok(ckpt.vae_config().clone()),
        }
    }

    /// The scheduler config (no weights loaded).
    pub(super) fn scheduler_config(&self) -> Result<SchedulerConfig> {
        match self {
            SdSource::Dir(dir) => SchedulerConfig::from_file(&dir.join("scheduler").join("scheduler_config.json")),
            SdSource::File(ckpt) => ckpt.scheduler_config(),
        }
    }
}

/// A VAE given on its own: a VAE file (or a whole checkpoint's VAE), a
/// diffusers `vae/` folder, or a diffusers SD folder's `vae/`.
pub(super) enum VaeSource {
    /// A file.
    File(StandaloneVae),
    /// A diffusers `vae/` folder.
    Folder(PathBuf),
}

impl VaeSource {
    /// The VAE of the model given to a `vae` input.
    pub(super) fn of(model: &ResolvedModel) -> Result<Self> {
        if model.path.is_file() {
            return Ok(VaeSource::File(StandaloneVae::open(&model.path)?));
        }
        let dir = model.dir();
        Ok(VaeSource::Folder(if dir.join("config.json").is_file() { dir.to_path_buf() } else { dir.join("vae") }))
    }

    /// Bytes the VAE takes once loaded as `dtype`.
    pub(super) fn bytes(&self, dtype: DType) -> u64 {
        match self {
            VaeSource::File(vae) => vae.bytes(dtype),
            VaeSource::Folder(dir) => folder_bytes(dir, "diffusion_pytorch_model", dtype),
        }
    }

    /// Loads the VAE.
    pub(super) fn load(&self, device: &Device, dtype: DType) -> Result<AutoencoderKl> {
        match self {
            VaeSource::File(vae) => vae.load(device, dtype),
            VaeSource::Folder(dir) => load_vae_folder(dir, device, dtype),
        }
    }
}
