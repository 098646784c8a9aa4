//! The domain values of the rag ops: loaded documents ([`Docs`]), text chunks
//! with their sources ([`Chunks`]) and the vector index ([`Index`]). Each is an
//! [`Object`] with a plain form, so the disk cache persists it; the decoders
//! registered by [`register_decoders`] turn the plain forms back into objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Result};
use candle_core::{DType, Device, Tensor};
use flow_engine::{Object, Registry, Value, ValueType};

/// The tag of [`Docs`]' plain form in the disk cache.
const DOCS_TAG: &str = "rag.docs";
/// The tag of [`Chunks`]' plain form in the disk cache.
const CHUNKS_TAG: &str = "rag.chunks";
/// The tag of [`Index`]'s plain form in the disk cache.
const INDEX_TAG: &str = "rag.index";

/// Registers the decoders of [`Docs`], [`Chunks`] and [`Index`].
pub(crate) fn register_decoders(reg: &mut Registry) {
    reg.register_decoder(DOCS_TAG, |plain| Ok(Docs::from_plain(plain)?.into_value()));
    reg.register_decoder(CHUNKS_TAG, |plain| Ok(Chunks::from_plain(plain)?.into_value()));
    reg.register_decoder(INDEX_TAG, |plain| Ok(Index::from_plain(plain)?.into_value()));
}

/// One loaded text document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// Where it came from: relative to the graph file's folder (with `/`
    /// separators) when it lies inside it, else absolute.
    pub path: String,
    /// Its full text (UTF-8, without a leading byte-order mark).
    pub text: String,
}

/// The documents `docs.load` found, sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Docs {
    /// The documents.
    pub docs: Vec<Document>,
}

/// A piece of a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The document's path (see [`Document::path`]).
    pub path: String,
    /// Byte offset of the chunk's first byte in the document's text.
    pub start: usize,
    /// Byte offset just past the chunk's last byte.
    pub end: usize,
    /// The chunk's text: `document.text[start..end]`.
    pub text: String,
}

/// The chunks of `text.chunk`, document by document, in reading order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunks {
    /// The chunks.
    pub chunks: Vec<Chunk>,
}

/// An exact cosine-similarity index: one unit-length row per chunk, held as
/// a contiguous row-major f32 matrix `[N, D]`.
#[derive(Clone, Debug)]
pub struct Index {
    vectors: Vec<f32>,
    dim: usize,
    chunks: Chunks,
}

impl Docs {
    /// Wraps the documents as a graph value.
    pub fn into_value(self) -> Value {
        Value::Object(Arc::new(self))
    }

    fn from_plain(plain: &Value) -> Result<Docs> {
        let docs = plain_list(plain, "documents")?
            .iter()
            .map(|item| {
                let m = plain_map(item, "document")?;
                Ok(Document { path: text_field(m, "path")?, text: text_field(m, "text")? })
            })
            .collect::<Result<_>>()?;
        Ok(Docs { docs })
    }
}

impl Object for Docs {
    fn value_type(&self) -> ValueType {
        ValueType::Docs
    }

