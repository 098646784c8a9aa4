//! Cache keys of nodes: a Merkle hash of the op, its version, every input
//! (literals canonically, links by the upstream node's key), the fingerprint
//! of the models it uses and whatever outside content the op declares.
//! Node ids are not part of a key: renaming a node keeps its cache.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::cache::{CacheKey, KeyHasher};
use crate::graph::{Expr, GraphNode, InterpPart};
use crate::models::ResolvedModel;
use crate::op::Fingerprint;
use crate::value::Value;

/// The parts a node's key is made of, kept to explain why a node re-runs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyParts {
    /// `op@version`.
    pub op: String,
    /// Hash of each input (given or default), by port.
    pub inputs: BTreeMap<String, String>,
    /// Hash of the op's fingerprint of outside content.
    pub fingerprint: String,
    /// The node's key.
    pub key: String,
}

/// Computes the key of `node` given the keys of the nodes before it, the
/// resolved models and the op's fingerprint.
pub fn node_key(
    node: &GraphNode,
    upstream: &dyn Fn(usize) -> CacheKey,
    model: &dyn Fn(&str) -> Option<Value>,
    fingerprint: &Fingerprint,
) -> Result<(CacheKey, KeyParts)> {
    let spec = node.op.spec();
    let mut inputs = BTreeMap::new();
    // v2: the entries of writers record the files they wrote (older entries
    // lack them, so they must not be found).
    let mut h = KeyHasher::new("flow.node.v2");
    h.write_str(&spec.name).write_u64(u64::from(spec.version));
    for port in &spec.inputs {
        let part = match (node.inputs.get(port.name), &port.default) {
            (Some(expr), _) => expr_hash(expr, upstream, model)?,
            (None, Some(default)) => {
                let mut ph = KeyHasher::new("flow.literal");
                ph.write_value(default)?;
                ph.finish()
            }
            (None, None) => continue,
        };
        h.write_str(port.name).write_key(&part);
        inputs.insert(port.name.to_string(), short(&part));
    }
    if !node.template_params.is_empty() {
        let mut ph = KeyHasher::new("flow.template-params");
        for (name, value) in &node.template_params {
            ph.write_str(name);
            ph.write_value(value)?;
        }
        let part = ph.finish();
        h.write_str("$params").write_key(&part);
        inputs.insert("params".to_string(), short(&part));
    }
    let fp = {
        let mut fh = KeyHasher::new("flow.fingerprint");
        match fingerprint {
            Fingerprint::Pure => fh.write_u64(0),
            Fingerprint::Content(c) => fh.write_u64(1).write_str(c),
            Fingerprint::Volatile(_) => fh.write_u64(2).write_bytes(&volatile_nonce()),
        };
        fh.finish()
    };
    h.write_key(&fp);
    let key = h.finish();
    let parts = KeyParts {
        op: format!("{}@{}", spec.name, spec.version),
        inputs,
        fingerprint: short(&fp),
        key: key.to_hex(),
    };
    Ok((key, parts))
}

fn short(k: &CacheKey) -> String {
    k.to_hex()[..16].to_string()
}

/// A value that differs on every call: volatile ops never hit the cache.
fn volatile_nonce() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&n.to_le_bytes());
    out[8..].copy_from_slice(&(t as u64 ^ u64::from(std::process::id())).to_le_bytes());
    out
}

/// Hash of one input expression. Recursion is bounded by the YAML depth limit.
fn expr_hash(
    expr: &Expr,
    upstream: &dyn Fn(usize) -> CacheKey,
    model: &dyn Fn(&str) -> Option<Value>,
) -> Result<CacheKey> {
    let mut h = KeyHasher::new("flow.expr");
    match expr {
        Expr::Literal(v) => {
            h.write_u64(0);
            h.write_value(v)?;
        }
        Expr::Model { name, reference } => {
            h.write_u64(1);
            // A resolved model enters keys by its content fingerprint only, so
            // moving the cache folder or renaming the model keeps keys.
            match model(name) {
                Some(v) => match v.as_object::<ResolvedModel>() {
                    Some(m) => {
                        h.write_str(&m.fingerprint);
                    }
                    None => h.write_value(&v)?,
                },
                None => {
                    h.write_str(reference);
                }
            }
        }
        Expr::Link { node, port } => {
            h.write_u64(2).write_key(&upstream(*node)).write_str(port);
        }
        Expr::Interp(parts) => {
            h.write_u64(3).write_u64(parts.len() as u64);
            for p in parts {
                match p {
                    InterpPart::Text(t) => h.write_u64(0).write_str(t),
                    InterpPart::Link { node, port } => h.write_u64(1).write_key(&upstream(*node)).write_str(port),
                };
            }
        }
        Expr::List(items) => {
            h.write_u64(4).write_u64(items.len() as u64);
            for e in items {
                h.write_key(&expr_hash(e, upstream, model)?);
            }
        }
        Expr::Map(entries) => {
            h.write_u64(5).write_u64(entries.len() as u64);
            for (k, e) in entries {
                h.write_str(k).write_key(&expr_hash(e, upstream, model)?);
            }
        }
    }
    Ok(h.finish())
}
