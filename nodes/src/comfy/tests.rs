//! Translation details: merged prompts, combined conditioning, CLIP skip,
//! per-node params, loaders, pass-through resizes, escaping.

use super::{to_yaml, translate_to_yaml, Purpose};

/// A workflow with a checkpoint (1), two prompts (2, 3) and `extra` nodes.
fn workflow(extra: &str) -> String {
    format!(
        r#"{{
  "1": {{ "class_type": "CheckpointLoaderSimple", "inputs": {{ "ckpt_name": "sd\\v15.safetensors" }} }},
  "2": {{ "class_type": "CLIPTextEncode", "inputs": {{ "text": "a fox for $5", "clip": ["1", 1] }}, "_meta": {{ "title": "Good" }} }},
  "3": {{ "class_type": "CLIPTextEncode", "inputs": {{ "text": "blurry", "clip": ["1", 1] }}, "_meta": {{ "title": "Bad" }} }},
  "4": {{ "class_type": "EmptyLatentImage", "inputs": {{ "width": 100, "height": 64, "batch_size": 2 }} }},
  {extra}
}}"#
    )
}

fn sampler(id: &str, pos: &str, latent: &str, seed: u64) -> String {
    format!(
        r#""{id}": {{ "class_type": "KSampler", "inputs": {{ "model": ["1", 0], "seed": {seed}, "steps": 20, "cfg": 8, "sampler_name": "euler",
          "scheduler": "normal", "positive": ["{pos}", 0], "negative": ["3", 0], "latent_image": ["{latent}", 0], "denoise": 1 }} }}"#
    )
}

#[test]
fn prompts_merge_and_params_are_shared_or_per_node() {
    let extra = format!(
        r#"{}, {},
        "7": {{ "class_type": "VAEDecode", "inputs": {{ "samples": ["6", 0], "vae": ["1", 2] }} }},
        "8": {{ "class_type": "PreviewImage", "inputs": {{ "images": ["7", 0] }} }}"#,
        sampler("5", "2", "4", 1),
        sampler("6", "2", "5", 2)
    );
    let yaml = translate_to_yaml(&workflow(&extra), "w.json").unwrap();
    assert!(yaml.contains("  prompt: \"a fox for $5\"\n"), "params keep `$` as is:\n{yaml}");
    assert!(yaml.contains("  KSampler_5_seed: 1\n  KSampler_6_seed: 2\n  steps: 20\n"), "{yaml}");
    assert!(yaml.contains("  width: 96\n"), "EmptyLatentImage floors to multiples of 8:\n{yaml}");
    assert!(yaml.contains("  v15: ckpt:sd/v15.safetensors") || yaml.contains("ckpt:sd/v15.safetensors"), "{yaml}");
    assert_eq!(yaml.matches("op: sd.encode_prompt").count(), 1, "one encoder for the pair:\n{yaml}");
    assert!(yaml.contains("  good:  # ComfyUI nodes 2 (positive) and 3 (negative)"), "{yaml}");
    assert!(yaml.contains("      path: temp/PreviewImage_8_00001_.png"), "{yaml}");
    assert!(yaml.contains("      batch: 2"), "{yaml}");
}

