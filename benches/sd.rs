//! Stable Diffusion on the CPU: one classifier-free-guided sampler step (the
//! UNet on a batch of 2, as `sd.sample` runs it) and one VAE decode.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench --bench sd` (and with
//! `RAYON_NUM_THREADS=2` for the 2-thread numbers).
//!
//! * `sd/tiny_unet_cfg_32x32`: the `tiny:sd` UNet (generated into a temp
//!   folder) on a 32x32 latent; a normal criterion measurement, 10 samples.
//! * `sd/sd15_unet_cfg_64x64`: an SD 1.5-sized UNet (diffusers SD 1.5
//!   `unet/config.json`, 860M parameters) on a 64x64 latent (512x512 image).
//! * `sd/sd15_vae_decode_64x64`: an SD 1.5-sized VAE decoding a 64x64 latent
//!   to a 512x512 image.
//!
//! The SD 1.5-sized models get all-zero weights: this crate cannot name
//! `candle_nn::VarBuilder`, so the bench writes a zero-filled (sparse)
//! safetensors file whose tensor names and shapes are derived from the config
//! here (checked against the generated `tiny:sd` files first) and loads it
//! with the real loaders. Zero weights cost the same arithmetic as trained
//! ones (no data-dependent paths on the CPU kernels).
//!
//! The SD 1.5-sized cases take 10-30 s per call, and criterion insists on at
//! least 10 samples. So, measured with `iter_custom`, only the first
//! `1 + FLOW_SD_BENCH_RUNS` calls (default 2 runs) really run: the first is a
//! discarded warm-up, each real run's time is printed to stderr, and the
//! remaining samples repeat the mean of the real runs. Criterion's estimate is
//! therefore that mean; its spread and outlier report mean nothing for these
//! two cases (read the printed per-run times). Set `FLOW_SD_BENCH_RUNS=10` for
//! ten real samples (minutes per case). `FLOW_SD_BENCH_SKIP_LARGE=1` leaves
//! the SD 1.5-sized cases out.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use flow_nodes::sd::config::{UNetConfig, VaeConfig};
use flow_nodes::sd::guided_eps;
use flow_nodes::sd::pipeline::{load_unet, load_vae};

/// Tensor name -> shape, in name order.
type Shapes = BTreeMap<String, Vec<usize>>;

fn add(s: &mut Shapes, name: impl Into<String>, shape: &[usize]) {
    s.insert(name.into(), shape.to_vec());
}

fn conv(s: &mut Shapes, p: &str, out: usize, inp: usize, k: usize) {
    add(s, format!("{p}.weight"), &[out, inp, k, k]);
    add(s, format!("{p}.bias"), &[out]);
}

fn linear(s: &mut Shapes, p: &str, out: usize, inp: usize, bias: bool) {
    add(s, format!("{p}.weight"), &[out, inp]);
    if bias {
        add(s, format!("{p}.bias"), &[out]);
    }
}

fn norm(s: &mut Shapes, p: &str, c: usize) {
    add(s, format!("{p}.weight"), &[c]);
    add(s, format!("{p}.bias"), &[c]);
}

/// A diffusers `ResnetBlock2D`.
fn resnet(s: &mut Shapes, p: &str, inp: usize, out: usize, temb: Option<usize>) {
    norm(s, &format!("{p}.norm1"), inp);
    conv(s, &format!("{p}.conv1"), out, inp, 3);
    if let Some(t) = temb {
        linear(s, &format!("{p}.time_emb_proj"), out, t, true);
    }
    norm(s, &format!("{p}.norm2"), out);
    conv(s, &format!("{p}.conv2"), out, out, 3);
    if inp != out {
        conv(s, &format!("{p}.conv_shortcut"), out, inp, 1);
    }
}

