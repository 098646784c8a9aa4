//! basicsr-style weight files (`.pth` PyTorch checkpoints and `.safetensors`)
//! and the detection of the architecture from their key names.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::conv::Conv;

/// The architectures a state dict can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `SRVGGNetCompact` (realesr-animevideov3, realesr-general-x4v3): keys
    /// `body.N.weight` only.
    SrVgg,
    /// `RRDBNet` (RealESRGAN_x4plus and friends): `conv_first`, `body.N.rdbK.convM`, ...
    Rrdb,
}

/// Named f32 tensors of a checkpoint.
#[derive(Clone, Debug)]
pub struct StateDict {
    tensors: HashMap<String, Tensor>,
}

impl StateDict {
    /// Loads a `.pth`/`.pt`/`.ckpt` (zip-format PyTorch checkpoint, with or
    /// without a `params_ema`/`params` wrapper) or `.safetensors` file onto
    /// `device` as f32.
    pub fn load(path: &Path, device: &Device) -> Result<StateDict> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let tensors: Vec<(String, Tensor)> = match ext.as_str() {
            "safetensors" => candle_core::safetensors::load(path, &Device::Cpu)
                .with_context(|| format!("reading {}", path.display()))?
                .into_iter()
                .collect(),
            "pth" | "pt" | "ckpt" => read_pth(path)?,
            _ => bail!(
                "{}: unknown weight file type (expected .pth, .pt, .ckpt or .safetensors)",
                path.display()
            ),
        };
        let tensors = tensors
            .into_iter()
            .map(|(name, t)| {
                let name = name
                    .strip_prefix("module.")
                    .map(str::to_string)
                    .unwrap_or(name);
                let t = t.to_dtype(DType::F32)?.to_device(device)?;
                Ok((name, t))
            })
            .collect::<Result<HashMap<_, _>>>()
            .with_context(|| format!("loading {}", path.display()))?;
        Ok(StateDict::from_tensors(tensors))
    }

    /// A state dict from named tensors.
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> StateDict {
        StateDict { tensors }
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .with_context(|| format!("weight `{name}` is missing"))
    }

    /// True if a tensor called `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Indices `N` of the keys `{prefix}.N.{suffix}`, sorted.
    pub fn indices(&self, prefix: &str, suffix: &str) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .tensors
            .keys()
            .filter_map(|k| {
                k.strip_prefix(prefix)?
                    .strip_prefix('.')?
                    .strip_suffix(suffix)
            })
            .filter_map(|mid| mid.strip_suffix('.')?.parse().ok())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The convolution `{prefix}.weight` / `{prefix}.bias` with "same"
    /// padding, as basicsr builds them.
    pub fn conv(&self, prefix: &str) -> Result<Conv> {
        let weight = self.get(&format!("{prefix}.weight"))?.clone();
        let (_, _, kh, kw) = weight
            .dims4()
            .with_context(|| format!("`{prefix}.weight` is not a conv kernel"))?;
        if kh != kw || kh % 2 == 0 {
            bail!("`{prefix}.weight`: only square odd kernels are supported, got {kh}x{kw}");
        }
        let bias = self.tensors.get(&format!("{prefix}.bias")).cloned();
        Conv::new(weight, bias, kh / 2, 1, 1).with_context(|| format!("`{prefix}`"))
    }

    /// The architecture the key names belong to.
    pub fn arch(&self) -> Result<Arch> {
        if self.contains("conv_first.weight") && self.contains("body.0.rdb1.conv1.weight") {
            Ok(Arch::Rrdb)
        } else if self.contains("body.0.weight") && !self.contains("conv_first.weight") {
            Ok(Arch::SrVgg)
        } else {
            let mut keys: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
            keys.sort_unstable();
            keys.truncate(6);
            bail!(
                "unrecognised weights: expected basicsr RRDBNet (`conv_first`, `body.N.rdbK...`) or \
                 SRVGGNetCompact (`body.N`) keys, found {keys:?}..."
            )
        }
    }
}

