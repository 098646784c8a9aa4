//! PNG metadata both ways: `image.save` writes flow's graph, AUTOMATIC1111's
//! `parameters` (from the sd.sample / sd.encode_prompt nodes upstream) and
//! ComfyUI's `prompt`; `png_import` recovers a graph that makes the same
//! picture, and reads ComfyUI and AUTOMATIC1111 PNGs.

mod common;

use std::path::Path;

use common::{stderr, Sandbox};
use flow_nodes::image::png_import::{import_png, png_text_chunks, ImportKind};

const GRAPH: &str = "flow: 1
name: fox
params: { prompt: a red fox, seed: 7 }
models: { sd: tiny:sd }
nodes:
  cond: { op: sd.encode_prompt, in: { model: $sd, prompt: $prompt, negative: \"blurry, $$5\" } }
  noise: { op: sd.empty_latent, in: { model: $sd, width: 32, height: 32 } }
  sample: { op: sd.sample, in: { model: $sd, cond: $cond, latent: $noise, steps: 2, cfg: 5.0, seed: $seed, sampler: euler_a } }
  image: { op: sd.vae_decode, in: { model: $sd, latent: $sample } }
  save: { op: image.save, in: { image: $image, path: \"out/fox-${seed}.png\" } }
";

fn chunks(path: &Path) -> std::collections::BTreeMap<String, String> {
    png_text_chunks(&std::fs::read(path).unwrap()).unwrap()
}

fn pixels(path: &Path) -> Vec<u8> {
    image::open(path).unwrap().into_rgb8().into_raw()
}

#[test]
fn a_saved_sd_image_carries_a1111_parameters_and_its_graph_comes_back() {
    let sb = Sandbox::new();
    sb.write("g.yaml", GRAPH);
    let out = sb.flow(&["run", "g.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let png = sb.path().join("out/fox-7.png");
    let text = chunks(&png);
    let parameters = &text["parameters"];
    let want = "a red fox\nNegative prompt: blurry, $5\nSteps: 2, Sampler: Euler a, CFG scale: 5, Seed: 7, \
                Size: 32x32, Model: \"tiny:sd\", ";
    assert!(parameters.starts_with(want), "{parameters}");
    assert!(parameters.contains(", Graph: fox, Graph hash: "), "{parameters}");
    assert!(parameters.ends_with(&format!(", Version: flow {}", env!("CARGO_PKG_VERSION"))), "{parameters}");
    assert!(!text.contains_key("prompt"), "no ComfyUI workflow was given");

    // The recovered graph, run from another folder, makes the same picture.
    let imported = import_png(&png).unwrap();
    assert_eq!(imported.source, ImportKind::Flow);
    assert!(imported.yaml.contains("negative: \"blurry, $$5\""), "{}", imported.yaml);
    sb.write("again/g.yaml", &imported.yaml);
    let out = sb.flow(&["run", "again/g.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), imported.yaml);
    let again = sb.path().join("again/out/fox-7.png");
    assert_eq!(pixels(&again), pixels(&png));
    assert_eq!(chunks(&again)["parameters"].split("Graph hash").next(), parameters.split("Graph hash").next());
}

#[test]
fn a_comfy_workflow_is_stored_as_the_prompt_chunk() {
    let sb = Sandbox::new();
    image::RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30])).save(sb.path().join("in.png")).unwrap();
    let workflow = r#"{"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}}, "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "${x}"}}}"#;
    sb.write(
        "g.yaml",
        &format!(
            "flow: 1\nnodes:\n  img: {{ op: image.load, in: {{ path: in.png }} }}\n  \
             save: {{ op: image.save, in: {{ image: $img, path: out/c.png, comfy_prompt: '{workflow}' }} }}\n"
        ),
    );
    let out = sb.flow(&["run", "g.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = chunks(&sb.path().join("out/c.png"));
    assert_eq!(text["prompt"], workflow);
    // No sd.sample upstream: `parameters` summarises the run.
    assert_eq!(text["parameters"].split(", Graph hash").next(), Some("Size: 3x2, Graph: g"));

    sb.write(
        "bad.yaml",
        "flow: 1\nnodes:\n  img: { op: image.load, in: { path: in.png } }\n  \
         save: { op: image.save, in: { image: $img, path: out/d.png, comfy_prompt: 'not json' } }\n",
    );
    let (code, events) = sb.run_json("bad.yaml", &[]);
    assert_eq!(code, 1);
    let error = common::event_for(&events, "node_failed", "save")["error"].as_str().unwrap().to_string();
    assert!(error.contains("input `comfy_prompt` is not a ComfyUI workflow"), "{error}");
}

/// A PNG's bytes with a tEXt chunk inserted before IEND.
fn with_text_chunk(png: &[u8], keyword: &str, text: &str) -> Vec<u8> {
    let mut data = keyword.as_bytes().to_vec();
    data.push(0);
    data.extend_from_slice(text.as_bytes());
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    let typed: Vec<u8> = b"tEXt".iter().chain(&data).copied().collect();
    chunk.extend_from_slice(&typed);
    chunk.extend_from_slice(&crc32(&typed).to_be_bytes());
    let iend = png.len() - 12;
    [&png[..iend], &chunk, &png[iend..]].concat()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn comfy_and_a1111_pngs_become_graphs() {
    let sb = Sandbox::new();
    let mut plain = Vec::new();
    image::RgbImage::new(2, 2).write_to(&mut std::io::Cursor::new(&mut plain), image::ImageFormat::Png).unwrap();

    let workflow = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("graphs/comfy/default_txt2img.json")).unwrap();
    let comfy = sb.path().join("ComfyUI_00001_.png");
    std::fs::write(&comfy, with_text_chunk(&plain, "prompt", &workflow)).unwrap();
    let imported = import_png(&comfy).unwrap();
    assert_eq!(imported.source, ImportKind::ComfyUi);
    assert!(imported.yaml.contains("op: sd.sample"), "{}", imported.yaml);

    let a1111 = sb.path().join("00001-42.png");
    let parameters = "a castle\nNegative prompt: fog\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, \
                      Seed: 42, Size: 64x64, Model: tiny-sd15-s1, RNG: CPU, Version: v1.10.1";
    std::fs::write(&a1111, with_text_chunk(&plain, "parameters", parameters)).unwrap();
    let imported = import_png(&a1111).unwrap();
    assert_eq!(imported.source, ImportKind::A1111);
    assert!(imported.yaml.contains("sd: \"ckpt:tiny-sd15-s1.safetensors\""), "{}", imported.yaml);
    // Run with the checkpoint in a ComfyUI-layout models folder: the new
    // picture's `parameters` give back the same fields.
    sb.write("a1111.yaml", &imported.yaml);
    let checkpoints = sb.path().join("models/checkpoints");
    std::fs::create_dir_all(&checkpoints).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd15-single/tiny-sd15-s1.safetensors"),
        checkpoints.join("tiny-sd15-s1.safetensors"),
    )
    .unwrap();
    let out = sb.flow(&["run", "a1111.yaml", "--models-dir", "models"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), imported.yaml);
    let again = chunks(&sb.path().join("out/00001-42-42.png"))["parameters"].clone();
    let want = "a castle\nNegative prompt: fog\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, \
                Seed: 42, Size: 64x64, Model: tiny-sd15-s1, RNG: CPU, Graph: 00001-42, Graph hash: ";
    assert!(again.starts_with(want), "{again}");

    let err = import_png(&sb.path().join("in-nowhere.png")).unwrap_err().to_string();
    assert!(err.contains("in-nowhere.png"), "{err}");
    let bare = sb.path().join("bare.png");
    std::fs::write(&bare, &plain).unwrap();
    let err = import_png(&bare).unwrap_err().to_string();
    assert!(err.contains("holds no graph") && err.contains("no text chunks"), "{err}");
}
