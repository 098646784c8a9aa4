//! The element-wise pieces of a llama block (attention is in the session),
//! computed the way llama.cpp's
//! CPU backend computes them (the same sums, the same order where it
//! matters), so that the quantized path gives llama.cpp's tokens.

/// `out = x / rms(x) * weight`; the mean square is summed in f64 (ggml's
/// `ggml_float`).
pub(super) fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    let mean = (sum / x.len() as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

/// Rotates the first `dims` values of each `head_dim`-wide head of `x` for
/// position `pos`, as adjacent pairs (llama's GGUF layout): pair `i` turns by
/// `pos * base^(-2i/dims)`, the angle stepped by repeated multiplication in
/// f32 like ggml's rope cache.
pub(super) fn rope(x: &mut [f32], head_dim: usize, dims: usize, base: f32, pos: usize) {
    let theta_scale = base.powf(-2.0 / dims as f32);
    let mut cos_sin = [(0f32, 0f32); 256];
    let mut theta = pos as f32;
    for cs in cos_sin.iter_mut().take(dims / 2) {
        *cs = (theta.cos(), theta.sin());
        theta *= theta_scale;
    }
    for head in x.chunks_exact_mut(head_dim) {
        for (pair, &(c, s)) in head[..dims].chunks_exact_mut(2).zip(&cos_sin) {
            let (x0, x1) = (pair[0], pair[1]);
            pair[0] = x0 * c - x1 * s;
            pair[1] = x0 * s + x1 * c;
        }
    }
}

/// `gate = silu(gate) * up`.
pub(super) fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_scales_to_unit_root_mean_square() {
        let x = [3.0f32, -4.0, 0.0, 0.0];
        let mut out = [0f32; 4];
        rms_norm(&x, &[1.0, 2.0, 1.0, 1.0], 0.0, &mut out);
        assert!((out[0] - 1.2).abs() < 1e-6 && (out[1] + 3.2).abs() < 1e-6);
    }

    #[test]
    fn rope_turns_pairs_and_keeps_their_length() {
        let mut x = vec![1.0f32, 0.0, 0.5, 0.5, 9.0, 9.0];
        rope(&mut x, 6, 4, 10_000.0, 3);
        assert!((x[0] - 3f32.cos()).abs() < 1e-6 && (x[1] - 3f32.sin()).abs() < 1e-6);
        assert!(((x[2] * x[2] + x[3] * x[3]) - 0.5).abs() < 1e-6);
        assert_eq!(&x[4..], &[9.0, 9.0], "beyond `dims`, values stay");
        let mut y = vec![1.0f32, 2.0];
        rope(&mut y, 2, 2, 10_000.0, 0);
        assert_eq!(y, [1.0, 2.0]);
    }

    #[test]
    fn silu_gates() {
        let mut g = [0.0f32, 10.0];
        silu_mul(&mut g, &[5.0, 2.0]);
        assert!(g[0] == 0.0 && (g[1] - 2.0 * 10.0 / (1.0 + (-10f32).exp())).abs() < 1e-5);
    }
}
