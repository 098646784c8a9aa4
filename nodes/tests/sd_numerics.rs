//! Stable Diffusion numerics against the diffusers / transformers golden
//! outputs of the tiny random-weight pipeline in tests/fixtures/tiny-sd
//! (see its expected/README.md): per element `|got - want| <= 1e-4 +
//! 1e-3 |want|`, token ids exact. Each check prints its max abs difference.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, IndexOp, Tensor};
use flow_nodes::sd::pipeline::{load_unet, load_vae};
use flow_nodes::sd::tiny::{generate_tiny_sd, generate_tiny_sd2};
use flow_nodes::sd::tokenizer::ClipTokenizer;
use flow_nodes::sd::{guided_eps, StableDiffusion, TextEncoder};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-sd")
}

fn pipeline_dir() -> PathBuf {
    fixture().join("pipeline")
}

fn expected(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture().join("expected").join(name), &Device::Cpu).unwrap()
}

/// Asserts the fixture tolerance element by element and prints the max
/// abs difference.
fn assert_close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let g = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w = want.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut max_diff = 0f32;
    let mut worst_ratio = 0f32;
    for (a, b) in g.iter().zip(&w) {
        let d = (a - b).abs();
        max_diff = max_diff.max(d);
        worst_ratio = worst_ratio.max(d / (1e-4 + 1e-3 * b.abs()));
    }
    println!("{what}: max abs diff {max_diff:.3e} ({:.1}% of the tolerance)", worst_ratio * 100.0);
    assert!(worst_ratio <= 1.0, "{what}: max abs diff {max_diff:.3e} exceeds the tolerance ({worst_ratio:.2}x)");
}

#[test]
fn sd_clip_token_ids_and_hidden_states() {
    let want = expected("clip.safetensors");
    let te = TextEncoder::load(&pipeline_dir(), &Device::Cpu, DType::F32).unwrap();
    let ids = Tensor::cat(&[te.token_ids("a photo of a cat").unwrap(), te.token_ids("").unwrap()], 0).unwrap();
    let want_ids = want["input_ids"].to_dtype(DType::I64).unwrap().to_vec2::<i64>().unwrap();
    let got_ids = ids.to_dtype(DType::I64).unwrap().to_vec2::<i64>().unwrap();
    assert_eq!(got_ids, want_ids, "token ids");
    let hidden = te.model.forward(&ids).unwrap();
    assert_close("clip last_hidden_state", &hidden, &want["last_hidden_state"]);
    let pooled = te.model.pooled(&hidden, &ids).unwrap();
    assert_close("clip pooler_output", &pooled, &want["pooler_output"]);
    assert_close("clip encode(prompt)", &te.encode("a photo of a cat").unwrap(), &want["last_hidden_state"].i(0..1).unwrap());
}

#[test]
fn sd_unet_single_step() {
    let want = expected("unet_step.safetensors");
    let unet = load_unet(&pipeline_dir(), &Device::Cpu, DType::F32).unwrap();
    let t = want["timestep"].to_vec1::<f32>().unwrap()[0] as f64;
    let got = unet.forward(&want["sample"], t, &want["encoder_hidden_states"]).unwrap();
    assert_close("unet noise_pred", &got, &want["noise_pred"]);
}

