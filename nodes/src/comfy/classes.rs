//! The ComfyUI node classes flow runs, as data: each input with its type,
//! default, range or allowed values, each output with its type. The table
//! follows ComfyUI's `INPUT_TYPES` / `RETURN_TYPES` (nodes.py,
//! comfy_extras/nodes_upscale_model.py) and serializes to the shape a
//! server's `GET /object_info` answers with (see [`ClassSpec::object_info`]).

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::names::{IMAGE_UPSCALE_METHODS, LATENT_UPSCALE_METHODS, SAMPLERS, SCHEDULERS};

/// ComfyUI's largest image side (`MAX_RESOLUTION`).
pub const MAX_RESOLUTION: i128 = 16384;

/// What an input takes.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputKind {
    /// A link from another node's output of this ComfyUI type (`MODEL`, `LATENT`, ...).
    Link {
        /// The ComfyUI type name.
        type_name: &'static str,
    },
    /// An integer widget.
    Int {
        /// Default value.
        default: i128,
        /// Smallest allowed value.
        min: i128,
        /// Largest allowed value.
        max: i128,
        /// UI step.
        step: i128,
    },
    /// A float widget.
    Float {
        /// Default value.
        default: f64,
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
        /// UI step.
        step: f64,
    },
    /// A text widget.
    Text {
        /// Default value.
        default: &'static str,
        /// Shown as a multi-line box.
        multiline: bool,
    },
    /// One of a fixed list of names.
    Combo {
        /// The names flow accepts.
        options: &'static [&'static str],
    },
    /// A file name inside one of ComfyUI's model folders (`checkpoints`, `vae`,
    /// `upscale_models`) or its `input` folder; checked when the run resolves it.
    File {
        /// The ComfyUI folder.
        folder: &'static str,
    },
}

impl InputKind {
    /// The ComfyUI type name of the input (`INT`, `FLOAT`, `STRING`, `COMBO`, or the link type).
    pub fn type_name(&self) -> &'static str {
        match self {
            InputKind::Link { type_name } => type_name,
            InputKind::Int { .. } => "INT",
            InputKind::Float { .. } => "FLOAT",
            InputKind::Text { .. } => "STRING",
            InputKind::Combo { .. } | InputKind::File { .. } => "COMBO",
        }
    }

    /// ComfyUI's `input_config` pair for this input: `[type, {options}]`, as
    /// `/object_info` and validation errors show it.
    pub fn input_config(&self) -> Value {
        match *self {
            InputKind::Link { type_name } => json!([type_name, {}]),
            InputKind::Int { default, min, max, step } => {
                json!(["INT", { "default": default, "min": min, "max": max, "step": step }])
            }
            InputKind::Float { default, min, max, step } => {
                json!(["FLOAT", { "default": default, "min": min, "max": max, "step": step }])
            }
            InputKind::Text { default, multiline } => json!(["STRING", { "default": default, "multiline": multiline }]),
            InputKind::Combo { options } => json!([options, {}]),
            InputKind::File { folder } => json!([[], { "folder": folder }]),
        }
    }
}

/// One input of a class.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct InputSpec {
    /// The input's name in the workflow's `inputs`.
    pub name: &'static str,
    /// What it takes.
    pub kind: InputKind,
    /// ComfyUI's `required` (else `optional`).
    pub required: bool,
}

/// A ComfyUI node class flow can run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ClassSpec {
    /// The `class_type`.
    pub name: &'static str,
    /// ComfyUI's display name.
    pub display_name: &'static str,
    /// ComfyUI's menu category.
    pub category: &'static str,
    /// Inputs, in ComfyUI's order.
    pub inputs: &'static [InputSpec],
    /// Output types by index (what `[id, index]` links name).
    pub outputs: &'static [&'static str],
    /// An output node (saves or shows a result).
    pub output_node: bool,
    /// What flow runs for it.
    pub flow_op: &'static str,
}

