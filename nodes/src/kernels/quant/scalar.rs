//! Dot products of one weight row with quantized activations, in plain Rust:
//! the portable path, and the reference the SIMD paths are tested against.
//! Each follows ggml's reference `vec_dot` of the format: integer sums per
//! block, scaled in f32.

use super::act::{Q8Block, Q8KBlock};
use super::formats::{half_at, q6k_values, scale_min_k4, Format};

/// `row` (Q4_0, packed: see [`super::formats::pack_row`]) · `act`.
pub fn q4_0(row: &[u8], act: &[Q8Block]) -> f32 {
    let nb = row.len() / 18;
    let (d, qs) = row.split_at(2 * nb);
    let mut sum = 0f32;
    for (i, y) in act.iter().enumerate().take(nb) {
        let qs = &qs[16 * i..16 * i + 16];
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += ((qs[j] & 0xF) as i32 - 8) * i32::from(y.qs[j]) + ((qs[j] >> 4) as i32 - 8) * i32::from(y.qs[j + 16]);
        }
        sum += sumi as f32 * (half_at(d, 2 * i) * y.d);
    }
    sum
}

/// `row` (Q4_1, packed) · `act`.
pub fn q4_1(row: &[u8], act: &[Q8Block]) -> f32 {
    let nb = row.len() / 20;
    let (d, rest) = row.split_at(2 * nb);
    let (m, qs) = rest.split_at(2 * nb);
    let mut sum = 0f32;
    for (i, y) in act.iter().enumerate().take(nb) {
        let qs = &qs[16 * i..16 * i + 16];
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += i32::from(qs[j] & 0xF) * i32::from(y.qs[j]) + i32::from(qs[j] >> 4) * i32::from(y.qs[j + 16]);
        }
        sum += sumi as f32 * (half_at(d, 2 * i) * y.d) + half_at(m, 2 * i) * y.s;
    }
    sum
}

/// The 5-bit values of a Q5_0/Q5_1 block (`qh`, then `qs`).
fn five_bits(qh: &[u8], qs: &[u8]) -> [i32; 32] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut v = [0i32; 32];
    for j in 0..16 {
        v[j] = i32::from(qs[j] & 0xF) | (((qh >> j) & 1) << 4) as i32;
        v[j + 16] = i32::from(qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4) as i32;
    }
    v
}

/// `row` (Q5_0) · `act`.
pub fn q5_0(row: &[u8], act: &[Q8Block]) -> f32 {
    let mut sum = 0f32;
    for (b, y) in row.chunks_exact(22).zip(act) {
        let v = five_bits(&b[2..6], &b[6..22]);
        let sumi: i32 = v.iter().zip(y.qs).map(|(&q, a)| (q - 16) * i32::from(a)).sum();
        sum += sumi as f32 * (half_at(b, 0) * y.d);
    }
    sum
}

/// `row` (Q5_1) · `act`.
pub fn q5_1(row: &[u8], act: &[Q8Block]) -> f32 {
    let mut sum = 0f32;
    for (b, y) in row.chunks_exact(24).zip(act) {
        let v = five_bits(&b[4..8], &b[8..24]);
        let sumi: i32 = v.iter().zip(y.qs).map(|(&q, a)| q * i32::from(a)).sum();
        sum += sumi as f32 * (half_at(b, 0) * y.d) + half_at(b, 2) * y.s;
    }
    sum
}

/// `row` (Q8_0, packed) · `act`.
pub fn q8_0(row: &[u8], act: &[Q8Block]) -> f32 {
    let nb = row.len() / 34;
    let (d, qs) = row.split_at(2 * nb);
    let mut sum = 0f32;
    for (i, y) in act.iter().enumerate().take(nb) {
        let sumi: i32 = qs[32 * i..32 * i + 32].iter().zip(y.qs).map(|(&q, a)| i32::from(q as i8) * i32::from(a)).sum();
        sum += sumi as f32 * (half_at(d, 2 * i) * y.d);
    }
    sum
}

/// `row` (Q4_K or Q5_K) · `act`.
pub fn q45_k(format: Format, row: &[u8], act: &[Q8KBlock]) -> f32 {
    let bb = format.block_bytes();
    let mut sum = 0f32;
    for (b, y) in row.chunks_exact(bb).zip(act) {
        let (scales, qh, qs) = match format {
            Format::Q5K => (&b[4..16], Some(&b[16..48]), &b[48..176]),
            _ => (&b[4..16], None, &b[16..144]),
        };
        let (mut sumi, mut mins) = (0i32, 0i32);
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, scales);
            let (g, high) = (j / 2, j % 2 == 1);
            let mut s = 0i32;
            for l in 0..32 {
                let nib = if high { qs[32 * g + l] >> 4 } else { qs[32 * g + l] & 0xF };
                let h = qh.map_or(0, |qh| ((qh[l] >> j) & 1) << 4);
                s += i32::from(nib | h) * i32::from(y.qs[32 * j + l]);
            }
            sumi += i32::from(sc) * s;
            mins += i32::from(m) * (i32::from(y.bsums[2 * j]) + i32::from(y.bsums[2 * j + 1]));
        }
        sum += half_at(b, 0) * y.d * sumi as f32 - half_at(b, 2) * y.d * mins as f32;
    }
    sum
}

/// `row` (Q6_K) · `act`.
pub fn q6_k(row: &[u8], act: &[Q8KBlock]) -> f32 {
    let mut sum = 0f32;
    for (b, y) in row.chunks_exact(210).zip(act) {
        let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
        let mut sumi = 0i32;
        for half in 0..2 {
            let (ql, qh, sc, a) = (&ql[64 * half..], &qh[32 * half..], &scales[8 * half..], &y.qs[128 * half..]);
            let mut s = [0i32; 8];
            for l in 0..32 {
                let is = l / 16;
                let [q1, q2, q3, q4] = q6k_values(ql, qh, l);
                s[is] += q1 * i32::from(a[l]);
                s[is + 2] += q2 * i32::from(a[l + 32]);
                s[is + 4] += q3 * i32::from(a[l + 64]);
                s[is + 6] += q4 * i32::from(a[l + 96]);
            }
            sumi += s.iter().zip(sc).map(|(&v, &c)| v * i32::from(c as i8)).sum::<i32>();
        }
        sum += half_at(b, 208) * y.d * sumi as f32;
    }
    sum
}

/// `row` (F16, BF16 or F32 values) · `x`.
pub fn float(format: Format, row: &[u8], x: &[f32]) -> f32 {
    let mut values = [0f32; 64];
    let step = 64 * format.block_bytes();
    let mut sum = 0f32;
    for (bytes, xs) in row.chunks(step).zip(x.chunks(64)) {
        let v = &mut values[..xs.len()];
        super::formats::dequantize_row(format, bytes, v);
        sum += v.iter().zip(xs).map(|(a, b)| a * b).sum::<f32>();
    }
    sum
}
