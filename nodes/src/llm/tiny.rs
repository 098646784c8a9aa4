//! The `tiny:llama` generator: a Hugging Face llama folder with seeded random
//! weights, a small byte-level BPE tokenizer and a ChatML chat template, so
//! that LLM graphs and tests run in milliseconds without downloads.
//!
//! Files: `config.json` (2 layers, d 64, 4 heads / 2 KV heads),
//! `model.safetensors` (f32), `tokenizer.json` (the 256 byte
//! tokens, merges that spell a few hundred common English pieces, and the
//! specials `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`),
//! `tokenizer_config.json` (chat template, BOS/EOS). Every tensor has its own
//! SplitMix64 stream seeded from its name. The output projection is drawn
//! wide enough that next-token distributions are peaked, as a trained
//! model's are (greedy, top-k, top-p and the repeat penalty then make visible
//! differences), and it is not tied to the embeddings, which would make the
//! model repeat its last token forever.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use candle_core::{Device, Tensor};
use serde_json::json;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::tensor::rng::named_normal;

/// Version of the generator's output (the model store's folder name).
pub const TINY_LLAMA_VERSION: u32 = 1;

const HIDDEN: usize = 64;
const INTERMEDIATE: usize = 128;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const MAX_POSITIONS: usize = 1024;
const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// Spread of the output projection: next-token logits then have a standard
/// deviation of about 2.4 (the final norm makes hidden states of RMS 1).
const LM_HEAD_STD: f32 = 0.3;

/// Words spelled out by the merges (each also with a leading space).
const WORDS: &str = "the of and to in is was for on that with as by at from it his an were are which this be \
    or has had not first one their its new after but who they have her she two been other when there all during \
    into school time may years more most only over city some world would where later up such used many can state \
    about national out known university united then made capital France Paris hello tiny model answer question \
    what how you your we our me my i a";

const CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
{{ '<|im_start|>system\nYou are a tiny random model.<|im_end|>\n' }}{% endif %}\
{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// GPT-2's reversible map from bytes to printable characters.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let mut next = 256;
    (0..256u32)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            char::from_u32(c).expect("a valid code point")
        })
        .collect()
}

/// The byte-level BPE tokenizer of the tiny model.
fn tiny_tokenizer() -> Result<Tokenizer> {
    let chars = byte_chars();
    let mut vocab: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    vocab.extend(chars.iter().map(|c| c.to_string()));
    let mut merges: Vec<(String, String)> = Vec::new();
    let mut ranks: HashMap<(String, String), usize> = HashMap::new();
    for word in WORDS.split_whitespace() {
        for spelled in [word.to_string(), format!(" {word}")] {
            // Split the word as the merges so far do, then join what is left
            // from left to right: each word ends up a single token.
            let mut pieces: Vec<String> = spelled.bytes().map(|b| chars[b as usize].to_string()).collect();
            while let Some((i, _)) = (0..pieces.len().saturating_sub(1))
                .filter_map(|i| ranks.get(&(pieces[i].clone(), pieces[i + 1].clone())).map(|r| (i, *r)))
                .min_by_key(|&(_, r)| r)
            {
                let right = pieces.remove(i + 1);
                pieces[i].push_str(&right);
            }
            let mut pieces = pieces.into_iter();
            let Some(mut left) = pieces.next() else { continue };
            for right in pieces {
                ranks.insert((left.clone(), right.clone()), merges.len());
                merges.push((left.clone(), right.clone()));
                left.push_str(&right);
                vocab.push(left.clone());
            }
        }
    }
    let ids: Vocab = vocab.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder().vocab_and_merges(ids, merges).build().map_err(|e| anyhow!("tiny tokenizer: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer
        .add_special_tokens(SPECIALS.iter().map(|s| AddedToken::from(s.to_string(), true)))
        .map_err(|e| anyhow!("tiny tokenizer: {e}"))?;
    Ok(tokenizer)
}

/// Writes the `tiny:llama` model into `dir` (an existing, empty folder).
pub fn generate_tiny_llama(dir: &Path) -> Result<()> {
    let tokenizer = tiny_tokenizer()?;
    let vocab_size = tokenizer.get_vocab_size(true);
    let head_dim = HIDDEN / HEADS;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut add = |name: String, t: Tensor| {
        tensors.insert(name, t);
    };
    let ones = |n: usize| Tensor::ones(n, candle_core::DType::F32, &Device::Cpu);
    let linear = |name: &str, out: usize, inp: usize| named_normal(name, &[out, inp], 1.0 / (inp as f32).sqrt());
    add("model.embed_tokens.weight".into(), named_normal("model.embed_tokens.weight", &[vocab_size, HIDDEN], 1.0)?);
    add("lm_head.weight".into(), named_normal("lm_head.weight", &[vocab_size, HIDDEN], LM_HEAD_STD)?);
    add("model.norm.weight".into(), ones(HIDDEN)?);
    for i in 0..LAYERS {
        let p = format!("model.layers.{i}");
        for (part, out, inp) in [
            ("self_attn.q_proj", HIDDEN, HIDDEN),
            ("self_attn.k_proj", KV_HEADS * head_dim, HIDDEN),
            ("self_attn.v_proj", KV_HEADS * head_dim, HIDDEN),
            ("self_attn.o_proj", HIDDEN, HIDDEN),
            ("mlp.gate_proj", INTERMEDIATE, HIDDEN),
            ("mlp.up_proj", INTERMEDIATE, HIDDEN),
            ("mlp.down_proj", HIDDEN, INTERMEDIATE),
        ] {
            let name = format!("{p}.{part}.weight");
            add(name.clone(), linear(&name, out, inp)?);
        }
        add(format!("{p}.input_layernorm.weight"), ones(HIDDEN)?);
        add(format!("{p}.post_attention_layernorm.weight"), ones(HIDDEN)?);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;

    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "vocab_size": vocab_size,
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": false,
        "torch_dtype": "float32",
    });
    let tokenizer_config: BTreeMap<&str, serde_json::Value> = BTreeMap::from([
        ("bos_token", json!(SPECIALS[1])),
        ("eos_token", json!(SPECIALS[2])),
        ("add_bos_token", json!(false)),
        ("chat_template", json!(CHAT_TEMPLATE)),
        ("model_max_length", json!(MAX_POSITIONS)),
    ]);
    let write = |name: &str, text: String| fs::write(dir.join(name), text).with_context(|| format!("writing {name}"));
    write("config.json", serde_json::to_string_pretty(&config)?)?;
    write("tokenizer_config.json", serde_json::to_string_pretty(&tokenizer_config)?)?;
    write("tokenizer.json", tokenizer.to_string(false).map_err(|e| anyhow!("tiny tokenizer: {e}"))?)?;
    Ok(())
}
