//! Translation of a validated workflow into a flow graph.
//!
//! - Loaders become `models:` entries (`ckpt:NAME`, `vae:NAME`,
//!   `upscaler:NAME`); every output of a checkpoint stands for that model.
//! - `CLIPTextEncode` nodes merge per KSampler into `sd.encode_prompt
//!   {prompt, negative}` (flow's cond carries both); `ConditioningCombine`
//!   becomes `sd.combine_cond`; `CLIPSetLastLayer(-N)` becomes `clip_layer: -N`
//!   on the encoders it feeds.
//! - Widgets users tune (seed, steps, cfg, sampler, scheduler, size, prompt
//!   texts) become params: one shared param when every node agrees on the
//!   value, else one per node (`<node>_<param>`).
//! - Node names come from `_meta.title` (lower case, `_` for other
//!   characters, made unique), else `<class>_<id>`.

use std::collections::{BTreeMap, BTreeSet};

use super::errors::{ErrorItem, NodeErrors, WorkflowErrors};
use super::validate::{Input, Node, Prompt};
use super::yaml::{Arg, FlowGraph, FlowNode, Lit};

/// Where SaveImage writes, relative to the workflow's folder.
pub const OUTPUT_DIR: &str = "output";
/// Where PreviewImage writes, relative to the workflow's folder.
pub const TEMP_DIR: &str = "temp";

/// What to translate for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `flow import comfy`: a graph file for people to read and keep.
    Import,
    /// `flow run workflow.json`: also hands the workflow to `image.save`
    /// (`comfy_prompt`), which stores it in the PNG as ComfyUI does.
    Run,
}

/// Translates a validated workflow; `stem` names the graph.
pub fn translate(prompt: &Prompt, source: &str, stem: &str, purpose: Purpose) -> Result<FlowGraph, WorkflowErrors> {
    let mut t = Translator::new(prompt, purpose);
    t.name_nodes();
    t.analyse_conditioning();
    t.collect_params();
    for id in prompt.ids() {
        t.emit(&prompt.nodes[id]);
    }
    if !t.errors.is_empty() {
        return Err(WorkflowErrors::nodes(source, t.errors));
    }
    let (params, models, nodes) = (t.params_list(), t.models, t.nodes);
    Ok(FlowGraph {
        header: format!(
            "Translated by `flow import comfy` from the ComfyUI workflow `{source}` (API format).\n\
             Node comments name the ComfyUI node each flow node comes from."
        ),
        name: stem.to_string(),
        description: format!("ComfyUI workflow {source}"),
        params,
        models,
        nodes,
    })
}

/// A widget that may become a param: (node id, widget) → base name and value.
struct Candidate {
    node: String,
    widget: &'static str,
    base: &'static str,
    value: Lit,
}

struct Translator<'a> {
    p: &'a Prompt,
    purpose: Purpose,
    taken: BTreeSet<String>,
    name: BTreeMap<String, String>,
    /// Role of each CLIPTextEncode: `prompt` or `negative`.
    role: BTreeMap<String, &'static str>,
    candidates: Vec<Candidate>,
    /// (node id, widget) → param name.
    param_of: BTreeMap<(String, &'static str), String>,
    params: Vec<(String, Lit)>,
    models: Vec<(String, String, String)>,
    nodes: Vec<FlowNode>,
    /// (positive leaf, negative leaf) → encoder node name.
    encoders: BTreeMap<(String, String), String>,
    /// Leaf pairs → combined cond node name.
    combined: BTreeMap<Vec<(String, String)>, String>,
    errors: BTreeMap<String, NodeErrors>,
}

