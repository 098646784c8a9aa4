//! The models folder in ComfyUI's layout (`--models-dir`, `FLOW_MODELS_DIR`):
//! `ckpt:`-style references through the real binary, the flag before the
//! variable, `flow models list`, and cache keys equal to a path reference's.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use common::{stderr, stdout, Sandbox};
use flow_engine::models::{ModelLibrary, ModelProgress, ModelStore, StoreResolver};
use flow_engine::run::PlanOptions;
use flow_engine::{Engine, EngineConfig};

/// A graph encoding a prompt with model `reference`, printed by `debug.print`.
fn graph(reference: &str) -> String {
    format!(
        "flow: 1\nmodels:\n  sd: \"{reference}\"\nnodes:\n  cond: {{ op: sd.encode_prompt, in: {{ model: $sd, prompt: a lighthouse }} }}\n  \
         show: {{ op: debug.print, in: {{ value: $cond }} }}\n"
    )
}

/// A sandbox with a ComfyUI-layout folder `models/` holding a checkpoint in
/// a subfolder, an upscaler and an unreadable entry.
fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    sb.write("models/checkpoints/SD1.5/dreamy.safetensors", "checkpoint bytes");
    sb.write("models/checkpoints/put_checkpoints_here", "");
    sb.write("models/upscale_models/4x-demo.pth", "upscaler");
    sb.write("models/vae/.keep", "");
    sb.write("secret.safetensors", "outside");
    #[cfg(unix)]
    std::os::unix::fs::symlink("missing.safetensors", sb.path().join("models/checkpoints/broken.safetensors")).unwrap();
    sb
}

/// `flow ARGS` in the sandbox, with `FLOW_MODELS_DIR` set to `env_dir` (or unset).
fn flow(sb: &Sandbox, args: &[&str], env_dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flow"));
    cmd.args(args)
        .current_dir(sb.path())
        .env("FLOW_CACHE_DIR", sb.cache_dir())
        .env("FLOW_MODEL_CACHE", sb.cache_dir())
        .env_remove("FLOW_MODELS_DIR");
    if let Some(d) = env_dir {
        cmd.env("FLOW_MODELS_DIR", d);
    }
    cmd.output().expect("run flow")
}

#[test]
fn a_checkpoint_in_a_subfolder_resolves_by_its_comfyui_name() {
    let sb = sandbox();
    sb.write("g.yaml", &graph("ckpt:SD1.5/dreamy.safetensors"));
    let out = flow(&sb, &["plan", "g.yaml", "--models-dir", "models"], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("cond") && !text.contains("cannot run"), "{text}");
    // Windows separators, as workflows saved there write them, name the same file.
    sb.write("w.yaml", &graph("ckpt:SD1.5\\\\dreamy.safetensors"));
    let out = flow(&sb, &["plan", "w.yaml", "--models-dir", "models"], None);
    assert!(!stdout(&out).contains("cannot run"), "{}", stdout(&out));
}

#[test]
fn names_that_leave_the_folder_are_refused() {
    let sb = sandbox();
    sb.write("g.yaml", &graph("ckpt:../../secret.safetensors"));
    let out = flow(&sb, &["plan", "g.yaml", "--models-dir", "models"], None);
    let text = stdout(&out);
    assert!(text.contains("cannot run") && text.contains("`..` is not allowed"), "{text}");
    let abs = sb.path().join("secret.safetensors").display().to_string();
    sb.write("a.yaml", &graph(&format!("ckpt:{abs}")));
    let text = stdout(&flow(&sb, &["plan", "a.yaml", "--models-dir", "models"], None));
    assert!(text.contains("cannot run") && text.contains("absolute path"), "{text}");
}

#[test]
fn a_missing_file_lists_the_folder_with_a_suggestion() {
    let sb = sandbox();
    sb.write("g.yaml", &graph("ckpt:dreamy.safetensors"));
    let out = flow(&sb, &["run", "g.yaml", "--models-dir", "models"], None);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("model `ckpt:dreamy.safetensors`: no `dreamy.safetensors` in"), "{err}");
    assert!(err.contains("did you mean `ckpt:SD1.5/dreamy.safetensors`?"), "{err}");
    assert!(err.contains("it holds SD1.5/dreamy.safetensors"), "{err}");
}

