//! [`ResolvedModel`]: a model reference made concrete (local files and a
//! content fingerprint). It is the value a `model` port carries.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};

use crate::registry::Registry;
use crate::types::ValueType;
use crate::value::{Object, Value};

/// The type tag of [`ResolvedModel`]'s plain form in the disk cache.
pub const TYPE_TAG: &str = "model.resolved";

/// A model whose files are on the local disk.
///
/// Ops get it from their `model` input:
/// `inputs.value("model")?.as_object::<ResolvedModel>()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The reference as written (`minilm`, `hf:org/repo@rev`, `./m.gguf`, `tiny:sd`).
    pub reference: String,
    /// Absolute path of the model: a file (GGUF, `.param`, ...) or a folder
    /// (HF / diffusers layout, a tiny model).
    pub path: PathBuf,
    /// What the model is, when known: the catalog's kind (`bert`, `llama-gguf`,
    /// `esrgan-srvgg-ncnn`, `esrgan-rrdb-ncnn`, `clip-bpe`), the tiny kind
    /// (`sd`, ...), or a guess from the files for other references
    /// (`gguf`, `safetensors`, `ncnn`, `diffusers`, `hf:<model_type>`).
    pub kind: Option<String>,
    /// Content hash of the model's files (see [`super::fingerprint`]); part of
    /// the cache key of every node that uses the model.
    pub fingerprint: String,
}

impl ResolvedModel {
    /// The folder holding the model: `path` itself, or a file's parent folder.
    pub fn dir(&self) -> &Path {
        if self.path.is_dir() {
            &self.path
        } else {
            self.path.parent().unwrap_or(Path::new("."))
        }
    }

    /// A file of the model by relative name (`config.json`,
    /// `tokenizer/vocab.json`), looked up in [`ResolvedModel::dir`]; an error
    /// naming the model if it is missing.
    pub fn file(&self, rel: &str) -> Result<PathBuf> {
        let p = self.dir().join(rel);
        if p.is_file() {
            Ok(p)
        } else {
            bail!("model `{}` has no file `{rel}` (looked in {})", self.reference, self.dir().display())
        }
    }

    /// The model's file with extension `ext` (no dot): `path` itself if it has
    /// that extension, else the file beside it with the same stem (so
    /// `x.param` finds `x.bin`), else the only such file in the model folder.
    pub fn find_by_extension(&self, ext: &str) -> Result<PathBuf> {
        let has_ext = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext));
        if self.path.is_file() {
            if has_ext(&self.path) {
                return Ok(self.path.clone());
            }
            let sibling = self.path.with_extension(ext);
            if sibling.is_file() {
                return Ok(sibling);
            }
        }
        let mut found: Vec<PathBuf> = fs::read_dir(self.dir())
            .map_err(|e| anyhow!("model `{}`: cannot list {}: {e}", self.reference, self.dir().display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && has_ext(p))
            .collect();
        found.sort();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => bail!("model `{}` has no `.{ext}` file in {}", self.reference, self.dir().display()),
            _ => bail!(
                "model `{}` has several `.{ext}` files in {}; name one file in the reference",
                self.reference,
                self.dir().display()
            ),
        }
    }

    /// The key of this model in a [`super::ModelPool`]: fingerprint, device and
    /// loader (an op-chosen id such as `bert-f32`, which changes when the way
    /// weights are loaded changes).
    pub fn pool_key(&self, device: &candle_core::Device, loader: &str) -> String {
        format!("{}|{:?}|{loader}", self.fingerprint, device.location())
    }

    /// Wraps the model as a graph value.
    pub fn into_value(self) -> Value {
        Value::Object(Arc::new(self))
    }

    /// Rebuilds a model from [`Object::to_plain`]'s output.
    pub fn from_plain(plain: &Value) -> Result<ResolvedModel> {
        let Value::Map(m) = plain else { bail!("cached model is not a map") };
        let text = |k: &str| -> Result<String> {
            m.get(k)
                .and_then(Value::as_text)
                .map(str::to_string)
                .ok_or_else(|| anyhow!("cached model lacks `{k}`"))
        };
        let kind = match m.get("kind") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_text().ok_or_else(|| anyhow!("cached model `kind` is not text"))?.to_string()),
        };
        Ok(ResolvedModel {
            reference: text("reference")?,
            path: PathBuf::from(text("path")?),
            kind,
            fingerprint: text("fingerprint")?,
        })
    }
}

