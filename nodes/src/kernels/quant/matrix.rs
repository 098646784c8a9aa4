//! A weight matrix in its GGUF format, and its products with activations:
//! matrix-vector for a decode step (rows split across the worker pool) and
//! matrix-matrix for a prompt (each weight row, loaded once, meets every
//! token's activations).

use anyhow::{ensure, Result};

use super::act::{quantize_q8, quantize_q8k, Q8Block, Q8KBlock};
use super::formats::Format;
use super::kernels::{kernel, Isa, Kernel};
use crate::kernels::pool::Pool;

/// Rows per task at least: tasks are taken from a shared counter, and
/// each take costs a trip of a cache line between cores.
const MIN_ROWS_PER_TASK: usize = 64;

/// Tasks per thread at most (a little slack for uneven progress).
const TASKS_PER_THREAD: usize = 4;

/// `rows` × `cols` weights, each row `format.row_bytes(cols)` bytes (Q4_0,
/// Q4_1 and Q8_0 rows repacked: see [`super::formats::pack_row`]).
pub struct QMatrix {
    format: Format,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
    kernel: Kernel,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QMatrix({} {}x{})", self.format.name(), self.rows, self.cols)
    }
}

/// Activations in the form a matrix's kernel takes, for `n` vectors.
#[derive(Clone, Debug)]
pub enum Acts {
    /// 32-value 8-bit blocks.
    Q8(Vec<Q8Block>),
    /// 256-value 8-bit blocks.
    Q8K(Vec<Q8KBlock>),
    /// Plain f32.
    F32(Vec<f32>),
}

impl QMatrix {
    /// A matrix over `data` with the kernel of the best instruction set.
    pub fn new(format: Format, rows: usize, cols: usize, data: Vec<u8>) -> Result<QMatrix> {
        QMatrix::with_isa(format, rows, cols, data, Isa::best())
    }

    /// A matrix with the kernel of `isa` (one of [`Isa::available`]).
    pub fn with_isa(format: Format, rows: usize, cols: usize, data: Vec<u8>, isa: Isa) -> Result<QMatrix> {
        ensure!(cols % format.block_len() == 0, "{} rows need a multiple of {} values, got {cols}", format.name(), format.block_len());
        ensure!(
            data.len() == rows * format.row_bytes(cols),
            "a {rows}x{cols} {} matrix takes {} bytes, got {}",
            format.name(),
            rows * format.row_bytes(cols),
            data.len()
        );
        let mut data = data;
        if super::formats::is_packed(format) {
            // In place, a row at a time: no second copy of the matrix.
            let mut row = vec![0u8; format.row_bytes(cols)];
            for chunk in data.chunks_exact_mut(row.len()) {
                row.copy_from_slice(chunk);
                super::formats::pack_row(format, &row, chunk);
            }
        }
        Ok(QMatrix { format, rows, cols, data, kernel: kernel(format, isa) })
    }

    /// The weight format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Output size.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input size.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The bytes of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        let n = self.format.row_bytes(self.cols);
        &self.data[r * n..(r + 1) * n]
    }

    /// Row `r` as f32 values (e.g. an embedding lookup); `scratch` holds
    /// the row's bytes on the way.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32], scratch: &mut Vec<u8>) {
        scratch.resize(self.format.row_bytes(self.cols), 0);
        super::formats::unpack_row(self.format, self.row(r), scratch);
        super::formats::dequantize_row(self.format, scratch, out);
    }

    /// Empty activations of the kind this matrix takes.
    pub fn acts(&self) -> Acts {
        match self.kernel {
            Kernel::Q8(..) => Acts::Q8(Vec::new()),
            Kernel::Q8K(_) => Acts::Q8K(Vec::new()),
            Kernel::F32(_) => Acts::F32(Vec::new()),
        }
    }

    /// Puts `x` (`n` vectors of `cols` values, one after the other) into
    /// `acts` in this matrix's activation form, reusing its memory.
    pub fn quantize(&self, x: &[f32], acts: &mut Acts) {
        match (self.kernel, acts) {
            (Kernel::Q8(..), Acts::Q8(v)) => {
                v.resize(x.len() / 32, Q8Block::default());
                quantize_q8(x, v);
            }
            (Kernel::Q8K(_), Acts::Q8K(v)) => {
                v.resize(x.len() / 256, Q8KBlock::default());
                quantize_q8k(x, v);
            }
            (Kernel::F32(_), Acts::F32(v)) => {
                v.clear();
                v.extend_from_slice(x);
            }
            (_, acts) => {
                *acts = self.acts();
                self.quantize(x, acts);
            }
        }
    }

    /// `out[t * rows + r] = row r · activations of vector t` for the `n`
    /// vectors in `acts` (made by [`QMatrix::quantize`] of this matrix or
    /// one of the same format and width), computed on `pool`.
    pub fn matmul(&self, acts: &Acts, n: usize, out: &mut [f32], pool: &Pool) {
        assert_eq!(out.len(), n * self.rows, "output size");
        let out_ptr = SharedOut(out.as_mut_ptr());
        let per_task = self.rows.div_ceil(pool.threads() * TASKS_PER_THREAD).max(MIN_ROWS_PER_TASK);
        let tasks = self.rows.div_ceil(per_task);
        let task = |i: usize| {
            let out = out_ptr;
            let rows = i * per_task..((i + 1) * per_task).min(self.rows);
            for r in rows {
                let row = self.row(r);
                let mut t = 0;
                // Four tokens at a time where the kernel can (a prompt).
                if let (Kernel::Q8(_, Some(four)), Acts::Q8(a)) = (self.kernel, acts) {
                    let nb = self.cols / 32;
                    while t + 4 <= n {
                        let act = |k: usize| &a[(t + k) * nb..(t + k + 1) * nb];
                        let v = four(row, [act(0), act(1), act(2), act(3)]);
                        for (k, v) in v.into_iter().enumerate() {
                            // SAFETY: each (t, r) is written by the one task owning row r.
                            unsafe { *out.0.add((t + k) * self.rows + r) = v };
                        }
                        t += 4;
                    }
                }
                for t in t..n {
                    let v = self.dot(row, acts, t);
                    // SAFETY: as above.
                    unsafe { *out.0.add(t * self.rows + r) = v };
                }
            }
        };
        pool.run(tasks, &task);
    }

    /// Row bytes · activations of vector `t`.
    #[inline]
    fn dot(&self, row: &[u8], acts: &Acts, t: usize) -> f32 {
        match (self.kernel, acts) {
            (Kernel::Q8(f, _), Acts::Q8(a)) => {
                let nb = self.cols / 32;
                f(row, &a[t * nb..(t + 1) * nb])
            }
            (Kernel::Q8K(f), Acts::Q8K(a)) => {
                let nb = self.cols / 256;
                f(row, &a[t * nb..(t + 1) * nb])
            }
            (Kernel::F32(f), Acts::F32(a)) => f(row, &a[t * self.cols..(t + 1) * self.cols]),
            _ => panic!("activations of another kind than the matrix takes"),
        }
    }
}

/// The output pointer shared by the pool's tasks, each writing its own rows.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint elements; `matmul` outlives them.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}
