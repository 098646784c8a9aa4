use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use flow_engine::events::null_sink;
use flow_engine::{
    CancelToken, Event, EventSink, Inputs, OpContext, OpRef, Outputs, Provenance, Value, ValueType,
};

/// The registered op called `name`.
pub fn op(name: &str) -> OpRef {
    flow_nodes::registry()
        .get(name)
        .unwrap_or_else(|| panic!("op `{name}` is not registered"))
        .clone()
}

/// A context for a graph in `dir`, on the CPU, dropping events.
pub fn ctx(dir: &Path) -> OpContext {
    ctx_with(dir, null_sink(), Provenance::default())
}

/// A context with the given event sink and provenance.
pub fn ctx_with(dir: &Path, sink: EventSink, provenance: Provenance) -> OpContext {
    OpContext::new(
        "node",
        Device::Cpu,
        dir.to_path_buf(),
        CancelToken::new(),
        sink,
        Instant::now(),
        Arc::new(provenance),
    )
}

/// A sink that records the messages it receives.
pub fn message_sink() -> (EventSink, Arc<Mutex<Vec<String>>>) {
    let messages = Arc::new(Mutex::new(Vec::new()));
    let seen = messages.clone();
    let sink: EventSink = Arc::new(move |event| {
        if let Event::Message { text, .. } = event {
            seen.lock().unwrap().push(text);
        }
    });
    (sink, messages)
}

/// The inputs of op `name` from `given`, with the spec's defaults filled in.
pub fn inputs(name: &str, given: &[(&str, Value)]) -> Inputs {
    let op = op(name);
    let mut values: BTreeMap<String, Value> = op
        .spec()
        .inputs
        .iter()
        .filter_map(|p| p.default.clone().map(|d| (p.name.to_string(), d)))
        .collect();
    for (port, value) in given {
        assert!(
            op.spec().input(port).is_some(),
            "op `{name}` has no input `{port}`"
        );
        values.insert(port.to_string(), value.clone());
    }
    Inputs::new(values)
}

/// Runs op `name` on `given` and checks the outputs against its spec.
pub fn run(name: &str, given: &[(&str, Value)], ctx: &OpContext) -> Result<Outputs> {
    let op = op(name);
    let out = op.run(&inputs(name, given), ctx)?;
    out.check_against(op.spec())?;
    Ok(out)
}

/// The error message of a run that must fail.
pub fn run_err(name: &str, given: &[(&str, Value)], ctx: &OpContext) -> String {
    match run(name, given, ctx) {
        Ok(_) => panic!("op `{name}` should have failed"),
        Err(e) => e.to_string(),
    }
}

/// An image value from planar data.
pub fn image(data: Vec<f32>, shape: (usize, usize, usize, usize)) -> Value {
    Value::tensor(
        ValueType::Image,
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap(),
    )
}

/// A tensor value from data.
pub fn tensor(data: Vec<f32>, shape: &[usize]) -> Value {
    Value::tensor(
        ValueType::Tensor,
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap(),
    )
}

/// The tensor of output `port`, flattened.
pub fn values(out: &Outputs, port: &str) -> Vec<f32> {
    out.get(port)
        .unwrap()
        .as_tensor()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The shape of the tensor of output `port`.
pub fn dims(out: &Outputs, port: &str) -> Vec<usize> {
    out.get(port).unwrap().as_tensor().unwrap().dims().to_vec()
}

/// The names of the entries of a folder, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
