//! The GGUF (ggml) block formats: their sizes, and the scalar dequantization
//! of a row, which is the reference every kernel is tested against.
//!
//! Layouts (little-endian, `half` = IEEE f16), blocks of 32 values unless
//! noted:
//! * `Q4_0`: `d: half, qs: [u8; 16]`; `x = d * (q - 8)`, value `j` in the low
//!   nibble of `qs[j]`, value `j + 16` in the high nibble.
//! * `Q4_1`: `d, m: half, qs: [u8; 16]`; `x = d * q + m`.
//! * `Q5_0`: `d: half, qh: [u8; 4], qs: [u8; 16]`; the fifth bit of value
//!   `j` is bit `j` of `qh` (little-endian u32); `x = d * (q - 16)`.
//! * `Q5_1`: `d, m: half, qh: [u8; 4], qs: [u8; 16]`; `x = d * q + m`.
//! * `Q8_0`: `d: half, qs: [i8; 32]`; `x = d * q`.
//! * `Q4_K` (256 values): `d, dmin: half, scales: [u8; 12], qs: [u8; 128]`;
//!   eight sub-blocks of 32 with 6-bit scales and mins.
//! * `Q5_K` (256): `d, dmin: half, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`.
//! * `Q6_K` (256): `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: half`.
//! * `F16`, `BF16`, `F32`: one value per "block".

use anyhow::{bail, Result};
use half::{bf16, f16};

/// A weight format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// 4-bit, scale.
    Q4_0,
    /// 4-bit, scale and minimum.
    Q4_1,
    /// 5-bit, scale.
    Q5_0,
    /// 5-bit, scale and minimum.
    Q5_1,
    /// 8-bit, scale.
    Q8_0,
    /// k-quant 4-bit.
    Q4K,
    /// k-quant 5-bit.
    Q5K,
    /// k-quant 6-bit.
    Q6K,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// f32.
    F32,
}

impl Format {
    /// The format of a ggml type id (as stored in GGUF tensor infos).
    pub fn from_ggml(id: u32) -> Result<Format> {
        Ok(match id {
            0 => Format::F32,
            1 => Format::F16,
            2 => Format::Q4_0,
            3 => Format::Q4_1,
            6 => Format::Q5_0,
            7 => Format::Q5_1,
            8 => Format::Q8_0,
            12 => Format::Q4K,
            13 => Format::Q5K,
            14 => Format::Q6K,
            30 => Format::BF16,
            other => bail!("ggml type {other} is not supported (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16 and F32 are)"),
        })
    }

    /// Values per block.
    pub fn block_len(self) -> usize {
        match self {
            Format::Q4_0 | Format::Q4_1 | Format::Q5_0 | Format::Q5_1 | Format::Q8_0 => 32,
            Format::Q4K | Format::Q5K | Format::Q6K => 256,
            Format::F16 | Format::BF16 | Format::F32 => 1,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Format::Q4_0 => 18,
            Format::Q4_1 => 20,
            Format::Q5_0 => 22,
            Format::Q5_1 => 24,
            Format::Q8_0 => 34,
            Format::Q4K => 144,
            Format::Q5K => 176,
            Format::Q6K => 210,
            Format::F16 | Format::BF16 => 2,
            Format::F32 => 4,
        }
    }

    /// Bytes of a row of `cols` values (`cols` a multiple of the block length).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_len() * self.block_bytes()
    }

    /// The name ggml gives the format.
    pub fn name(self) -> &'static str {
        match self {
            Format::Q4_0 => "Q4_0",
            Format::Q4_1 => "Q4_1",
            Format::Q5_0 => "Q5_0",
            Format::Q5_1 => "Q5_1",
            Format::Q8_0 => "Q8_0",
            Format::Q4K => "Q4_K",
            Format::Q5K => "Q5_K",
            Format::Q6K => "Q6_K",
            Format::F16 => "F16",
            Format::BF16 => "BF16",
            Format::F32 => "F32",
        }
    }
}

/// Whether rows of `format` are kept repacked (see [`pack_row`]).
pub fn is_packed(format: Format) -> bool {
    matches!(format, Format::Q4_0 | Format::Q4_1 | Format::Q8_0)
}

/// Repacks a GGUF row of Q4_0, Q4_1 or Q8_0 blocks into the layout the
/// kernels read: every block's `d` (f16) first, then every `m` (Q4_1), then
/// every block's quantized bytes. The bytes are the same, only moved: the
/// scales of 8 blocks convert in one instruction and the quantized values
/// sit next to each other. Other formats are copied as they are.
pub fn pack_row(format: Format, row: &[u8], out: &mut [u8]) {
    let (bb, scales) = match format {
        Format::Q4_0 | Format::Q8_0 => (format.block_bytes(), 1),
        Format::Q4_1 => (20, 2),
        _ => return out.copy_from_slice(row),
    };
    let nb = row.len() / bb;
    let qbytes = bb - 2 * scales;
    for (i, b) in row.chunks_exact(bb).enumerate() {
        for s in 0..scales {
            out[2 * (s * nb + i)..2 * (s * nb + i) + 2].copy_from_slice(&b[2 * s..2 * s + 2]);
        }
        let q = 2 * scales * nb + i * qbytes;
        out[q..q + qbytes].copy_from_slice(&b[2 * scales..]);
    }
}