impl Object for ResolvedModel {
    fn value_type(&self) -> ValueType {
        ValueType::Model
    }

    fn type_tag(&self) -> &'static str {
        TYPE_TAG
    }

    fn byte_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.reference.len()
            + self.path.as_os_str().len()
            + self.kind.as_ref().map_or(0, String::len)
            + self.fingerprint.len()
    }

    fn to_plain(&self) -> Option<Value> {
        let mut m = BTreeMap::new();
        m.insert("reference".to_string(), Value::text(&self.reference));
        m.insert("path".to_string(), Value::text(self.path.to_string_lossy()));
        m.insert("kind".to_string(), self.kind.as_deref().map_or(Value::Null, Value::text));
        m.insert("fingerprint".to_string(), Value::text(&self.fingerprint));
        Some(Value::map(m))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn decode(plain: &Value) -> Result<Value> {
    Ok(ResolvedModel::from_plain(plain)?.into_value())
}

/// Registers the decoder that turns cached [`ResolvedModel`]s back into objects.
pub fn register_decoders(reg: &mut Registry) {
    reg.register_decoder(TYPE_TAG, decode);
}

/// A guess of what a local model is from its files: `gguf`, `safetensors`,
/// `ncnn`, `onnx`, `diffusers` (a folder with `model_index.json`),
/// `hf:<model_type>` (a folder with a `config.json` naming one), `hf`.
pub fn guess_kind(path: &Path) -> Option<String> {
    if path.is_file() {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        return match ext.as_str() {
            "gguf" | "ggml" => Some("gguf".into()),
            "safetensors" => Some("safetensors".into()),
            "param" | "bin" if path.with_extension("param").is_file() && path.with_extension("bin").is_file() => {
                Some("ncnn".into())
            }
            "onnx" => Some("onnx".into()),
            _ => None,
        };
    }
    if path.join("model_index.json").is_file() {
        return Some("diffusers".into());
    }
    let config = path.join("config.json");
    if config.is_file() {
        let model_type = fs::read(&config)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|j| j.get("model_type").and_then(|t| t.as_str()).map(str::to_string));
        return Some(match model_type {
            Some(t) => format!("hf:{t}"),
            None => "hf".into(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ResolvedModel {
        ResolvedModel {
            reference: "minilm".into(),
            path: "/cache/models/minilm".into(),
            kind: Some("bert".into()),
            fingerprint: "abc".into(),
        }
    }

    #[test]
    fn plain_form_round_trips_through_the_registry() {
        let m = sample();
        let plain = m.to_plain().unwrap();
        let mut reg = Registry::new();
        register_decoders(&mut reg);
        let back = reg.decode_object(TYPE_TAG, &plain).unwrap();
        assert_eq!(back.value_type(), ValueType::Model);
        assert_eq!(back.as_object::<ResolvedModel>().unwrap(), &m);

        let none = ResolvedModel { kind: None, ..sample() };
        assert_eq!(ResolvedModel::from_plain(&none.to_plain().unwrap()).unwrap(), none);
        assert!(ResolvedModel::from_plain(&Value::text("x")).is_err());
    }

    #[test]
    fn files_are_found_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x.param"), b"p").unwrap();
        fs::write(dir.path().join("x.bin"), b"b").unwrap();
        let m = ResolvedModel { path: dir.path().join("x.param"), ..sample() };
        assert_eq!(m.find_by_extension("bin").unwrap(), dir.path().join("x.bin"));
        assert_eq!(m.find_by_extension("param").unwrap(), dir.path().join("x.param"));
        assert_eq!(guess_kind(&m.path).as_deref(), Some("ncnn"));
        let d = ResolvedModel { path: dir.path().to_path_buf(), ..sample() };
        assert_eq!(d.find_by_extension("bin").unwrap(), dir.path().join("x.bin"));
        assert!(d.find_by_extension("gguf").unwrap_err().to_string().contains("no `.gguf`"));
        assert!(d.file("config.json").is_err());
    }
}
