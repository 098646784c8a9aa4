//! rag ops: load documents, cut them into chunks, embed texts with a BERT
//! sentence encoder, build an exact cosine index and search it.
//!
//! ```text
//! docs.load {path} -> docs
//! text.chunk {docs, size, overlap, unit} -> chunks
//! embed.text {model, texts, batch} -> embeddings
//! index.build {embeddings, chunks} -> index
//! index.search {index, model, query, k} -> hits, context
//! ```
//!
//! Cache grain: the engine caches each node as a whole, so `embed.text`
//! also keeps a per-text memo of embeddings (see [`register_with_memo_dir`]):
//! after a file is added to a corpus the re-run embeds that file's chunks
//! only, and a new question costs one embedding in `index.search`.

mod chunk;
mod docs;
mod embed;
mod glob;
mod index;
mod search;
mod tiny;
mod values;

use std::path::PathBuf;

use flow_engine::Registry;

pub use chunk::{chunk_spans, tokens, Unit};
pub use embed::{EncoderSettings, Pooling, SentenceEncoder, TokenIds, TOKENS_PER_PASS};
pub use tiny::{generate_tiny_bert, TINY_BERT_VERSION};
pub use values::{Chunk, Chunks, Docs, Document, Index};

/// Registers the rag ops and the decoders of their cached values; the
/// embedding memo lives in the run's disk cache (`<cache dir>/v1/memo/embeddings`,
/// counted and cleared by `flow cache stats|clear`).
pub fn register(reg: &mut Registry) {
    register_with_memo_dir(reg, None);
}

/// Like [`register`], with the per-text embedding memo in `memo_dir` when
/// given (e.g. a test's temporary folder) instead of the run's cache.
pub fn register_with_memo_dir(reg: &mut Registry, memo_dir: Option<PathBuf>) {
    reg.register(docs::DocsLoad::new());
    reg.register(chunk::TextChunk::new());
    reg.register(embed::EmbedText::new(memo_dir.clone()));
    reg.register(index::IndexBuild::new());
    reg.register(search::IndexSearch::new(memo_dir));
    values::register_decoders(reg);
}
