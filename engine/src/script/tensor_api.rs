//! The `Tensor` type scripts see, and its functions.
//!
//! Every function maps onto candle tensor ops, so a tensor stays on its
//! device (CPU or CUDA); tensors a script creates (`tensor`, `zeros`,
//! `ones`) are f32 on the node's device.
//!
//! ```text
//! t.shape()  t.dtype()  t.rank()          (also as properties: t.shape)
//! t + u  t - u  t * u  t / u  -t          (broadcasting; scalars on either side)
//! t.neg() t.abs() t.exp() t.ln() t.sqrt() t.tanh() t.clamp(lo, hi)
//! t.sum() t.mean() t.max() t.min()        (whole tensor -> float)
//! t.sum(dim) t.mean(dim)                  (-> tensor without that dim; dims may be negative)
//! t.reshape([..]) t.narrow(dim, start, len) t[i] t[a..b] t.matmul(u)
//! concat([t, u], dim)  lerp(a, b, w)  t.to_array()
//! tensor([[1, 2], [3, 4]])  tensor([1, 2, 3, 4], [2, 2])  zeros([..])  ones([..])
//! ```

use std::ops::{Range, RangeInclusive};

use candle_core::{DType, Device, Shape, Tensor};
use rhai::{Array, Dynamic, EvalAltResult, Module, NativeCallContext, Position, FLOAT, INT};

use super::sandbox::MAX_TENSOR_ELEMENTS;
use crate::types::ValueType;

/// A tensor inside a script, with the flow type it came as (`tensor` for
/// tensors the script made).
#[derive(Clone, Debug)]
pub struct ScriptTensor {
    /// The candle tensor.
    pub tensor: Tensor,
    /// Its tensor-like flow type.
    pub kind: ValueType,
}

impl ScriptTensor {
    /// Wraps a tensor of flow type `kind`.
    pub fn new(tensor: Tensor, kind: ValueType) -> Self {
        ScriptTensor { tensor, kind }
    }

    fn with(&self, tensor: Tensor) -> Self {
        ScriptTensor { tensor, kind: self.kind }
    }

    fn map(&self, f: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>) -> R<Self> {
        f(&self.tensor).map(|t| self.with(t)).map_err(fail)
    }
}

type R<T> = Result<T, Box<EvalAltResult>>;

/// A script error (rhai adds the position of the call).
fn fail(e: impl std::fmt::Display) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(e.to_string().into(), Position::NONE).into()
}

type Unary = fn(&Tensor) -> candle_core::Result<Tensor>;
type Binary = fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>;
type Scalar = fn(&Tensor, f64) -> candle_core::Result<Tensor>;

/// Registers the `Tensor` type and its functions into `m`.
pub(crate) fn register(m: &mut Module) {
    m.set_custom_type::<ScriptTensor>("Tensor");
    register_info(m);
    register_arithmetic(m);
    register_math(m);
    register_reductions(m);
    register_shapes(m);
    register_constructors(m);
}

fn register_info(m: &mut Module) {
    m.set_native_fn("shape", |t: &mut ScriptTensor| Ok(shape_array(t)));
    m.set_native_fn("dtype", |t: &mut ScriptTensor| Ok(t.tensor.dtype().as_str().to_string()));
    m.set_native_fn("rank", |t: &mut ScriptTensor| Ok(t.tensor.rank() as INT));
    m.set_getter_fn("shape", |t: &mut ScriptTensor| Ok(shape_array(t)));
    m.set_getter_fn("dtype", |t: &mut ScriptTensor| Ok(t.tensor.dtype().as_str().to_string()));
    m.set_getter_fn("rank", |t: &mut ScriptTensor| Ok(t.tensor.rank() as INT));
    m.set_native_fn("to_string", |t: &mut ScriptTensor| Ok(describe(t)));
    m.set_native_fn("to_debug", |t: &mut ScriptTensor| Ok(describe(t)));
    m.set_native_fn("to_array", |t: &mut ScriptTensor| to_array(&t.tensor));
}

fn describe(t: &ScriptTensor) -> String {
    format!("Tensor({} {:?} {})", t.kind, t.tensor.dims(), t.tensor.dtype().as_str())
}

fn shape_array(t: &ScriptTensor) -> Array {
    t.tensor.dims().iter().map(|&d| Dynamic::from_int(d as INT)).collect()
}