#[test]
fn sd_unet_guided_batch_of_trajectory() {
    let clip = expected("clip.safetensors");
    let (cond, uncond) = (clip["last_hidden_state"].i(0..1).unwrap(), clip["last_hidden_state"].i(1..2).unwrap());
    let unet = load_unet(&pipeline_dir(), &Device::Cpu, DType::F32).unwrap();
    let traj = expected("trajectory_ddim.safetensors");
    let ts = traj["unet_t"].to_vec1::<f32>().unwrap();
    for (step, &t) in ts.iter().enumerate().take(2) {
        let unet_in = traj["unet_in"].i(step).unwrap();
        let want = traj["unet_out"].i(step).unwrap();
        let context = Tensor::cat(&[&uncond, &cond], 0).unwrap();
        let raw = unet.forward(&unet_in, t as f64, &context).unwrap();
        assert_close(&format!("unet batch [uncond, cond] step {step}"), &raw, &want);
        let guided = guided_eps(&unet, &unet_in.i(0..1).unwrap(), t as f64, &cond, &uncond, 7.5).unwrap();
        let (u, c) = (want.i(0..1).unwrap(), want.i(1..2).unwrap());
        let want_guided = (&u + ((c - &u).unwrap() * 7.5).unwrap()).unwrap();
        assert_close(&format!("guided_eps step {step}"), &guided, &want_guided);
    }
}

