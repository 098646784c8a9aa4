//! `flow import png`: a flow graph recovered from the text chunks of a PNG,
//! whichever tool wrote it:
//! - flow: the `flow:graph` chunk (the graph with the run's values) as is;
//! - ComfyUI: the `prompt` chunk (the API-format workflow) translated by
//!   [`crate::comfy::translate_to_yaml`] (ComfyUI's `workflow` chunk, the UI
//!   graph with positions, has no API form and is not read);
//! - AUTOMATIC1111 and tools that write its `parameters` text: a txt2img
//!   graph with its prompt, negative prompt, steps, sampler, schedule, CFG
//!   scale, seed, size, CLIP skip and model (`ckpt:NAME.safetensors`, looked
//!   up in the models folder); fields flow does not map are listed in a
//!   comment at the top.
//!
//! When a PNG holds several, the first of this list wins.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value as Json;

use super::a1111::{sampler_from_label, schedule_from_label, A1111Params};
use crate::fsutil;

/// PNG files read by the import are at most this large.
const MAX_PNG_BYTES: u64 = 1 << 30;

/// Which tool's metadata a graph was recovered from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportKind {
    /// flow's `flow:graph` chunk.
    Flow,
    /// ComfyUI's `prompt` chunk.
    ComfyUi,
    /// The AUTOMATIC1111 web UI's `parameters` chunk.
    A1111,
}

impl ImportKind {
    /// The tool's name, for messages.
    pub fn label(self) -> &'static str {
        match self {
            ImportKind::Flow => "flow",
            ImportKind::ComfyUi => "ComfyUI",
            ImportKind::A1111 => "AUTOMATIC1111",
        }
    }
}

/// A graph recovered from a PNG.
#[derive(Clone, Debug)]
pub struct ImportedGraph {
    /// The graph file's text.
    pub yaml: String,
    /// Where it came from.
    pub source: ImportKind,
}

