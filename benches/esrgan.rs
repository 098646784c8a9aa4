//! Real-ESRGAN animevideov3 x4 on a 256x256 image, untiled and in 128-px tiles.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench --bench esrgan` (the model is fetched
//! once into `$FLOW_TEST_MODELS_DIR`, else `target/test-models`).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use flow_engine::models::{no_progress, ModelStore};
use flow_nodes::upscale::{TileOptions, Upscaler};

fn esrgan(c: &mut Criterion) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = std::env::var_os("FLOW_TEST_MODELS_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| workspace.join("target/test-models"), PathBuf::from);
    let model = ModelStore::new(root)
        .resolve_str("realesrgan-animevideov3-x4", workspace, &no_progress)
        .expect("fetching realesrgan-animevideov3-x4");
    let net = Upscaler::load(&model.path, &Device::Cpu).expect("loading the model");
    let image = Tensor::rand(0f32, 1.0, (1, 3, 256, 256), &Device::Cpu).expect("input");
    let mut group = c.benchmark_group("esrgan");
    group.sample_size(10);
    for tile in [0, 128] {
        let options = TileOptions { tile, pad: net.default_tile_pad() };
        group.bench_function(format!("animevideov3_x4_256px_tile{tile}"), |b| {
            b.iter(|| net.upscale(&image, options, |_, _| Ok(())).expect("upscale"))
        });
    }
    group.finish();
}

criterion_group!(benches, esrgan);
criterion_main!(benches);