#[test]
fn sd_vae_decode_and_encode() {
    let want = expected("vae.safetensors");
    let vae = load_vae(&pipeline_dir(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(vae.scale_factor(), 2);
    assert_close("vae decoded", &vae.decode(&want["latent"]).unwrap(), &want["decoded"]);
    let dist = vae.encode(&want["image"]).unwrap();
    assert_close("vae latent_mean", &dist.mean, &want["latent_mean"]);
    assert_close("vae latent_std", &dist.std, &want["latent_std"]);
}

#[test]
fn sd_vae_pipeline_scaling() {
    let vae = load_vae(&pipeline_dir(), &Device::Cpu, DType::F32).unwrap();
    let traj = expected("trajectory_ddim.safetensors");
    assert_close("latent_to_image", &vae.latent_to_image(&traj["final_latent"]).unwrap(), &traj["image"]);
    let i2i = expected("img2img_ddim.safetensors");
    let image01 = i2i["input_image"].affine(0.5, 0.5).unwrap();
    let dist = vae.image_to_latent(&image01).unwrap();
    assert_close("img2img init_latents", &dist.sample(&i2i["vae_sample_eps"]).unwrap(), &i2i["init_latents"]);
}

#[test]
fn sd_tokenizer_from_vocab_and_merges_matches_tokenizer_json() {
    let src = pipeline_dir().join("tokenizer");
    let dir = tempfile::tempdir().unwrap();
    for f in ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let fast = ClipTokenizer::load(&src, 77).unwrap();
    let slow = ClipTokenizer::load(dir.path(), 77).unwrap();
    let long = "a very long prompt, ".repeat(40);
    for text in ["a photo of a cat", "", "Hello   World!! 123 don't <|endoftext|> émigré", long.as_str()] {
        let ids = fast.encode(text).unwrap();
        assert_eq!(ids.len(), 77);
        assert_eq!(ids, slow.encode(text).unwrap(), "{text:?}");
    }
    let ids = fast.encode(&long).unwrap();
    assert_eq!((ids[0], ids[76]), (49406, 49407), "truncated to bos + 75 tokens + eos");
    // What is cut off is said: 40 × 5 tokens, 75 kept.
    let (cut, tokens) = fast.cut_off(&long).unwrap().expect("the long prompt is cut");
    assert_eq!(tokens, 200);
    assert_eq!(cut, "a very long prompt, ".repeat(25), "15 of the 40 phrases fit");
    assert_eq!(fast.cut_off("a photo of a cat").unwrap(), None);
    assert_eq!(fast.cut_off(&"word ".repeat(75)).unwrap(), None, "75 tokens fit");
    assert!(fast.cut_off(&"word ".repeat(76)).unwrap().is_some());

    // SD 2.x pads with "!" (id 0), named by special_tokens_map.json.
    std::fs::write(
        dir.path().join("special_tokens_map.json"),
        r#"{"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!", "unk_token": "<|endoftext|>"}"#,
    )
    .unwrap();
    let sd2 = ClipTokenizer::load(dir.path(), 77).unwrap();
    assert_eq!(sd2.pad_id(), 0);
    assert_eq!(&sd2.encode("a photo of a cat").unwrap()[..9], &[49406, 320, 1125, 539, 320, 2368, 49407, 0, 0]);
}

#[test]
fn sd_tiny_generator_writes_the_fixture_layout_deterministically() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    generate_tiny_sd(a.path()).unwrap();
    generate_tiny_sd(b.path()).unwrap();
    let fixture = pipeline_dir();
    for rel in [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "unet/config.json",
        "vae/config.json",
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json",
    ] {
        assert_eq!(std::fs::read(a.path().join(rel)).unwrap(), std::fs::read(fixture.join(rel)).unwrap(), "{rel}");
    }
    for rel in ["text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"] {
        let bytes = std::fs::read(a.path().join(rel)).unwrap();
        assert_eq!(bytes, std::fs::read(b.path().join(rel)).unwrap(), "{rel} is deterministic");
        let got = candle_core::safetensors::load(a.path().join(rel), &Device::Cpu).unwrap();
        let want = candle_core::safetensors::load(fixture.join(rel), &Device::Cpu).unwrap();
        let mut got_names: Vec<_> = got.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect();
        let mut want_names: Vec<_> = want.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect();
        got_names.sort();
        want_names.sort();
        assert_eq!(got_names, want_names, "{rel}: tensor names and shapes");
    }
    // The vocab.json + merges.txt route gives the same tokenizer.
    std::fs::remove_file(a.path().join("tokenizer/tokenizer.json")).unwrap();
    let te = TextEncoder::load(a.path(), &Device::Cpu, DType::F32).unwrap();
    let ids = te.token_ids("a photo of a cat").unwrap().to_vec2::<u32>().unwrap();
    assert_eq!(&ids[0][..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);

    // The whole pipeline runs on the generated model.
    let sd = StableDiffusion::load(b.path(), &Device::Cpu, DType::F32).unwrap();
    let cond = sd.text_encoder.encode("a lighthouse").unwrap();
    let uncond = sd.text_encoder.encode("").unwrap();
    let latent = Tensor::randn(0f32, 1f32, (1, 4, 8, 8), &Device::Cpu).unwrap();
    let eps = guided_eps(&sd.unet, &latent, 500.0, &cond, &uncond, 7.5).unwrap();
    assert_eq!(eps.dims(), &[1, 4, 8, 8]);
    let image = sd.vae.latent_to_image(&latent).unwrap();
    assert_eq!(image.dims(), &[1, 3, 16, 16]);
    let v = image.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
    assert!(eps.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|x| x.is_finite()));
}

/// Copies the fixture's `unet/` into a new pipeline folder with
/// `use_linear_projection` on and the transformer blocks' 1×1-convolution
/// projections reshaped into the linear layers SD 2.x checkpoints have.
fn fixture_unet_with_linear_projections() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("unet")).unwrap();
    let config = std::fs::read_to_string(pipeline_dir().join("unet/config.json")).unwrap();
    let config = config.replace("\"use_linear_projection\": false", "\"use_linear_projection\": true");
    assert!(config.contains("\"use_linear_projection\": true"));
    std::fs::write(dir.path().join("unet/config.json"), config).unwrap();
    let weights = pipeline_dir().join("unet/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(weights, &Device::Cpu).unwrap();
    let mut reshaped = 0;
    for (name, t) in tensors.iter_mut() {
        if (name.ends_with("proj_in.weight") || name.ends_with("proj_out.weight")) && t.rank() == 4 {
            let (o, i, _, _) = t.dims4().unwrap();
            *t = t.reshape((o, i)).unwrap();
            reshaped += 1;
        }
    }
    assert!(reshaped >= 4, "the fixture's transformer blocks have conv projections");
    candle_core::safetensors::save(&tensors, dir.path().join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    dir
}

/// SD 2.x transformer blocks use linear projections; on the same weights
/// they must give diffusers' output of the 1×1-convolution version.
#[test]
fn sd2_linear_projections_match_diffusers_on_the_same_weights() {
    let want = expected("unet_step.safetensors");
    let dir = fixture_unet_with_linear_projections();
    let unet = load_unet(dir.path(), &Device::Cpu, DType::F32).unwrap();
    let t = want["timestep"].to_vec1::<f32>().unwrap()[0] as f64;
    let got = unet.forward(&want["sample"], t, &want["encoder_hidden_states"]).unwrap();
    assert_close("unet with linear projections", &got, &want["noise_pred"]);
}

/// `tiny:sd2` has the SD 2.x traits; the pipeline loads and runs it with no
/// code change: exact GELU in the text encoder, `!` padding, heads per
/// block, linear projections, v-prediction with trailing spacing.
#[test]
fn sd2_style_tiny_model_loads_pads_with_its_own_token_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    generate_tiny_sd2(dir.path()).unwrap();
    let tokenizer = ClipTokenizer::load(&dir.path().join("tokenizer"), 77).unwrap();
    assert_eq!(tokenizer.pad_id(), 0, "`!` is id 0 of the CLIP vocabulary");
    let ids = tokenizer.encode("a cat").unwrap();
    assert_eq!(&ids[..4], &[49406, 320, 2368, 49407]);
    assert!(ids[4..].iter().all(|&id| id == 0), "padded with `!`, not with <|endoftext|>");
    let scheduler = std::fs::read_to_string(dir.path().join("scheduler/scheduler_config.json")).unwrap();
    assert!(scheduler.contains("v_prediction") && scheduler.contains("trailing"));

    let sd = StableDiffusion::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    let cond = sd.text_encoder.encode("a lighthouse").unwrap();
    let uncond = sd.text_encoder.encode("").unwrap();
    let latent = Tensor::randn(0f32, 1f32, (1, 4, 8, 8), &Device::Cpu).unwrap();
    let v = guided_eps(&sd.unet, &latent, 500.0, &cond, &uncond, 7.5).unwrap();
    assert_eq!(v.dims(), &[1, 4, 8, 8]);
    assert!(v.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|x| x.is_finite()));
}