impl ClassSpec {
    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// This class as one entry of ComfyUI's `/object_info` answer.
    pub fn object_info(&self) -> Value {
        let mut required = Map::new();
        let mut optional = Map::new();
        for i in self.inputs {
            let target = if i.required { &mut required } else { &mut optional };
            target.insert(i.name.to_string(), i.kind.input_config());
        }
        json!({
            "input": { "required": required, "optional": optional },
            "input_order": {
                "required": self.inputs.iter().filter(|i| i.required).map(|i| i.name).collect::<Vec<_>>(),
            },
            "output": self.outputs,
            "output_is_list": self.outputs.iter().map(|_| false).collect::<Vec<_>>(),
            "output_name": self.outputs,
            "name": self.name,
            "display_name": self.display_name,
            "description": "",
            "python_module": "nodes",
            "category": self.category,
            "output_node": self.output_node,
        })
    }
}

const fn link(name: &'static str, type_name: &'static str) -> InputSpec {
    InputSpec { name, kind: InputKind::Link { type_name }, required: true }
}

const fn int(name: &'static str, default: i128, min: i128, max: i128, step: i128) -> InputSpec {
    InputSpec { name, kind: InputKind::Int { default, min, max, step }, required: true }
}

const fn float(name: &'static str, default: f64, min: f64, max: f64, step: f64) -> InputSpec {
    InputSpec { name, kind: InputKind::Float { default, min, max, step }, required: true }
}