/// Reads a zip-format PyTorch checkpoint; basicsr wraps the weights in a
/// `params_ema` or `params` entry.
fn read_pth(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let mut last_err = None;
    for key in [Some("params_ema"), Some("params"), None] {
        match candle_core::pickle::read_all_with_key(path, key) {
            Ok(tensors) if !tensors.is_empty() => return Ok(tensors),
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
    }
    match last_err {
        Some(e) => Err(e).with_context(|| format!("reading PyTorch checkpoint {}", path.display())),
        None => bail!("{}: no tensors found in the checkpoint", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(names: &[&str]) -> StateDict {
        let kernel = Tensor::zeros((1, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let bias = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
        let tensor = |n: &str| {
            if n.ends_with("bias") {
                bias.clone()
            } else {
                kernel.clone()
            }
        };
        StateDict::from_tensors(names.iter().map(|n| (n.to_string(), tensor(n))).collect())
    }

    #[test]
    fn detects_architectures_from_keys() {
        let rrdb = dict(&["conv_first.weight", "body.0.rdb1.conv1.weight"]);
        assert_eq!(rrdb.arch().unwrap(), Arch::Rrdb);
        let vgg = dict(&["body.0.weight", "body.1.weight", "body.2.weight"]);
        assert_eq!(vgg.arch().unwrap(), Arch::SrVgg);
        let err = dict(&["model.0.weight"]).arch().unwrap_err();
        assert!(err.to_string().contains("model.0.weight"), "{err}");
    }

    #[test]
    fn lists_indices() {
        let sd = dict(&[
            "body.10.weight",
            "body.2.weight",
            "body.2.bias",
            "body.x.weight",
            "conv.weight",
        ]);
        assert_eq!(sd.indices("body", "weight"), [2, 10]);
        assert!(sd.conv("body.2").is_ok());
        assert!(sd
            .conv("body.3")
            .unwrap_err()
            .to_string()
            .contains("body.3.weight"));
    }

    /// Writes `tensors` (f32, contiguous) as a zip-format PyTorch checkpoint,
    /// pickled like `torch.save`, optionally inside `{wrapper: {...}}`.
    fn save_pth(path: &Path, tensors: &[(&str, &Tensor)], wrapper: Option<&str>) {
        use std::io::Write;
        fn text(out: &mut Vec<u8>, s: &str) {
            out.push(b'X');
            out.extend((s.len() as u32).to_le_bytes());
            out.extend(s.as_bytes());
        }
        fn int(out: &mut Vec<u8>, i: usize) {
            out.push(b'J');
            out.extend((i as i32).to_le_bytes());
        }
        fn ints(out: &mut Vec<u8>, values: &[usize]) {
            out.push(b'(');
            values.iter().for_each(|&v| int(out, v));
            out.push(b't');
        }
        let mut pkl = vec![0x80, 2];
        if let Some(w) = wrapper {
            pkl.push(b'}');
            text(&mut pkl, w);
        }
        pkl.extend(b"}(");
        for (i, (name, t)) in tensors.iter().enumerate() {
            text(&mut pkl, name);
            pkl.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            text(&mut pkl, "storage");
            pkl.extend(b"ctorch\nFloatStorage\n");
            text(&mut pkl, &i.to_string());
            text(&mut pkl, "cpu");
            int(&mut pkl, t.elem_count());
            pkl.extend(b"tQ");
            int(&mut pkl, 0);
            ints(&mut pkl, t.dims());
            ints(&mut pkl, t.stride());
            pkl.extend(b"\x89ccollections\nOrderedDict\n)RtR");
        }
        pkl.push(b'u');
        if wrapper.is_some() {
            pkl.push(b's');
        }
        pkl.push(b'.');
        let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", options).unwrap();
        zip.write_all(&pkl).unwrap();
        for (i, (_, t)) in tensors.iter().enumerate() {
            zip.start_file(format!("archive/data/{i}"), options)
                .unwrap();
            let data: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            zip.write_all(
                &data
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>(),
            )
            .unwrap();
        }
        zip.finish().unwrap();
    }

    #[test]
    fn loads_pytorch_checkpoints_with_and_without_wrapper() {
        let dev = Device::Cpu;
        let weight = Tensor::arange(0f32, 54.0, &dev)
            .unwrap()
            .reshape((2, 3, 3, 3))
            .unwrap();
        let bias = Tensor::new(&[0.5f32, -1.0], &dev).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for wrapper in [Some("params_ema"), Some("params"), None] {
            let path = dir.path().join("net.pth");
            save_pth(
                &path,
                &[("module.body.0.weight", &weight), ("body.0.bias", &bias)],
                wrapper,
            );
            let sd = StateDict::load(&path, &dev).unwrap();
            let diff = crate::upscale::max_abs_diff;
            assert_eq!(
                diff(sd.get("body.0.weight").unwrap(), &weight),
                0.0,
                "{wrapper:?}"
            );
            assert_eq!(
                diff(sd.get("body.0.bias").unwrap(), &bias),
                0.0,
                "{wrapper:?}"
            );
            assert_eq!(sd.arch().unwrap(), Arch::SrVgg);
        }
        let err = StateDict::load(&dir.path().join("net.onnx"), &dev).unwrap_err();
        assert!(
            err.to_string().contains("unknown weight file type"),
            "{err}"
        );
    }
}