/// A diffusers `Transformer2DModel` (SD 1.x: 1x1-conv projections), depth 1.
fn transformer(s: &mut Shapes, p: &str, c: usize, ctx: usize) {
    norm(s, &format!("{p}.norm"), c);
    conv(s, &format!("{p}.proj_in"), c, c, 1);
    conv(s, &format!("{p}.proj_out"), c, c, 1);
    let b = format!("{p}.transformer_blocks.0");
    for n in ["norm1", "norm2", "norm3"] {
        norm(s, &format!("{b}.{n}"), c);
    }
    for (a, kv) in [("attn1", c), ("attn2", ctx)] {
        linear(s, &format!("{b}.{a}.to_q"), c, c, false);
        linear(s, &format!("{b}.{a}.to_k"), c, kv, false);
        linear(s, &format!("{b}.{a}.to_v"), c, kv, false);
        linear(s, &format!("{b}.{a}.to_out.0"), c, c, true);
    }
    linear(s, &format!("{b}.ff.net.0.proj"), 8 * c, c, true);
    linear(s, &format!("{b}.ff.net.2"), c, 4 * c, true);
}

fn num(v: &serde_json::Value, key: &str) -> usize {
    v[key].as_u64().unwrap_or_else(|| panic!("config `{key}`: not a number")) as usize
}

fn nums(v: &serde_json::Value, key: &str) -> Vec<usize> {
    let list = v[key].as_array().unwrap_or_else(|| panic!("config `{key}`: not a list"));
    list.iter().map(|x| x.as_u64().expect("a number") as usize).collect()
}

fn names(v: &serde_json::Value, key: &str) -> Vec<String> {
    let list = v[key].as_array().unwrap_or_else(|| panic!("config `{key}`: not a list"));
    list.iter().map(|x| x.as_str().expect("a string").to_string()).collect()
}

/// The weights of a diffusers SD 1.x `UNet2DConditionModel` (one value per
/// config field, no per-block lists, transformer depth 1, 1x1 projections).
fn unet_shapes(cfg: &serde_json::Value) -> Shapes {
    let ch = nums(cfg, "block_out_channels");
    let layers = num(cfg, "layers_per_block");
    let ctx = num(cfg, "cross_attention_dim");
    let (cin, cout) = (num(cfg, "in_channels"), num(cfg, "out_channels"));
    let down = names(cfg, "down_block_types");
    let up = names(cfg, "up_block_types");
    let n = ch.len();
    let t = 4 * ch[0];
    let mut s = Shapes::new();
    conv(&mut s, "conv_in", ch[0], cin, 3);
    linear(&mut s, "time_embedding.linear_1", t, ch[0], true);
    linear(&mut s, "time_embedding.linear_2", t, t, true);
    let mut prev = ch[0];
    for i in 0..n {
        for j in 0..layers {
            let inp = if j == 0 { prev } else { ch[i] };
            resnet(&mut s, &format!("down_blocks.{i}.resnets.{j}"), inp, ch[i], Some(t));
            if down[i].starts_with("CrossAttn") {
                transformer(&mut s, &format!("down_blocks.{i}.attentions.{j}"), ch[i], ctx);
            }
        }
        if i + 1 < n {
            conv(&mut s, &format!("down_blocks.{i}.downsamplers.0.conv"), ch[i], ch[i], 3);
        }
        prev = ch[i];
    }
    let last = ch[n - 1];
    resnet(&mut s, "mid_block.resnets.0", last, last, Some(t));
    resnet(&mut s, "mid_block.resnets.1", last, last, Some(t));
    transformer(&mut s, "mid_block.attentions.0", last, ctx);
    let mut prev = last;
    for i in 0..n {
        let r = n - 1 - i;
        let out = ch[r];
        let skip_last = ch[r.saturating_sub(1)];
        for j in 0..=layers {
            let skip = if j == layers { skip_last } else { out };
            let inp = if j == 0 { prev } else { out };
            resnet(&mut s, &format!("up_blocks.{i}.resnets.{j}"), inp + skip, out, Some(t));
            if up[i].starts_with("CrossAttn") {
                transformer(&mut s, &format!("up_blocks.{i}.attentions.{j}"), out, ctx);
            }
        }
        if i + 1 < n {
            conv(&mut s, &format!("up_blocks.{i}.upsamplers.0.conv"), out, out, 3);
        }
        prev = out;
    }
    norm(&mut s, "conv_norm_out", ch[0]);
    conv(&mut s, "conv_out", cout, ch[0], 3);
    s
}