mod ops {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Instant;

    use candle_core::{DType, Device, IndexOp, Tensor};
    use flow_engine::models::ResolvedModel;
    use flow_engine::{CancelToken, Inputs, OpContext, Outputs, Registry, Value, ValueType};
    use flow_nodes::sd::SdCond;

    use super::{assert_close, expected, pipeline_dir};

    fn registry() -> Registry {
        let mut reg = Registry::new();
        flow_nodes::sd::register(&mut reg);
        reg
    }

    fn model() -> Value {
        ResolvedModel {
            reference: "tests/fixtures/tiny-sd/pipeline".into(),
            path: pipeline_dir().canonicalize().unwrap(),
            kind: Some("diffusers".into()),
            fingerprint: "tiny-sd-fixture".into(),
        }
        .into_value()
    }

    fn run(reg: &Registry, op: &str, inputs: Vec<(&str, Value)>) -> anyhow::Result<Outputs> {
        let op = reg.get(op).unwrap();
        let mut values: BTreeMap<String, Value> = inputs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        for port in &op.spec().inputs {
            if let (false, Some(d)) = (values.contains_key(port.name), &port.default) {
                values.insert(port.name.to_string(), d.clone());
            }
        }
        let sink: flow_engine::EventSink = Arc::new(|_| {});
        let ctx = OpContext::new("n", Device::Cpu, ".".into(), CancelToken::new(), sink, Instant::now(), Default::default());
        let out = op.run(&Inputs::new(values), &ctx)?;
        out.check_against(op.spec())?;
        Ok(out)
    }

    fn tensor(kind: ValueType, t: &Tensor) -> Value {
        Value::tensor(kind, t.clone())
    }