const fn combo(name: &'static str, options: &'static [&'static str]) -> InputSpec {
    InputSpec { name, kind: InputKind::Combo { options }, required: true }
}

const fn file(name: &'static str, folder: &'static str) -> InputSpec {
    InputSpec { name, kind: InputKind::File { folder }, required: true }
}

const fn text(name: &'static str, default: &'static str, multiline: bool) -> InputSpec {
    InputSpec { name, kind: InputKind::Text { default, multiline }, required: true }
}

const SEED_MAX: i128 = 0xffff_ffff_ffff_ffff;
const CROP: &[&str] = &["disabled", "center"];

/// Every class flow runs, in ComfyUI's menu order.
pub static CLASSES: &[ClassSpec] = &[
    ClassSpec {
        name: "CheckpointLoaderSimple",
        display_name: "Load Checkpoint",
        category: "loaders",
        inputs: &[file("ckpt_name", "checkpoints")],
        outputs: &["MODEL", "CLIP", "VAE"],
        output_node: false,
        flow_op: "models: ckpt:NAME",
    },
    ClassSpec {
        name: "VAELoader",
        display_name: "Load VAE",
        category: "loaders",
        inputs: &[file("vae_name", "vae")],
        outputs: &["VAE"],
        output_node: false,
        flow_op: "models: vae:NAME",
    },
    ClassSpec {
        name: "UpscaleModelLoader",
        display_name: "Load Upscale Model",
        category: "loaders",
        inputs: &[file("model_name", "upscale_models")],
        outputs: &["UPSCALE_MODEL"],
        output_node: false,
        flow_op: "models: upscaler:NAME",
    },
    ClassSpec {
        name: "CLIPSetLastLayer",
        display_name: "CLIP Set Last Layer",
        category: "conditioning",
        inputs: &[link("clip", "CLIP"), int("stop_at_clip_layer", -1, -24, -1, 1)],
        outputs: &["CLIP"],
        output_node: false,
        flow_op: "sd.encode_prompt clip_layer",
    },
    ClassSpec {
        name: "CLIPTextEncode",
        display_name: "CLIP Text Encode (Prompt)",
        category: "conditioning",
        inputs: &[text("text", "", true), link("clip", "CLIP")],
        outputs: &["CONDITIONING"],
        output_node: false,
        flow_op: "sd.encode_prompt",
    },
    ClassSpec {
        name: "ConditioningCombine",
        display_name: "Conditioning (Combine)",
        category: "conditioning",
        inputs: &[link("conditioning_1", "CONDITIONING"), link("conditioning_2", "CONDITIONING")],
        outputs: &["CONDITIONING"],
        output_node: false,
        flow_op: "sd.combine_cond",
    },
    ClassSpec {
        name: "EmptyLatentImage",
        display_name: "Empty Latent Image",
        category: "latent",
        inputs: &[
            int("width", 512, 16, MAX_RESOLUTION, 8),
            int("height", 512, 16, MAX_RESOLUTION, 8),
            int("batch_size", 1, 1, 4096, 1),
        ],
        outputs: &["LATENT"],
        output_node: false,
        flow_op: "sd.empty_latent",
    },
    ClassSpec {
        name: "KSampler",
        display_name: "KSampler",
        category: "sampling",
        inputs: &[
            link("model", "MODEL"),
            int("seed", 0, 0, SEED_MAX, 1),
            int("steps", 20, 1, 10000, 1),
            float("cfg", 8.0, 0.0, 100.0, 0.1),
            combo("sampler_name", SAMPLERS),
            combo("scheduler", SCHEDULERS),
            link("positive", "CONDITIONING"),
            link("negative", "CONDITIONING"),
            link("latent_image", "LATENT"),
            float("denoise", 1.0, 0.0, 1.0, 0.01),
        ],
        outputs: &["LATENT"],
        output_node: false,
        flow_op: "sd.sample",
    },
    ClassSpec {
        name: "KSamplerAdvanced",
        display_name: "KSampler (Advanced)",
        category: "sampling",
        inputs: &[
            link("model", "MODEL"),
            combo("add_noise", &["enable", "disable"]),
            int("noise_seed", 0, 0, SEED_MAX, 1),
            int("steps", 20, 1, 10000, 1),
            float("cfg", 8.0, 0.0, 100.0, 0.1),
            combo("sampler_name", SAMPLERS),
            combo("scheduler", SCHEDULERS),
            link("positive", "CONDITIONING"),
            link("negative", "CONDITIONING"),
            link("latent_image", "LATENT"),
            int("start_at_step", 0, 0, 10000, 1),
            int("end_at_step", 10000, 0, 10000, 1),
            combo("return_with_leftover_noise", &["disable", "enable"]),
        ],
        outputs: &["LATENT"],
        output_node: false,
        flow_op: "sd.sample",
    },
    ClassSpec {
        name: "VAEDecode",
        display_name: "VAE Decode",
        category: "latent",
        inputs: &[link("samples", "LATENT"), link("vae", "VAE")],
        outputs: &["IMAGE"],
        output_node: false,
        flow_op: "sd.vae_decode",
    },
    ClassSpec {
        name: "VAEDecodeTiled",
        display_name: "VAE Decode (Tiled)",
        category: "_for_testing",
        inputs: &[
            link("samples", "LATENT"),
            link("vae", "VAE"),
            int("tile_size", 512, 64, 4096, 32),
            int("overlap", 64, 0, 4096, 32),
            int("temporal_size", 64, 8, 4096, 4),
            int("temporal_overlap", 8, 4, 4096, 4),
        ],
        outputs: &["IMAGE"],
        output_node: false,
        flow_op: "sd.vae_decode",
    },
    ClassSpec {
        name: "VAEEncode",
        display_name: "VAE Encode",
        category: "latent",
        inputs: &[link("pixels", "IMAGE"), link("vae", "VAE")],
        outputs: &["LATENT"],
        output_node: false,
        flow_op: "sd.vae_encode",
    },
    ClassSpec {
        name: "LatentUpscale",
        display_name: "Upscale Latent",
        category: "latent",
        inputs: &[
            link("samples", "LATENT"),
            combo("upscale_method", LATENT_UPSCALE_METHODS),
            int("width", 512, 0, MAX_RESOLUTION, 8),
            int("height", 512, 0, MAX_RESOLUTION, 8),
            combo("crop", CROP),
        ],
        outputs: &["LATENT"],
        output_node: false,
        flow_op: "latent.upscale",
    },
    ClassSpec {
        name: "LatentUpscaleBy",
        display_name: "Upscale Latent By",
        category: "latent",
        inputs: &[
            link("samples", "LATENT"),
            combo("upscale_method", LATENT_UPSCALE_METHODS),
            float("scale_by", 1.5, 0.01, 8.0, 0.01),
        ],
        outputs: &["LATENT"],
        output_node: false,
        flow_op: "latent.upscale",
    },
    ClassSpec {
        name: "LoadImage",
        display_name: "Load Image",
        category: "image",
        inputs: &[file("image", "input")],
        outputs: &["IMAGE", "MASK"],
        output_node: false,
        flow_op: "image.load",
    },
    ClassSpec {
        name: "SaveImage",
        display_name: "Save Image",
        category: "image",
        inputs: &[link("images", "IMAGE"), text("filename_prefix", "ComfyUI", false)],
        outputs: &[],
        output_node: true,
        flow_op: "image.save",
    },
    ClassSpec {
        name: "PreviewImage",
        display_name: "Preview Image",
        category: "image",
        inputs: &[link("images", "IMAGE")],
        outputs: &[],
        output_node: true,
        flow_op: "image.save",
    },
    ClassSpec {
        name: "ImageScale",
        display_name: "Upscale Image",
        category: "image/upscaling",
        inputs: &[
            link("image", "IMAGE"),
            combo("upscale_method", IMAGE_UPSCALE_METHODS),
            int("width", 512, 0, MAX_RESOLUTION, 1),
            int("height", 512, 0, MAX_RESOLUTION, 1),
            combo("crop", CROP),
        ],
        outputs: &["IMAGE"],
        output_node: false,
        flow_op: "image.resize",
    },
    ClassSpec {
        name: "ImageScaleBy",
        display_name: "Upscale Image By",
        category: "image/upscaling",
        inputs: &[
            link("image", "IMAGE"),
            combo("upscale_method", IMAGE_UPSCALE_METHODS),
            float("scale_by", 1.0, 0.01, 8.0, 0.01),
        ],
        outputs: &["IMAGE"],
        output_node: false,
        flow_op: "image.resize",
    },
    ClassSpec {
        name: "ImageUpscaleWithModel",
        display_name: "Upscale Image (using Model)",
        category: "image/upscaling",
        inputs: &[link("upscale_model", "UPSCALE_MODEL"), link("image", "IMAGE")],
        outputs: &["IMAGE"],
        output_node: false,
        flow_op: "image.upscale",
    },
];

/// The class called `name`, if flow runs it.
pub fn class(name: &str) -> Option<&'static ClassSpec> {
    CLASSES.iter().find(|c| c.name == name)
}

/// ComfyUI classes flow knows but does not run yet, with the reason.
pub static NOT_YET: &[(&str, &str)] = &[(
    "ConditioningSetArea",
    "area conditioning (a prompt applied to a rectangle with its own strength, blended with feathered masks \
     inside the sampler) is not implemented in flow's samplers yet",
)];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_is_unique_and_object_info_lists_its_inputs() {
        for (i, c) in CLASSES.iter().enumerate() {
            assert!(CLASSES[i + 1..].iter().all(|o| o.name != c.name), "{} twice", c.name);
            let info = c.object_info();
            for input in c.inputs {
                assert!(info["input"]["required"].get(input.name).is_some(), "{}.{}", c.name, input.name);
            }
            assert_eq!(info["output"].as_array().unwrap().len(), c.outputs.len());
        }
        let k = class("KSampler").unwrap().object_info();
        assert_eq!(k["input"]["required"]["seed"][1]["max"], json!(0xffff_ffff_ffff_ffffu64));
        assert_eq!(k["input"]["required"]["sampler_name"][0][0], json!("euler"));
        assert!(class("ConditioningSetArea").is_none());
    }
}
