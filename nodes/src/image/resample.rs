//! Separable resampling of f32 planes with the usual filters: the output
//! pixel centre `(i + 0.5) * in / out` is mapped back onto the input, the
//! filter is widened by the scale factor when shrinking (so downscaling
//! averages instead of aliasing), and taps falling outside the image are
//! dropped with the remaining weights renormalised (the convention of Pillow).

use std::f64::consts::PI;

/// A resampling filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Filter {
    /// Lanczos with 3 lobes.
    Lanczos,
    /// Cubic convolution with a = -0.5 (Catmull-Rom).
    Bicubic,
    /// Linear interpolation (triangle filter).
    Bilinear,
    /// The input pixel whose area holds the output pixel's centre.
    Nearest,
}

impl Filter {
    /// The filter called `name`.
    pub(crate) fn parse(name: &str) -> Option<Filter> {
        match name {
            "lanczos" => Some(Filter::Lanczos),
            "bicubic" => Some(Filter::Bicubic),
            "bilinear" => Some(Filter::Bilinear),
            "nearest" => Some(Filter::Nearest),
            _ => None,
        }
    }

    /// Half-width of the filter at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Lanczos => 3.0,
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
            Filter::Nearest => 0.5,
        }
    }

    /// The filter's weight at distance `x` (in input pixels at scale 1).
    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Lanczos if x < 3.0 => sinc(x) * sinc(x / 3.0),
            Filter::Bicubic if x < 1.0 => (1.5 * x - 2.5) * x * x + 1.0,
            Filter::Bicubic if x < 2.0 => ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0,
            Filter::Bilinear if x < 1.0 => 1.0 - x,
            Filter::Nearest if x < 0.5 => 1.0,
            _ => 0.0,
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = PI * x;
        px.sin() / px
    }
}

/// For each output index along one axis: the first input index and the
/// weights of the input pixels from there on.
pub(crate) struct Taps {
    taps: Vec<(usize, Vec<f32>)>,
}

impl Taps {
    /// The taps that resample an axis of `in_len` pixels to `out_len`.
    pub(crate) fn new(filter: Filter, in_len: usize, out_len: usize) -> Taps {
        let scale = in_len as f64 / out_len as f64;
        let taps = (0..out_len)
            .map(|i| {
                let centre = (i as f64 + 0.5) * scale;
                if filter == Filter::Nearest {
                    return ((centre.floor() as usize).min(in_len - 1), vec![1.0]);
                }
                let filter_scale = scale.max(1.0);
                let support = filter.support() * filter_scale;
                let first = ((centre - support + 0.5).floor().max(0.0)) as usize;
                let end = ((centre + support + 0.5).floor() as usize).min(in_len);
                let weights: Vec<f64> = (first..end)
                    .map(|j| filter.weight((j as f64 + 0.5 - centre) / filter_scale))
                    .collect();
                let sum: f64 = weights.iter().sum();
                (first, weights.iter().map(|w| (w / sum) as f32).collect())
            })
            .collect();
        Taps { taps }
    }
}

/// Resamples one `in_h` × `in_w` plane to the sizes of `cols` and `rows`,
/// clamping the result to `[0, 1]` (sharp filters overshoot at edges). An axis
/// that keeps its size is copied as is.
pub(crate) fn resample_plane(
    src: &[f32],
    in_w: usize,
    in_h: usize,
    cols: &Taps,
    rows: &Taps,
) -> Vec<f32> {
    let out_w = cols.taps.len();
    let out_h = rows.taps.len();

    let wide = if out_w == in_w {
        src.to_vec()
    } else {
        let mut wide = vec![0.0f32; in_h * out_w];
        for (src_row, dst_row) in src.chunks_exact(in_w).zip(wide.chunks_exact_mut(out_w)) {
            for (dst, (first, weights)) in dst_row.iter_mut().zip(&cols.taps) {
                *dst = weights
                    .iter()
                    .zip(&src_row[*first..])
                    .map(|(w, x)| w * x)
                    .sum();
            }
        }
        wide
    };

    let mut out = if out_h == in_h {
        wide
    } else {
        let mut out = vec![0.0f32; out_h * out_w];
        for (dst_row, (first, weights)) in out.chunks_exact_mut(out_w).zip(&rows.taps) {
            for (k, &w) in weights.iter().enumerate() {
                let src_row = &wide[(first + k) * out_w..(first + k + 1) * out_w];
                for (dst, x) in dst_row.iter_mut().zip(src_row) {
                    *dst += w * x;
                }
            }
        }
        out
    };
    for x in &mut out {
        *x = x.clamp(0.0, 1.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resample_row(filter: Filter, row: &[f32], out_len: usize) -> Vec<f32> {
        let cols = Taps::new(filter, row.len(), out_len);
        let rows = Taps::new(filter, 1, 1);
        resample_plane(row, row.len(), 1, &cols, &rows)
    }

    #[test]
    fn bilinear_matches_hand_computed_values() {
        // Output centres 0.25, 0.75, 1.25, 1.75 over input pixel centres 0.5, 1.5.
        assert_eq!(
            resample_row(Filter::Bilinear, &[0.0, 1.0], 4),
            [0.0, 0.25, 0.75, 1.0]
        );
        // Halving widens the triangle to 2 input pixels: centre 1.0 takes pixels
        // 0, 1, 2 with weights 3/7, 3/7, 1/7; centre 3.0 takes 1, 2, 3 with 1/7, 3/7, 3/7.
        let half = resample_row(Filter::Bilinear, &[0.0, 1.0, 0.5, 0.25], 2);
        let want = [3.5 / 7.0, 3.25 / 7.0];
        assert!(
            half.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{half:?}"
        );
    }

    #[test]
    fn filters_interpolate_at_scale_one_and_sum_to_one() {
        for filter in [
            Filter::Lanczos,
            Filter::Bicubic,
            Filter::Bilinear,
            Filter::Nearest,
        ] {
            assert_eq!(filter.weight(0.0), 1.0);
            assert!(filter.weight(1.0).abs() < 1e-12, "{filter:?}");
            for (in_len, out_len) in [(5, 13), (13, 5), (7, 7), (1, 4)] {
                for (_, weights) in Taps::new(filter, in_len, out_len).taps {
                    let sum: f32 = weights.iter().sum();
                    assert!(
                        (sum - 1.0).abs() < 1e-6,
                        "{filter:?} {in_len}->{out_len}: {sum}"
                    );
                }
            }
        }
    }

    #[test]
    fn catmull_rom_is_continuous_at_its_knots() {
        let f = Filter::Bicubic;
        assert!((f.weight(1.0 - 1e-9) - f.weight(1.0 + 1e-9)).abs() < 1e-6);
        assert!(f.weight(2.0 - 1e-9).abs() < 1e-6);
    }
}
