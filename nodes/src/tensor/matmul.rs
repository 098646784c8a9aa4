//! `tensor.matmul`: matrix product, batched over leading dimensions.

use anyhow::{anyhow, bail, Result};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

pub(crate) struct MatMul {
    spec: OpSpec,
}

impl MatMul {
    pub(crate) fn new() -> Self {
        MatMul {
            spec: OpSpec {
                name: "tensor.matmul".into(),
                version: 1,
                doc: "Matrix product of `a` [..., m, k] and `b` [..., k, n] → [..., m, n]; \
                      leading (batch) dimensions broadcast. Both must have the same dtype."
                    .into(),
                inputs: vec![
                    PortSpec::new(
                        "a",
                        ValueType::Tensor,
                        "the left matrix (or batch of matrices), at least 2-D",
                    ),
                    PortSpec::new(
                        "b",
                        ValueType::Tensor,
                        "the right matrix (or batch of matrices), at least 2-D",
                    ),
                ],
                outputs: vec![PortSpec::new(
                    "tensor",
                    ValueType::Tensor,
                    "the product a × b",
                )],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for MatMul {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let a = inputs.tensor("a")?.to_device(ctx.device())?.contiguous()?;
        let b = inputs.tensor("b")?.to_device(ctx.device())?.contiguous()?;
        if a.rank() < 2 || b.rank() < 2 {
            bail!(
                "tensor.matmul needs tensors of at least 2 dimensions, got shapes {:?} (`a`) and {:?} (`b`)",
                a.dims(),
                b.dims()
            );
        }
        if a.dtype() != b.dtype() {
            bail!(
                "cannot multiply a {:?} tensor (`a`) and a {:?} tensor (`b`)",
                a.dtype(),
                b.dtype()
            );
        }
        let k_a = a.dims()[a.rank() - 1];
        let k_b = b.dims()[b.rank() - 2];
        if k_a != k_b {
            bail!(
                "cannot multiply shapes {:?} (`a`) and {:?} (`b`): the last dimension of `a` ({k_a}) \
                 must equal the next-to-last of `b` ({k_b})",
                a.dims(),
                b.dims()
            );
        }
        let lead = |t: &candle_core::Tensor| t.dims()[..t.rank() - 2].iter().product::<usize>() as u64;
        let (m, n) = (a.dims()[a.rank() - 2] as u64, b.dims()[b.rank() - 1] as u64);
        let elements = lead(&a).max(lead(&b)).saturating_mul(m).saturating_mul(n);
        flow_engine::limits::check_memory(elements.saturating_mul(a.dtype().size_in_bytes() as u64), "the product")?;
        let product = a.broadcast_matmul(&b).map_err(|e| {
            anyhow!(
                "cannot multiply shapes {:?} (`a`) and {:?} (`b`): {e}",
                a.dims(),
                b.dims()
            )
        })?;
        Ok(Outputs::single(
            "tensor",
            Value::tensor(ValueType::Tensor, product),
        ))
    }
}
