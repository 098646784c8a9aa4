//! `index.build`: an exact cosine-similarity index over chunk embeddings.

use anyhow::{anyhow, Result};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, ValueType};

use super::values::{Chunks, Index};

pub(crate) struct IndexBuild {
    spec: OpSpec,
}

impl IndexBuild {
    pub(crate) fn new() -> Self {
        IndexBuild {
            spec: OpSpec {
                name: "index.build".into(),
                version: 1,
                doc: "Builds an exact (brute-force) cosine-similarity index: the embeddings are \
                      L2-normalised and kept as a contiguous row-major f32 matrix next to their \
                      chunks, and the index persists in the disk cache like any value. Row i of \
                      the embeddings belongs to chunk i."
                    .into(),
                inputs: vec![
                    PortSpec::new(
                        "embeddings",
                        ValueType::Embeddings,
                        "[N, D] embeddings of the chunks, in chunk order (from embed.text)",
                    ),
                    PortSpec::new("chunks", ValueType::Chunks, "the N chunks the embeddings stand for"),
                ],
                outputs: vec![PortSpec::new("index", ValueType::Index, "the index, searched with index.search")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for IndexBuild {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, _ctx: &OpContext) -> Result<Outputs> {
        let embeddings = inputs.tensor("embeddings")?;
        let value = inputs.value("chunks")?;
        let chunks = value
            .as_object::<Chunks>()
            .ok_or_else(|| anyhow!("input `chunks` should be chunks, got {}", value.value_type()))?;
        let index = Index::new(embeddings, chunks.clone())?;
        Ok(Outputs::single("index", index.into_value()))
    }
}