    #[test]
    fn sd_ops_encode_prompt_and_cond_round_trip() {
        let reg = registry();
        let clip = expected("clip.safetensors");
        let out = run(&reg, "sd.encode_prompt", vec![("model", model()), ("prompt", "a photo of a cat".into())]).unwrap();
        let value = out.get("cond").unwrap();
        let cond = value.as_object::<SdCond>().unwrap();
        assert_close("op cond", &cond.cond, &clip["last_hidden_state"].i(0..1).unwrap());
        assert_close("op uncond (negative \"\")", &cond.uncond, &clip["last_hidden_state"].i(1..2).unwrap());
        let Value::Object(obj) = value else { panic!("cond is an object") };
        let back = reg.decode_object(obj.type_tag(), &obj.to_plain().unwrap()).unwrap();
        assert_eq!(back.value_type(), ValueType::Cond);
        let back = back.as_object::<SdCond>().unwrap();
        assert_eq!(back.cond.to_vec3::<f32>().unwrap(), cond.cond.to_vec3::<f32>().unwrap());
    }

    #[test]
    fn sd_ops_vae_decode_and_encode() {
        let reg = registry();
        let traj = expected("trajectory_ddim.safetensors");
        let out = run(&reg, "sd.vae_decode", vec![("model", model()), ("latent", tensor(ValueType::Latent, &traj["final_latent"]))])
            .unwrap();
        assert_close("op vae_decode image", out.get("image").unwrap().as_tensor().unwrap(), &traj["image"]);

        let i2i = expected("img2img_ddim.safetensors");
        let image = i2i["input_image"].affine(0.5, 0.5).unwrap();
        let inputs = || vec![("model", model()), ("image", tensor(ValueType::Image, &image))];
        let mut with_noise = inputs();
        with_noise.push(("noise", tensor(ValueType::Tensor, &i2i["vae_sample_eps"])));
        let out = run(&reg, "sd.vae_encode", with_noise).unwrap();
        assert_close("op vae_encode (eps given)", out.get("latent").unwrap().as_tensor().unwrap(), &i2i["init_latents"]);
        let mean = run(&reg, "sd.vae_encode", inputs()).unwrap();
        let want_mean = (&i2i["vae_latent_mean"] * 0.18215).unwrap();
        assert_close("op vae_encode (mean)", mean.get("latent").unwrap().as_tensor().unwrap(), &want_mean);
        let mut seeded = inputs();
        seeded.push(("seed", Value::Int(7)));
        let a = run(&reg, "sd.vae_encode", seeded.clone()).unwrap();
        let b = run(&reg, "sd.vae_encode", seeded).unwrap();
        let (a, b) = (a.get("latent").unwrap().as_tensor().unwrap(), b.get("latent").unwrap().as_tensor().unwrap());
        assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let odd = Tensor::zeros((1, 3, 15, 16), DType::F32, &Device::Cpu).unwrap();
        let err = run(&reg, "sd.vae_encode", vec![("model", model()), ("image", tensor(ValueType::Image, &odd))]).unwrap_err();
        assert!(err.to_string().contains("multiples of 2"), "{err}");
    }

