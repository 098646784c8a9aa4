//! Every kernel against the scalar path, and the scalar path against the
//! dequantized weights, on random blocks of every format.

use half::{bf16, f16};

use super::*;
use crate::kernels::pool::Pool;

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

const FORMATS: [Format; 11] = [
    Format::Q4_0,
    Format::Q4_1,
    Format::Q5_0,
    Format::Q5_1,
    Format::Q8_0,
    Format::Q4K,
    Format::Q5K,
    Format::Q6K,
    Format::F16,
    Format::BF16,
    Format::F32,
];

/// Random bytes for `rows` rows of `cols` values, with finite scales.
fn random_matrix(rng: &mut Rng, format: Format, rows: usize, cols: usize) -> Vec<u8> {
    let mut data: Vec<u8> = (0..rows * format.row_bytes(cols)).map(|_| rng.next() as u8).collect();
    let put_half = |b: &mut [u8], at: usize, v: f32| b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
    let bb = format.block_bytes();
    for b in data.chunks_exact_mut(bb) {
        match format {
            Format::Q4_0 | Format::Q5_0 | Format::Q8_0 => put_half(b, 0, rng.unit() * 0.1),
            Format::Q4_1 | Format::Q5_1 | Format::Q4K | Format::Q5K => {
                put_half(b, 0, rng.unit() * 0.1);
                put_half(b, 2, rng.unit() * 0.1);
            }
            Format::Q6K => put_half(b, 208, rng.unit() * 0.1),
            Format::F16 => put_half(b, 0, rng.unit()),
            Format::BF16 => b.copy_from_slice(&bf16::from_f32(rng.unit()).to_le_bytes()),
            Format::F32 => b.copy_from_slice(&rng.unit().to_le_bytes()),
        }
    }
    data
}

fn product(m: &QMatrix, x: &[f32], n: usize, pool: &Pool) -> Vec<f32> {
    let mut acts = m.acts();
    m.quantize(x, &mut acts);
    let mut out = vec![0f32; n * m.rows()];
    m.matmul(&acts, n, &mut out, pool);
    out
}

#[test]
fn every_instruction_set_matches_the_scalar_path() {
    let pool = Pool::new(2);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (rows, cols, n) = (37, 512, 6);
    for format in FORMATS {
        let data = random_matrix(&mut rng, format, rows, cols);
        let x: Vec<f32> = (0..n * cols).map(|_| rng.unit() * 3.0).collect();
        let reference = product(&QMatrix::with_isa(format, rows, cols, data.clone(), Isa::Scalar).unwrap(), &x, n, &pool);
        for isa in Isa::available() {
            let got = product(&QMatrix::with_isa(format, rows, cols, data.clone(), isa).unwrap(), &x, n, &pool);
            for (g, r) in got.iter().zip(&reference) {
                // Same integer sums; only the order of the f32 additions differs.
                assert!((g - r).abs() <= 1e-4 * r.abs().max(1.0), "{format:?} {isa:?}: {g} vs {r}");
            }
        }
    }
}

#[test]
fn tokens_in_a_batch_get_what_they_get_alone() {
    let pool = Pool::new(2);
    let mut rng = Rng(11);
    let (rows, cols, n) = (19, 256, 9);
    for format in FORMATS {
        for isa in Isa::available() {
            let m = QMatrix::with_isa(format, rows, cols, random_matrix(&mut rng, format, rows, cols), isa).unwrap();
            let x: Vec<f32> = (0..n * cols).map(|_| rng.unit()).collect();
            let batch = product(&m, &x, n, &pool);
            for t in 0..n {
                let alone = product(&m, &x[t * cols..(t + 1) * cols], 1, &pool);
                assert_eq!(&batch[t * rows..(t + 1) * rows], alone.as_slice(), "{format:?} {isa:?} token {t}");
            }
        }
    }
}

#[test]
fn quantized_products_approximate_the_dequantized_weights() {
    let pool = Pool::new(1);
    let mut rng = Rng(42);
    let (rows, cols) = (8, 256);
    for format in FORMATS {
        let data = random_matrix(&mut rng, format, rows, cols);
        let m = QMatrix::new(format, rows, cols, data).unwrap();
        let x: Vec<f32> = (0..cols).map(|_| rng.unit()).collect();
        let got = product(&m, &x, 1, &pool);
        let (mut w, mut scratch) = (vec![0f32; cols], Vec::new());
        for (r, g) in got.iter().enumerate() {
            m.dequantize_row(r, &mut w, &mut scratch);
            let exact: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
            let scale: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            // 8-bit activations: about 1/254 of each |w x| at most.
            assert!((g - exact).abs() <= scale / 100.0 + 1e-5, "{format:?} row {r}: {g} vs {exact}");
        }
    }
}

#[test]
fn packing_moves_bytes_and_unpacking_restores_them() {
    let mut rng = Rng(7);
    for format in FORMATS {
        let row = random_matrix(&mut rng, format, 1, 256);
        let (mut packed, mut back) = (vec![0u8; row.len()], vec![0u8; row.len()]);
        formats::pack_row(format, &row, &mut packed);
        formats::unpack_row(format, &packed, &mut back);
        assert_eq!(back, row, "{format:?}");
        if formats::is_packed(format) {
            assert_eq!(&packed[..2], &row[..2], "the first scale comes first");
        }
    }
}

#[test]
fn dequantization_follows_the_layouts() {
    // Q4_1: d = 0.5, m = -1; value j is nibble j of the low halves.
    let mut b = vec![0u8; 20];
    b[0..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
    b[2..4].copy_from_slice(&f16::from_f32(-1.0).to_le_bytes());
    b[4] = 0x31; // value 0: 1, value 16: 3
    let mut y = [0f32; 32];
    formats::dequantize_row(Format::Q4_1, &b, &mut y);
    assert_eq!((y[0], y[16], y[1]), (-0.5, 0.5, -1.0));
    // Q8_0: d = 2, q = -3.
    let mut b = vec![0u8; 34];
    b[0..2].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
    b[2] = (-3i8) as u8;
    formats::dequantize_row(Format::Q8_0, &b, &mut y);
    assert_eq!(y[0], -6.0);
    assert_eq!(Format::from_ggml(3).unwrap(), Format::Q4_1);
    assert!(Format::from_ggml(99).is_err());
}
