//! `index.search`: the chunks closest to a question, as hits and as a
//! context text with numbered citations for a prompt.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

use super::embed::{embed_texts, model_input};
use super::values::Index;

pub(crate) struct IndexSearch {
    spec: OpSpec,
    memo_root: Option<PathBuf>,
}

impl IndexSearch {
    pub(crate) fn new(memo_root: Option<PathBuf>) -> Self {
        IndexSearch {
            spec: OpSpec {
                name: "index.search".into(),
                version: 1,
                doc: "Embeds the query with the model (through the same per-text memo as \
                      embed.text) and returns the k chunks of the index with the highest cosine \
                      similarity, best first (ties keep chunk order). Use the model that embedded \
                      the chunks."
                    .into(),
                inputs: vec![
                    PortSpec::new("index", ValueType::Index, "the index to search (from index.build)"),
                    PortSpec::new("model", ValueType::Model, "the embedding model that built the index"),
                    PortSpec::new("query", ValueType::Text, "the question or text to look for"),
                    PortSpec::with_default("k", ValueType::Int, 4i64, "how many chunks to return, at least 1"),
                ],
                outputs: vec![
                    PortSpec::new(
                        "hits",
                        ValueType::List,
                        "the best chunks, best first: maps with rank (from 1), score (cosine \
                         similarity), text, path, start and end (byte offsets in the document)",
                    ),
                    PortSpec::new(
                        "context",
                        ValueType::Text,
                        "the hits as numbered citations, one paragraph each: `[1] (path) text` (the \
                         text with its runs of whitespace made single spaces)",
                    ),
                ],
                output: false,
                cost: Cost::Heavy,
            },
            memo_root,
        }
    }
}

impl Op for IndexSearch {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let value = inputs.value("index")?;
        let index = value
            .as_object::<Index>()
            .ok_or_else(|| anyhow!("input `index` should be an index, got {}", value.value_type()))?;
        let model = model_input(inputs, "model")?;
        let query = inputs.text("query")?;
        let k = inputs.int("k")?;
        if k < 1 {
            bail!("k must be at least 1, got {k}");
        }
        let (q, _) = embed_texts(ctx, model, &[query], 1, self.memo_root.as_deref())?;
        let best = index.search(&q, k as usize)?;

        let mut hits = Vec::with_capacity(best.len());
        let mut context = Vec::with_capacity(best.len());
        for (rank, (row, score)) in best.into_iter().enumerate() {
            let chunk = &index.chunks()[row];
            let rank = rank as i64 + 1;
            let flat = chunk.text.split_whitespace().collect::<Vec<_>>().join(" ");
            context.push(format!("[{rank}] ({}) {flat}", chunk.path));
            hits.push(Value::map(BTreeMap::from([
                ("rank".to_string(), Value::Int(rank)),
                ("score".to_string(), Value::Float(f64::from(score))),
                ("text".to_string(), Value::text(&chunk.text)),
                ("path".to_string(), Value::text(&chunk.path)),
                ("start".to_string(), Value::Int(chunk.start as i64)),
                ("end".to_string(), Value::Int(chunk.end as i64)),
            ])));
        }
        let mut out = Outputs::new();
        out.set("hits", Value::list(hits));
        out.set("context", context.join("\n\n"));
        Ok(out)
    }
}
