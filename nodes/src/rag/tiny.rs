//! The `tiny:bert` generator: a sentence-transformers folder with seeded
//! random weights of the real BERT architecture and a small WordPiece
//! vocabulary, so that RAG graphs and tests run in milliseconds without
//! downloads.
//!
//! Files: `config.json` (2 layers, d 32, 4 heads, exact GELU),
//! `model.safetensors` (f32), `tokenizer.json` (lower-casing BERT
//! normaliser and pre-tokeniser, WordPiece over the specials, single
//! characters, their `##` continuations and a few hundred whole words,
//! `[CLS] … [SEP]` post-processing), `sentence_bert_config.json` (128 tokens)
//! and `1_Pooling/config.json` (mean pooling). Every tensor has its own
//! SplitMix64 stream seeded from its name. The vectors carry no meaning
//! beyond the words they share; retrieval quality is tested on MiniLM.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::json;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::Vocab;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::Tokenizer;

use crate::tensor::rng::named_normal;

/// Version of the generator's output (the model store's folder name).
pub const TINY_BERT_VERSION: u32 = 1;

const HIDDEN: usize = 32;
const INTERMEDIATE: usize = 64;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const MAX_POSITIONS: usize = 128;
const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
const CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()[]{}-_/\\&%$#@*+=<>|~`^";
const WORDS: &str = "the of and to in is was for on that with as by at from it his an were are which this be \
    or has had not first one their its new after but who they have her she two been other when there all during \
    into school time may years more most only over city some world would where later up such used many can state \
    about national out known university united then made capital france paris hello tiny model answer question \
    what how you your we our me my bee bees honey hive flower flowers water river light sun moon star night day";

/// The WordPiece tokenizer of the tiny model.
fn tiny_tokenizer() -> Result<Tokenizer> {
    let mut vocab: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    vocab.extend(CHARS.chars().map(String::from));
    vocab.extend(CHARS.chars().map(|c| format!("##{c}")));
    vocab.extend(WORDS.split_whitespace().filter(|w| w.chars().count() > 1).map(String::from));
    // The WordPiece builder takes the same map type as BPE's public `Vocab`.
    let ids: Vocab = vocab.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let id = |t: &str| ids[t];
    let (cls, sep) = (id("[CLS]"), id("[SEP]"));
    let wordpiece = WordPiece::builder()
        .vocab(ids)
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| anyhow!("tiny tokenizer: {e}"))?;
    let mut tokenizer = Tokenizer::new(wordpiece);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .map_err(|e| anyhow!("tiny tokenizer: {e}"))?;
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    tokenizer.with_decoder(Some(WordPieceDecoder::default()));
    Ok(tokenizer)
}

/// Writes the `tiny:bert` model into `dir` (an existing, empty folder).
pub fn generate_tiny_bert(dir: &Path) -> Result<()> {
    let tokenizer = tiny_tokenizer()?;
    let vocab_size = tokenizer.get_vocab_size(true);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let zeros = |n: usize| Tensor::zeros(n, DType::F32, &Device::Cpu);
    let ones = |n: usize| Tensor::ones(n, DType::F32, &Device::Cpu);
    let mut linear = |name: &str, out: usize, inp: usize| -> Result<()> {
        let weight = format!("{name}.weight");
        tensors.insert(weight.clone(), named_normal(&weight, &[out, inp], 1.0 / (inp as f32).sqrt())?);
        tensors.insert(format!("{name}.bias"), named_normal(&format!("{name}.bias"), &[out], 0.02)?);
        Ok(())
    };
    for i in 0..LAYERS {
        let p = format!("encoder.layer.{i}");
        for part in ["query", "key", "value"] {
            linear(&format!("{p}.attention.self.{part}"), HIDDEN, HIDDEN)?;
        }
        linear(&format!("{p}.attention.output.dense"), HIDDEN, HIDDEN)?;
        linear(&format!("{p}.intermediate.dense"), INTERMEDIATE, HIDDEN)?;
        linear(&format!("{p}.output.dense"), HIDDEN, INTERMEDIATE)?;
    }
    let mut add = |name: String, t: Tensor| {
        tensors.insert(name, t);
    };
    for norm in (0..LAYERS)
        .flat_map(|i| [format!("encoder.layer.{i}.attention.output.LayerNorm"), format!("encoder.layer.{i}.output.LayerNorm")])
        .chain(["embeddings.LayerNorm".to_string()])
    {
        add(format!("{norm}.weight"), ones(HIDDEN)?);
        add(format!("{norm}.bias"), zeros(HIDDEN)?);
    }
    for (name, rows) in [
        ("embeddings.word_embeddings.weight", vocab_size),
        ("embeddings.position_embeddings.weight", MAX_POSITIONS),
        ("embeddings.token_type_embeddings.weight", 2),
    ] {
        add(name.into(), named_normal(name, &[rows, HIDDEN], 1.0)?);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;

    let config = json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "hidden_act": "gelu",
        "max_position_embeddings": MAX_POSITIONS,
        "type_vocab_size": 2,
        "vocab_size": vocab_size,
        "layer_norm_eps": 1e-12,
        "position_embedding_type": "absolute",
    });
    let write = |name: &str, text: String| fs::write(dir.join(name), text).with_context(|| format!("writing {name}"));
    write("config.json", serde_json::to_string_pretty(&config)?)?;
    write("sentence_bert_config.json", json!({ "max_seq_length": MAX_POSITIONS, "do_lower_case": false }).to_string())?;
    fs::create_dir_all(dir.join("1_Pooling")).context("creating 1_Pooling")?;
    write("1_Pooling/config.json", json!({ "word_embedding_dimension": HIDDEN, "pooling_mode_mean_tokens": true }).to_string())?;
    write("tokenizer.json", tokenizer.to_string(false).map_err(|e| anyhow!("tiny tokenizer: {e}"))?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rag::SentenceEncoder;

    #[test]
    fn the_tiny_bert_loads_and_embeds_unit_vectors_deterministically() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        generate_tiny_bert(a.path()).unwrap();
        generate_tiny_bert(b.path()).unwrap();
        for file in ["model.safetensors", "tokenizer.json", "config.json"] {
            assert_eq!(fs::read(a.path().join(file)).unwrap(), fs::read(b.path().join(file)).unwrap(), "{file}");
        }
        let encoder = SentenceEncoder::load(a.path(), &Device::Cpu).unwrap();
        let ids = encoder.token_ids(&["Honey bees visit Flowers.", "x"]).unwrap();
        assert_eq!(ids[0].ids.first(), Some(&2), "[CLS] first");
        assert_eq!(ids[0].ids.last(), Some(&3), "[SEP] last");
        assert!(!ids[0].ids.contains(&1), "no [UNK] for plain English");
        let rows: Vec<&[u32]> = ids.iter().map(|t| t.ids.as_slice()).collect();
        let states = encoder.hidden_states(&rows).unwrap();
        assert_eq!(states.dims(), [ids[0].ids.len() + ids[1].ids.len(), HIDDEN]);
    }
}