    #[test]
    fn sd_ops_empty_latent_and_latent_upscale() {
        let reg = registry();
        let dims = |out: Outputs| out.get("latent").unwrap().as_tensor().unwrap().dims().to_vec();
        let tiny = run(&reg, "sd.empty_latent", vec![("model", model()), ("width", Value::Int(24)), ("height", Value::Int(16))]);
        assert_eq!(dims(tiny.unwrap()), [1, 4, 8, 12], "tiny VAE: factor 2");
        let plain = run(&reg, "sd.empty_latent", vec![("batch", Value::Int(2))]).unwrap();
        assert_eq!(dims(plain), [2, 4, 64, 64]);
        assert!(run(&reg, "sd.empty_latent", vec![("width", Value::Int(500))]).is_err());

        let x = Tensor::arange(0f32, 16.0, &Device::Cpu).unwrap().reshape((1, 1, 4, 4)).unwrap();
        let near = run(&reg, "latent.upscale", vec![("latent", tensor(ValueType::Latent, &x))]).unwrap();
        let near = near.get("latent").unwrap().as_tensor().unwrap().clone();
        assert_eq!(near.dims(), [1, 1, 8, 8]);
        assert_eq!(near.i((0, 0, 1, 1)).unwrap().to_scalar::<f32>().unwrap(), 0.0);
        assert_eq!(near.i((0, 0, 7, 7)).unwrap().to_scalar::<f32>().unwrap(), 15.0);
        let bil = run(
            &reg,
            "latent.upscale",
            vec![("latent", tensor(ValueType::Latent, &x)), ("scale", Value::Float(1.5)), ("method", "bilinear".into())],
        )
        .unwrap();
        assert_eq!(dims(bil), [1, 1, 6, 6]);
        assert!(run(&reg, "latent.upscale", vec![("latent", tensor(ValueType::Latent, &x)), ("method", "cubic".into())]).is_err());
    }
}

/// Float64 weights skip the fused float32 CPU kernels, so this runs the
/// candle-op paths that other devices and dtypes (CUDA, f16) take.
/// `precision: f16` (the CUDA default) on the same weights: the text encoder
/// and UNet stay close to diffusers' float32 outputs. Measured here on the
/// CPU, where candle runs the same float16 graph.
#[test]
fn sd_text_encoder_and_unet_in_f16_stay_close() {
    let dev = Device::Cpu;
    let worst = |got: &Tensor, want: &Tensor| -> f32 {
        let g = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let w = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale
    };
    let clip = expected("clip.safetensors");
    let te = TextEncoder::load(&pipeline_dir(), &dev, DType::F16).unwrap();
    let hidden = te.encode("a photo of a cat").unwrap();
    let clip_err = worst(&hidden, &clip["last_hidden_state"].i(0..1).unwrap());
    let want = expected("unet_step.safetensors");
    let unet = load_unet(&pipeline_dir(), &dev, DType::F16).unwrap();
    let t = want["timestep"].to_vec1::<f32>().unwrap()[0] as f64;
    let got = unet.forward(&want["sample"], t, &want["encoder_hidden_states"]).unwrap();
    let unet_err = worst(&got, &want["noise_pred"]);
    println!("f16 max abs error relative to the largest value: clip {clip_err:.2e}, unet {unet_err:.2e}");
    assert!(clip_err < 5e-3 && unet_err < 5e-3, "clip {clip_err}, unet {unet_err}");
}

#[test]
fn sd_candle_op_paths_in_f64() {
    let dev = Device::Cpu;
    let clip = expected("clip.safetensors");
    let te = TextEncoder::load(&pipeline_dir(), &dev, DType::F64).unwrap();
    let ids = te.token_ids("a photo of a cat").unwrap();
    let hidden = te.model.forward(&ids).unwrap();
    assert_close("f64 clip last_hidden_state", &hidden, &clip["last_hidden_state"].i(0..1).unwrap());
    let want = expected("unet_step.safetensors");
    let unet = load_unet(&pipeline_dir(), &dev, DType::F64).unwrap();
    let t = want["timestep"].to_vec1::<f32>().unwrap()[0] as f64;
    let got = unet.forward(&want["sample"], t, &want["encoder_hidden_states"]).unwrap();
    assert_close("f64 unet noise_pred", &got, &want["noise_pred"]);
    let want = expected("vae.safetensors");
    let vae = load_vae(&pipeline_dir(), &dev, DType::F64).unwrap();
    assert_close("f64 vae decoded", &vae.decode(&want["latent"]).unwrap(), &want["decoded"]);
    assert_close("f64 vae latent_mean", &vae.encode(&want["image"]).unwrap().mean, &want["latent_mean"]);
}
