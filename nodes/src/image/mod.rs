//! image ops: PNG files (with flow, ComfyUI and AUTOMATIC1111 metadata, written
//! and read back by [`png_import`]) and resampling. Images are f32 tensors
//! `[N, C, H, W]` with values in `[0, 1]` and C = 1 (gray), 3 (RGB) or 4 (RGBA).

use flow_engine::Registry;

pub mod a1111;
mod graph_yaml;
pub(crate) mod interpolate;
mod planes;
mod png_io;
pub mod png_import;
mod provenance;
mod resample;
mod resize;
mod sd_facts;

/// Registers the image ops.
pub fn register(reg: &mut Registry) {
    reg.register(png_io::Load::new());
    reg.register(png_io::Save::new());
    reg.register(resize::Resize::new());
}