impl<'a> Translator<'a> {
    fn new(p: &'a Prompt, purpose: Purpose) -> Self {
        Translator {
            p,
            purpose,
            taken: BTreeSet::new(),
            name: BTreeMap::new(),
            role: BTreeMap::new(),
            candidates: Vec::new(),
            param_of: BTreeMap::new(),
            params: Vec::new(),
            models: Vec::new(),
            nodes: Vec::new(),
            encoders: BTreeMap::new(),
            combined: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    /// Claims `base` as a flow name, or `base_2`, `base_3`, ...
    fn claim(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 2;
        while self.taken.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.taken.insert(name.clone());
        name
    }

    fn name_nodes(&mut self) {
        for id in self.p.ids() {
            let node = &self.p.nodes[id];
            let base = node.title.as_deref().and_then(slug).unwrap_or_else(|| {
                let id: String = id.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
                format!("{}_{id}", node.class.name)
            });
            // Param names stay free for the params (`$seed` is a param, never a node).
            let base = if PARAM_ORDER.contains(&base.as_str()) { format!("{base}_node") } else { base };
            let name = self.claim(&base);
            self.name.insert(id.clone(), name);
        }
    }

    fn node(&self, id: &str) -> &'a Node {
        &self.p.nodes[id]
    }

    fn fail(&mut self, node: &Node, input: &str, kind: &str, details: String) {
        self.errors
            .entry(node.id.clone())
            .or_insert_with(|| NodeErrors {
                errors: Vec::new(),
                dependent_outputs: Vec::new(),
                class_type: node.class.name.into(),
            })
            .errors
            .push(
                ErrorItem::new(kind, "Not supported by flow", format!("{input}: {details}")).with("input_name", input),
            );
    }

    /// The CLIPTextEncode leaves of a conditioning link, in order.
    fn leaves(&self, from: &str) -> Vec<String> {
        let n = self.node(from);
        match n.class.name {
            "ConditioningCombine" => {
                let mut out = Vec::new();
                for input in ["conditioning_1", "conditioning_2"] {
                    if let Some((src, _)) = n.link(input) {
                        out.extend(self.leaves(src));
                    }
                }
                out
            }
            _ => vec![from.to_string()],
        }
    }

    fn is_sampler(node: &Node) -> bool {
        matches!(node.class.name, "KSampler" | "KSamplerAdvanced")
    }

    fn analyse_conditioning(&mut self) {
        for id in self.p.ids() {
            let n = self.node(id);
            if !Self::is_sampler(n) {
                continue;
            }
            for (input, role) in [("positive", "prompt"), ("negative", "negative")] {
                if let Some((src, _)) = n.link(input) {
                    for leaf in self.leaves(src) {
                        self.role.entry(leaf).or_insert(role);
                    }
                }
            }
        }
    }

    fn collect_params(&mut self) {
        for id in self.p.ids() {
            let n = self.node(id);
            let widgets: &[(&str, &str)] = match n.class.name {
                "KSampler" => &[
                    ("seed", "seed"),
                    ("steps", "steps"),
                    ("cfg", "cfg"),
                    ("sampler_name", "sampler"),
                    ("scheduler", "scheduler"),
                ],
                "KSamplerAdvanced" => &[
                    ("noise_seed", "seed"),
                    ("steps", "steps"),
                    ("cfg", "cfg"),
                    ("sampler_name", "sampler"),
                    ("scheduler", "scheduler"),
                ],
                "EmptyLatentImage" => &[("width", "width"), ("height", "height")],
                "CLIPTextEncode" => match self.role.get(id) {
                    Some(&"prompt") => &[("text", "prompt")],
                    Some(_) => &[("text", "negative")],
                    None => &[],
                },
                _ => &[],
            };
            for &(widget, base) in widgets {
                let widget = n.class.input(widget).map(|i| i.name).expect("the table has the widget");
                let value = match n.inputs.get(widget) {
                    Some(Input::Int(i)) if n.class.name == "EmptyLatentImage" => Lit::Int(i / 8 * 8),
                    Some(Input::Int(i)) => Lit::Int(*i),
                    Some(Input::Float(x)) => Lit::Float(*x),
                    Some(Input::Text(s)) => Lit::Text(s.clone()),
                    _ => continue,
                };
                self.candidates.push(Candidate { node: id.clone(), widget, base: static_base(base), value });
            }
        }
        let mut by_base: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
        for (i, c) in self.candidates.iter().enumerate() {
            by_base.entry(c.base).or_default().push(i);
        }
        let mut order: Vec<usize> = (0..self.candidates.len()).collect();
        order.sort_by_key(|&i| PARAM_ORDER.iter().position(|b| *b == self.candidates[i].base).unwrap_or(usize::MAX));
        let mut shared: BTreeMap<&'static str, String> = BTreeMap::new();
        for i in order {
            let (node, widget, base, value) = {
                let c = &self.candidates[i];
                (c.node.clone(), c.widget, c.base, c.value.clone())
            };
            let group = &by_base[base];
            let same = group.iter().all(|&j| self.candidates[j].value == value);
            let name = if same {
                match shared.get(base) {
                    Some(n) => n.clone(),
                    None => {
                        let n = self.claim(base);
                        shared.insert(base, n.clone());
                        self.params.push((n.clone(), value));
                        n
                    }
                }
            } else {
                let n = self.claim(&format!("{}_{base}", self.name[&node]));
                self.params.push((n.clone(), value));
                n
            };
            self.param_of.insert((node, widget), name);
        }
    }

    fn params_list(&self) -> Vec<(String, Lit)> {
        self.params.clone()
    }

    /// A widget: its param, or its literal value.
    fn widget(&self, n: &Node, widget: &str) -> Arg {
        if let Some((_, name)) = self.param_of.iter().find(|((id, w), _)| *id == n.id && *w == widget) {
            return Arg::Ref(name.clone());
        }
        Arg::Lit(match n.inputs.get(widget) {
            Some(Input::Int(i)) => Lit::Int(*i),
            Some(Input::Float(x)) => Lit::Float(*x),
            Some(Input::Text(s)) => Lit::Text(s.clone()),
            _ => Lit::Text(String::new()),
        })
    }

    fn int(n: &Node, widget: &str) -> i128 {
        match n.inputs.get(widget) {
            Some(Input::Int(i)) => *i,
            _ => 0,
        }
    }

    fn text<'n>(n: &'n Node, widget: &str) -> &'n str {
        match n.inputs.get(widget) {
            Some(Input::Text(s)) => s,
            _ => "",
        }
    }

    /// The flow reference for output `index` of node `from` (pass-through
    /// nodes resolve to their input).
    fn out_ref(&self, from: &str) -> Arg {
        let n = self.node(from);
        if is_pass_through(n) {
            let input = if n.class.name == "LatentUpscale" { "samples" } else { "image" };
            if let Some((src, _)) = n.link(input) {
                return self.out_ref(src);
            }
        }
        Arg::Ref(self.name[from].clone())
    }

    /// The checkpoint behind a MODEL or CLIP link, and the CLIP layer set on the way.
    fn checkpoint(&self, from: &str) -> (String, Option<i128>) {
        let mut at = from;
        let mut stop = None;
        loop {
            let n = self.node(at);
            match n.link("clip") {
                Some((src, _)) if n.class.name == "CLIPSetLastLayer" => {
                    stop = stop.or(Some(Self::int(n, "stop_at_clip_layer")));
                    at = src;
                }
                _ => return (at.to_string(), stop),
            }
        }
    }

    /// The `CLIPSetLastLayer` nodes on a CLIP link, nearest first (folded into the encoders they feed).
    fn clip_layers(&self, from: &str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut at = from;
        while let (Some((src, _)), "CLIPSetLastLayer") = (self.node(at).link("clip"), self.node(at).class.name) {
            out.push(self.node(at).id.as_str());
            at = src;
        }
        out
    }

    /// The `ConditioningCombine` nodes of a conditioning link, outermost first.
    fn combiners(&self, from: &str, out: &mut Vec<String>) {
        let n = self.node(from);
        if n.class.name != "ConditioningCombine" {
            return;
        }
        if !out.contains(&n.id) {
            out.push(n.id.clone());
        }
        for input in ["conditioning_1", "conditioning_2"] {
            if let Some((src, _)) = n.link(input) {
                self.combiners(src, out);
            }
        }
    }

    /// The model input for a VAE link: `model` (a checkpoint's VAE) or `vae` (a VAELoader's file).
    fn vae_inputs(&self, n: &Node) -> Vec<(&'static str, Arg)> {
        let Some((src, _)) = n.link("vae") else { return Vec::new() };
        let s = self.node(src);
        if s.class.name == "VAELoader" {
            vec![("vae", Arg::Ref(self.name[src].clone()))]
        } else {
            vec![("model", Arg::Ref(self.name[src].clone()))]
        }
    }

    fn push(&mut self, n: &Node, name: String, op: &'static str, inputs: Vec<(&'static str, Arg)>) {
        let title = n.title.as_deref().map(|t| format!(" \"{t}\"")).unwrap_or_default();
        self.nodes.push(FlowNode {
            name,
            op,
            inputs,
            comment: format!("ComfyUI node {} ({}){title}", n.id, n.class.name),
            origins: vec![n.id.clone()],
        });
    }

    /// The encoder for one (positive, negative) pair of CLIPTextEncode nodes.
    fn encoder(&mut self, sampler: &Node, pos: &str, neg: &str) -> Option<String> {
        if let Some(name) = self.encoders.get(&(pos.to_string(), neg.to_string())) {
            return Some(name.clone());
        }
        let (p, q) = (self.node(pos), self.node(neg));
        let (Some((pclip, _)), Some((nclip, _))) = (p.link("clip"), q.link("clip")) else { return None };
        let (pc, pskip) = self.checkpoint(pclip);
        let (nc, nskip) = self.checkpoint(nclip);
        if pc != nc || pskip.unwrap_or(-1) != nskip.unwrap_or(-1) {
            self.fail(
                sampler,
                "negative",
                "unsupported_by_flow",
                format!(
                    "the positive (node {pos}) and negative (node {neg}) prompts use different CLIP models or CLIP layers; \
                     flow encodes a prompt and its negative with one text encoder"
                ),
            );
            return None;
        }
        let used_before = self.encoders.keys().any(|(p0, _)| p0 == pos);
        let name = if used_before {
            self.claim(&format!("{}_{}", self.name[pos], self.name[neg]))
        } else {
            self.name[pos].clone()
        };
        let mut inputs = vec![
            ("model", Arg::Ref(self.name[&pc].clone())),
            ("prompt", self.widget(p, "text")),
            ("negative", self.widget(q, "text")),
        ];
        if let Some(stop) = pskip {
            inputs.push(("clip_layer", Arg::Lit(Lit::Int(stop))));
        }
        let comment = format!("ComfyUI nodes {pos} (positive) and {neg} (negative), CLIPTextEncode");
        let mut origins = vec![pos.to_string()];
        for id in [neg].into_iter().chain(self.clip_layers(pclip)).chain(self.clip_layers(nclip)) {
            if !origins.iter().any(|o| o == id) {
                origins.push(id.to_string());
            }
        }
        self.nodes.push(FlowNode { name: name.clone(), op: "sd.encode_prompt", inputs, comment, origins });
        self.encoders.insert((pos.to_string(), neg.to_string()), name.clone());
        Some(name)
    }

    /// The cond node for a sampler's positive and negative links.
    fn cond(&mut self, sampler: &Node) -> Option<String> {
        let (pos, _) = sampler.link("positive")?;
        let (neg, _) = sampler.link("negative")?;
        let (pl, nl) = (self.leaves(pos), self.leaves(neg));
        let pairs: Vec<(String, String)> = if pl.len() == nl.len() {
            pl.iter().cloned().zip(nl.iter().cloned()).collect()
        } else {
            pl.iter().flat_map(|p| nl.iter().map(move |n| (p.clone(), n.clone()))).collect()
        };
        if pairs.len() > 64 {
            self.fail(
                sampler,
                "positive",
                "unsupported_by_flow",
                format!("{} combined prompt pairs; flow takes at most 64", pairs.len()),
            );
            return None;
        }
        let mut encoded = Vec::new();
        for (p, n) in &pairs {
            encoded.push(self.encoder(sampler, p, n)?);
        }
        if encoded.len() == 1 {
            return encoded.pop();
        }
        if let Some(name) = self.combined.get(&pairs) {
            return Some(name.clone());
        }
        let root = if self.node(pos).class.name == "ConditioningCombine" { pos } else { neg };
        let root_node = self.node(root);
        // The chain's last node stands for every ConditioningCombine of both links.
        let mut combiners = Vec::new();
        self.combiners(pos, &mut combiners);
        self.combiners(neg, &mut combiners);
        let mut acc = encoded[0].clone();
        for (k, next) in encoded.iter().enumerate().skip(1) {
            let last = k + 1 == encoded.len();
            let name = if last {
                self.claim(&format!("{}_cond", self.name[root]))
            } else {
                self.claim(&format!("{}_part", self.name[root]))
            };
            self.push(
                root_node,
                name.clone(),
                "sd.combine_cond",
                vec![("a", Arg::Ref(acc)), ("b", Arg::Ref(next.clone()))],
            );
            if let Some(node) = self.nodes.last_mut() {
                node.origins = if last { std::mem::take(&mut combiners) } else { Vec::new() };
            }
            acc = name;
        }
        self.combined.insert(pairs, acc.clone());
        Some(acc)
    }

    fn emit(&mut self, n: &'a Node) {
        let name = self.name[&n.id].clone();
        let comment = |n: &Node| {
            let title = n.title.as_deref().map(|t| format!(" \"{t}\"")).unwrap_or_default();
            format!("ComfyUI node {} ({}){title}", n.id, n.class.name)
        };
        let link = |input: &str| n.link(input).map(|(src, _)| src);
        match n.class.name {
            "CheckpointLoaderSimple" => {
                let file = Self::text(n, "ckpt_name").replace('\\', "/");
                self.models.push((name, format!("ckpt:{file}"), comment(n)));
            }
            "VAELoader" => {
                let file = Self::text(n, "vae_name").replace('\\', "/");
                self.models.push((name, format!("vae:{file}"), comment(n)));
            }
            "UpscaleModelLoader" => {
                let file = Self::text(n, "model_name").replace('\\', "/");
                self.models.push((name, format!("upscaler:{file}"), comment(n)));
            }
            "CLIPSetLastLayer" | "CLIPTextEncode" | "ConditioningCombine" => {}
            "EmptyLatentImage" => {
                let batch = Arg::Lit(Lit::Int(Self::int(n, "batch_size")));
                let inputs =
                    vec![("width", self.widget(n, "width")), ("height", self.widget(n, "height")), ("batch", batch)];
                self.push(n, name, "sd.empty_latent", inputs);
            }
            "KSampler" | "KSamplerAdvanced" => self.sampler(n, name),
            "VAEDecode" | "VAEDecodeTiled" => {
                let mut inputs = self.vae_inputs(n);
                if let Some(src) = link("samples") {
                    inputs.push(("latent", self.out_ref(src)));
                }
                self.push(n, name, "sd.vae_decode", inputs);
            }
            "VAEEncode" => {
                let mut inputs = self.vae_inputs(n);
                if let Some(src) = link("pixels") {
                    inputs.push(("image", self.out_ref(src)));
                }
                self.push(n, name, "sd.vae_encode", inputs);
            }
            "LatentUpscale" | "LatentUpscaleBy" | "ImageScale" | "ImageScaleBy" => self.resize(n, name),
            "ImageUpscaleWithModel" => {
                let mut inputs = Vec::new();
                if let Some(src) = link("upscale_model") {
                    inputs.push(("model", Arg::Ref(self.name[src].clone())));
                }
                if let Some(src) = link("image") {
                    inputs.push(("image", self.out_ref(src)));
                }
                self.push(n, name, "image.upscale", inputs);
            }
            "LoadImage" => {
                let path = input_path(Self::text(n, "image"));
                self.push(n, name, "image.load", vec![("path", Arg::Lit(Lit::Text(path)))]);
            }
            "SaveImage" | "PreviewImage" => self.save(n, name),
            other => unreachable!("class {other} is in the table but not translated"),
        }
    }

    fn sampler(&mut self, n: &'a Node, name: String) {
        let Some(cond) = self.cond(n) else { return };
        let seed_widget = if n.class.name == "KSampler" { "seed" } else { "noise_seed" };
        if Self::int(n, seed_widget) > i128::from(i64::MAX) {
            self.fail(
                n,
                seed_widget,
                "value_bigger_than_max",
                format!("{} is above flow's largest seed, 2^63 - 1", Self::int(n, seed_widget)),
            );
            return;
        }
        let mut inputs = Vec::new();
        if let Some((src, _)) = n.link("model") {
            inputs.push(("model", Arg::Ref(self.name[src].clone())));
        }
        inputs.push(("cond", Arg::Ref(cond)));
        if let Some((src, _)) = n.link("latent_image") {
            inputs.push(("latent", self.out_ref(src)));
        }
        inputs.push(("sampler", self.widget(n, "sampler_name")));
        inputs.push(("scheduler", self.widget(n, "scheduler")));
        inputs.push(("steps", self.widget(n, "steps")));
        inputs.push(("cfg", self.widget(n, "cfg")));
        inputs.push(("seed", self.widget(n, seed_widget)));
        if n.class.name == "KSampler" {
            inputs.push(("denoise", self.widget(n, "denoise")));
        } else {
            inputs.push(("add_noise", Arg::Lit(Lit::Bool(Self::text(n, "add_noise") == "enable"))));
            inputs.push(("start_step", self.widget(n, "start_at_step")));
            inputs.push(("end_step", self.widget(n, "end_at_step")));
            inputs
                .push(("leftover_noise", Arg::Lit(Lit::Bool(Self::text(n, "return_with_leftover_noise") == "enable"))));
        }
        inputs.push(("generator", Arg::Lit(Lit::Text("torch".into()))));
        self.push(n, name, "sd.sample", inputs);
    }

    fn resize(&mut self, n: &'a Node, name: String) {
        if is_pass_through(n) {
            return;
        }
        let latent = n.class.name.starts_with("Latent");
        let (source, op) = if latent { ("samples", "latent.upscale") } else { ("image", "image.resize") };
        let mut inputs = Vec::new();
        if let Some((src, _)) = n.link(source) {
            inputs.push((if latent { "latent" } else { "image" }, self.out_ref(src)));
        }
        let method = Self::text(n, "upscale_method");
        let method = if latent {
            method.to_string()
        } else {
            match method {
                "bilinear" => "torch-bilinear".into(),
                "bicubic" => "torch-bicubic".into(),
                other => other.to_string(),
            }
        };
        inputs.push((if latent { "method" } else { "filter" }, Arg::Lit(Lit::Text(method))));
        if n.class.name.ends_with("By") {
            inputs.push(("scale", self.widget(n, "scale_by")));
        } else {
            for side in ["width", "height"] {
                let v = Self::int(n, side);
                if v != 0 {
                    // ComfyUI's LatentUpscale makes sides at least 64 pixels.
                    inputs.push((side, Arg::Lit(Lit::Int(if latent { v.max(64) } else { v }))));
                }
            }
            let crop = Self::text(n, "crop");
            if crop != "disabled" {
                inputs.push(("crop", Arg::Lit(Lit::Text(crop.into()))));
            }
        }
        self.push(n, name, op, inputs);
    }

    fn save(&mut self, n: &'a Node, name: String) {
        let path = if n.class.name == "SaveImage" {
            let prefix = Self::text(n, "filename_prefix");
            let prefix = prefix.replace('\\', "/");
            if prefix.split('/').any(|c| c == "..") || prefix.starts_with('/') {
                self.fail(
                    n,
                    "filename_prefix",
                    "custom_validation_failed",
                    format!("`{prefix}` would save outside the output folder"),
                );
                return;
            }
            format!("{OUTPUT_DIR}/{prefix}_00001_.png")
        } else {
            format!("{TEMP_DIR}/{name}_00001_.png")
        };
        let mut inputs = Vec::new();
        if let Some((src, _)) = n.link("images") {
            inputs.push(("image", self.out_ref(src)));
        }
        inputs.push(("path", Arg::Lit(Lit::Text(path))));
        if self.purpose == Purpose::Run {
            inputs.push(("comfy_prompt", Arg::Lit(Lit::Text(self.p.json.clone()))));
        }
        self.push(n, name, "image.save", inputs);
    }
}

