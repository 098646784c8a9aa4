//! `tensor.add` and `tensor.scale`: elementwise arithmetic.

use anyhow::{anyhow, bail, Result};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

pub(crate) struct Add {
    spec: OpSpec,
}

impl Add {
    pub(crate) fn new() -> Self {
        Add {
            spec: OpSpec {
                name: "tensor.add".into(),
                version: 1,
                doc: "Adds two tensors elementwise, broadcasting their shapes (numpy rules). \
                      Both must have the same dtype."
                    .into(),
                inputs: vec![
                    PortSpec::new("a", ValueType::Tensor, "the first tensor"),
                    PortSpec::new(
                        "b",
                        ValueType::Tensor,
                        "the second tensor, of a shape that broadcasts with `a`",
                    ),
                ],
                outputs: vec![PortSpec::new("tensor", ValueType::Tensor, "a + b")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for Add {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let a = inputs.tensor("a")?.to_device(ctx.device())?;
        let b = inputs.tensor("b")?.to_device(ctx.device())?;
        if a.dtype() != b.dtype() {
            bail!(
                "cannot add a {:?} tensor (`a`) and a {:?} tensor (`b`)",
                a.dtype(),
                b.dtype()
            );
        }
        if let Ok(shape) = a.shape().broadcast_shape_binary_op(b.shape(), "add") {
            let bytes = (shape.elem_count() as u64).saturating_mul(a.dtype().size_in_bytes() as u64);
            flow_engine::limits::check_memory(bytes, &format!("the sum of shape {:?}", shape.dims()))?;
        }
        let sum = a.broadcast_add(&b).map_err(|e| {
            anyhow!(
                "cannot add tensors of shapes {:?} (`a`) and {:?} (`b`): {e}",
                a.dims(),
                b.dims()
            )
        })?;
        Ok(Outputs::single(
            "tensor",
            Value::tensor(ValueType::Tensor, sum),
        ))
    }
}

pub(crate) struct Scale {
    spec: OpSpec,
}

impl Scale {
    pub(crate) fn new() -> Self {
        Scale {
            spec: OpSpec {
                name: "tensor.scale".into(),
                version: 1,
                doc: "Multiplies every element of a tensor by a number.".into(),
                inputs: vec![
                    PortSpec::new("tensor", ValueType::Tensor, "the tensor to scale"),
                    PortSpec::new("factor", ValueType::Float, "the number to multiply by"),
                ],
                outputs: vec![PortSpec::new(
                    "tensor",
                    ValueType::Tensor,
                    "tensor * factor, same shape and dtype",
                )],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for Scale {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let tensor = inputs.tensor("tensor")?.to_device(ctx.device())?;
        let factor = inputs.float("factor")?;
        let scaled = tensor.affine(factor, 0.0)?;
        Ok(Outputs::single(
            "tensor",
            Value::tensor(ValueType::Tensor, scaled),
        ))
    }
}