/// The VAE mid block: two ResNets around one self-attention.
fn vae_mid(s: &mut Shapes, p: &str, c: usize) {
    resnet(s, &format!("{p}.resnets.0"), c, c, None);
    resnet(s, &format!("{p}.resnets.1"), c, c, None);
    let a = format!("{p}.attentions.0");
    norm(s, &format!("{a}.group_norm"), c);
    for l in ["to_q", "to_k", "to_v", "to_out.0"] {
        linear(s, &format!("{a}.{l}"), c, c, true);
    }
}

/// The weights of a diffusers `AutoencoderKL`.
fn vae_shapes(cfg: &serde_json::Value) -> Shapes {
    let ch = nums(cfg, "block_out_channels");
    let layers = num(cfg, "layers_per_block");
    let lc = num(cfg, "latent_channels");
    let (cin, cout) = (num(cfg, "in_channels"), num(cfg, "out_channels"));
    let n = ch.len();
    let last = ch[n - 1];
    let mut s = Shapes::new();
    conv(&mut s, "encoder.conv_in", ch[0], cin, 3);
    let mut prev = ch[0];
    for i in 0..n {
        for j in 0..layers {
            let inp = if j == 0 { prev } else { ch[i] };
            resnet(&mut s, &format!("encoder.down_blocks.{i}.resnets.{j}"), inp, ch[i], None);
        }
        if i + 1 < n {
            conv(&mut s, &format!("encoder.down_blocks.{i}.downsamplers.0.conv"), ch[i], ch[i], 3);
        }
        prev = ch[i];
    }
    vae_mid(&mut s, "encoder.mid_block", last);
    norm(&mut s, "encoder.conv_norm_out", last);
    conv(&mut s, "encoder.conv_out", 2 * lc, last, 3);
    conv(&mut s, "quant_conv", 2 * lc, 2 * lc, 1);
    conv(&mut s, "post_quant_conv", lc, lc, 1);
    conv(&mut s, "decoder.conv_in", last, lc, 3);
    vae_mid(&mut s, "decoder.mid_block", last);
    let mut prev = last;
    for i in 0..n {
        let out = ch[n - 1 - i];
        for j in 0..=layers {
            let inp = if j == 0 { prev } else { out };
            resnet(&mut s, &format!("decoder.up_blocks.{i}.resnets.{j}"), inp, out, None);
        }
        if i + 1 < n {
            conv(&mut s, &format!("decoder.up_blocks.{i}.upsamplers.0.conv"), out, out, 3);
        }
        prev = out;
    }
    norm(&mut s, "decoder.conv_norm_out", ch[0]);
    conv(&mut s, "decoder.conv_out", cout, ch[0], 3);
    s
}

/// The names and shapes in a safetensors file's header.
fn read_shapes(file: &Path) -> Shapes {
    let bytes = fs::read(file).expect("reading safetensors");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors header");
    header
        .into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .map(|(k, v)| (k, serde_json::from_value(v["shape"].clone()).unwrap()))
        .collect()
}

/// Panics, listing the differences, unless `derived` equals `actual`.
fn check_shapes(what: &str, derived: &Shapes, actual: &Shapes) {
    if derived == actual {
        return;
    }
    let mut diff = Vec::new();
    for (k, v) in actual {
        match derived.get(k) {
            None => diff.push(format!("missing {k} {v:?}")),
            Some(d) if d != v => diff.push(format!("{k}: derived {d:?}, actual {v:?}")),
            _ => {}
        }
    }
    for k in derived.keys().filter(|k| !actual.contains_key(*k)) {
        diff.push(format!("extra {k}"));
    }
    panic!("{what}: the derived weight list differs from tiny:sd's:\n{}", diff.join("\n"));
}