    fn type_tag(&self) -> &'static str {
        DOCS_TAG
    }

    fn byte_size(&self) -> usize {
        self.docs.iter().map(|d| d.path.len() + d.text.len() + 48).sum()
    }

    fn to_plain(&self) -> Option<Value> {
        let items = self
            .docs
            .iter()
            .map(|d| {
                Value::map(BTreeMap::from([
                    ("path".to_string(), Value::text(&d.path)),
                    ("text".to_string(), Value::text(&d.text)),
                ]))
            })
            .collect();
        Some(Value::list(items))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Chunks {
    /// Wraps the chunks as a graph value.
    pub fn into_value(self) -> Value {
        Value::Object(Arc::new(self))
    }

    fn to_plain_value(&self) -> Value {
        let items = self
            .chunks
            .iter()
            .map(|c| {
                Value::map(BTreeMap::from([
                    ("path".to_string(), Value::text(&c.path)),
                    ("start".to_string(), Value::Int(c.start as i64)),
                    ("end".to_string(), Value::Int(c.end as i64)),
                    ("text".to_string(), Value::text(&c.text)),
                ]))
            })
            .collect();
        Value::list(items)
    }

    fn from_plain(plain: &Value) -> Result<Chunks> {
        let chunks = plain_list(plain, "chunks")?
            .iter()
            .map(|item| {
                let m = plain_map(item, "chunk")?;
                let offset = |k: &str| -> Result<usize> {
                    m.get(k)
                        .and_then(Value::as_int)
                        .and_then(|i| usize::try_from(i).ok())
                        .ok_or_else(|| anyhow!("cached chunk lacks a valid `{k}`"))
                };
                Ok(Chunk {
                    path: text_field(m, "path")?,
                    start: offset("start")?,
                    end: offset("end")?,
                    text: text_field(m, "text")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Chunks { chunks })
    }
}

impl Object for Chunks {
    fn value_type(&self) -> ValueType {
        ValueType::Chunks
    }

    fn type_tag(&self) -> &'static str {
        CHUNKS_TAG
    }

    fn byte_size(&self) -> usize {
        self.chunks.iter().map(|c| c.path.len() + c.text.len() + 64).sum()
    }

    fn to_plain(&self) -> Option<Value> {
        Some(self.to_plain_value())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Index {
    /// An index over `vectors` (`[N, D]`, one row per chunk, in chunk order).
    /// Rows are L2-normalised here (a zero row stays zero), so a dot product
    /// with a unit query is the cosine similarity.
    pub fn new(vectors: &Tensor, chunks: Chunks) -> Result<Index> {
        let (n, d) =
            vectors.dims2().map_err(|_| anyhow!("embeddings should be [N, D], got shape {:?}", vectors.dims()))?;
        ensure!(
            n == chunks.chunks.len(),
            "the embeddings have {n} rows but there are {} chunks; embed the same chunks that \
             the index is built from",
            chunks.chunks.len()
        );
        ensure!(d > 0, "the embeddings have no columns");
        let mut vectors = vectors.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        for row in vectors.chunks_mut(d) {
            normalise(row);
        }
        Ok(Index { vectors, dim: d, chunks })
    }

    /// Wraps the index as a graph value.
    pub fn into_value(self) -> Value {
        Value::Object(Arc::new(self))
    }

    /// Number of indexed chunks.
    pub fn len(&self) -> usize {
        self.chunks.chunks.len()
    }

    /// True if nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.chunks.chunks.is_empty()
    }

    /// Width of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The indexed chunks, in row order.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks.chunks
    }

    /// The `k` best rows for `query` (a vector of width [`Index::dim`],
    /// normalised here), best first, as (row, cosine similarity). Ties keep
    /// row order.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(usize, f32)>> {
        ensure!(
            query.len() == self.dim(),
            "the query embedding has {} values but the index holds {}-wide vectors: search with \
             the model that embedded the chunks",
            query.len(),
            self.dim()
        );
        let mut q = query.to_vec();
        normalise(&mut q);
        let mut scored: Vec<(usize, f32)> =
            self.vectors.chunks_exact(self.dim).map(|row| dot(row, &q)).enumerate().collect();
        // Best first, ties by row: a total order, so partitioning around the
        // k-th and sorting the k best gives the same rows as a full sort.
        let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if k < scored.len() {
            if k > 0 {
                scored.select_nth_unstable_by(k - 1, order);
            }
            scored.truncate(k);
        }
        scored.sort_unstable_by(order);
        Ok(scored)
    }

    fn from_plain(plain: &Value) -> Result<Index> {
        let m = plain_map(plain, "index")?;
        let vectors =
            m.get("vectors").and_then(Value::as_tensor).ok_or_else(|| anyhow!("cached index lacks its vectors"))?;
        let chunks = Chunks::from_plain(m.get("chunks").ok_or_else(|| anyhow!("cached index lacks its chunks"))?)?;
        let (n, dim) = vectors.dims2()?;
        ensure!(n == chunks.chunks.len(), "cached index has {n} vectors for {} chunks", chunks.chunks.len());
        ensure!(vectors.dtype() == DType::F32, "cached index vectors are {:?}, not f32", vectors.dtype());
        Ok(Index { vectors: vectors.flatten_all()?.to_vec1::<f32>()?, dim, chunks })
    }
}

/// The dot product of two equally long rows, with eight independent sums so
/// the compiler can keep them in SIMD registers.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            sums[i] += x[i] * y[i];
        }
    }
    sums.iter().sum::<f32>() + tail
}

impl Object for Index {
    fn value_type(&self) -> ValueType {
        ValueType::Index
    }

    fn type_tag(&self) -> &'static str {
        INDEX_TAG
    }

    fn byte_size(&self) -> usize {
        self.vectors.len() * 4 + self.chunks.byte_size()
    }

    fn to_plain(&self) -> Option<Value> {
        let shape = (self.len(), self.dim);
        let vectors = Tensor::from_slice(&self.vectors, shape, &Device::Cpu).ok()?;
        Some(Value::map(BTreeMap::from([
            ("vectors".to_string(), Value::tensor(ValueType::Embeddings, vectors)),
            ("chunks".to_string(), self.chunks.to_plain_value()),
        ])))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Scales `v` to unit length; a zero vector stays zero.
pub(crate) fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

fn plain_list<'a>(plain: &'a Value, what: &str) -> Result<&'a [Value]> {
    match plain {
        Value::List(items) => Ok(items),
        _ => bail!("cached {what} are not a list"),
    }
}

fn plain_map<'a>(plain: &'a Value, what: &str) -> Result<&'a BTreeMap<String, Value>> {
    match plain {
        Value::Map(m) => Ok(m),
        _ => bail!("cached {what} is not a map"),
    }
}

