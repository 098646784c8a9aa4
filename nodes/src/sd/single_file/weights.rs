//! The tensors of one checkpoint file, read lazily: a memory-mapped
//! `.safetensors` file, or a PyTorch `.ckpt` / `.pt` / `.pth` zip archive read
//! through candle's pickle reader (an interpreter of the pickle opcodes that
//! imports and runs nothing: only tensor rebuilds and plain containers come
//! out of it; every other object stays an inert value and is skipped).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::pickle::PthTensors;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

/// Shape and stored dtype of one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Element type in the file.
    pub dtype: DType,
}

impl TensorMeta {
    /// Bytes the tensor takes once loaded as `dtype`.
    pub fn bytes_as(&self, dtype: DType) -> u64 {
        self.shape.iter().product::<usize>() as u64 * dtype.size_in_bytes() as u64
    }
}

enum Store {
    Safetensors(MmapedSafetensors),
    Pickle(PthTensors),
}

/// An opened checkpoint file: its tensor index and the means to load one.
pub struct Weights {
    path: PathBuf,
    index: BTreeMap<String, TensorMeta>,
    store: Store,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights").field("path", &self.path).field("tensors", &self.index.len()).finish()
    }
}

/// The file kinds [`Weights::open`] reads, by extension.
fn is_pickle(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        let e = e.to_ascii_lowercase();
        e == "ckpt" || e == "pt" || e == "pth"
    })
}

/// How to turn a pickled checkpoint into a safetensors file, for errors.
pub const CONVERT_HINT: &str = "convert it once with Python: python -c \"import torch, safetensors.torch as st; \
     sd = torch.load('IN.ckpt', map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); \
     st.save_file({k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}, 'OUT.safetensors')\"";

impl Weights {
    /// Opens `path`: `.safetensors` memory-mapped, `.ckpt` / `.pt` / `.pth`
    /// through the pickle reader (its `state_dict` entry when there is
    /// one). Errors name the file and what is wrong with it.
    pub fn open(path: &Path) -> Result<Self> {
        let (index, store) = if is_pickle(path) { open_pickle(path)? } else { open_safetensors(path)? };
        Ok(Weights { path: path.to_path_buf(), index, store })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor's name, shape and dtype, sorted by name.
    pub fn index(&self) -> &BTreeMap<String, TensorMeta> {
        &self.index
    }

    /// The metadata of tensor `name`, if the file has it.
    pub fn meta(&self, name: &str) -> Option<&TensorMeta> {
        self.index.get(name)
    }

    /// The shape of tensor `name`; an error naming it when it is missing.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        self.meta(name)
            .map(|m| m.shape.as_slice())
            .ok_or_else(|| anyhow!("`{}` has no tensor `{name}`", self.path.display()))
    }

    /// Loads tensor `name` onto `device`, in the file's dtype.
    pub fn load(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        match &self.store {
            Store::Safetensors(st) => st.load(name, device),
            Store::Pickle(pth) => match pth.get(name)? {
                Some(t) => t.to_device(device),
                None => Err(candle_core::Error::CannotFindTensor { path: name.to_string() }.bt()),
            },
        }
    }
}

fn open_safetensors(path: &Path) -> Result<(BTreeMap<String, TensorMeta>, Store)> {
    let len = std::fs::metadata(path).with_context(|| format!("cannot read `{}`", path.display()))?.len();
    if len < 8 {
        bail!("`{}` is not a safetensors file ({len} bytes)", path.display());
    }
    // SAFETY: the file is mapped read-only; like every safetensors loader
    // this assumes it is not modified while it is in use.
    let st = unsafe { MmapedSafetensors::new(path) }.map_err(|e| {
        anyhow!("`{}` is not a readable safetensors file (truncated or another format?): {e}", path.display())
    })?;
    let mut index = BTreeMap::new();
    for (name, view) in st.tensors() {
        let dtype = DType::try_from(view.dtype()).map_err(|_| {
            anyhow!("`{}`: tensor `{name}` has dtype {:?}, which flow does not read", path.display(), view.dtype())
        })?;
        index.insert(name, TensorMeta { shape: view.shape().to_vec(), dtype });
    }
    Ok((index, Store::Safetensors(st)))
}

fn open_pickle(path: &Path) -> Result<(BTreeMap<String, TensorMeta>, Store)> {
    let refuse = |why: String| anyhow!("`{}`: {why}; {CONVERT_HINT}", path.display());
    let pth = PthTensors::new(path, Some("state_dict")).or_else(|_| PthTensors::new(path, None)).map_err(|e| {
        refuse(format!("cannot read this PyTorch pickle (only the zip format of torch >= 1.6 is read): {e}"))
    })?;
    if pth.tensor_infos().is_empty() {
        return Err(refuse("no tensors found in this PyTorch pickle".into()));
    }
    let index = pth
        .tensor_infos()
        .iter()
        .map(|(name, info)| {
            (name.clone(), TensorMeta { shape: info.layout.shape().dims().to_vec(), dtype: info.dtype })
        })
        .collect();
    Ok((index, Store::Pickle(pth)))
}
