//! `tensor.random`: a seeded random tensor, the same on every machine.

use anyhow::{anyhow, bail, Result};
use candle_core::Tensor;
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

use super::generator::{generator_input, generator_port, Generator};

pub(crate) struct Random {
    spec: OpSpec,
}

impl Random {
    pub(crate) fn new() -> Self {
        Random {
            spec: OpSpec {
                name: "tensor.random".into(),
                version: 2,
                doc: "A random f32 tensor from a seed, in row-major order: the same values on \
                      every machine and device. With `generator: torch` (the default) the values \
                      are exactly those of `torch.manual_seed(seed); torch.randn(shape)` (or \
                      `torch.rand` for `dist: uniform`) on a PC's CPU, the initial noise of \
                      diffusers and ComfyUI for the same seed; torch keeps the low 32 bits of the \
                      seed. With `generator: flow` they are flow's SplitMix64 stream (normal \
                      values by Box-Muller), as in versions before the torch generator."
                    .into(),
                inputs: vec![
                    PortSpec::new("shape", ValueType::List, "the dimensions, a list of non-negative ints, e.g. [1, 4, 64, 64]"),
                    PortSpec::new("seed", ValueType::Int, "the seed; the same seed gives the same tensor"),
                    PortSpec::with_default(
                        "dist",
                        ValueType::Text,
                        "normal",
                        "the distribution: `normal` (mean 0, standard deviation 1) or `uniform` (in [0, 1))",
                    ),
                    generator_port(),
                ],
                outputs: vec![PortSpec::new("tensor", ValueType::Tensor, "the random f32 tensor")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for Random {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let shape = parse_shape(inputs.list("shape")?)?;
        let seed = inputs.int("seed")?;
        let dist = inputs.opt_text("dist")?.unwrap_or("normal");
        let normal = match dist {
            "normal" => true,
            "uniform" => false,
            other => bail!("input `dist` is `{other}`; use `normal` or `uniform`"),
        };
        let kind = generator_input(inputs)?;

        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| anyhow!("shape {shape:?} has too many elements"))?;
        flow_engine::limits::check_memory(count as u64 * 4, &format!("a tensor of shape {shape:?}"))?;
        let mut data: Vec<f32> = Vec::new();
        data.try_reserve_exact(count).map_err(|_| {
            anyhow!("shape {shape:?} needs {count} values, more memory than is available")
        })?;
        data.resize(count, 0.0);

        // The seed's bits as they are: negative seeds are as good as positive
        // ones (torch keeps the low 32 bits, as its manual_seed does).
        let mut rng = Generator::new(kind, seed);
        let check = |done: u64, total: u64| -> Result<()> {
            ctx.check_cancelled()?;
            if total > 1 && done > 0 {
                ctx.progress(done, total);
            }
            Ok(())
        };
        if normal {
            rng.fill_randn_checked(&mut data, check)?;
        } else {
            rng.fill_rand_checked(&mut data, check)?;
        }
        let tensor = Tensor::from_vec(data, shape, ctx.device())?;
        Ok(Outputs::single(
            "tensor",
            Value::tensor(ValueType::Tensor, tensor),
        ))
    }
}

fn parse_shape(items: &[Value]) -> Result<Vec<usize>> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_int() {
            Some(d) if d >= 0 => Ok(d as usize),
            _ => Err(anyhow!(
                "input `shape` should be a list of non-negative ints; item {i} is {}",
                v.to_display_string()
            )),
        })
        .collect()
}
