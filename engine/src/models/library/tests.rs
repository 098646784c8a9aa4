//! The models folder: lookup, confinement, suggestions and listing.

use std::fs;
use std::path::Path;

use super::*;

fn touch(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// A ComfyUI-layout folder with a few models.
fn comfy_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    touch(r, "checkpoints/v1-5-pruned-emaonly.safetensors", b"ckpt");
    touch(r, "checkpoints/SD1.5/dreamy.safetensors", b"dreamy");
    touch(r, "checkpoints/SD1.5/dreamy.yaml", b"parameterization: eps");
    touch(r, "checkpoints/put_checkpoints_here", b"");
    touch(r, "checkpoints/.hidden.safetensors", b"x");
    touch(r, "upscale_models/RealESRGAN_x4plus.pth", b"esrgan");
    touch(r, "upscale_models/anime.param", b"p");
    touch(r, "upscale_models/anime.bin", b"b");
    touch(r, "vae/diffusers-vae/config.json", b"{}");
    touch(r, "vae/diffusers-vae/diffusion_pytorch_model.safetensors", b"vae!");
    fs::create_dir_all(r.join("loras")).unwrap();
    dir
}

#[test]
fn files_are_found_in_their_folder_and_subfolders() {
    let dir = comfy_folder();
    let lib = ModelLibrary::new(dir.path().to_path_buf());
    let root = fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        lib.find(LibraryFolder::Checkpoints, "v1-5-pruned-emaonly.safetensors").unwrap(),
        root.join("checkpoints/v1-5-pruned-emaonly.safetensors")
    );
    assert_eq!(
        lib.find(LibraryFolder::Checkpoints, "SD1.5/dreamy.safetensors").unwrap(),
        root.join("checkpoints/SD1.5/dreamy.safetensors")
    );
    assert_eq!(
        lib.find(LibraryFolder::Checkpoints, "SD1.5\\dreamy.safetensors").unwrap(),
        root.join("checkpoints/SD1.5/dreamy.safetensors")
    );
    assert_eq!(lib.find(LibraryFolder::Vae, "diffusers-vae").unwrap(), root.join("vae/diffusers-vae"));
    // A file of another folder kind is not found.
    assert!(lib.find(LibraryFolder::Vae, "v1-5-pruned-emaonly.safetensors").is_err());
}

#[test]
fn names_cannot_leave_the_folder() {
    let dir = comfy_folder();
    touch(dir.path(), "secret.safetensors", b"s");
    let lib = ModelLibrary::new(dir.path().to_path_buf());
    let e = lib.find(LibraryFolder::Checkpoints, "../secret.safetensors").unwrap_err().to_string();
    assert!(e.contains("`..` is not allowed"), "{e}");
    let abs = dir.path().join("secret.safetensors").display().to_string();
    let e = lib.find(LibraryFolder::Checkpoints, &abs).unwrap_err().to_string();
    assert!(e.contains("absolute"), "{e}");
}

#[test]
fn a_missing_file_names_the_folder_suggests_and_lists() {
    let dir = comfy_folder();
    let lib = ModelLibrary::new(dir.path().to_path_buf());
    let e = lib.find(LibraryFolder::Checkpoints, "v1-5-pruned-emaonly.safetensor").unwrap_err().to_string();
    assert!(e.contains("no `v1-5-pruned-emaonly.safetensor` in"), "{e}");
    assert!(e.contains("checkpoints/"), "{e}");
    assert!(e.contains("did you mean `ckpt:v1-5-pruned-emaonly.safetensors`?"), "{e}");
    assert!(e.contains("it holds SD1.5/dreamy.safetensors, v1-5-pruned-emaonly.safetensors"), "{e}");
    // Without its subfolder, or without its extension.
    let e = lib.find(LibraryFolder::Checkpoints, "dreamy.safetensors").unwrap_err().to_string();
    assert!(e.contains("did you mean `ckpt:SD1.5/dreamy.safetensors`?"), "{e}");
    let e = lib.find(LibraryFolder::Checkpoints, "v1-5-pruned-emaonly").unwrap_err().to_string();
    assert!(e.contains("did you mean `ckpt:v1-5-pruned-emaonly.safetensors`?"), "{e}");
    // An empty folder says so.
    let e = lib.find(LibraryFolder::Loras, "style.safetensors").unwrap_err().to_string();
    assert!(e.contains("holds no models"), "{e}");
    // A folder of models is not a model.
    let e = lib.find(LibraryFolder::Checkpoints, "SD1.5").unwrap_err().to_string();
    assert!(e.contains("is a folder of models") && e.contains("ckpt:SD1.5/dreamy.safetensors"), "{e}");
}