fn register_arithmetic(m: &mut Module) {
    let ops: [(&str, Binary, Scalar, Scalar); 4] = [
        ("+", Tensor::broadcast_add, |t, s| t.affine(1.0, s), |t, s| t.affine(1.0, s)),
        ("-", Tensor::broadcast_sub, |t, s| t.affine(1.0, -s), |t, s| t.affine(-1.0, s)),
        ("*", Tensor::broadcast_mul, |t, s| t.affine(s, 0.0), |t, s| t.affine(s, 0.0)),
        ("/", Tensor::broadcast_div, |t, s| t.affine(1.0 / s, 0.0), |t, s| t.recip()?.affine(s, 0.0)),
    ];
    for (name, both, right, left) in ops {
        m.set_native_fn(name, move |a: ScriptTensor, b: ScriptTensor| binary(&a, &b, both));
        m.set_native_fn(name, move |a: ScriptTensor, s: FLOAT| a.map(|t| right(t, s)));
        m.set_native_fn(name, move |a: ScriptTensor, s: INT| a.map(|t| right(t, s as f64)));
        m.set_native_fn(name, move |s: FLOAT, a: ScriptTensor| a.map(|t| left(t, s)));
        m.set_native_fn(name, move |s: INT, a: ScriptTensor| a.map(|t| left(t, s as f64)));
    }
    m.set_native_fn("-", |a: ScriptTensor| a.map(Tensor::neg));
    m.set_native_fn("lerp", |a: ScriptTensor, b: ScriptTensor, w: Dynamic| lerp(&a, &b, w));
    m.set_native_fn("matmul", |a: ScriptTensor, b: ScriptTensor| binary(&a, &b, Tensor::broadcast_matmul));
}

/// `a op b` with broadcasting; `b` is cast to `a`'s dtype when they differ.
fn binary(a: &ScriptTensor, b: &ScriptTensor, op: Binary) -> R<ScriptTensor> {
    let out_shape = a.tensor.shape().broadcast_shape_binary_op(b.tensor.shape(), "broadcast").map_err(fail)?;
    check_size(&out_shape)?;
    let rhs = if b.tensor.dtype() == a.tensor.dtype() { b.tensor.clone() } else { b.tensor.to_dtype(a.tensor.dtype()).map_err(fail)? };
    a.map(|t| op(t, &rhs))
}

/// `a + (b - a) * w`, `w` a number or a tensor.
fn lerp(a: &ScriptTensor, b: &ScriptTensor, w: Dynamic) -> R<ScriptTensor> {
    let diff = binary(b, a, Tensor::broadcast_sub)?;
    let scaled = match w.try_cast_result::<ScriptTensor>() {
        Ok(w) => binary(&diff, &w, Tensor::broadcast_mul)?,
        Err(w) => {
            let w = number(&w, "lerp weight")?;
            diff.map(|t| t.affine(w, 0.0))?
        }
    };
    binary(a, &scaled, Tensor::broadcast_add)
}

fn register_math(m: &mut Module) {
    let unary: [(&str, Unary); 6] = [
        ("neg", Tensor::neg),
        ("abs", Tensor::abs),
        ("exp", Tensor::exp),
        ("ln", Tensor::log),
        ("sqrt", Tensor::sqrt),
        ("tanh", Tensor::tanh),
    ];
    for (name, f) in unary {
        m.set_native_fn(name, move |t: &mut ScriptTensor| t.map(f));
    }
    m.set_native_fn("clamp", |t: &mut ScriptTensor, lo: Dynamic, hi: Dynamic| {
        let (lo, hi) = (number(&lo, "clamp low")?, number(&hi, "clamp high")?);
        if lo > hi {
            return Err(fail(format!("clamp: low {lo} is above high {hi}")));
        }
        t.map(|x| x.clamp(lo, hi))
    });
}

/// An int or a float argument as f64.
fn number(v: &Dynamic, what: &str) -> R<f64> {
    v.as_float()
        .or_else(|_| v.as_int().map(|i| i as f64))
        .map_err(|got| fail(format!("{what} should be a number, got {got}")))
}

fn register_reductions(m: &mut Module) {
    m.set_native_fn("sum", |t: &mut ScriptTensor| scalar(t.tensor.sum_all()));
    m.set_native_fn("mean", |t: &mut ScriptTensor| scalar(t.tensor.mean_all()));
    m.set_native_fn("max", |t: &mut ScriptTensor| scalar(nonempty(t, "max")?.max_all()));
    m.set_native_fn("min", |t: &mut ScriptTensor| scalar(nonempty(t, "min")?.min_all()));
    m.set_native_fn("sum", |t: &mut ScriptTensor, d: INT| {
        let d = dim(t, d)?;
        t.map(|x| x.sum(d))
    });
    m.set_native_fn("mean", |t: &mut ScriptTensor, d: INT| {
        let d = dim(t, d)?;
        t.map(|x| x.mean(d))
    });
}

fn nonempty<'a>(t: &'a ScriptTensor, what: &str) -> R<&'a Tensor> {
    if t.tensor.elem_count() == 0 {
        return Err(fail(format!("{what} of an empty tensor")));
    }
    Ok(&t.tensor)
}