#[test]
fn without_a_models_folder_the_error_says_how_to_set_one() {
    let sb = sandbox();
    sb.write("g.yaml", &graph("ckpt:SD1.5/dreamy.safetensors"));
    let out = flow(&sb, &["run", "g.yaml"], None);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no models folder is set; pass `--models-dir DIR` or set FLOW_MODELS_DIR"), "{err}");
    // A folder that does not exist is a usage error.
    let out = flow(&sb, &["run", "g.yaml", "--models-dir", "nowhere"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("error: --models-dir nowhere: cannot open"), "{}", stderr(&out));
    let out = flow(&sb, &["run", "g.yaml"], Some(&sb.path().join("nowhere")));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("error: FLOW_MODELS_DIR "), "{}", stderr(&out));
}

#[test]
fn the_flag_wins_over_the_environment_variable() {
    let sb = sandbox();
    sb.write("other/checkpoints/elsewhere.safetensors", "other");
    sb.write("g.yaml", &graph("ckpt:SD1.5/dreamy.safetensors"));
    let other = sb.path().join("other");
    let models = sb.path().join("models");
    let ok = |out: &Output| !stdout(out).contains("cannot run") && out.status.code() == Some(0);
    assert!(ok(&flow(&sb, &["plan", "g.yaml"], Some(&models))), "the variable alone is read");
    assert!(!ok(&flow(&sb, &["plan", "g.yaml"], Some(&other))), "the variable's folder lacks the file");
    let out = flow(&sb, &["plan", "g.yaml", "--models-dir", "models"], Some(&other));
    assert!(ok(&out), "{}", stdout(&out));
    let out = flow(&sb, &["plan", "g.yaml", "--models-dir", "other"], Some(&models));
    assert!(stdout(&out).contains("elsewhere.safetensors"), "{}", stdout(&out));
}

#[test]
fn models_list_shows_the_folder() {
    let sb = sandbox();
    let out = flow(&sb, &["models", "list", "--models-dir", "models"], None);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(text.contains("models folder (--models-dir): "), "{text}");
    let line = |reference: &str| text.lines().find(|l| l.starts_with(reference)).unwrap_or_else(|| panic!("no {reference} in\n{text}"));
    assert!(line("ckpt:SD1.5/dreamy.safetensors ").contains("16 B"), "{text}");
    assert!(line("upscaler:4x-demo.pth ").contains("8 B"), "{text}");
    #[cfg(unix)]
    assert!(line("ckpt:broken.safetensors ").contains("unreadable: cannot read"), "{text}");
    assert!(!text.contains("put_checkpoints_here") && !text.contains(".keep"), "{text}");
    // The variable is read when the flag is absent.
    let text = stdout(&flow(&sb, &["models", "list"], Some(&sb.path().join("models"))));
    assert!(text.contains("models folder (FLOW_MODELS_DIR): ") && text.contains("ckpt:SD1.5/dreamy.safetensors"), "{text}");
    let text = stdout(&flow(&sb, &["models", "list"], None));
    assert!(text.contains("no models folder: pass --models-dir DIR"), "{text}");
    // A ComfyUI install rather than its models/ folder.
    let text = stdout(&flow(&sb, &["models", "list", "--models-dir", "."], None));
    assert!(text.contains("it has none of checkpoints/, vae/"), "{text}");
}

