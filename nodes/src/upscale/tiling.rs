//! Tiled inference: cut an image into tiles, run each with some context
//! around it, crop the context off the scaled result and join the pieces.
//!
//! With a context (`pad`) at least the network's receptive radius, every
//! output pixel sees exactly what it would see untiled, so the joined image
//! equals the untiled one up to float rounding; less context trades seams for
//! speed.

use anyhow::{ensure, Context, Result};
use candle_core::Tensor;

/// How to cut an image into tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileOptions {
    /// Largest tile side in input pixels; 0 runs the whole image at once.
    pub tile: usize,
    /// Context in input pixels added on every side of a tile (clipped at the
    /// image border).
    pub pad: usize,
}

/// What the tiler needs to know about the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetGeometry {
    /// Output pixels per input pixel along each axis.
    pub scale: usize,
    /// Input sides must be multiples of this (pixel-unshuffle networks).
    pub multiple: usize,
}

/// Splits `len` into `ceil(len / tile)` near-equal spans whose starts are
/// multiples of `multiple`; returns `(start, end)` pairs.
fn spans(len: usize, tile: usize, multiple: usize) -> Vec<(usize, usize)> {
    if tile == 0 || tile >= len {
        return vec![(0, len)];
    }
    let count = len.div_ceil(tile);
    let step = len.div_ceil(count).next_multiple_of(multiple);
    (0..len)
        .step_by(step)
        .map(|s| (s, (s + step).min(len)))
        .collect()
}

