//! `text.chunk`: documents cut into overlapping windows of tokens or
//! characters.

use anyhow::{anyhow, bail, Result};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, ValueType};

use super::values::{Chunk, Chunks, Docs};

/// What a chunk's size counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Word-level tokens, as BERT's pre-tokenizer splits text (see [`tokens`]).
    Tokens,
    /// Unicode characters (scalar values).
    Chars,
}

impl Unit {
    fn parse(s: &str) -> Result<Unit> {
        match s {
            "tokens" => Ok(Unit::Tokens),
            "chars" => Ok(Unit::Chars),
            other => bail!("unknown unit `{other}`: use `tokens` or `chars`"),
        }
    }
}

pub(crate) struct TextChunk {
    spec: OpSpec,
}

impl TextChunk {
    pub(crate) fn new() -> Self {
        TextChunk {
            spec: OpSpec {
                name: "text.chunk".into(),
                version: 1,
                doc: "Cuts each document into windows of `size` units, each starting `size - \
                      overlap` units after the previous one; the last window of a document ends \
                      at its end. With `unit: tokens` a token is what BERT's pre-tokenizer makes: \
                      a run of letters and digits, or any other visible character alone (CJK \
                      ideographs count one each); whitespace separates tokens and a chunk runs \
                      from its first token's first byte to its last token's last byte. WordPiece \
                      splits rare words further, so N tokens are about N to 1.3 N model tokens: \
                      keep `size` under the embedding model's limit (256 for minilm). With \
                      `unit: chars` windows count Unicode characters and chunks that are only \
                      whitespace are dropped. Every chunk keeps its document's path and its byte \
                      offsets in the document's text."
                    .into(),
                inputs: vec![
                    PortSpec::new("docs", ValueType::Docs, "the documents to cut (from docs.load)"),
                    PortSpec::with_default("size", ValueType::Int, 512i64, "units per chunk, at least 1"),
                    PortSpec::with_default(
                        "overlap",
                        ValueType::Int,
                        64i64,
                        "units shared by consecutive chunks of a document: 0 or more, less than size",
                    ),
                    PortSpec::with_default("unit", ValueType::Text, "tokens", "what size counts: `tokens` or `chars`"),
                ],
                outputs: vec![PortSpec::new(
                    "chunks",
                    ValueType::Chunks,
                    "the chunks in document order, each with its text, path and byte offsets \
                     (start, end) in its document",
                )],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

impl Op for TextChunk {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn run(&self, inputs: &Inputs, _ctx: &OpContext) -> Result<Outputs> {
        let value = inputs.value("docs")?;
        let docs = value
            .as_object::<Docs>()
            .ok_or_else(|| anyhow!("input `docs` should be docs, got {}", value.value_type()))?;
        let size = inputs.int("size")?;
        let overlap = inputs.int("overlap")?;
        if size < 1 {
            bail!("size must be at least 1, got {size}");
        }
        if overlap < 0 {
            bail!("overlap must be 0 or more, got {overlap}");
        }
        if overlap >= size {
            bail!("overlap ({overlap}) must be smaller than size ({size}): each chunk has to start after the previous one");
        }
        let unit = Unit::parse(inputs.text("unit")?)?;
        let mut chunks = Vec::new();
        for doc in &docs.docs {
            for (start, end) in chunk_spans(&doc.text, size as usize, overlap as usize, unit) {
                chunks.push(Chunk { path: doc.path.clone(), start, end, text: doc.text[start..end].to_string() });
            }
        }
        Ok(Outputs::single("chunks", Chunks { chunks }.into_value()))
    }
}

/// The byte spans of the chunks of `text`. `overlap < size` is the caller's
/// to check.
pub fn chunk_spans(text: &str, size: usize, overlap: usize, unit: Unit) -> Vec<(usize, usize)> {
    match unit {
        Unit::Tokens => {
            let toks = tokens(text);
            windows(toks.len(), size, overlap).map(|(s, e)| (toks[s].0, toks[e - 1].1)).collect()
        }
        Unit::Chars => {
            let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
            windows(bounds.len() - 1, size, overlap)
                .map(|(s, e)| (bounds[s], bounds[e]))
                .filter(|&(s, e)| !text[s..e].trim().is_empty())
                .collect()
        }
    }
}

/// Windows `[start, end)` over `n` units: `size` long, `size - overlap`
/// apart, the last one ending at `n`.
fn windows(n: usize, size: usize, overlap: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = size - overlap;
    (0..n)
        .step_by(step)
        .map(move |start| (start, (start + size).min(n)))
        .take_while(move |&(start, _)| start == 0 || start + overlap < n)
}

/// The byte spans of the word-level tokens of `text`: runs of alphanumeric
/// characters, and every other non-whitespace character alone; CJK
/// ideographs are tokens of their own, as in BERT's basic tokenizer.
pub fn tokens(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut word: Option<usize> = None;
    for (i, c) in text.char_indices() {
        let in_word = c.is_alphanumeric() && !is_cjk(c);
        if let Some(start) = word.filter(|_| !in_word) {
            out.push((start, i));
            word = None;
        }
        if in_word {
            word.get_or_insert(i);
        } else if !c.is_whitespace() {
            out.push((i, i + c.len_utf8()));
        }
    }
    if let Some(start) = word {
        out.push((start, text.len()));
    }
    out
}

/// The CJK ideograph blocks BERT's tokenizer puts spaces around.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces<'a>(text: &'a str, spans: &[(usize, usize)]) -> Vec<&'a str> {
        spans.iter().map(|&(s, e)| &text[s..e]).collect()
    }

    #[test]
    fn tokens_are_words_and_single_symbols() {
        let text = "Hello, wörld! It's 3.5km\t(ok) 東京x";
        assert_eq!(
            pieces(text, &tokens(text)),
            ["Hello", ",", "wörld", "!", "It", "'", "s", "3", ".", "5km", "(", "ok", ")", "東", "京", "x"]
        );
        assert!(tokens(" \n\t ").is_empty());
    }

    #[test]
    fn windows_overlap_and_end_at_the_end() {
        assert_eq!(windows(10, 4, 1).collect::<Vec<_>>(), [(0, 4), (3, 7), (6, 10)]);
        assert_eq!(windows(11, 4, 1).collect::<Vec<_>>(), [(0, 4), (3, 7), (6, 10), (9, 11)]);
        assert_eq!(windows(3, 4, 2).collect::<Vec<_>>(), [(0, 3)]);
        assert_eq!(windows(4, 4, 0).collect::<Vec<_>>(), [(0, 4)]);
        assert_eq!(windows(5, 2, 0).collect::<Vec<_>>(), [(0, 2), (2, 4), (4, 5)]);
        assert_eq!(windows(0, 4, 1).count(), 0);
    }

    #[test]
    fn token_chunks_keep_byte_offsets_and_overlap() {
        let text = "  one two, three four five.\nsix ";
        let spans = chunk_spans(text, 3, 1, Unit::Tokens);
        assert_eq!(pieces(text, &spans), ["one two,", ", three four", "four five.", ".\nsix"]);
        assert_eq!(spans[0], (2, 10));
        // Every token of the text is in some chunk.
        let covered: usize = tokens(text).iter().filter(|t| spans.iter().any(|s| s.0 <= t.0 && t.1 <= s.1)).count();
        assert_eq!(covered, tokens(text).len());
    }

    #[test]
    fn char_chunks_respect_utf8_and_drop_blank_windows() {
        let text = "añb€c     ";
        let spans = chunk_spans(text, 3, 1, Unit::Chars);
        assert_eq!(pieces(text, &spans), ["añb", "b€c", "c  "]);
        assert!(spans.iter().all(|&(s, e)| text.is_char_boundary(s) && text.is_char_boundary(e)));
    }
}