/// Writes a float32 safetensors file of all-zero tensors; the data is a
/// hole (sparse file), so this is instant and takes no disk.
fn write_zero_safetensors(file: &Path, shapes: &Shapes) {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in shapes {
        let len = 4 * shape.iter().product::<usize>();
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len] }),
        );
        offset += len;
    }
    let mut text = serde_json::to_string(&header).unwrap();
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut f = File::create(file).expect("creating safetensors");
    f.write_all(&(text.len() as u64).to_le_bytes()).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.set_len((8 + text.len() + offset) as u64).unwrap();
}

/// A diffusers SD 1.5 `unet/config.json` (runwayml/stable-diffusion-v1-5).
fn sd15_unet_config() -> serde_json::Value {
    serde_json::json!({
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": false,
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    })
}

/// A diffusers SD 1.5 `vae/config.json`.
fn sd15_vae_config() -> serde_json::Value {
    serde_json::json!({
        "_class_name": "AutoencoderKL",
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 512,
        "scaling_factor": 0.18215,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
    })
}

/// Writes `{dir}/{component}/config.json` and a zero-weight
/// `diffusion_pytorch_model.safetensors` for it.
fn write_component(dir: &Path, component: &str, config: &serde_json::Value, shapes: &Shapes) {
    let sub = dir.join(component);
    fs::create_dir_all(&sub).unwrap();
    fs::write(sub.join("config.json"), serde_json::to_string_pretty(config).unwrap()).unwrap();
    write_zero_safetensors(&sub.join("diffusion_pytorch_model.safetensors"), shapes);
}

fn read_config(dir: &Path, component: &str) -> serde_json::Value {
    let text = fs::read_to_string(dir.join(component).join("config.json")).expect("config.json");
    serde_json::from_str(&text).expect("config json")
}

/// Times `f` for criterion's `iter_custom`, really running it only for the
/// first `1 + runs` calls (the first a warm-up) and answering the mean of the
/// real runs afterwards (see the module docs).
fn sparse_timer(name: &str, runs: usize, mut f: impl FnMut()) -> impl FnMut(u64) -> Duration {
    let name = name.to_string();
    let mut calls = 0usize;
    let mut times: Vec<Duration> = Vec::new();
    move |iters| {
        calls += 1;
        if calls == 1 || times.len() < runs {
            let start = Instant::now();
            f();
            let took = start.elapsed();
            if calls == 1 {
                eprintln!("{name}: warm-up run {:.2} s", took.as_secs_f64());
            } else {
                times.push(took);
                eprintln!("{name}: run {} of {runs}: {:.2} s", times.len(), took.as_secs_f64());
                if times.len() == runs {
                    let mean = times.iter().sum::<Duration>() / runs as u32;
                    let min = times.iter().min().unwrap();
                    let max = times.iter().max().unwrap();
                    eprintln!(
                        "{name}: {runs} real runs, mean {:.2} s, min {:.2} s, max {:.2} s (RAYON_NUM_THREADS={})",
                        mean.as_secs_f64(),
                        min.as_secs_f64(),
                        max.as_secs_f64(),
                        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into())
                    );
                }
            }
            took * iters as u32
        } else {
            let mean = times.iter().sum::<Duration>() / times.len() as u32;
            mean * iters as u32
        }
    }
}

