//! image ops: PNG files and resampling. Images are f32 tensors
//! `[N, C, H, W]` with values in `[0, 1]` and C = 1 (gray), 3 (RGB) or 4 (RGBA).

use flow_engine::Registry;

pub(crate) mod interpolate;
mod planes;
mod png_io;
mod provenance;
mod resample;
mod resize;

/// Registers the image ops.
pub fn register(reg: &mut Registry) {
    reg.register(png_io::Load::new());
    reg.register(png_io::Save::new());
    reg.register(resize::Resize::new());
}
