//! Resampling as torch's `F.interpolate` computes it on the CPU in f32
//! (align_corners false, no antialiasing), which is what ComfyUI's
//! LatentUpscale and ImageScale use: `nearest-exact`, `bilinear`, `bicubic`
//! (cubic convolution with A = -0.75, borders clamped) and `area`
//! (adaptive average pooling). Source coordinates, weights and the order of
//! the sums follow torch's kernels, so results agree to the last bit or
//! within f32 rounding. Also ComfyUI's `crop: center`.

/// A torch interpolation mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `nearest-exact`: the input pixel under the output pixel's centre.
    NearestExact,
    /// `bilinear`, align_corners false.
    Bilinear,
    /// `bicubic`, align_corners false, A = -0.75.
    Bicubic,
    /// `area`: the mean over each output pixel's input window.
    Area,
}

/// For each output index: the input indices and their weights.
type Taps = Vec<(Vec<usize>, Vec<f32>)>;

fn taps(mode: Mode, input: usize, output: usize) -> Taps {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|i| match mode {
            Mode::NearestExact => {
                let src = (((i as f32 + 0.5) * scale).floor() as usize).min(input - 1);
                (vec![src], vec![1.0])
            }
            Mode::Bilinear => {
                let real = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (real as usize).min(input - 1);
                let i1 = i0 + usize::from(i0 < input - 1);
                let l1 = (real - i0 as f32).clamp(0.0, 1.0);
                (vec![i0, i1], vec![1.0 - l1, l1])
            }
            Mode::Bicubic => {
                let real = scale * (i as f32 + 0.5) - 0.5;
                let floor = real.floor();
                let i0 = (floor as i64).min(input as i64 - 1);
                let t = (real - i0 as f32).clamp(0.0, 1.0);
                let idx = (0..4).map(|j| (i0 - 1 + j).clamp(0, input as i64 - 1) as usize).collect();
                (idx, cubic_weights(t).to_vec())
            }
            Mode::Area => unreachable!("area is computed as a window mean"),
        })
        .collect()
}

/// torch's cubic convolution coefficients for fraction `t` (A = -0.75).
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Resamples `planes` planes of `h` × `w` (row-major, one after the other)
/// to `oh` × `ow`.
pub(crate) fn interpolate(
    src: &[f32],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    mode: Mode,
) -> Vec<f32> {
    let mut out = vec![0.0f32; planes * oh * ow];
    if mode == Mode::Area {
        for (s, d) in src.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
            area(s, (h, w), (oh, ow), d);
        }
        return out;
    }
    let rows = taps(mode, h, oh);
    let cols = taps(mode, w, ow);
    let mut row = vec![0.0f32; ow];
    for (s, d) in src.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for (y, (ys, yw)) in rows.iter().enumerate() {
            let dst = &mut d[y * ow..(y + 1) * ow];
            for (k, (&sy, &wy)) in ys.iter().zip(yw).enumerate() {
                // Along the width first, then rows weighted (torch's order).
                let line = &s[sy * w..(sy + 1) * w];
                for (r, (xs, xw)) in row.iter_mut().zip(&cols) {
                    let mut acc = line[xs[0]] * xw[0];
                    for (&sx, &wx) in xs.iter().zip(xw).skip(1) {
                        acc += line[sx] * wx;
                    }
                    *r = acc;
                }
                for (o, &r) in dst.iter_mut().zip(&row) {
                    if k == 0 {
                        *o = r * wy;
                    } else {
                        *o += r * wy;
                    }
                }
            }
        }
    }
    out
}

