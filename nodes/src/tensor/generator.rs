//! The `generator` input of ops that draw random numbers: `torch` (the
//! default) reproduces torch's CPU generator bit for bit, so a seed gives the
//! same numbers as `torch.manual_seed(seed); torch.randn(shape)` and hence the
//! same initial latent as diffusers (CPU generator) and ComfyUI; `flow` is the
//! SplitMix64 stream that graphs made before used.

use std::str::FromStr;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use flow_engine::{Inputs, PortSpec, ValueType};

use super::rng::SplitMix64;
use super::torch_rng::{TorchGenerator, CHUNK};

/// Which random stream an op draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneratorKind {
    /// SplitMix64 with Box-Muller normals in f64 (flow's own stream).
    Flow,
    /// torch's CPU generator: MT19937 and torch's float32 normal kernel.
    Torch,
}

/// The names of the generators, as the `generator` input accepts them.
pub const GENERATORS: [&str; 2] = ["flow", "torch"];

impl GeneratorKind {
    /// The name of the generator in graph files.
    pub fn as_str(self) -> &'static str {
        match self {
            GeneratorKind::Flow => "flow",
            GeneratorKind::Torch => "torch",
        }
    }
}

impl FromStr for GeneratorKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "flow" => Ok(GeneratorKind::Flow),
            "torch" => Ok(GeneratorKind::Torch),
            other => bail!(
                "generator `{other}` is not one of {}",
                GENERATORS.join(", ")
            ),
        }
    }
}

impl std::fmt::Display for GeneratorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `generator` input port, default "torch", for every op that draws random numbers.
pub fn generator_port() -> PortSpec {
    PortSpec::with_default(
        "generator",
        ValueType::Text,
        "torch",
        "the random stream: `torch` (the numbers of torch.manual_seed(seed) + torch.randn on the CPU, \
         as diffusers and ComfyUI draw them) or `flow` (flow's SplitMix64 stream of earlier versions)",
    )
    .one_of(&GENERATORS)
}

/// Reads the `generator` input (error naming the value and the choices if unknown).
pub fn generator_input(inputs: &Inputs) -> Result<GeneratorKind> {
    match inputs.opt_text("generator")? {
        None => Ok(GeneratorKind::Torch),
        Some(name) => name.parse().map_err(|_| {
            anyhow::anyhow!(
                "input `generator` is `{name}`; use one of {}",
                GENERATORS.join(", ")
            )
        }),
    }
}

/// A seeded stream of either kind; successive draws continue the stream (as a torch.Generator does).
#[derive(Clone, Debug)]
pub enum Generator {
    /// flow's SplitMix64 stream.
    Flow(SplitMix64),
    /// torch's CPU generator.
    Torch(TorchGenerator),
}

impl Generator {
    /// A generator of `kind` for `seed` (its bits as a u64; torch keeps the
    /// low 32 bits, as `manual_seed` does).
    pub fn new(kind: GeneratorKind, seed: i64) -> Self {
        match kind {
            GeneratorKind::Flow => Generator::Flow(SplitMix64::new(seed as u64)),
            GeneratorKind::Torch => Generator::Torch(TorchGenerator::new(seed as u64)),
        }
    }

    /// The kind of this generator.
    pub fn kind(&self) -> GeneratorKind {
        match self {
            Generator::Flow(_) => GeneratorKind::Flow,
            Generator::Torch(_) => GeneratorKind::Torch,
        }
    }

    /// Standard normal f32 values of `shape` in row-major order: for `Torch`
    /// exactly `torch.randn(shape, generator=g)`.
    pub fn randn(&mut self, shape: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        let mut data = vec![0.0; shape.iter().product()];
        self.fill_randn(&mut data);
        Tensor::from_vec(data, shape, device)
    }

    /// Uniform f32 values in `[0, 1)` of `shape`: for `Torch` exactly
    /// `torch.rand(shape, generator=g)`.
    pub fn rand(&mut self, shape: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        let mut data = vec![0.0; shape.iter().product()];
        self.fill_rand(&mut data);
        Tensor::from_vec(data, shape, device)
    }

    /// Fills `out` with the values of [`randn`](Self::randn) for a tensor of `out.len()` values.
    pub fn fill_randn(&mut self, out: &mut [f32]) {
        self.fill_randn_checked(out, |_, _| Ok(()))
            .expect("the check never fails");
    }

    /// Fills `out` with the values of [`rand`](Self::rand) for a tensor of `out.len()` values.
    pub fn fill_rand(&mut self, out: &mut [f32]) {
        self.fill_rand_checked(out, |_, _| Ok(()))
            .expect("the check never fails");
    }

    /// [`fill_randn`](Self::fill_randn) in chunks, calling `check(done,
    /// total)` before each chunk step (for cancellation and progress); an
    /// error from it stops the fill. The values are those of one fill.
    pub fn fill_randn_checked(
        &mut self,
        out: &mut [f32],
        mut check: impl FnMut(u64, u64) -> Result<()>,
    ) -> Result<()> {
        match self {
            Generator::Torch(g) => g.fill_randn_checked(out, check),
            Generator::Flow(g) => {
                let total = out.len().div_ceil(CHUNK) as u64;
                for (i, chunk) in out.chunks_mut(CHUNK).enumerate() {
                    check(i as u64, total)?;
                    // CHUNK is even: normal pairs never straddle two chunks.
                    g.fill_normal(chunk);
                }
                Ok(())
            }
        }
    }

    /// [`fill_rand`](Self::fill_rand) in chunks, calling `check(done, total)` before each.
    pub fn fill_rand_checked(
        &mut self,
        out: &mut [f32],
        mut check: impl FnMut(u64, u64) -> Result<()>,
    ) -> Result<()> {
        let total = out.len().div_ceil(CHUNK) as u64;
        for (i, chunk) in out.chunks_mut(CHUNK).enumerate() {
            check(i as u64, total)?;
            match self {
                Generator::Torch(g) => g.fill_rand(chunk),
                Generator::Flow(g) => g.fill_uniform(chunk),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print() {
        for name in GENERATORS {
            assert_eq!(name.parse::<GeneratorKind>().unwrap().as_str(), name);
        }
        let err = "numpy".parse::<GeneratorKind>().unwrap_err().to_string();
        assert_eq!(err, "generator `numpy` is not one of flow, torch");
    }

    #[test]
    fn the_port_defaults_to_torch_and_lists_the_choices() {
        let port = generator_port();
        assert_eq!(
            port.default.as_ref().and_then(|v| v.as_text()),
            Some("torch")
        );
        assert_eq!(port.choices, Some(&GENERATORS[..]));
    }

    #[test]
    fn successive_draws_continue_the_stream() {
        for kind in [GeneratorKind::Flow, GeneratorKind::Torch] {
            let mut g = Generator::new(kind, 5);
            let a = g
                .randn(&[32], &Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let b = g
                .randn(&[32], &Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let both = Generator::new(kind, 5)
                .randn(&[64], &Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!([a, b].concat(), both, "{kind}");
        }
    }

    #[test]
    fn flow_keeps_the_splitmix_stream() {
        let mut want = vec![0.0; 6];
        SplitMix64::new(42).fill_normal(&mut want);
        let got = Generator::new(GeneratorKind::Flow, 42)
            .randn(&[2, 3], &Device::Cpu)
            .unwrap();
        assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
    }
}