/// Runs `forward` over `image` (`[N, C, H, W]`) tile by tile and joins the
/// scaled tiles. `on_tile(done, total)` is called before the first tile and
/// after each one; an error from it (e.g. cancellation) stops the work.
pub fn run_tiled(
    image: &Tensor,
    geometry: NetGeometry,
    options: TileOptions,
    forward: impl Fn(&Tensor) -> Result<Tensor>,
    mut on_tile: impl FnMut(usize, usize) -> Result<()>,
) -> Result<Tensor> {
    let NetGeometry { scale, multiple } = geometry;
    ensure!(
        scale >= 1 && multiple >= 1,
        "invalid network geometry {geometry:?}"
    );
    let (_, _, h, w) = image.dims4().context("image should be [N, C, H, W]")?;
    ensure!(h > 0 && w > 0, "image is empty ({h}x{w})");
    // Networks that fold pixels need sides that are multiples of `multiple`:
    // extend the border, then crop the result.
    let (hp, wp) = (h.next_multiple_of(multiple), w.next_multiple_of(multiple));
    let padded = image
        .pad_with_same(2, 0, hp - h)?
        .pad_with_same(3, 0, wp - w)?;
    let tile = options.tile.next_multiple_of(multiple);
    let pad = options.pad.next_multiple_of(multiple);
    let rows = spans(hp, tile, multiple);
    let cols = spans(wp, tile, multiple);
    let total = rows.len() * cols.len();
    on_tile(0, total)?;
    let mut out_rows = Vec::with_capacity(rows.len());
    for (iy, &(y0, y1)) in rows.iter().enumerate() {
        let (py0, py1) = (y0.saturating_sub(pad), (y1 + pad).min(hp));
        let band = padded.narrow(2, py0, py1 - py0)?;
        let mut pieces = Vec::with_capacity(cols.len());
        for (ix, &(x0, x1)) in cols.iter().enumerate() {
            let (px0, px1) = (x0.saturating_sub(pad), (x1 + pad).min(wp));
            let input = band.narrow(3, px0, px1 - px0)?;
            let out =
                forward(&input).with_context(|| format!("tile at x {x0}..{x1}, y {y0}..{y1}"))?;
            let (_, _, oh, ow) = out.dims4()?;
            ensure!(
                (oh, ow) == ((py1 - py0) * scale, (px1 - px0) * scale),
                "the network turned a {}x{} tile into {ow}x{oh}, expected a x{scale} result",
                px1 - px0,
                py1 - py0
            );
            let piece = out
                .narrow(2, (y0 - py0) * scale, (y1 - y0) * scale)?
                .narrow(3, (x0 - px0) * scale, (x1 - x0) * scale)?;
            pieces.push(piece);
            on_tile(iy * cols.len() + ix + 1, total)?;
        }
        out_rows.push(Tensor::cat(&pieces, 3)?);
    }
    let joined = Tensor::cat(&out_rows, 2)?;
    Ok(joined.narrow(2, 0, h * scale)?.narrow(3, 0, w * scale)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    #[test]
    fn spans_cover_the_length_evenly() {
        assert_eq!(spans(10, 0, 1), [(0, 10)]);
        assert_eq!(spans(10, 16, 1), [(0, 10)]);
        assert_eq!(spans(10, 4, 1), [(0, 4), (4, 8), (8, 10)]);
        assert_eq!(spans(12, 5, 2), [(0, 4), (4, 8), (8, 12)]);
        assert_eq!(spans(300, 256, 1), [(0, 150), (150, 300)]);
    }

    /// A 3x3 box filter, then nearest x2: radius 1.
    fn blur_up(x: &Tensor) -> Result<Tensor> {
        let k = Tensor::ones((1, 1, 3, 3), x.dtype(), x.device())?;
        let y = x.conv2d(&k, 1, 1, 1, 1)?;
        let (_, _, h, w) = y.dims4()?;
        Ok(y.upsample_nearest2d(2 * h, 2 * w)?)
    }

    #[test]
    fn tiled_equals_untiled_with_enough_context() {
        let x = Tensor::arange(0f32, 7.0 * 9.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 7, 9))
            .unwrap();
        let geometry = NetGeometry {
            scale: 2,
            multiple: 1,
        };
        let whole = blur_up(&x).unwrap();
        let mut calls = Vec::new();
        let tiled = run_tiled(
            &x,
            geometry,
            TileOptions { tile: 3, pad: 1 },
            blur_up,
            |d, t| {
                calls.push((d, t));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(tiled.dims(), [1, 1, 14, 18]);
        let diff = crate::upscale::max_abs_diff(&tiled, &whole);
        assert_eq!(diff, 0.0);
        assert_eq!(
            calls,
            [
                (0, 9),
                (1, 9),
                (2, 9),
                (3, 9),
                (4, 9),
                (5, 9),
                (6, 9),
                (7, 9),
                (8, 9),
                (9, 9)
            ]
        );
        // Without context the tile borders differ.
        let seams = run_tiled(
            &x,
            geometry,
            TileOptions { tile: 3, pad: 0 },
            blur_up,
            |_, _| Ok(()),
        )
        .unwrap();
        let diff = crate::upscale::max_abs_diff(&seams, &whole);
        assert!(diff > 0.0);
    }

    #[test]
    fn stops_when_the_callback_fails() {
        let x = Tensor::zeros((1, 1, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let geometry = NetGeometry {
            scale: 2,
            multiple: 1,
        };
        let mut runs = 0;
        let err = run_tiled(
            &x,
            geometry,
            TileOptions { tile: 4, pad: 1 },
            blur_up,
            |done, _| {
                runs = done;
                anyhow::ensure!(done < 2, "cancelled");
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!((err.to_string().as_str(), runs), ("cancelled", 2));
    }

    #[test]
    fn pads_to_the_multiple_and_crops() {
        // A "network" that folds 2x2 pixels needs even sides.
        let fold = |x: &Tensor| -> Result<Tensor> {
            let (_, _, h, w) = x.dims4()?;
            anyhow::ensure!(h % 2 == 0 && w % 2 == 0, "odd input {h}x{w}");
            Ok(x.clone())
        };
        let x = Tensor::arange(0f32, 35.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 5, 7))
            .unwrap();
        let geometry = NetGeometry {
            scale: 1,
            multiple: 2,
        };
        let y = run_tiled(
            &x,
            geometry,
            TileOptions { tile: 3, pad: 1 },
            fold,
            |_, _| Ok(()),
        )
        .unwrap();
        assert_eq!(y.dims(), [1, 1, 5, 7]);
        let same = crate::upscale::max_abs_diff(&y, &x);
        assert_eq!(same, 0.0);
        assert_eq!(x.i((0, 0, 4, 6)).unwrap().to_scalar::<f32>().unwrap(), 34.0);
    }
}