/// Params in this order first (then the rest as met).
const PARAM_ORDER: &[&str] = &["prompt", "negative", "seed", "steps", "cfg", "sampler", "scheduler", "width", "height"];

fn static_base(base: &str) -> &'static str {
    PARAM_ORDER.iter().copied().find(|b| *b == base).expect("param bases are listed")
}

/// LatentUpscale / ImageScale with both sides 0 leave their input as is.
fn is_pass_through(n: &Node) -> bool {
    matches!(n.class.name, "LatentUpscale" | "ImageScale")
        && matches!(n.inputs.get("width"), Some(Input::Int(0)))
        && matches!(n.inputs.get("height"), Some(Input::Int(0)))
}

/// LoadImage's `image` as a path relative to the workflow's folder
/// (ComfyUI's `name [output]` / `name [temp]` annotations pick those folders).
fn input_path(name: &str) -> String {
    let name = name.replace('\\', "/");
    for (tag, dir) in [(" [output]", Some(OUTPUT_DIR)), (" [temp]", Some(TEMP_DIR)), (" [input]", None)] {
        if let Some(stem) = name.strip_suffix(tag) {
            return match dir {
                Some(d) => format!("{d}/{stem}"),
                None => stem.to_string(),
            };
        }
    }
    name
}

/// A title as a flow name: lower case, other characters as `_`.
fn slug(title: &str) -> Option<String> {
    let mut out = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_matches('_').to_string();
    if out.is_empty() {
        None
    } else if out.starts_with(|c: char| c.is_ascii_digit()) {
        Some(format!("n{out}"))
    } else {
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::comfy::{translate_workflow, Purpose};

    fn origins(json: &str) -> BTreeMap<String, Vec<String>> {
        translate_workflow(json, "w.json", Purpose::Run).unwrap().origins
    }

    #[test]
    fn hires_fix_origins() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../graphs/comfy/hires_fix.json")).unwrap();
        let t = translate_workflow(&text, "hires_fix.json", Purpose::Run).unwrap();
        let mut by_id: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (node, ids) in &t.origins {
            for id in ids {
                by_id.entry(id.as_str()).or_default().push(node.as_str());
            }
        }
        // Both samplers share one merged encoder, which stands for both prompts.
        let encoders: Vec<&Vec<String>> = t.origins.values().filter(|ids| ids.len() > 1).collect();
        assert_eq!(encoders, [&vec!["6".to_string(), "7".to_string()]], "{:?}", t.origins);
        assert_eq!(by_id["6"], by_id["7"]);
        for id in ["3", "5", "10", "11", "8", "9"] {
            assert_eq!(by_id.get(id).map(Vec::len), Some(1), "node {id}: {:?}", t.origins);
        }
        assert!(!by_id.contains_key("4"), "the checkpoint loader is a model, not a node: {:?}", t.origins);
        assert_eq!(t.origins.len(), 7, "{:?}", t.origins);
        assert_eq!(t.outputs, ["9"]);
        assert_eq!(t.classes["10"], "LatentUpscaleBy");
    }

    #[test]
    fn combined_conditioning_and_clip_skip_origins() {
        let json = r#"{
          "1": { "class_type": "CheckpointLoaderSimple", "inputs": { "ckpt_name": "m.safetensors" } },
          "2": { "class_type": "CLIPSetLastLayer", "inputs": { "clip": ["1", 1], "stop_at_clip_layer": -2 } },
          "3": { "class_type": "CLIPTextEncode", "inputs": { "text": "snow", "clip": ["2", 0] } },
          "4": { "class_type": "CLIPTextEncode", "inputs": { "text": "fox", "clip": ["2", 0] } },
          "5": { "class_type": "CLIPTextEncode", "inputs": { "text": "owl", "clip": ["2", 0] } },
          "6": { "class_type": "CLIPTextEncode", "inputs": { "text": "ugly", "clip": ["2", 0] } },
          "7": { "class_type": "ConditioningCombine", "inputs": { "conditioning_1": ["3", 0], "conditioning_2": ["4", 0] } },
          "8": { "class_type": "ConditioningCombine", "inputs": { "conditioning_1": ["7", 0], "conditioning_2": ["5", 0] } },
          "9": { "class_type": "EmptyLatentImage", "inputs": { "width": 64, "height": 64, "batch_size": 1 } },
          "10": { "class_type": "KSampler", "inputs": { "model": ["1", 0], "seed": 1, "steps": 2, "cfg": 5, "sampler_name": "euler",
                  "scheduler": "normal", "positive": ["8", 0], "negative": ["6", 0], "latent_image": ["9", 0], "denoise": 1 } },
          "11": { "class_type": "VAEDecode", "inputs": { "samples": ["10", 0], "vae": ["1", 2] } },
          "12": { "class_type": "PreviewImage", "inputs": { "images": ["11", 0] } }
        }"#;
        let o = origins(json);
        let lists: Vec<&Vec<String>> = o.values().collect();
        for pos in ["3", "4", "5"] {
            let want = vec![pos.to_string(), "6".to_string(), "2".to_string()];
            assert!(lists.contains(&&want), "encoder of {pos}: {o:?}");
        }
        // The chain's last link stands for both combiners; the inner link for none.
        assert!(lists.contains(&&vec!["8".to_string(), "7".to_string()]), "{o:?}");
        assert_eq!(lists.iter().filter(|ids| ids.is_empty()).count(), 1, "{o:?}");
    }
}