fn sd(c: &mut Criterion) {
    // As the `flow` binary does at start-up.
    flow_engine::allocator::keep_freed_memory();
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("sd");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);

    // tiny:sd, 32x32 latent, CFG (UNet batch 2).
    let tiny = tempfile::tempdir().expect("tempdir");
    flow_nodes::sd::tiny::generate_tiny_sd(tiny.path()).expect("generating tiny:sd");
    let tiny_unet_cfg = read_config(tiny.path(), "unet");
    let tiny_vae_cfg = read_config(tiny.path(), "vae");
    check_shapes(
        "unet",
        &unet_shapes(&tiny_unet_cfg),
        &read_shapes(&tiny.path().join("unet/diffusion_pytorch_model.safetensors")),
    );
    check_shapes(
        "vae",
        &vae_shapes(&tiny_vae_cfg),
        &read_shapes(&tiny.path().join("vae/diffusion_pytorch_model.safetensors")),
    );
    {
        let d = num(&tiny_unet_cfg, "cross_attention_dim");
        let unet = load_unet(tiny.path(), &dev, DType::F32).expect("loading the tiny UNet");
        let latents = Tensor::randn(0f32, 1.0, (1, 4, 32, 32), &dev).unwrap();
        let cond = Tensor::randn(0f32, 1.0, (1, 77, d), &dev).unwrap();
        let uncond = Tensor::randn(0f32, 1.0, (1, 77, d), &dev).unwrap();
        group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
        group.bench_function("tiny_unet_cfg_32x32", |b| {
            b.iter(|| guided_eps(&unet, &latents, 500.0, &cond, &uncond, 7.5).expect("guided_eps"))
        });
    }

    if std::env::var_os("FLOW_SD_BENCH_SKIP_LARGE").is_some_and(|v| !v.is_empty() && v != "0") {
        group.finish();
        return;
    }
    let runs: usize = std::env::var("FLOW_SD_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(2).max(1);
    group.warm_up_time(Duration::from_millis(1)).measurement_time(Duration::from_secs(1));

    // SD 1.5-sized UNet, zero weights, 64x64 latent, CFG (UNet batch 2).
    let big = tempfile::tempdir().expect("tempdir");
    let unet_cfg = sd15_unet_config();
    serde_json::from_value::<UNetConfig>(unet_cfg.clone()).expect("SD 1.5 UNet config");
    write_component(big.path(), "unet", &unet_cfg, &unet_shapes(&unet_cfg));
    {
        let load = Instant::now();
        let unet = load_unet(big.path(), &dev, DType::F32).expect("loading the SD 1.5-sized UNet");
        eprintln!("sd15 UNet loaded in {:.1} s", load.elapsed().as_secs_f64());
        let latents = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &dev).unwrap();
        let cond = Tensor::randn(0f32, 1.0, (1, 77, 768), &dev).unwrap();
        let uncond = Tensor::randn(0f32, 1.0, (1, 77, 768), &dev).unwrap();
        let step = || {
            let eps = guided_eps(&unet, &latents, 500.0, &cond, &uncond, 7.5).expect("guided_eps");
            assert_eq!(eps.dims(), &[1, 4, 64, 64]);
        };
        // The timer outlives criterion's per-sample calls of the closure.
        let mut timer = sparse_timer("sd15_unet_cfg_64x64", runs, step);
        group.bench_function("sd15_unet_cfg_64x64", |b| b.iter_custom(&mut timer));
    }
    fs::remove_dir_all(big.path().join("unet")).ok();

    // SD 1.5-sized VAE, zero weights, 64x64 latent -> 512x512 image.
    let vae_cfg = sd15_vae_config();
    serde_json::from_value::<VaeConfig>(vae_cfg.clone()).expect("SD 1.5 VAE config");
    write_component(big.path(), "vae", &vae_cfg, &vae_shapes(&vae_cfg));
    {
        let vae = load_vae(big.path(), &dev, DType::F32).expect("loading the SD 1.5-sized VAE");
        let latent = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &dev).unwrap();
        let decode = || {
            let image = vae.latent_to_image(&latent).expect("decode");
            assert_eq!(image.dims(), &[1, 3, 512, 512]);
        };
        let mut timer = sparse_timer("sd15_vae_decode_64x64", runs, decode);
        group.bench_function("sd15_vae_decode_64x64", |b| b.iter_custom(&mut timer));
    }
    group.finish();
}

criterion_group!(benches, sd);
criterion_main!(benches);
