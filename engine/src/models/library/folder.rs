//! The model folders of ComfyUI's layout, the reference schemes that name a
//! file in them, and the checks on those names.

use std::fmt;

use serde::Serialize;

/// One kind of folder in a ComfyUI-layout models folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LibraryFolder {
    /// `checkpoints/` (`ckpt:NAME`): whole models, e.g. single-file SD checkpoints.
    Checkpoints,
    /// `vae/` (`vae:NAME`).
    Vae,
    /// `upscale_models/` (`upscaler:NAME`).
    UpscaleModels,
    /// `loras/` (`lora:NAME`).
    Loras,
    /// `embeddings/` (`embedding:NAME`): textual inversions.
    Embeddings,
}

impl LibraryFolder {
    /// Every folder kind, in listing order.
    pub const ALL: [LibraryFolder; 5] = [
        LibraryFolder::Checkpoints,
        LibraryFolder::Vae,
        LibraryFolder::UpscaleModels,
        LibraryFolder::Loras,
        LibraryFolder::Embeddings,
    ];

    /// The reference scheme, without the colon: `ckpt`, `vae`, `upscaler`,
    /// `lora`, `embedding`.
    pub fn scheme(self) -> &'static str {
        match self {
            LibraryFolder::Checkpoints => "ckpt",
            LibraryFolder::Vae => "vae",
            LibraryFolder::UpscaleModels => "upscaler",
            LibraryFolder::Loras => "lora",
            LibraryFolder::Embeddings => "embedding",
        }
    }

    /// The folder kind of a scheme (`ckpt` -> checkpoints).
    pub fn from_scheme(scheme: &str) -> Option<LibraryFolder> {
        LibraryFolder::ALL.into_iter().find(|f| f.scheme() == scheme)
    }

    /// The folder names looked in, in order: ComfyUI's name first, then the
    /// names AUTOMATIC1111's `models/` folder uses for the same files (the
    /// ones ComfyUI's `extra_model_paths.yaml` example maps), so either
    /// application's folder works unchanged.
    pub fn dir_names(self) -> &'static [&'static str] {
        match self {
            LibraryFolder::Checkpoints => &["checkpoints", "Stable-diffusion"],
            LibraryFolder::Vae => &["vae", "VAE"],
            LibraryFolder::UpscaleModels => &["upscale_models", "ESRGAN", "RealESRGAN", "SwinIR"],
            LibraryFolder::Loras => &["loras", "Lora", "LyCORIS"],
            LibraryFolder::Embeddings => &["embeddings"],
        }
    }

    /// ComfyUI's folder name (`checkpoints`).
    pub fn dir_name(self) -> &'static str {
        self.dir_names()[0]
    }
}

impl fmt::Display for LibraryFolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir_name())
    }
}

/// Checks and normalises a file name inside a library folder, as written
/// after the scheme (`SD1.5/foo.safetensors`): `\` counts as a separator
/// (workflows saved on Windows write it), empty and `.` components are
/// dropped, `..` and absolute names are refused (a reference never leaves
/// the models folder). The result uses `/` separators.
pub fn normalize_name(name: &str) -> Result<String, String> {
    let unified = name.replace('\\', "/");
    if unified.starts_with('/') {
        return Err(format!(
            "`{name}` is an absolute path; name a file inside the models folder (e.g. `SD1.5/model.safetensors`)"
        ));
    }
    let mut chars = unified.chars();
    if let (Some(d), Some(':')) = (chars.next(), chars.next()) {
        if d.is_ascii_alphabetic() {
            return Err(format!("`{name}` is an absolute path; name a file inside the models folder"));
        }
    }
    let mut parts = Vec::new();
    for part in unified.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("`{name}` leaves the models folder (`..` is not allowed)")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("needs a file name, e.g. `model.safetensors`".into());
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_round_trip() {
        for f in LibraryFolder::ALL {
            assert_eq!(LibraryFolder::from_scheme(f.scheme()), Some(f));
        }
        assert_eq!(LibraryFolder::from_scheme("checkpoint"), None);
    }

    #[test]
    fn names_are_normalised_and_confined() {
        assert_eq!(normalize_name("foo.safetensors").unwrap(), "foo.safetensors");
        assert_eq!(normalize_name("SD1.5/foo.safetensors").unwrap(), "SD1.5/foo.safetensors");
        assert_eq!(normalize_name("SD1.5\\foo.safetensors").unwrap(), "SD1.5/foo.safetensors");
        assert_eq!(normalize_name("./a//b.pth").unwrap(), "a/b.pth");
        assert!(normalize_name("../x.safetensors").unwrap_err().contains("`..`"));
        assert!(normalize_name("a/../../x").unwrap_err().contains("`..`"));
        assert!(normalize_name("a\\..\\x").unwrap_err().contains("`..`"));
        assert!(normalize_name("/etc/passwd").unwrap_err().contains("absolute"));
        assert!(normalize_name("\\\\server\\x").unwrap_err().contains("absolute"));
        assert!(normalize_name("C:\\models\\x").unwrap_err().contains("absolute"));
        assert!(normalize_name("./").unwrap_err().contains("needs a file name"));
    }
}