fn scalar(t: candle_core::Result<Tensor>) -> R<FLOAT> {
    t.and_then(|t| t.to_dtype(DType::F64)?.to_scalar::<f64>()).map_err(fail)
}

/// Dimension `d` of `t`, counting from the end when negative.
fn dim(t: &ScriptTensor, d: INT) -> R<usize> {
    let rank = t.tensor.rank() as INT;
    let i = if d < 0 { rank + d } else { d };
    if !(0..rank).contains(&i) {
        return Err(fail(format!("dim {d} out of range for a tensor of rank {rank}")));
    }
    Ok(i as usize)
}

fn register_shapes(m: &mut Module) {
    m.set_native_fn("reshape", |t: &mut ScriptTensor, shape: Array| {
        let dims = reshape_dims(t.tensor.elem_count(), &shape)?;
        t.map(|x| x.reshape(dims))
    });
    m.set_native_fn("narrow", |t: &mut ScriptTensor, d: INT, start: INT, len: INT| {
        let d = dim(t, d)?;
        let size = t.tensor.dims()[d] as INT;
        if start < 0 || len < 0 || start + len > size {
            return Err(fail(format!("narrow({d}, {start}, {len}) is outside a dim of size {size}")));
        }
        t.map(|x| x.narrow(d, start as usize, len as usize))
    });
    m.set_indexer_get_fn(|t: &mut ScriptTensor, i: INT| {
        let n = first_dim(t)?;
        let at = if i < 0 { n + i } else { i };
        if !(0..n).contains(&at) {
            return Err(fail(format!("index {i} out of range for a first dim of size {n}")));
        }
        t.map(|x| x.get(at as usize))
    });
    m.set_indexer_get_fn(|t: &mut ScriptTensor, r: Range<INT>| slice(t, r.start, r.end));
    m.set_indexer_get_fn(|t: &mut ScriptTensor, r: RangeInclusive<INT>| slice(t, *r.start(), r.end() + 1));
    m.set_native_fn("concat", |items: Array, d: INT| concat(items, d));
}

fn first_dim(t: &ScriptTensor) -> R<INT> {
    t.tensor.dims().first().map(|&n| n as INT).ok_or_else(|| fail("a tensor of rank 0 cannot be indexed"))
}

fn slice(t: &ScriptTensor, start: INT, end: INT) -> R<ScriptTensor> {
    let n = first_dim(t)?;
    if start < 0 || end < start || end > n {
        return Err(fail(format!("slice {start}..{end} is outside a first dim of size {n}")));
    }
    t.map(|x| x.narrow(0, start as usize, (end - start) as usize))
}

fn concat(items: Array, d: INT) -> R<ScriptTensor> {
    let tensors = items
        .into_iter()
        .map(|v| v.try_cast_result::<ScriptTensor>().map_err(|v| fail(format!("concat takes an array of tensors, found {}", v.type_name()))))
        .collect::<R<Vec<_>>>()?;
    let first = tensors.first().ok_or_else(|| fail("concat of an empty array"))?;
    let d = dim(first, d)?;
    let parts: Vec<&Tensor> = tensors.iter().map(|t| &t.tensor).collect();
    first.map(|_| Tensor::cat(&parts, d))
}

/// The dims of a `reshape`: one `-1` is inferred from the element count.
fn reshape_dims(count: usize, shape: &Array) -> R<Vec<usize>> {
    let mut dims = Vec::with_capacity(shape.len());
    let mut hole = None;
    for (i, v) in shape.iter().enumerate() {
        match v.as_int() {
            Ok(-1) if hole.is_none() => {
                hole = Some(i);
                dims.push(1);
            }
            Ok(n) if n >= 0 => dims.push(n as usize),
            _ => return Err(fail(format!("reshape: bad dim {v} (dims are ints >= 0, with at most one -1)"))),
        }
    }
    let known: usize = dims.iter().product();
    if let Some(i) = hole {
        if known == 0 || count % known != 0 {
            return Err(fail(format!("reshape: cannot infer -1 for {count} elements into {shape:?}")));
        }
        dims[i] = count / known;
    }
    Ok(dims)
}

fn register_constructors(m: &mut Module) {
    m.set_native_fn("tensor", |ctx: NativeCallContext, data: Array| {
        let (dims, values) = nested(&data)?;
        create(&ctx, values, dims)
    });
    m.set_native_fn("tensor", |ctx: NativeCallContext, data: Array, shape: Array| {
        let (_, values) = nested(&data)?;
        let dims = shape_dims(&shape)?;
        if dims.iter().product::<usize>() != values.len() {
            return Err(fail(format!("tensor: {} values do not fill the shape {dims:?}", values.len())));
        }
        create(&ctx, values, dims)
    });
    m.set_native_fn("zeros", |ctx: NativeCallContext, shape: Array| filled(&ctx, &shape, 0.0));
    m.set_native_fn("ones", |ctx: NativeCallContext, shape: Array| filled(&ctx, &shape, 1.0));
}

