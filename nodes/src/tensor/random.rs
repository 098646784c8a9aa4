//! `tensor.random`: a seeded random tensor, the same on every machine.

use anyhow::{anyhow, bail, Result};
use candle_core::Tensor;
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

use super::rng::SplitMix64;

/// Values generated between two cancellation checks (even, so that normal
/// pairs never straddle two chunks).
const CHUNK: usize = 1 << 20;

pub(crate) struct Random {
    spec: OpSpec,
}

impl Random {
    pub(crate) fn new() -> Self {
        Random {
            spec: OpSpec {
                name: "tensor.random".into(),
                version: 1,
                doc: "A random f32 tensor from a seed: the same values on every machine and \
                      device (SplitMix64; normal values by Box-Muller). Values are generated in \
                      row-major order, so a larger tensor with the same seed starts with the \
                      values of a smaller one."
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

        // The seed's bits as they are: negative seeds are as good as positive ones.
        let mut rng = SplitMix64::new(seed as u64);
        let chunks = count.div_ceil(CHUNK) as u64;
        for (i, chunk) in data.chunks_mut(CHUNK).enumerate() {
            ctx.check_cancelled()?;
            if normal {
                rng.fill_normal(chunk);
            } else {
                rng.fill_uniform(chunk);
            }
            if chunks > 1 {
                ctx.progress(i as u64 + 1, chunks);
            }
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
