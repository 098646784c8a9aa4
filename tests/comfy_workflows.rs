//! ComfyUI API-format workflows through the real binary: `flow run` /
//! `validate` / `plan` on `.json` files, `flow import comfy`, and errors in
//! ComfyUI's terms (every kind, all at once, exit 2, never a panic). The
//! workflows of graphs/comfy/ run here against the tiny single-file
//! checkpoint in a ComfyUI-layout models folder.

mod common;

use std::path::{Path, PathBuf};

use common::{stderr, stdout, Sandbox};
use flow_nodes::comfy::{translate_to_yaml, WorkflowErrors};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A sandbox holding graphs/comfy/ and a models folder with the tiny checkpoint.
fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    let comfy = sb.path().join("comfy");
    std::fs::create_dir_all(&comfy).unwrap();
    for e in std::fs::read_dir(root().join("graphs/comfy")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), comfy.join(e.file_name())).unwrap();
    }
    let ckpt = sb.path().join("models/checkpoints");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::fs::copy(
        root().join("tests/fixtures/tiny-sd15-single/tiny-sd15-s1.safetensors"),
        ckpt.join("tiny-sd15-s1.safetensors"),
    )
    .unwrap();
    sb
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(root().join("tests/fixtures/comfy").join(name)).unwrap()
}

fn errors_of(text: &str) -> WorkflowErrors {
    translate_to_yaml(text, "wf.json").expect_err("the workflow is invalid")
}

/// (node id, kind, input) of every node error.
fn kinds(e: &WorkflowErrors) -> Vec<(String, String, Option<String>)> {
    let mut v = Vec::new();
    for (id, n) in &e.node_errors {
        for err in &n.errors {
            v.push((id.clone(), err.kind.clone(), err.input_name().map(str::to_string)));
        }
    }
    v
}

fn has(v: &[(String, String, Option<String>)], id: &str, kind: &str, input: Option<&str>) -> bool {
    v.iter().any(|(i, k, n)| i == id && k == kind && n.as_deref() == input)
}

#[test]
fn every_error_kind_is_reported_at_once_in_comfyui_terms() {
    let e = errors_of(&fixture("every_error.json"));
    let v = kinds(&e);
    let want: &[(&str, &str, Option<&str>)] = &[
        ("3", "value_smaller_than_min", Some("steps")),
        ("3", "value_bigger_than_max", Some("cfg")),
        ("3", "value_not_in_list", Some("sampler_name")),
        ("3", "value_not_in_list", Some("scheduler")),
        ("3", "bad_linked_input", Some("latent_image")),
        ("3", "required_input_missing", Some("denoise")),
        ("4", "required_input_missing", Some("batch_size")),
        ("5", "missing_node_type", None),
        ("6", "bad_linked_input", Some("vae")),
        ("7", "bad_linked_input", Some("images")),
        ("8", "missing_node_type", None),
        ("10", "value_not_in_list", Some("upscale_method")),
        ("10", "dependency_cycle", None),
        ("11", "dependency_cycle", None),
        ("12", "return_type_mismatch", Some("samples")),
    ];
    for (id, kind, input) in want {
        assert!(has(&v, id, kind, *input), "missing {id} {kind} {input:?} in {v:#?}");
    }
    assert_eq!(v.len(), want.len(), "{v:#?}");

    // ComfyUI's JSON shape, for a server.
    let json: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
    assert_eq!(json["error"]["type"], "prompt_outputs_failed_validation");
    let k = &json["node_errors"]["3"];
    assert_eq!(k["class_type"], "KSampler");
    assert_eq!(json["node_errors"]["12"]["dependent_outputs"], serde_json::json!(["13"]));
    let sampler =
        k["errors"].as_array().unwrap().iter().find(|x| x["extra_info"]["input_name"] == "sampler_name").unwrap();
    assert_eq!(sampler["message"], "Value not in list");
    assert_eq!(sampler["extra_info"]["received_value"], "dpmpp_sde");
    assert!(sampler["details"].as_str().unwrap().contains("Brownian tree"), "{sampler}");
    let scheduler =
        k["errors"].as_array().unwrap().iter().find(|x| x["extra_info"]["input_name"] == "scheduler").unwrap();
    assert!(scheduler["details"].as_str().unwrap().contains("did you mean `karras`?"), "{scheduler}");
    let mismatch = &json["node_errors"]["12"]["errors"][0];
    assert_eq!(mismatch["extra_info"]["received_type"], "CONDITIONING");
    assert_eq!(mismatch["extra_info"]["linked_node"], serde_json::json!(["2", 0]));
    assert!(json["node_errors"]["5"]["errors"][0]["details"].as_str().unwrap().contains("did you mean `KSampler`?"));
    assert!(json["node_errors"]["8"]["errors"][0]["details"].as_str().unwrap().contains("not supported by flow yet"));
    assert!(
        json["node_errors"]["10"]["errors"].to_string().contains("10 -> 11 -> 10")
            || json["node_errors"]["10"]["errors"].to_string().contains("11 -> 10 -> 11")
    );
}