#[test]
fn models_list_json_holds_every_entry() {
    let sb = sandbox();
    let out = flow(&sb, &["models", "list", "--json", "--models-dir", "models"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let folder = &doc["models_dir"];
    assert_eq!(folder["source"], "--models-dir");
    let models = folder["models"].as_array().unwrap();
    let refs: Vec<&str> = models.iter().map(|m| m["reference"].as_str().unwrap()).collect();
    let mut want = vec!["ckpt:SD1.5/dreamy.safetensors", "upscaler:4x-demo.pth"];
    if cfg!(unix) {
        want.insert(1, "ckpt:broken.safetensors");
    }
    assert_eq!(refs, want);
    assert_eq!(models[0]["size"], 16);
    assert_eq!(models[0]["folder"], "checkpoints");
    // Dummy bytes are no checkpoint: the entry says why.
    assert!(models[0]["checkpoint"]["error"].as_str().is_some_and(|e| e.contains("dreamy.safetensors")), "{doc:#}");
    assert!(models.last().unwrap()["checkpoint"].is_null());
    assert!(doc["catalog"].as_array().is_some_and(|c| !c.is_empty()));
    assert!(doc["tiny"].as_array().is_some_and(|t| t.iter().any(|k| k["name"] == "tiny:sd")));
}

/// The cache key of node `cond` of graph `yaml`, planned with a store that
/// reads `library`.
fn cond_key(dir: &Path, yaml: &str, library: &Path) -> String {
    let registry = flow_nodes::registry();
    let graph = flow_engine::graph::from_bytes("g.yaml", dir, yaml.as_bytes(), &[], &registry).expect("valid graph");
    let store = ModelStore::new(dir.join("cache")).with_library(ModelLibrary::new(library.to_path_buf()));
    let resolver = StoreResolver::new(Arc::new(store), Arc::new(|_: ModelProgress| {}));
    let engine = Engine::new(registry, Arc::new(resolver), EngineConfig::default()).unwrap();
    let plan = engine.plan(&graph, &PlanOptions::default());
    let i = graph.node_index("cond").unwrap();
    let node = plan.nodes[i].as_ref().expect("cond is planned");
    node.key.unwrap_or_else(|| panic!("no key: {:?}", node.decision)).to_hex()
}

#[test]
fn a_models_folder_reference_keys_like_the_path_it_names() {
    let sb = sandbox();
    let models: PathBuf = sb.path().join("models");
    let by_name = cond_key(sb.path(), &graph("ckpt:SD1.5/dreamy.safetensors"), &models);
    let by_path = cond_key(sb.path(), &graph("models/checkpoints/SD1.5/dreamy.safetensors"), &models);
    assert_eq!(by_name, by_path);
    // The key follows the file's bytes.
    sb.write("models/checkpoints/SD1.5/dreamy.safetensors", "other checkpoint bytes");
    assert_ne!(cond_key(sb.path(), &graph("ckpt:SD1.5/dreamy.safetensors"), &models), by_name);
}

/// The tiny single-file SD 1.5 checkpoint of the fixtures.
fn tiny_checkpoint() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd15-single/tiny-sd15-s1.safetensors")
}

#[test]
fn a_single_file_checkpoint_in_the_folder_runs_and_is_described() {
    let sb = sandbox();
    std::fs::copy(tiny_checkpoint(), sb.path().join("models/checkpoints/SD1.5/tiny-sd15-s1.safetensors")).unwrap();
    sb.write(
        "g.yaml",
        "flow: 1
models: { sd: ckpt:SD1.5/tiny-sd15-s1.safetensors }
defaults: { model: $sd }
nodes:
  cond: { op: sd.encode_prompt, in: { prompt: a lighthouse } }
  noise: { op: sd.empty_latent, in: { width: 64, height: 64 } }
  sample: { op: sd.sample, in: { cond: $cond, latent: $noise, steps: 2, seed: 1 } }
  image: { op: sd.vae_decode, in: { latent: $sample } }
  save: { op: image.save, in: { image: $image, path: out.png } }
",
    );
    let out = flow(&sb, &["run", "g.yaml", "--models-dir", "models"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let png = image::open(sb.path().join("out.png")).expect("a PNG");
    assert_eq!((png.width(), png.height()), (64, 64));

    let text = stdout(&flow(&sb, &["models", "list", "--models-dir", "models"], None));
    let line = text.lines().find(|l| l.starts_with("ckpt:SD1.5/tiny-sd15-s1.safetensors ")).expect(&text);
    assert!(line.contains("SD 1.x, float16, epsilon (family default)"), "{text}");
    // A file that is no checkpoint says why, and the listing goes on.
    assert!(
        text.lines().any(|l| l.starts_with("ckpt:SD1.5/dreamy.safetensors ") && l.contains("not a checkpoint flow reads: ")),
        "{text}"
    );
}
