//! `image.upscale`: Real-ESRGAN super-resolution, tile by tile.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use flow_engine::models::{Residence, ResolvedModel};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

use super::{TileOptions, Upscaler, MAX_AUTO_TILE_PAD};

/// Names the way [`Upscaler::load`] builds a network, in pool keys; bump it
/// when loading changes.
const LOADER: &str = "esrgan-f32-v1";

/// The `image.upscale` op. Loaded networks stay in the run's model pool.
pub(crate) struct UpscaleOp {
    spec: OpSpec,
}

impl UpscaleOp {
    /// The op.
    pub(crate) fn new() -> Self {
        let doc = format!(
            "Enlarges images with a Real-ESRGAN network: an ncnn .param/.bin pair \
             (SRVGGNetCompact such as realesr-animevideov3, or RRDBNet such as RealESRGAN_x4plus) \
             or a basicsr .pth/.safetensors checkpoint of either architecture. The image is cut \
             into tiles of at most `tile` pixels a side, each run with `tile_pad` pixels of \
             context that are cropped off afterwards; with the default context (the network's \
             receptive radius, at most {MAX_AUTO_TILE_PAD}) SRVGGNetCompact output equals the \
             untiled result. Grey and alpha planes are upscaled as grey RGB images. Output is \
             clamped to [0, 1]; progress is reported per tile."
        );
        UpscaleOp {
            spec: OpSpec {
                name: "image.upscale".into(),
                version: 1,
                doc,
                inputs: vec![
                    PortSpec::new("model", ValueType::Model, "the upscaling network, e.g. realesrgan-animevideov3-x4"),
                    PortSpec::new("image", ValueType::Image, "the image or batch of images (1 to 4 channels)"),
                    PortSpec::with_default(
                        "tile",
                        ValueType::Int,
                        256i64,
                        "largest tile side in input pixels; 0 runs the whole image at once",
                    ),
                    PortSpec::optional(
                        "tile_pad",
                        ValueType::Int,
                        "context pixels added on each side of a tile (default: the network's receptive radius, at most 24)",
                    ),
                ],
                outputs: vec![PortSpec::new("image", ValueType::Image, "the enlarged image")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

/// Bytes a loaded network holds: f32 weights twice (kernel and matrix form),
/// from f16 (ncnn) or f32 files.
fn memory_hint(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let files = if path.is_dir() {
        std::fs::read_dir(path)
            .map(|d| d.flatten().map(|e| size(&e.path())).sum())
            .unwrap_or(0)
    } else {
        size(path) + size(&path.with_extension("bin"))
    };
    4 * files
}

fn non_negative(inputs: &Inputs, port: &str) -> Result<Option<usize>> {
    inputs
        .opt_int(port)?
        .map(|v| {
            usize::try_from(v)
                .with_context(|| format!("input `{port}` should be 0 or more, got {v}"))
        })
        .transpose()
}

/// Checks, before anything is allocated, that the upscaled image is within
/// the pixel limit and that it and one tile's activations (64 float32
/// features at the output resolution, a few alive at once) fit in memory.
fn check_upscale_memory(dims: &[usize], scale: usize, tile: usize, pad: usize) -> Result<()> {
    let (n, c, h, w) = (dims[0] as u64, dims[1] as u64, dims[2] as u64, dims[3] as u64);
    let s = scale as u64;
    flow_engine::limits::check_image_size(w * s, h * s, "the upscaled image")?;
    let tile_pixels = if tile == 0 { h * w } else { (((tile + 2 * pad) as u64).pow(2)).min(h * w) };
    let bytes = n * c * h * w * s * s * 4 + tile_pixels * s * s * 64 * 4 * 4;
    flow_engine::limits::check_memory(bytes, &format!("upscaling a {w}x{h} image {scale}x"))
}

impl Op for UpscaleOp {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let model = inputs.value("model")?;
        let Some(model) = model.as_object::<ResolvedModel>() else {
            bail!(
                "input `model` should be a model reference, got {}",
                model.value_type()
            );
        };
        let image = inputs.tensor("image")?;
        ensure!(
            image.rank() == 4,
            "input `image` should be [N, C, H, W], got {:?}",
            image.dims()
        );
        let tile = non_negative(inputs, "tile")?.unwrap_or(256);
        let device = ctx.device();
        let key = model.pool_key(device, LOADER);
        let net = ctx
            .models()
            .get_or_load(&key, Residence::of(ctx.device()), memory_hint(&model.path), || {
                Upscaler::load(&model.path, device)
                    .with_context(|| format!("model `{}`", model.reference))
            })?;
        let pad = non_negative(inputs, "tile_pad")?.unwrap_or_else(|| net.default_tile_pad());
        check_upscale_memory(image.dims(), net.scale(), tile, pad)?;
        let image = image.to_device(device)?;
        let out = net.upscale(&image, TileOptions { tile, pad }, |done, total| {
            ctx.progress(done as u64, total as u64);
            if done < total {
                ctx.check_cancelled()?;
            }
            Ok(())
        })?;
        Ok(Outputs::single(
            "image",
            Value::tensor(ValueType::Image, out),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use candle_core::{Device, Tensor};
    use flow_engine::models::ModelPool;
    use flow_engine::{CancelToken, Event, Interrupted};

    use super::*;

    /// An x2 ncnn network: nearest upsampling plus a pixel-shuffled 1x1
    /// convolution whose weights are all zero but one bias.
    fn write_model(dir: &Path) -> std::path::PathBuf {
        let param = "7767517\n6 7\n\
            Input in 0 1 data\n\
            Split sp 1 2 data a b\n\
            Convolution c 1 1 a c1 0=12 1=1 5=1 6=36\n\
            PixelShuffle ps 1 1 c1 s 0=2\n\
            Interp up 1 1 b u 0=1 1=2.0 2=2.0\n\
            BinaryOp add 2 1 s u out\n";
        let mut bin = 0u32.to_le_bytes().to_vec();
        bin.extend([0u8; 36 * 4]);
        let mut bias = [0f32; 12];
        bias[0] = 0.5;
        bin.extend(bias.iter().flat_map(|v| v.to_le_bytes()));
        std::fs::write(dir.join("net.param"), param).unwrap();
        std::fs::write(dir.join("net.bin"), bin).unwrap();
        dir.join("net.param")
    }

    fn inputs(path: &Path, image: Tensor, tile: i64) -> Inputs {
        let model = ResolvedModel {
            reference: "./net.param".into(),
            path: path.to_path_buf(),
            kind: Some("ncnn".into()),
            fingerprint: "fp".into(),
        };
        let mut values = BTreeMap::new();
        values.insert("model".to_string(), model.into_value());
        values.insert("image".to_string(), Value::tensor(ValueType::Image, image));
        values.insert("tile".to_string(), Value::Int(tile));
        Inputs::new(values)
    }

    fn context(
        cancel: CancelToken,
        events: Arc<Mutex<Vec<(u64, u64)>>>,
        pool: Arc<ModelPool>,
    ) -> OpContext {
        let sink = Arc::new(move |e: Event| {
            if let Event::Progress { step, total, .. } = e {
                events.lock().unwrap().push((step, total));
            }
        });
        OpContext::new(
            "big",
            Device::Cpu,
            ".".into(),
            cancel,
            sink,
            Instant::now(),
            Default::default(),
        )
        .with_models(pool)
    }

    #[test]
    fn upscales_tile_by_tile_and_keeps_the_model_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_model(dir.path());
        let pool = Arc::new(ModelPool::new(1 << 30));
        let op = UpscaleOp::new();
        let image = Tensor::full(0.25f32, (1, 3, 5, 6), &Device::Cpu).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ctx = context(CancelToken::new(), events.clone(), pool.clone());
        let out = op.run(&inputs(&path, image.clone(), 3), &ctx).unwrap();
        out.check_against(op.spec()).unwrap();
        let out = out.get("image").unwrap().as_tensor().unwrap().clone();
        assert_eq!(out.dims(), [1, 3, 10, 12]);
        // Red gets the bias at the top-left of every 2x2 block.
        let red: Vec<Vec<f32>> = out.get(0).unwrap().get(0).unwrap().to_vec2().unwrap();
        assert_eq!(
            (red[0][0], red[0][1], red[1][0], red[3][3]),
            (0.75, 0.25, 0.25, 0.25)
        );
        assert_eq!(
            events.lock().unwrap().as_slice(),
            [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
        );

        op.run(&inputs(&path, image, 0), &ctx).unwrap();
        let stats = pool.stats();
        assert_eq!((stats.loads, stats.hits), (1, 1));
    }

    #[test]
    fn stops_between_tiles_when_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_model(dir.path());
        let op = UpscaleOp::new();
        let cancel = CancelToken::new();
        cancel.cancel();
        let image = Tensor::zeros((1, 3, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ctx = context(cancel, events.clone(), Arc::new(ModelPool::new(1 << 30)));
        let err = op.run(&inputs(&path, image, 4), &ctx).unwrap_err();
        assert!(err.downcast_ref::<Interrupted>().is_some(), "{err:#}");
        assert_eq!(events.lock().unwrap().as_slice(), [(0, 4)]);
    }

    #[test]
    fn explains_bad_inputs() {
        let op = UpscaleOp::new();
        let ctx = context(
            CancelToken::new(),
            Arc::default(),
            Arc::new(ModelPool::new(1 << 30)),
        );
        let image = Tensor::zeros((1, 3, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let missing = op
            .run(
                &inputs(Path::new("/nonexistent/net.param"), image.clone(), 0),
                &ctx,
            )
            .unwrap_err();
        assert!(
            format!("{missing:#}").contains("./net.param"),
            "{missing:#}"
        );
        let negative = op
            .run(&inputs(Path::new("/x.param"), image, -1), &ctx)
            .unwrap_err();
        assert!(negative.to_string().contains("`tile`"), "{negative}");
    }
}