fn text_field(m: &BTreeMap<String, Value>, key: &str) -> Result<String> {
    m.get(key)
        .and_then(Value::as_text)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("cached value lacks the text field `{key}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks() -> Chunks {
        Chunks {
            chunks: vec![
                Chunk { path: "a.md".into(), start: 0, end: 5, text: "alpha".into() },
                Chunk { path: "b/c.txt".into(), start: 3, end: 7, text: "beta".into() },
            ],
        }
    }

    fn registry() -> Registry {
        let mut reg = Registry::new();
        register_decoders(&mut reg);
        reg
    }

    #[test]
    fn docs_and_chunks_round_trip_through_their_plain_forms() {
        let docs = Docs { docs: vec![Document { path: "a.md".into(), text: "alpha\n".into() }] };
        let back = registry().decode_object(DOCS_TAG, &docs.to_plain().unwrap()).unwrap();
        assert_eq!(back.value_type(), ValueType::Docs);
        assert_eq!(back.as_object::<Docs>().unwrap(), &docs);

        let c = chunks();
        let back = registry().decode_object(CHUNKS_TAG, &c.to_plain().unwrap()).unwrap();
        assert_eq!(back.as_object::<Chunks>().unwrap(), &c);
        assert!(Chunks::from_plain(&Value::text("x")).is_err());
    }

    #[test]
    fn index_normalises_rows_round_trips_and_ranks_by_cosine() {
        let v = Tensor::new(&[[3f32, 4.0], [0.0, 2.0]], &Device::Cpu).unwrap();
        let index = Index::new(&v, chunks()).unwrap();
        assert_eq!(index.vectors, [0.6, 0.8, 0.0, 1.0]);
        assert_eq!((index.len(), index.dim()), (2, 2));

        let hits = index.search(&[0.0, 5.0], 5).unwrap();
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [1, 0]);
        assert!((hits[0].1 - 1.0).abs() < 1e-6 && (hits[1].1 - 0.8).abs() < 1e-6);
        assert_eq!(index.search(&[1.0, 0.0], 1).unwrap(), vec![(0, 0.6)]);
        assert!(index.search(&[1.0], 1).unwrap_err().to_string().contains("2-wide"));

        let back = registry().decode_object(INDEX_TAG, &index.to_plain().unwrap()).unwrap();
        let back = back.as_object::<Index>().unwrap();
        assert_eq!(back.chunks(), index.chunks());
        assert_eq!((back.vectors.as_slice(), back.dim), (index.vectors.as_slice(), 2));
    }

    #[test]
    fn every_value_survives_the_disk_cache_format() {
        let docs = Docs { docs: vec![Document { path: "a.md".into(), text: "é\n".into() }] };
        let v = Tensor::new(&[[1f32, 0.0], [0.6, 0.8]], &Device::Cpu).unwrap();
        let index = Index::new(&v, chunks()).unwrap();
        let mut out = flow_engine::Outputs::new();
        out.set("docs", docs.clone().into_value());
        out.set("chunks", chunks().into_value());
        out.set("index", index.clone().into_value());
        let bytes = flow_engine::cache::codec::encode(&out).unwrap().expect("persistable");
        let back = flow_engine::cache::codec::decode(&bytes, &registry()).unwrap();
        assert_eq!(back.get("docs").unwrap().as_object::<Docs>().unwrap(), &docs);
        assert_eq!(back.get("chunks").unwrap().as_object::<Chunks>().unwrap(), &chunks());
        let back_index = back.get("index").unwrap().as_object::<Index>().unwrap();
        assert_eq!((back_index.vectors.as_slice(), back_index.chunks()), (index.vectors.as_slice(), index.chunks()));
    }

    #[test]
    fn top_k_equals_a_full_sort_with_ties_in_row_order() {
        let n = 300;
        let dim = 19; // not a multiple of the dot product's 8 lanes
        let mut values = vec![0f32; n * dim];
        crate::tensor::rng::SplitMix64::new(7).fill_normal(&mut values);
        // Rows 10..20 repeat row 5: exact ties.
        for r in 10..20 {
            values.copy_within(5 * dim..6 * dim, r * dim);
        }
        let chunks = Chunks {
            chunks: (0..n).map(|i| Chunk { path: format!("{i}.md"), start: 0, end: 1, text: "x".into() }).collect(),
        };
        let index = Index::new(&Tensor::from_vec(values, (n, dim), &Device::Cpu).unwrap(), chunks).unwrap();
        let query: Vec<f32> = index.vectors[5 * dim..6 * dim].to_vec();
        let mut all: Vec<(usize, f32)> = index
            .vectors
            .chunks_exact(dim)
            .map(|row| row.iter().zip(&query).map(|(a, b)| a * b).sum::<f32>())
            .enumerate()
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for k in [0, 1, 5, 11, 40, n, n + 3] {
            let got = index.search(&query, k).unwrap();
            let want = &all[..k.min(n)];
            assert_eq!(got.iter().map(|h| h.0).collect::<Vec<_>>(), want.iter().map(|h| h.0).collect::<Vec<_>>(), "k = {k}");
            assert!(got.iter().zip(want).all(|(g, w)| (g.1 - w.1).abs() < 1e-5), "k = {k}");
        }
    }

    #[test]
    fn index_rejects_mismatched_rows() {
        let v = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
        let err = Index::new(&v, chunks()).unwrap_err().to_string();
        assert!(err.contains("3 rows") && err.contains("2 chunks"), "{err}");
    }
}