#[test]
fn a_missing_folder_kind_explains_the_layout() {
    let dir = comfy_folder();
    let lib = ModelLibrary::new(dir.path().to_path_buf());
    let e = lib.find(LibraryFolder::Embeddings, "x.pt").unwrap_err().to_string();
    assert!(e.contains("has no `embeddings/` folder"), "{e}");
    // Pointed at a ComfyUI install instead of its models/ folder.
    let install = tempfile::tempdir().unwrap();
    fs::rename(dir.path(), install.path().join("models")).unwrap();
    let lib = ModelLibrary::new(install.path().to_path_buf());
    let e = lib.find(LibraryFolder::Checkpoints, "x.safetensors").unwrap_err().to_string();
    assert!(e.contains("is in ComfyUI's layout: point --models-dir"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = ModelLibrary::new(empty.path().to_path_buf()).find(LibraryFolder::Vae, "v.pt").unwrap_err().to_string();
    assert!(e.contains("holds checkpoints/, vae/, upscale_models/, loras/, embeddings/"), "{e}");
}

#[test]
fn automatic1111_folder_names_are_read_too() {
    let dir = tempfile::tempdir().unwrap();
    touch(dir.path(), "Stable-diffusion/a1111.safetensors", b"a");
    touch(dir.path(), "ESRGAN/4x.pth", b"e");
    let lib = ModelLibrary::new(dir.path().to_path_buf());
    assert!(lib.find(LibraryFolder::Checkpoints, "a1111.safetensors").is_ok());
    assert!(lib.find(LibraryFolder::UpscaleModels, "4x.pth").is_ok());
    let refs: Vec<String> = lib.list().iter().map(LibraryEntry::reference).collect();
    assert_eq!(refs, ["ckpt:a1111.safetensors", "upscaler:4x.pth"]);
}

#[test]
fn listing_shows_models_only_with_sizes() {
    let dir = comfy_folder();
    let lib = ModelLibrary::new(dir.path().to_path_buf());
    let list = lib.list();
    let shown: Vec<(String, Option<u64>)> = list.iter().map(|e| (e.reference(), e.size)).collect();
    assert_eq!(
        shown,
        [
            ("ckpt:SD1.5/dreamy.safetensors".to_string(), Some(6)),
            ("ckpt:v1-5-pruned-emaonly.safetensors".to_string(), Some(4)),
            ("vae:diffusers-vae".to_string(), Some(6)),
            ("upscaler:RealESRGAN_x4plus.pth".to_string(), Some(6)),
            ("upscaler:anime.param".to_string(), Some(1)),
        ]
    );
    assert!(list.iter().all(|e| e.error.is_none()));
}

#[cfg(unix)]
#[test]
fn symlinks_are_followed_loops_and_broken_links_do_not_hurt() {
    use std::os::unix::fs::symlink;
    let dir = comfy_folder();
    let elsewhere = tempfile::tempdir().unwrap();
    touch(elsewhere.path(), "shared/big.safetensors", b"shared");
    symlink(elsewhere.path().join("shared"), dir.path().join("checkpoints/shared")).unwrap();
    symlink(dir.path().join("checkpoints"), dir.path().join("checkpoints/SD1.5/loop")).unwrap();
    symlink(dir.path().join("nowhere.safetensors"), dir.path().join("checkpoints/broken.safetensors")).unwrap();
    let lib = ModelLibrary::new(dir.path().to_path_buf());
    let ckpts = lib.entries(LibraryFolder::Checkpoints);
    let names: Vec<&str> = ckpts.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["SD1.5/dreamy.safetensors", "broken.safetensors", "shared/big.safetensors", "v1-5-pruned-emaonly.safetensors"]
    );
    let broken = &ckpts[1];
    assert!(broken.error.as_deref().unwrap().starts_with("cannot read"), "{broken:?}");
    assert_eq!(broken.size, None);
    assert_eq!(
        lib.find(LibraryFolder::Checkpoints, "shared/big.safetensors").unwrap(),
        fs::canonicalize(elsewhere.path().join("shared/big.safetensors")).unwrap()
    );
}

#[test]
fn the_store_resolves_references_as_it_resolves_paths() {
    use crate::models::{no_progress, ModelStore};
    let dir = comfy_folder();
    let cache = tempfile::tempdir().unwrap();
    let store = ModelStore::new(cache.path().to_path_buf()).with_library(ModelLibrary::new(dir.path().to_path_buf()));
    let by_ref = store.resolve_str("ckpt:SD1.5/dreamy.safetensors", Path::new("/graphs"), &no_progress).unwrap();
    let path = dir.path().join("checkpoints/SD1.5/dreamy.safetensors");
    let by_path = store.resolve_str(&path.display().to_string(), Path::new("/graphs"), &no_progress).unwrap();
    assert_eq!(by_ref.reference, "ckpt:SD1.5/dreamy.safetensors");
    assert_eq!(by_ref.path, by_path.path);
    assert_eq!(by_ref.fingerprint, by_path.fingerprint);
    assert_eq!(by_ref.fingerprint, blake3::hash(b"dreamy").to_hex().to_string());
    assert_eq!(by_ref.kind, by_path.kind);
    // A changed file is a different model.
    fs::write(&path, b"dreamier").unwrap();
    let changed = store.resolve_str("ckpt:SD1.5/dreamy.safetensors", Path::new("/graphs"), &no_progress).unwrap();
    assert_ne!(changed.fingerprint, by_ref.fingerprint);

    let e = format!("{:#}", store.resolve_str("ckpt:dreamy.safetensors", Path::new("/g"), &no_progress).unwrap_err());
    assert!(e.starts_with("model `ckpt:dreamy.safetensors`: no `dreamy.safetensors` in"), "{e}");
    assert!(e.contains("did you mean `ckpt:SD1.5/dreamy.safetensors`?"), "{e}");

    let bare = ModelStore::new(cache.path().to_path_buf());
    let e = format!("{:#}", bare.resolve_str("ckpt:x.safetensors", Path::new("/g"), &no_progress).unwrap_err());
    assert!(e.contains("no models folder is set; pass `--models-dir DIR` or set FLOW_MODELS_DIR"), "{e}");
}
