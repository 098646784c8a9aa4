//! The dot product kernel of each format, chosen once for this CPU: AVX-512
//! VNNI, else AVX2 (with FMA and F16C), else the portable scalar code. The
//! float formats (F16, BF16, F32, rare in GGUF weight matrices) use the
//! scalar code everywhere.

use super::act::{Q8Block, Q8KBlock};
use super::formats::Format;
use super::scalar;

/// An instruction set the kernels exist for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust.
    Scalar,
    /// AVX2, FMA and F16C.
    Avx2,
    /// AVX-512 (F, VL) with VNNI, plus the above.
    Vnni,
}

impl Isa {
    /// The best instruction set of this CPU (detected once).
    pub fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
            *BEST.get_or_init(|| {
                let has = |f: &str| match f {
                    "avx2" => std::arch::is_x86_feature_detected!("avx2"),
                    "fma" => std::arch::is_x86_feature_detected!("fma"),
                    "f16c" => std::arch::is_x86_feature_detected!("f16c"),
                    "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
                    "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
                    "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
                    _ => false,
                };
                let avx2 = ["avx2", "fma", "f16c"].iter().all(|f| has(f));
                if avx2 && ["avx512f", "avx512vl", "avx512vnni"].iter().all(|f| has(f)) {
                    Isa::Vnni
                } else if avx2 {
                    Isa::Avx2
                } else {
                    Isa::Scalar
                }
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Isa::Scalar
        }
    }

    /// This instruction set and the ones below it that the CPU has, best
    /// first (for tests of every path).
    pub fn available() -> Vec<Isa> {
        [Isa::Vnni, Isa::Avx2, Isa::Scalar].into_iter().filter(|&i| i as u8 <= Isa::best() as u8).collect()
    }
}

/// One row times the activations of four tokens.
pub type Quad = fn(&[u8], [&[Q8Block]; 4]) -> [f32; 4];

/// A row-times-activations dot product.
#[derive(Clone, Copy)]
pub enum Kernel {
    /// With 32-value 8-bit activations: one token, and four at once (the
    /// weights unpacked once; each token's value as alone).
    Q8(fn(&[u8], &[Q8Block]) -> f32, Option<Quad>),
    /// With 256-value 8-bit activations.
    Q8K(fn(&[u8], &[Q8KBlock]) -> f32),
    /// With f32 activations.
    F32(fn(&[u8], &[f32]) -> f32),
}

fn q4k(row: &[u8], act: &[Q8KBlock]) -> f32 {
    scalar::q45_k(Format::Q4K, row, act)
}
fn q5k(row: &[u8], act: &[Q8KBlock]) -> f32 {
    scalar::q45_k(Format::Q5K, row, act)
}
fn f16(row: &[u8], x: &[f32]) -> f32 {
    scalar::float(Format::F16, row, x)
}
fn bf16(row: &[u8], x: &[f32]) -> f32 {
    scalar::float(Format::BF16, row, x)
}
fn f32(row: &[u8], x: &[f32]) -> f32 {
    scalar::float(Format::F32, row, x)
}

// Safe wrappers of the `#[target_feature]` kernels, with the signature
// given; only handed out by `kernel` for an instruction set that
// `Isa::best` detected on this CPU.
#[cfg(target_arch = "x86_64")]
macro_rules! safe {
    ($params:tt -> $ret:ty, $call:tt: $($name:ident),*) => {
        $(
            fn $name $params -> $ret {
                // SAFETY: see the macro's documentation.
                unsafe { super::x86::$name $call }
            }
        )*
    };
}

#[cfg(target_arch = "x86_64")]
safe!((row: &[u8], act: &[Q8Block]) -> f32, (row, act):
    q4_0_avx2, q4_1_avx2, q5_0_avx2, q5_1_avx2, q8_0_avx2, q4_0_vnni, q4_1_vnni, q5_0_vnni, q5_1_vnni, q8_0_vnni);
#[cfg(target_arch = "x86_64")]
safe!((row: &[u8], acts: [&[Q8Block]; 4]) -> [f32; 4], (row, acts):
    q4_0_avx2_x4, q4_1_avx2_x4, q8_0_avx2_x4, q4_0_vnni_x4, q4_1_vnni_x4, q8_0_vnni_x4);
#[cfg(target_arch = "x86_64")]
safe!((row: &[u8], act: &[Q8KBlock]) -> f32, (row, act):
    q4_k_avx2, q5_k_avx2, q6_k_avx2, q4_k_vnni, q5_k_vnni, q6_k_vnni);

/// The kernel of `format` for `isa` (which must be one of
/// [`Isa::available`]).
pub fn kernel(format: Format, isa: Isa) -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        let simd = match (isa, format) {
            (Isa::Avx2, Format::Q4_0) => Some((q4_0_avx2 as fn(&[u8], &[Q8Block]) -> f32, Some(q4_0_avx2_x4 as Quad))),
            (Isa::Avx2, Format::Q4_1) => Some((q4_1_avx2 as _, Some(q4_1_avx2_x4 as Quad))),
            (Isa::Avx2, Format::Q5_0) => Some((q5_0_avx2 as _, None)),
            (Isa::Avx2, Format::Q5_1) => Some((q5_1_avx2 as _, None)),
            (Isa::Avx2, Format::Q8_0) => Some((q8_0_avx2 as _, Some(q8_0_avx2_x4 as Quad))),
            (Isa::Vnni, Format::Q4_0) => Some((q4_0_vnni as _, Some(q4_0_vnni_x4 as Quad))),
            (Isa::Vnni, Format::Q4_1) => Some((q4_1_vnni as _, Some(q4_1_vnni_x4 as Quad))),
            (Isa::Vnni, Format::Q5_0) => Some((q5_0_vnni as _, None)),
            (Isa::Vnni, Format::Q5_1) => Some((q5_1_vnni as _, None)),
            (Isa::Vnni, Format::Q8_0) => Some((q8_0_vnni as _, Some(q8_0_vnni_x4 as Quad))),
            _ => None,
        };
        if let Some((one, four)) = simd {
            return Kernel::Q8(one, four);
        }
        let k = match (isa, format) {
            (Isa::Avx2, Format::Q4K) => Some(q4_k_avx2 as fn(&[u8], &[Q8KBlock]) -> f32),
            (Isa::Avx2, Format::Q5K) => Some(q5_k_avx2 as _),
            (Isa::Avx2, Format::Q6K) => Some(q6_k_avx2 as _),
            (Isa::Vnni, Format::Q4K) => Some(q4_k_vnni as _),
            (Isa::Vnni, Format::Q5K) => Some(q5_k_vnni as _),
            (Isa::Vnni, Format::Q6K) => Some(q6_k_vnni as _),
            _ => None,
        };
        if let Some(f) = k {
            return Kernel::Q8K(f);
        }
    }
    let _ = isa;
    match format {
        Format::Q4_0 => Kernel::Q8(scalar::q4_0, None),
        Format::Q4_1 => Kernel::Q8(scalar::q4_1, None),
        Format::Q5_0 => Kernel::Q8(scalar::q5_0, None),
        Format::Q5_1 => Kernel::Q8(scalar::q5_1, None),
        Format::Q8_0 => Kernel::Q8(scalar::q8_0, None),
        Format::Q4K => Kernel::Q8K(q4k),
        Format::Q5K => Kernel::Q8K(q5k),
        Format::Q6K => Kernel::Q8K(scalar::q6_k),
        Format::F16 => Kernel::F32(f16),
        Format::BF16 => Kernel::F32(bf16),
        Format::F32 => Kernel::F32(f32),
    }
}