/// The inverse of [`pack_row`].
pub fn unpack_row(format: Format, packed: &[u8], out: &mut [u8]) {
    let (bb, scales) = match format {
        Format::Q4_0 | Format::Q8_0 => (format.block_bytes(), 1),
        Format::Q4_1 => (20, 2),
        _ => return out.copy_from_slice(packed),
    };
    let nb = packed.len() / bb;
    let qbytes = bb - 2 * scales;
    for (i, b) in out.chunks_exact_mut(bb).enumerate() {
        for s in 0..scales {
            b[2 * s..2 * s + 2].copy_from_slice(&packed[2 * (s * nb + i)..2 * (s * nb + i) + 2]);
        }
        let q = 2 * scales * nb + i * qbytes;
        b[2 * scales..].copy_from_slice(&packed[q..q + qbytes]);
    }
}

/// The f16 at `b[i..i + 2]` as f32.
#[inline(always)]
pub(crate) fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// The 6-bit scale and minimum of sub-block `j` of a Q4_K/Q5_K block's
/// packed `scales` (ggml's `get_scale_min_k4`).
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The four 6-bit values (minus 32) that position `l` of a Q6_K half block
/// holds, for values `l`, `l + 32`, `l + 64` and `l + 96`.
#[inline(always)]
pub(crate) fn q6k_values(ql: &[u8], qh: &[u8], l: usize) -> [i32; 4] {
    [
        ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32,
        ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32,
        ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32,
        ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32,
    ]
}

/// Dequantizes one row (`row.len() == format.row_bytes(out.len())`).
pub fn dequantize_row(format: Format, row: &[u8], out: &mut [f32]) {
    let (n, bb) = (format.block_len(), format.block_bytes());
    for (b, y) in row.chunks_exact(bb).zip(out.chunks_exact_mut(n)) {
        match format {
            Format::Q4_0 => {
                let (d, qs) = (half_at(b, 0), &b[2..18]);
                for j in 0..16 {
                    y[j] = ((qs[j] & 0xF) as i32 - 8) as f32 * d;
                    y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
                }
            }
            Format::Q4_1 => {
                let (d, m, qs) = (half_at(b, 0), half_at(b, 2), &b[4..20]);
                for j in 0..16 {
                    y[j] = f32::from(qs[j] & 0xF) * d + m;
                    y[j + 16] = f32::from(qs[j] >> 4) * d + m;
                }
            }
            Format::Q5_0 | Format::Q5_1 => {
                let (d, qh, qs) = if format == Format::Q5_0 { (half_at(b, 0), &b[2..6], &b[6..22]) } else { (half_at(b, 0), &b[4..8], &b[8..24]) };
                let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
                for j in 0..16 {
                    let lo = (qs[j] & 0xF) | ((((qh >> j) & 1) as u8) << 4);
                    let hi = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
                    if format == Format::Q5_0 {
                        y[j] = (lo as i32 - 16) as f32 * d;
                        y[j + 16] = (hi as i32 - 16) as f32 * d;
                    } else {
                        let m = half_at(b, 2);
                        y[j] = f32::from(lo) * d + m;
                        y[j + 16] = f32::from(hi) * d + m;
                    }
                }
            }
            Format::Q8_0 => {
                let d = half_at(b, 0);
                for j in 0..32 {
                    y[j] = f32::from(b[2 + j] as i8) * d;
                }
            }
            Format::Q4K => {
                let (d, dmin, scales, qs) = (half_at(b, 0), half_at(b, 2), &b[4..16], &b[16..144]);
                for g in 0..4 {
                    let (sc0, m0) = scale_min_k4(2 * g, scales);
                    let (sc1, m1) = scale_min_k4(2 * g + 1, scales);
                    let q = &qs[32 * g..32 * g + 32];
                    for l in 0..32 {
                        y[64 * g + l] = d * f32::from(sc0) * f32::from(q[l] & 0xF) - dmin * f32::from(m0);
                        y[64 * g + 32 + l] = d * f32::from(sc1) * f32::from(q[l] >> 4) - dmin * f32::from(m1);
                    }
                }
            }
            Format::Q5K => {
                let (d, dmin, scales, qh, qs) = (half_at(b, 0), half_at(b, 2), &b[4..16], &b[16..48], &b[48..176]);
                for g in 0..4 {
                    let (sc0, m0) = scale_min_k4(2 * g, scales);
                    let (sc1, m1) = scale_min_k4(2 * g + 1, scales);
                    let q = &qs[32 * g..32 * g + 32];
                    for l in 0..32 {
                        let h0 = (qh[l] >> (2 * g)) & 1;
                        let h1 = (qh[l] >> (2 * g + 1)) & 1;
                        y[64 * g + l] = d * f32::from(sc0) * f32::from((q[l] & 0xF) | (h0 << 4)) - dmin * f32::from(m0);
                        y[64 * g + 32 + l] = d * f32::from(sc1) * f32::from((q[l] >> 4) | (h1 << 4)) - dmin * f32::from(m1);
                    }
                }
            }
            Format::Q6K => {
                let (ql, qh, scales, d) = (&b[0..128], &b[128..192], &b[192..208], half_at(b, 208));
                for half in 0..2 {
                    let (ql, qh, sc, y) = (&ql[64 * half..], &qh[32 * half..], &scales[8 * half..], &mut y[128 * half..]);
                    for l in 0..32 {
                        let is = l / 16;
                        let [q1, q2, q3, q4] = q6k_values(ql, qh, l);
                        y[l] = d * f32::from(sc[is] as i8) * q1 as f32;
                        y[l + 32] = d * f32::from(sc[is + 2] as i8) * q2 as f32;
                        y[l + 64] = d * f32::from(sc[is + 4] as i8) * q3 as f32;
                        y[l + 96] = d * f32::from(sc[is + 6] as i8) * q4 as f32;
                    }
                }
            }
            Format::F16 => y[0] = half_at(b, 0),
            Format::BF16 => y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            Format::F32 => y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    }
}