/// Recovers a flow graph from the PNG at `path` (see the module docs).
pub fn import_png(path: &Path) -> Result<ImportedGraph> {
    let bytes = fsutil::read(path, MAX_PNG_BYTES, "PNG file")?;
    let chunks = png_text_chunks(&bytes)
        .with_context(|| format!("cannot read `{}` as PNG", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image.png".into());
    import_chunks(&chunks, &name)
}

/// [`import_png`] on the text chunks of a PNG called `name`.
pub fn import_chunks(chunks: &BTreeMap<String, String>, name: &str) -> Result<ImportedGraph> {
    if let Some(yaml) = chunks.get("flow:graph") {
        let mut header = format!("# Recovered by `flow import png` from {name}");
        if let Some(version) = chunks.get("flow:version") {
            header.push_str(&format!(" (written by flow {version})"));
        }
        return Ok(ImportedGraph {
            yaml: format!("{header}\n{yaml}"),
            source: ImportKind::Flow,
        });
    }
    if let Some(prompt) = chunks.get("prompt") {
        let yaml = crate::comfy::translate_to_yaml(prompt, name)
            .map_err(|e| anyhow!("the ComfyUI workflow in {name} cannot be translated:\n{e}"))?;
        return Ok(ImportedGraph {
            yaml,
            source: ImportKind::ComfyUi,
        });
    }
    if let Some(parameters) = chunks.get("parameters") {
        let yaml = a1111_graph(&A1111Params::parse(parameters), name)?;
        return Ok(ImportedGraph {
            yaml,
            source: ImportKind::A1111,
        });
    }
    if chunks.contains_key("workflow") {
        bail!(
            "{name} holds only ComfyUI's UI workflow (`workflow` chunk); flow reads the API-format \
             `prompt` chunk, which ComfyUI writes beside it: save the workflow with \"Export (API)\" \
             and use `flow import comfy`"
        );
    }
    let found: Vec<&str> = chunks.keys().map(String::as_str).collect();
    bail!(
        "{name} holds no graph: no `flow:graph`, ComfyUI `prompt` or AUTOMATIC1111 `parameters` text chunk{}",
        if found.is_empty() { " (it has no text chunks)".to_string() } else { format!(" (its text chunks: {})", found.join(", ")) }
    )
}

/// The text chunks of a PNG (tEXt, zTXt and iTXt, wherever they stand), by keyword.
pub fn png_text_chunks(bytes: &[u8]) -> Result<BTreeMap<String, String>> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info()?;
    // Reads the chunks after the image data too, without decoding it.
    reader.finish()?;
    let info = reader.info();
    let mut chunks = BTreeMap::new();
    for c in &info.uncompressed_latin1_text {
        chunks.insert(c.keyword.clone(), c.text.clone());
    }
    for c in &info.compressed_latin1_text {
        chunks.insert(c.keyword.clone(), c.get_text()?);
    }
    for c in &info.utf8_text {
        chunks.insert(c.keyword.clone(), c.get_text()?);
    }
    Ok(chunks)
}

/// A txt2img graph for the web UI's `parameters`, as YAML.
pub fn a1111_graph(p: &A1111Params, name: &str) -> Result<String> {
    let mut used = vec![
        "Steps",
        "CFG scale",
        "Seed",
        "Size",
        "Model",
        "Clip skip",
        "Sampler",
        "Schedule type",
    ];
    let mut notes = Vec::new();
    let int = |key: &str| -> Result<Option<i64>> {
        p.field(key)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| anyhow!("`{key}: {v}` is not a whole number"))
            })
            .transpose()
    };
    let steps = int("Steps")?.unwrap_or(20);
    let seed = int("Seed")?.unwrap_or_else(|| {
        notes.push("the parameters give no seed: 0 is used".to_string());
        0
    });
    let cfg = p
        .field("CFG scale")
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| anyhow!("`CFG scale: {v}` is not a number"))
        })
        .transpose()?
        .unwrap_or(7.0);
    let (width, height) = match p.field("Size") {
        Some(size) => size
            .split_once('x')
            .and_then(|(w, h)| Some((w.trim().parse::<i64>().ok()?, h.trim().parse::<i64>().ok()?)))
            .ok_or_else(|| anyhow!("`Size: {size}` is not WIDTHxHEIGHT"))?,
        None => {
            notes.push("the parameters give no size: 512x512 is used".to_string());
            (512, 512)
        }
    };
    let (sampler, mut scheduler) = match p.field("Sampler") {
        Some(label) => match sampler_from_label(label) {
            Some((s, k)) => (s, k),
            None => {
                notes.push(format!(
                    "sampler `{label}` has no flow equivalent: euler is used"
                ));
                ("euler", None)
            }
        },
        None => ("euler", None),
    };
    if let Some(label) = p.field("Schedule type") {
        match schedule_from_label(label) {
            Some(k) => scheduler = Some(k),
            None if label == "Automatic" => {}
            None => notes.push(format!(
                "schedule type `{label}` has no flow equivalent: the sampler's default is used"
            )),
        }
    }
    let clip_skip = int("Clip skip")?.filter(|c| *c > 1);
    let model = match p.field("Model") {
        Some(m) => format!("ckpt:{m}.safetensors"),
        None => {
            notes.push("the parameters name no model: set `models.sd`".to_string());
            "ckpt:model.safetensors".to_string()
        }
    };
    if p.field("RNG").is_none_or(|r| r != "CPU") {
        notes.push(
            "the web UI drew the noise on the GPU (its default `RNG`); flow's torch generator draws \
             torch's CPU numbers, as the web UI does with RNG: CPU, so the picture differs"
                .to_string(),
        );
    }
    if p.field("Hires upscale").is_some() || p.field("Hires upscaler").is_some() {
        notes.push("the hires fix pass is not rebuilt (see graphs/hires_fix.yaml)".to_string());
    } else if p.field("Denoising strength").is_some() {
        notes.push("`Denoising strength` without hires fix means img2img: the input image is not in the PNG".to_string());
    }
    used.extend([
        "Denoising strength",
        "Hires upscale",
        "Hires upscaler",
        "RNG",
    ]);
    let unmapped: Vec<String> = p
        .fields
        .iter()
        .filter(|(k, _)| !used.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();

    let stem = Path::new(name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let mut y =
        format!("# Imported by `flow import png` from the AUTOMATIC1111 parameters of {name}.\n");
    for note in &notes {
        y.push_str(&format!("# Note: {note}.\n"));
    }
    if !unmapped.is_empty() {
        y.push_str(&format!(
            "# Not mapped: {}\n",
            unmapped.join("; ").replace('\n', " ")
        ));
    }
    y.push_str("flow: 1\n");
    y.push_str(&format!("name: {}\n", text(&stem)));
    y.push_str(&format!(
        "description: {}\n",
        text(&format!(
            "txt2img from the AUTOMATIC1111 parameters of {name}"
        ))
    ));
    y.push_str("params:\n");
    y.push_str(&format!("  prompt: {}\n", text(&p.prompt)));
    y.push_str(&format!(
        "  negative: {}\n",
        text(p.negative.as_deref().unwrap_or(""))
    ));
    y.push_str(&format!(
        "  seed: {seed}\n  steps: {steps}\n  cfg: {}\n",
        flow_engine::value::format_float(cfg)
    ));
    y.push_str(&format!("  width: {width}\n  height: {height}\n"));
    y.push_str(&format!("models:\n  sd: {}\n", text(&model)));
    y.push_str("nodes:\n");
    let clip = clip_skip
        .map(|c| format!(", clip_skip: {c}"))
        .unwrap_or_default();
    y.push_str(&format!("  cond:\n    op: sd.encode_prompt\n    in: {{ model: $sd, prompt: $prompt, negative: $negative{clip} }}\n"));
    y.push_str("  latent:\n    op: sd.empty_latent\n    in: { model: $sd, width: $width, height: $height }\n");
    let sched = scheduler
        .map(|k| format!(", scheduler: {k}"))
        .unwrap_or_default();
    y.push_str(&format!(
        "  sample:\n    op: sd.sample\n    in: {{ model: $sd, cond: $cond, latent: $latent, sampler: {sampler}{sched}, steps: $steps, cfg: $cfg, seed: $seed }}\n"
    ));
    y.push_str("  image:\n    op: sd.vae_decode\n    in: { model: $sd, latent: $sample }\n");
    let path = Json::String(format!("out/{}-${{seed}}.png", stem.replace('$', "$$"))).to_string();
    y.push_str(&format!(
        "  save:\n    op: image.save\n    in: {{ image: $image, path: {path} }}\n"
    ));
    Ok(y)
}

/// Text as a double-quoted YAML scalar with its `$` kept literal (`$$`).
fn text(s: &str) -> String {
    Json::String(s.replace('$', "$$")).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a1111_parameters_become_a_txt2img_graph() {
        let p = A1111Params::parse(
            "a lighthouse, $5 poster\nNegative prompt: blurry\nSteps: 25, Sampler: DPM++ 2M Karras, CFG scale: 6.5, \
             Seed: 3141592653, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, RNG: CPU, \
             Version: v1.6.0",
        );
        let yaml = a1111_graph(&p, "cat.png").unwrap();
        assert!(
            yaml.contains("# Not mapped: Model hash: 6ce0161689; Version: v1.6.0\n"),
            "{yaml}"
        );
        assert!(!yaml.contains("# Note:"), "{yaml}");
        assert!(yaml.contains("  prompt: \"a lighthouse, $$5 poster\"\n  negative: \"blurry\"\n  seed: 3141592653\n  steps: 25\n  cfg: 6.5\n  width: 512\n  height: 768\n"), "{yaml}");
        assert!(
            yaml.contains("  sd: \"ckpt:v1-5-pruned-emaonly.safetensors\"\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains("negative: $negative, clip_skip: 2 }"),
            "{yaml}"
        );
        assert!(
            yaml.contains("sampler: dpmpp_2m, scheduler: karras, steps: $steps"),
            "{yaml}"
        );
        assert!(yaml.contains("path: \"out/cat-${seed}.png\""), "{yaml}");
    }

    #[test]
    fn missing_and_unknown_fields_are_noted() {
        let p = A1111Params::parse(
            "a cat\nSteps: 10, Sampler: Restart, Schedule type: Align Your Steps, CFG scale: 7",
        );
        let yaml = a1111_graph(&p, "x.png").unwrap();
        for note in [
            "no seed: 0 is used",
            "no size: 512x512",
            "sampler `Restart`",
            "`Align Your Steps`",
            "name no model",
            "on the GPU",
        ] {
            assert!(yaml.contains(note), "{note}: {yaml}");
        }
        assert!(yaml.contains("sampler: euler, steps: $steps"), "{yaml}");
        let err = a1111_graph(
            &A1111Params::parse("x\nSteps: many, Seed: 1, Size: 8x8"),
            "x.png",
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "`Steps: many` is not a whole number");
        let err = a1111_graph(
            &A1111Params::parse("x\nSteps: 2, Seed: 1, Size: big"),
            "x.png",
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "`Size: big` is not WIDTHxHEIGHT");
    }

    #[test]
    fn the_first_known_chunk_wins_and_unknown_pngs_say_what_they_hold() {
        let got = import_chunks(
            &chunks(&[("flow:graph", "flow: 1\nnodes: {}\n"), ("parameters", "x")]),
            "a.png",
        )
        .unwrap();
        assert_eq!(got.source, ImportKind::Flow);
        assert!(got
            .yaml
            .starts_with("# Recovered by `flow import png` from a.png\nflow: 1\n"));
        let got = import_chunks(
            &chunks(&[("parameters", "a cat\nSteps: 4, Seed: 1, Size: 8x8")]),
            "a.png",
        )
        .unwrap();
        assert_eq!(got.source, ImportKind::A1111);
        let err = import_chunks(&chunks(&[("workflow", "{}")]), "a.png")
            .unwrap_err()
            .to_string();
        assert!(err.contains("only ComfyUI's UI workflow"), "{err}");
        let err = import_chunks(&chunks(&[("Software", "paint")]), "a.png")
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("(its text chunks: Software)"), "{err}");
        let err = import_chunks(&chunks(&[("prompt", "not json")]), "a.png")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the ComfyUI workflow in a.png cannot be translated"),
            "{err}"
        );
    }

    #[test]
    fn text_chunks_are_read_wherever_they_stand() {
        let mut bytes = Vec::new();
        let mut enc = png::Encoder::new(&mut bytes, 1, 1);
        enc.set_color(png::ColorType::Grayscale);
        enc.add_text_chunk("parameters".into(), "latin ç".into())
            .unwrap();
        enc.add_ztxt_chunk("zipped".into(), "z".repeat(100))
            .unwrap();
        enc.add_itxt_chunk("prompt".into(), "{\"1\": \"灯台\"}".into())
            .unwrap();
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[0]).unwrap();
        // A chunk after the image data, as some tools write them.
        w.write_text_chunk(&png::text_metadata::TEXtChunk::new("late", "after IDAT"))
            .unwrap();
        w.finish().unwrap();
        let got = png_text_chunks(&bytes).unwrap();
        assert_eq!(got["parameters"], "latin ç");
        assert_eq!(got["zipped"], "z".repeat(100));
        assert_eq!(got["prompt"], "{\"1\": \"灯台\"}");
        assert_eq!(got["late"], "after IDAT");
        assert!(png_text_chunks(b"not a png").is_err());
    }
}