/// The node's device, which the engine passes as the call's tag.
fn device(ctx: &NativeCallContext) -> Device {
    ctx.tag().and_then(|tag| tag.read_lock::<Device>().map(|d| d.clone())).unwrap_or(Device::Cpu)
}

fn check_size(shape: &Shape) -> R<()> {
    if shape.elem_count() > MAX_TENSOR_ELEMENTS {
        return Err(fail(format!(
            "a tensor of shape {:?} has {} elements; scripts may make tensors of at most {MAX_TENSOR_ELEMENTS}",
            shape.dims(),
            shape.elem_count()
        )));
    }
    Ok(())
}

fn shape_dims(shape: &Array) -> R<Vec<usize>> {
    let dims = shape
        .iter()
        .map(|v| match v.as_int() {
            Ok(n) if n >= 0 => Ok(n as usize),
            _ => Err(fail(format!("a shape is an array of ints >= 0, found {v}"))),
        })
        .collect::<R<Vec<_>>>()?;
    let count = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if count.is_none_or(|c| c > MAX_TENSOR_ELEMENTS) {
        return Err(fail(format!("a tensor of shape {dims:?} is too big; scripts may make tensors of at most {MAX_TENSOR_ELEMENTS} elements")));
    }
    Ok(dims)
}

fn create(ctx: &NativeCallContext, values: Vec<f32>, dims: Vec<usize>) -> R<ScriptTensor> {
    Tensor::from_vec(values, dims, &device(ctx)).map(|t| ScriptTensor::new(t, ValueType::Tensor)).map_err(fail)
}

fn filled(ctx: &NativeCallContext, shape: &Array, value: f64) -> R<ScriptTensor> {
    let dims = shape_dims(shape)?;
    let t = Tensor::zeros(dims, DType::F32, &device(ctx)).and_then(|t| t.affine(0.0, value)).map_err(fail)?;
    Ok(ScriptTensor::new(t, ValueType::Tensor))
}

/// The shape and the values of a nested array of numbers, which must be
/// rectangular.
fn nested(data: &Array) -> R<(Vec<usize>, Vec<f32>)> {
    let mut dims = Vec::new();
    let mut values = Vec::new();
    gather(data, 0, &mut dims, &mut values)?;
    Ok((dims, values))
}

fn gather(items: &Array, depth: usize, dims: &mut Vec<usize>, values: &mut Vec<f32>) -> R<()> {
    const MAX_RANK: usize = 16;
    if depth == dims.len() {
        if depth == MAX_RANK {
            return Err(fail(format!("tensor: arrays nest deeper than rank {MAX_RANK}")));
        }
        dims.push(items.len());
    } else if dims[depth] != items.len() {
        return Err(fail("tensor: rows of different lengths"));
    }
    let Some(first) = items.first() else {
        return Ok(());
    };
    if first.is_array() {
        for v in items {
            let inner = v.read_lock::<Array>().ok_or_else(|| fail("tensor: rows mix arrays and numbers"))?;
            gather(&inner, depth + 1, dims, values)?;
        }
    } else {
        if depth + 1 != dims.len() {
            return Err(fail("tensor: rows nest to different depths"));
        }
        for v in items {
            values.push(number(v, "a tensor element")? as f32);
        }
    }
    Ok(())
}

fn to_array(t: &Tensor) -> R<Dynamic> {
    if t.elem_count() > super::sandbox::MAX_ARRAY_SIZE {
        return Err(fail(format!(
            "to_array: the tensor has {} elements, more than the {} an array may hold",
            t.elem_count(),
            super::sandbox::MAX_ARRAY_SIZE
        )));
    }
    let values = t.to_dtype(DType::F64).and_then(|t| t.flatten_all()?.to_vec1::<f64>()).map_err(fail)?;
    Ok(nest(&values, t.dims()))
}

fn nest(values: &[f64], dims: &[usize]) -> Dynamic {
    match dims {
        [] => Dynamic::from_float(values.first().copied().unwrap_or(0.0)),
        [_] => Dynamic::from_array(values.iter().map(|&v| Dynamic::from_float(v)).collect()),
        [n, rest @ ..] => {
            let size: usize = rest.iter().product();
            Dynamic::from_array((0..*n).map(|i| nest(&values[i * size..(i + 1) * size], rest)).collect())
        }
    }
}