/// torch's adaptive average pooling of one plane.
fn area(s: &[f32], (h, w): (usize, usize), (oh, ow): (usize, usize), d: &mut [f32]) {
    let start = |o: usize, out: usize, inp: usize| ((o * inp) as f32 / out as f32).floor() as usize;
    let end = |o: usize, out: usize, inp: usize| (((o + 1) * inp) as f32 / out as f32).ceil() as usize;
    for y in 0..oh {
        let (y0, y1) = (start(y, oh, h), end(y, oh, h));
        for x in 0..ow {
            let (x0, x1) = (start(x, ow, w), end(x, ow, w));
            let mut sum = 0.0f32;
            for row in s[y0 * w..y1 * w].chunks_exact(w) {
                for v in &row[x0..x1] {
                    sum += v;
                }
            }
            d[y * ow + x] = sum / (y1 - y0) as f32 / (x1 - x0) as f32;
        }
    }
}

/// ComfyUI's `crop: center` for a `w` × `h` source resized to `tw` × `th`:
/// the (x, y) margin cut from each side so the aspect ratios match.
pub(crate) fn center_crop((w, h): (usize, usize), (tw, th): (usize, usize)) -> (usize, usize) {
    let old = w as f64 / h as f64;
    let new = tw as f64 / th as f64;
    if old > new {
        (((w as f64 - w as f64 * (new / old)) / 2.0).round_ties_even() as usize, 0)
    } else if old < new {
        (0, ((h as f64 - h as f64 * (old / new)) / 2.0).round_ties_even() as usize)
    } else {
        (0, 0)
    }
}

/// The planes of `src` (`planes` of `h` × `w`) without `mx` columns and
/// `my` rows on each side.
pub(crate) fn crop(src: &[f32], planes: usize, (h, w): (usize, usize), (mx, my): (usize, usize)) -> Vec<f32> {
    let (ch, cw) = (h - 2 * my, w - 2 * mx);
    let mut out = Vec::with_capacity(planes * ch * cw);
    for p in src.chunks_exact(h * w).take(planes) {
        for row in p[my * w..(my + ch) * w].chunks_exact(w) {
            out.extend_from_slice(&row[mx..mx + cw]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_values_torch_computes() {
        // F.interpolate(torch.tensor([[[[0., 1., 2., 3.]]]]), size=(1, 6), mode=...): source
        // index floor((i + 0.5) * 4/6) for nearest-exact, max(0, (i + 0.5) * 4/6 - 0.5) for bilinear.
        let x = [0.0, 1.0, 2.0, 3.0];
        let near = interpolate(&x, 1, (1, 4), (1, 6), Mode::NearestExact);
        assert_eq!(near, [0.0, 1.0, 1.0, 2.0, 3.0, 3.0]);
        let lin = interpolate(&x, 1, (1, 4), (1, 6), Mode::Bilinear);
        let want = [0.0, 0.5, 1.1666667, 1.8333334, 2.5, 3.0];
        assert!(lin.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{lin:?}");
        // Bicubic 8 -> 16: output 3 sits at 1.25, taps 0..3 weighted far(1.25), near(0.25),
        // near(0.75), far(1.75) = -0.10546875, 0.87890625, 0.26171875, -0.03515625.
        let ramp = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        let cub = interpolate(&ramp, 1, (1, 8), (1, 16), Mode::Bicubic);
        assert_eq!(cub[3], 1.296875);
        assert_eq!(cubic_weights(0.25), [-0.10546875, 0.87890625, 0.26171875, -0.03515625]);
        let flat = interpolate(&[0.5; 12], 1, (3, 4), (7, 5), Mode::Bicubic);
        assert!(flat.iter().all(|v| (v - 0.5).abs() < 1e-6), "{flat:?}");
        // Area 4 -> 3: windows [0,2), [1,3), [2,4).
        let area = interpolate(&x, 1, (1, 4), (1, 3), Mode::Area);
        assert_eq!(area, [0.5, 1.5, 2.5]);
    }

    #[test]
    fn center_crop_keeps_the_middle() {
        assert_eq!(center_crop((8, 4), (4, 4)), (2, 0));
        assert_eq!(center_crop((4, 8), (4, 4)), (0, 2));
        assert_eq!(center_crop((6, 6), (3, 3)), (0, 0));
        let src: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(crop(&src, 1, (4, 4), (1, 1)), [5.0, 6.0, 9.0, 10.0]);
    }
}