#[test]
fn the_cli_prints_every_error_with_node_class_and_input_and_exits_2() {
    let sb = Sandbox::new();
    let path = sb.write("wf.json", &fixture("every_error.json"));
    for cmd in [
        vec!["validate", "wf.json"],
        vec!["run", "wf.json"],
        vec!["plan", "wf.json"],
        vec!["import", "comfy", "wf.json"],
    ] {
        let out = sb.flow(&cmd);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(
            err.contains(
                "wf.json: node 3 (KSampler) input `sampler_name`: value_not_in_list: sampler_name: 'dpmpp_sde' not in"
            ),
            "{err}"
        );
        assert!(err.contains("wf.json: node 5 (KSamplr): missing_node_type:"), "{err}");
        assert!(err.contains("wf.json: node 12 (VAEDecode) input `samples`: return_type_mismatch"), "{err}");
        assert!(err.contains("15 errors in wf.json"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(path.exists());
}

#[test]
fn bad_json_and_garbage_bytes_are_located_errors_never_panics() {
    let sb = Sandbox::new();
    sb.write("broken.json", "{\n  \"3\": { \"class_type\": \"KSampler\",\n    \"inputs\": { \"seed\": 1,, }\n}\n");
    let out = sb.flow(&["validate", "broken.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("broken.json:3:27:"), "{}", stderr(&out));

    let deep = format!("{{\"1\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, 0x7b, 0x00, 0x80],
        b"{".to_vec(),
        b"{}".to_vec(),
        b"[]".to_vec(),
        b"{\"1\": 5}".to_vec(),
        b"{\"1\": {\"class_type\": 7}}".to_vec(),
        b"{\"1\": {\"class_type\": \"SaveImage\", \"inputs\": {\"images\": [\"1\", 18446744073709551615]}}}".to_vec(),
        b"{\"1\": {\"class_type\": \"SaveImage\", \"inputs\": {\"images\": [[], -1], \"filename_prefix\": {\"a\": 1}}}}".to_vec(),
        b"{\"1\": {\"class_type\": \"EmptyLatentImage\", \"inputs\": {\"width\": 1e400, \"height\": \"x\", \"batch_size\": null}}}".to_vec(),
        b"{\"nodes\": [], \"links\": []}".to_vec(),
        deep.into_bytes(),
    ];
    for (i, bytes) in cases.iter().enumerate() {
        let name = format!("g{i}.json");
        std::fs::write(sb.path().join(&name), bytes).unwrap();
        let out = sb.flow(&["validate", &name]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "case {i}: {err}");
        assert!(!err.contains("panicked") && err.contains(&name), "case {i}: {err}");
    }
}

#[test]
fn imported_yaml_names_nodes_after_titles_and_validates_in_flow() {
    let sb = sandbox();
    let out = sb.flow(&["import", "comfy", "comfy/default_txt2img.json", "-o", "comfy/default_txt2img.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let yaml = std::fs::read_to_string(sb.path().join("comfy/default_txt2img.yaml")).unwrap();
    for want in [
        "  load_checkpoint: ckpt:tiny-sd15-s1.safetensors",
        "  clip_text_encode_prompt:  # ComfyUI nodes 6 (positive) and 7 (negative), CLIPTextEncode",
        "  ksampler:  # ComfyUI node 3 (KSampler)",
        "  seed: 156680208700286",
        "  negative: text, watermark",
        "      generator: torch",
        "      path: output/ComfyUI_00001_.png",
    ] {
        assert!(yaml.contains(want), "no `{want}` in\n{yaml}");
    }
    assert!(!yaml.contains("comfy_prompt"), "the import keeps the graph readable:\n{yaml}");
    let out = sb.flow(&["validate", "comfy/default_txt2img.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{yaml}", stderr(&out));
    // Printed to stdout without -o.
    let out = sb.flow(&["import", "comfy", "comfy/hires_fix.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains("  hires_sampler:  # ComfyUI node 11 (KSampler) \"Hires Sampler\""), "{printed}");
    assert!(printed.contains("      denoise: 0.5"), "{printed}");
}

#[test]
fn set_overrides_reach_the_translated_params() {
    let sb = sandbox();
    let out = sb.flow(&[
        "plan",
        "comfy/default_txt2img.json",
        "--models-dir",
        "models",
        "--set",
        "steps=3",
        "--set",
        "prompt=a red fox",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let out = sb.flow(&["plan", "comfy/default_txt2img.json", "--models-dir", "models", "--set", "stepz=3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("did you mean `steps`?"), "{}", stderr(&out));
}

/// Runs a workflow in the sandbox; returns the PNG it wrote.
fn run(sb: &Sandbox, workflow: &str, png: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec!["run", workflow, "--models-dir", "models"];
    args.extend_from_slice(extra);
    let out = sb.flow(&args);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let path = sb.path().join("comfy").join(png);
    let img = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(img.width() > 0);
    path
}

#[test]
fn comfyui_default_workflow_runs_and_saves_a_png_with_the_workflow() {
    let sb = sandbox();
    let png = run(&sb, "comfy/default_txt2img.json", "output/ComfyUI_00001_.png", &["--set", "steps=4"]);
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
    let chunk = text_chunk(&std::fs::read(&png).unwrap(), "prompt").expect("a `prompt` text chunk, as ComfyUI writes");
    if let Some(text) = chunk {
        let prompt: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(prompt["4"]["class_type"], "CheckpointLoaderSimple");
    }
    // The graph comes back from the picture.
    let out = sb.flow(&["import", "png", png.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("ckpt:tiny-sd15-s1.safetensors"), "{}", stdout(&out));
}

/// The text chunk called `keyword`: `Some(Some(text))` for tEXt, `Some(None)`
/// for a compressed one, `None` if absent.
fn text_chunk(png: &[u8], keyword: &str) -> Option<Option<String>> {
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let data = &png[at + 8..(at + 8 + len).min(png.len())];
        if matches!(kind, b"tEXt" | b"zTXt" | b"iTXt")
            && data.starts_with(keyword.as_bytes())
            && data.get(keyword.len()) == Some(&0)
        {
            let text = (kind == b"tEXt").then(|| String::from_utf8_lossy(&data[keyword.len() + 1..]).into_owned());
            return Some(text);
        }
        at += 12 + len;
    }
    None
}

#[test]
fn hires_fix_workflow_runs_at_one_and_a_half_times_the_size() {
    let sb = sandbox();
    let png = run(&sb, "comfy/hires_fix.json", "output/hires/fox_00001_.png", &["--set", "steps=3"]);
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (96, 96));
}

#[test]
fn a_workflow_with_an_unsupported_node_fails_clearly() {
    let sb = sandbox();
    let out = sb.flow(&["run", "comfy/unsupported_lora.json", "--models-dir", "models"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("comfy/unsupported_lora.json: node 10 (LoraLoader): missing_node_type: `LoraLoader` is not a ComfyUI node class flow supports"), "{err}");
    assert!(err.contains("1 error in"), "{err}");
    assert!(!sb.path().join("comfy/output").exists());
}

#[test]
fn every_name_the_table_accepts_is_one_flow_runs() {
    use flow_nodes::comfy::names::{IMAGE_UPSCALE_METHODS, LATENT_UPSCALE_METHODS, SAMPLERS, SCHEDULERS};
    let registry = flow_nodes::registry();
    let base = std::fs::read_to_string(root().join("graphs/comfy/hires_fix.json")).unwrap();
    let mut cases = Vec::new();
    for s in SAMPLERS {
        cases.push(base.replacen("\"dpmpp_2m\"", &format!("\"{s}\""), 1));
    }
    for s in SCHEDULERS {
        cases.push(base.replacen("\"karras\"", &format!("\"{s}\""), 1));
    }
    for m in LATENT_UPSCALE_METHODS {
        cases.push(base.replace("\"nearest-exact\"", &format!("\"{m}\"")));
    }
    for m in IMAGE_UPSCALE_METHODS {
        let mut wf: serde_json::Value = serde_json::from_str(&base).unwrap();
        wf["12"] = serde_json::json!({ "class_type": "ImageScaleBy", "inputs": { "image": ["8", 0], "scale_by": 2, "upscale_method": m } });
        wf["9"]["inputs"]["images"] = serde_json::json!(["12", 0]);
        cases.push(wf.to_string());
    }
    for text in cases {
        let yaml = flow_nodes::comfy::to_yaml(&text, "wf.json", flow_nodes::comfy::Purpose::Run).unwrap();
        if let Err(d) = flow_engine::graph::from_bytes("wf.yaml", root(), yaml.as_bytes(), &[], &registry) {
            panic!("{}\n{yaml}", d.render());
        }
    }
}
