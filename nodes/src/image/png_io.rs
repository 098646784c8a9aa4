//! `image.load` and `image.save`: PNG files.

use std::path::{Path, PathBuf};

use flow_engine::limits::{check_image_size, check_memory};
use anyhow::{anyhow, Result};
use flow_engine::{
    Cost, Fingerprint, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType,
};
use image::ImageFormat;

use super::planes::Planes;
use super::provenance;
use crate::fsutil;

pub(crate) struct Load {
    spec: OpSpec,
}

impl Load {
    pub(crate) fn new() -> Self {
        Load {
            spec: OpSpec {
                name: "image.load".into(),
                version: 1,
                doc: "Loads a PNG image as a [1, C, H, W] f32 image in [0, 1]: gray images \
                      have 1 channel, color images 3, images with transparency 4 (RGBA). 8-bit \
                      values v become v / 255, 16-bit values v / 65535. The cache key includes \
                      the file's content hash."
                    .into(),
                inputs: vec![PortSpec::new(
                    "path",
                    ValueType::Text,
                    "the PNG file, relative to the graph file's folder",
                )],
                outputs: vec![PortSpec::new("image", ValueType::Image, "the image")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

/// PNG files are at most this large (a 64-megapixel RGBA picture with 16-bit
/// samples stored uncompressed is 512 MiB; real files are far smaller).
const MAX_PNG_BYTES: u64 = 1 << 30;

impl Op for Load {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let path = inputs.path("path", ctx)?;
        let bytes = fsutil::read(&path, MAX_PNG_BYTES, "PNG file")?;
        let not_png = |e: image::ImageError| anyhow!("cannot decode `{}` as PNG: {e}", path.display());
        // The header says how large the picture is: checked before decoding.
        let reader = || image::ImageReader::with_format(std::io::Cursor::new(&bytes), ImageFormat::Png);
        let (w, h) = reader().into_dimensions().map_err(not_png)?;
        check_image_size(u64::from(w), u64::from(h), &format!("`{}`", path.display()))?;
        // Decoded as 8-bit or 16-bit samples, then as f32 planes.
        check_memory(u64::from(w) * u64::from(h) * 4 * (8 + 16), &format!("decoding `{}`", path.display()))?;
        let img = reader().decode().map_err(not_png)?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let color = img.color();
        let (c, interleaved) = if color.has_alpha() {
            (4, img.into_rgba32f().into_raw())
        } else if color.has_color() {
            (3, img.into_rgb32f().into_raw())
        } else {
            (1, img.to_luma32f().into_raw())
        };
        let plane = h * w;
        let mut data = vec![0.0f32; c * plane];
        for (p, pixel) in interleaved.chunks_exact(c).enumerate() {
            for (ch, &x) in pixel.iter().enumerate() {
                data[ch * plane + p] = x;
            }
        }
        Ok(Outputs::single(
            "image",
            Planes::new(1, c, h, w, data).into_value(ctx.device())?,
        ))
    }

    fn fingerprint(&self, literal_inputs: &Inputs, graph_dir: &Path) -> Result<Fingerprint> {
        fsutil::file_fingerprint(literal_inputs, "path", graph_dir)
    }

    fn watched_paths(&self, literal_inputs: &Inputs, graph_dir: &Path) -> Vec<PathBuf> {
        fsutil::watched_file(literal_inputs, "path", graph_dir)
    }
}

pub(crate) struct Save {
    spec: OpSpec,
}

impl Save {
    pub(crate) fn new() -> Self {
        Save {
            spec: OpSpec {
                name: "image.save".into(),
                version: 2,
                doc: "Saves an image as an 8-bit PNG (gray, RGB or RGBA after its channels; each \
                      value stored as round(clamp(x, 0, 1) * 255)), atomically, creating missing \
                      folders. A batch of N > 1 images is saved as NAME-0.png, NAME-1.png, .... \
                      Text chunks record the provenance: flow:graph_hash, flow:graph_name, \
                      flow:params (JSON), flow:version, flow:graph (the graph as YAML with the \
                      run's values, so that `flow import png` recovers it), `parameters` in the \
                      AUTOMATIC1111 web UI's format (prompt, negative prompt, then `Steps`, \
                      `Sampler`, `CFG scale`, `Seed`, `Size`, `Model`, ... from the sd.sample and \
                      sd.encode_prompt nodes upstream; a summary of the params when there are \
                      none), and, when `comfy_prompt` is given, ComfyUI's `prompt` chunk. The \
                      chunks describe the run that wrote the file: an edit elsewhere in the graph \
                      does not re-save a cached image. An output node, cached like any other: a \
                      cached result stands only while every file holds exactly the bytes written."
                    .into(),
                inputs: vec![
                    PortSpec::new(
                        "image",
                        ValueType::Image,
                        "the image or batch of images to save",
                    ),
                    PortSpec::new(
                        "path",
                        ValueType::Text,
                        "the PNG file to write, relative to the graph file's folder",
                    ),
                    PortSpec::optional(
                        "comfy_prompt",
                        ValueType::Text,
                        "a ComfyUI API-format workflow (JSON text, taken as is) stored as the \
                         `prompt` chunk, as ComfyUI does; for graphs translated from one",
                    )
                    .verbatim(),
                ],
                outputs: vec![
                    PortSpec::new(
                        "path",
                        ValueType::Text,
                        "the path written, as given; for a batch, the pattern NAME-{i}.png",
                    ),
                    PortSpec::new(
                        "paths",
                        ValueType::List,
                        "every file written, in batch order",
                    ),
                ],
                output: true,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for Save {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let planes = Planes::from_tensor(inputs.tensor("image")?, "image")?;
        let given = inputs.text("path")?;
        let comfy_prompt = inputs.opt_text("comfy_prompt")?;
        if let Some(text) = comfy_prompt {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
                .map_err(|e| anyhow!("input `comfy_prompt` is not a ComfyUI workflow (a JSON object): {e}"))?;
        }
        let chunks = provenance::text_chunks(ctx.provenance(), ctx.node(), planes.w, planes.h, comfy_prompt);
        let names: Vec<String> = if planes.n == 1 {
            vec![given.to_string()]
        } else {
            (0..planes.n)
                .map(|i| numbered(given, &i.to_string()))
                .collect()
        };
        for (i, name) in names.iter().enumerate() {
            ctx.check_cancelled()?;
            let png = encode(&planes, i, &chunks).map_err(|e| anyhow!("cannot encode `{name}` as PNG: {e}"))?;
            ctx.write_output(name, &png)?;
            if planes.n > 1 {
                ctx.progress(i as u64 + 1, planes.n as u64);
            }
        }
        let path = if planes.n == 1 {
            given.to_string()
        } else {
            numbered(given, "{i}")
        };
        let mut out = Outputs::single("path", path);
        out.set(
            "paths",
            Value::list(names.into_iter().map(Value::from).collect()),
        );
        Ok(out)
    }

}

/// `out/cat.png` → `out/cat-{index}.png`; a name without extension gets the
/// suffix at its end.
fn numbered(path: &str, index: &str) -> String {
    let name_start = path.rfind(['/', '\\']).map_or(0, |i| i + 1);
    match path[name_start..].rfind('.') {
        Some(dot) if dot > 0 => {
            let dot = name_start + dot;
            format!("{}-{index}{}", &path[..dot], &path[dot..])
        }
        _ => format!("{path}-{index}"),
    }
}

/// Image `index` of `planes` as PNG bytes, with `chunks` as text chunks (tEXt
/// when the text is Latin-1, iTXt (UTF-8) otherwise).
fn encode(planes: &Planes, index: usize, chunks: &[(&str, String)]) -> Result<Vec<u8>> {
    let width = u32::try_from(planes.w)
        .map_err(|_| anyhow!("the image is {} pixels wide, too wide for PNG", planes.w))?;
    let height = u32::try_from(planes.h)
        .map_err(|_| anyhow!("the image is {} pixels high, too high for PNG", planes.h))?;
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(match planes.c {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        _ => png::ColorType::Rgba,
    });
    encoder.set_depth(png::BitDepth::Eight);
    for (keyword, text) in chunks {
        if text.chars().all(|c| u32::from(c) <= 0xFF) {
            encoder.add_text_chunk(keyword.to_string(), text.clone())?;
        } else {
            encoder.add_itxt_chunk(keyword.to_string(), text.clone())?;
        }
    }
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&planes.to_interleaved_u8(index))?;
    writer.finish()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_names_insert_the_index_before_the_extension() {
        assert_eq!(numbered("out/cat.png", "0"), "out/cat-0.png");
        assert_eq!(numbered("out.d/cat", "{i}"), "out.d/cat-{i}");
        assert_eq!(numbered(".hidden", "1"), ".hidden-1");
        assert_eq!(numbered("a.b.png", "2"), "a.b-2.png");
    }
}