#[test]
fn combined_conditioning_and_clip_skip() {
    let extra = format!(
        r#""9": {{ "class_type": "CLIPSetLastLayer", "inputs": {{ "clip": ["1", 1], "stop_at_clip_layer": -2 }} }},
        "10": {{ "class_type": "CLIPTextEncode", "inputs": {{ "text": "snow", "clip": ["9", 0] }} }},
        "11": {{ "class_type": "CLIPTextEncode", "inputs": {{ "text": "fox", "clip": ["9", 0] }} }},
        "12": {{ "class_type": "CLIPTextEncode", "inputs": {{ "text": "ugly", "clip": ["9", 0] }} }},
        "13": {{ "class_type": "ConditioningCombine", "inputs": {{ "conditioning_1": ["10", 0], "conditioning_2": ["11", 0] }}, "_meta": {{ "title": "Mix" }} }},
        "5": {{ "class_type": "KSamplerAdvanced", "inputs": {{ "model": ["1", 0], "add_noise": "disable", "noise_seed": 3, "steps": 10, "cfg": 5,
              "sampler_name": "lms", "scheduler": "karras", "positive": ["13", 0], "negative": ["12", 0], "latent_image": ["4", 0],
              "start_at_step": 2, "end_at_step": 8, "return_with_leftover_noise": "enable" }} }},
        "7": {{ "class_type": "VAEDecode", "inputs": {{ "samples": ["5", 0], "vae": ["1", 2] }} }},
        "8": {{ "class_type": "SaveImage", "inputs": {{ "images": ["7", 0], "filename_prefix": "a/b" }} }}"#
    );
    let yaml = to_yaml(&workflow(&extra), "w.json", Purpose::Run).unwrap();
    assert_eq!(yaml.matches("op: sd.encode_prompt").count(), 2, "{yaml}");
    assert_eq!(yaml.matches("      clip_layer: -2").count(), 2, "{yaml}");
    assert!(
        yaml.contains("  mix_cond:  # ComfyUI node 13 (ConditioningCombine) \"Mix\"\n    op: sd.combine_cond"),
        "{yaml}"
    );
    for want in
        ["add_noise: false", "start_step: 2", "end_step: 8", "leftover_noise: true", "seed: $seed", "cond: $mix_cond"]
    {
        assert!(yaml.contains(want), "no {want}:\n{yaml}");
    }
    assert!(yaml.contains("path: output/a/b_00001_.png") && yaml.contains("comfy_prompt: \"{"), "{yaml}");
}

#[test]
fn loaders_resizes_and_images() {
    let extra = r#""20": { "class_type": "LoadImage", "inputs": { "image": "pics/cat.png [output]" } },
        "21": { "class_type": "ImageScale", "inputs": { "image": ["20", 0], "upscale_method": "bicubic", "width": 0, "height": 0, "crop": "center" } },
        "22": { "class_type": "VAELoader", "inputs": { "vae_name": "ft-mse.safetensors" } },
        "23": { "class_type": "VAEEncode", "inputs": { "pixels": ["21", 0], "vae": ["22", 0] } },
        "24": { "class_type": "LatentUpscale", "inputs": { "samples": ["23", 0], "upscale_method": "bilinear", "width": 0, "height": 32, "crop": "disabled" } },
        "25": { "class_type": "VAEDecodeTiled", "inputs": { "samples": ["24", 0], "vae": ["22", 0], "tile_size": 512, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8 } },
        "26": { "class_type": "UpscaleModelLoader", "inputs": { "model_name": "4x.pth" } },
        "27": { "class_type": "ImageUpscaleWithModel", "inputs": { "upscale_model": ["26", 0], "image": ["25", 0] } },
        "28": { "class_type": "ImageScaleBy", "inputs": { "image": ["27", 0], "upscale_method": "area", "scale_by": 0.5 } },
        "29": { "class_type": "SaveImage", "inputs": { "images": ["28", 0], "filename_prefix": "up" } }"#;
    let yaml = translate_to_yaml(&workflow(extra), "w.json").unwrap();
    for want in [
        "path: output/pics/cat.png",
        "image: $LoadImage_20",
        "VAELoader_22: vae:ft-mse.safetensors",
        "UpscaleModelLoader_26: upscaler:4x.pth",
        "      vae: $VAELoader_22",
        "      method: bilinear\n      height: 64\n",
        "      filter: area\n      scale: 0.5\n",
        "      model: $UpscaleModelLoader_26\n      image: $VAEDecodeTiled_25",
    ] {
        assert!(yaml.contains(want), "no `{want}`:\n{yaml}");
    }
    assert!(!yaml.contains("ImageScale_21"), "a 0 x 0 ImageScale passes its input through:\n{yaml}");
}

#[test]
fn flow_limits_are_reported_in_comfyui_terms() {
    let extra = format!(
        r#"{}, "7": {{ "class_type": "VAEDecode", "inputs": {{ "samples": ["5", 0], "vae": ["1", 2] }} }},
        "8": {{ "class_type": "SaveImage", "inputs": {{ "images": ["7", 0], "filename_prefix": "../../etc/x" }} }}"#,
        sampler("5", "2", "4", u64::MAX)
    );
    let e = translate_to_yaml(&workflow(&extra), "w.json").unwrap_err();
    let text = e.render();
    assert!(text.contains("w.json: node 5 (KSampler) input `seed`: value_bigger_than_max"), "{text}");
    assert!(text.contains("w.json: node 8 (SaveImage) input `filename_prefix`: custom_validation_failed"), "{text}");
}
