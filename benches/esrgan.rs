//! Real-ESRGAN animevideov3 x4 on a 256x256 image, untiled and in 128-px tiles.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench --bench esrgan` (the model is fetched
//! once into `$FLOW_TEST_MODELS_DIR`, else `target/test-models`).

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use flow_nodes::upscale::{TileOptions, Upscaler};
use support::catalog_model;

#[path = "support/mod.rs"]
mod support;

fn esrgan(c: &mut Criterion) {
    // As the `flow` binary does at start-up.
    flow_engine::allocator::keep_freed_memory();
    let model = catalog_model("realesrgan-animevideov3-x4");
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
