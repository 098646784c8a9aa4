//! `llm.generate`: a chat answer (or a raw continuation) from a language
//! model, streamed token by token.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use flow_engine::models::{Residence, ResolvedModel};
use flow_engine::{Cost, Inputs, Op, OpContext, OpSpec, Outputs, PortSpec, Value, ValueType};

use super::model::{LanguageModel, LoadPlan, Precision};
use super::prefix::PrefixMemo;
use super::sampling::{Sampler, SamplingParams, StopStrings};
use super::tokenizer::TokenStream;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// How tokens are chosen.
    pub sampling: SamplingParams,
    /// Texts that end the answer (not included in it).
    pub stop: Vec<String>,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// A stop string appeared.
    Stop,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The model's context is full.
    ContextFull,
}

/// The outcome of [`generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    /// The answer: the text of the generated tokens, up to a stop string.
    pub text: String,
    /// The generated token ids (an end-of-sequence token excluded).
    pub tokens: Vec<u32>,
    /// Why generation ended.
    pub finish: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV state came from a stored prefix (not fed).
    pub prefix_tokens: usize,
    /// Time to feed the prompt.
    pub prefill: Duration,
    /// Time of the single-token steps after the prompt.
    pub decode: Duration,
    /// Number of single-token steps.
    pub decode_steps: usize,
}

impl Generation {
    /// Prompt tokens fed per second (those from a stored prefix excluded).
    pub fn prefill_rate(&self) -> f64 {
        (self.prompt_tokens - self.prefix_tokens) as f64 / self.prefill.as_secs_f64().max(1e-9)
    }

    /// Generated tokens per second after the prompt.
    pub fn decode_rate(&self) -> f64 {
        self.decode_steps as f64 / self.decode.as_secs_f64().max(1e-9)
    }
}

/// Generates from `prompt_ids`. After each token, `on_step(text, n)` gets the
/// text that token releases (often empty: a partial character, or a possible
/// start of a stop string, is held back) and the count of generated tokens;
/// an error from it (e.g. cancellation) ends generation with that error.
/// The prompt reuses the longest stored prefix of it (in the model's memory
/// or in `memo`, see [`crate::llm::prefix`]).
pub fn generate(
    lm: &LanguageModel,
    prompt_ids: &[u32],
    options: &GenerateOptions,
    memo: Option<&PrefixMemo>,
    on_step: &mut dyn FnMut(&str, usize) -> Result<()>,
) -> Result<Generation> {
    options.sampling.validate()?;
    if prompt_ids.len() >= lm.context_length() {
        bail!(
            "the prompt has {} tokens, and the model's context holds {} (prompt and answer)",
            prompt_ids.len(),
            lm.context_length()
        );
    }
    let mut session = lm.session_for(prompt_ids.len() + options.max_tokens)?;
    let t0 = Instant::now();
    let (mut logits, prefix_tokens) = session.feed_prompt(prompt_ids, memo)?;
    let prefill = t0.elapsed();

    let t1 = Instant::now();
    let mut sampler = Sampler::new(options.sampling.clone());
    let mut history = prompt_ids.to_vec();
    let mut stream = TokenStream::new(lm.tokenizer());
    let mut stops = StopStrings::new(options.stop.clone());
    let mut text = String::new();
    let mut tokens = Vec::new();
    let mut decode_steps = 0;
    let mut finish = FinishReason::MaxTokens;
    while tokens.len() < options.max_tokens {
        // -inf masks a token; NaN or +inf means the model broke down.
        if let Some(bad) = logits.iter().find(|l| l.is_nan() || **l == f32::INFINITY) {
            bail!("the model produced non-finite logits ({bad}) after {} tokens", history.len());
        }
        let next = sampler.sample(&mut logits, &history);
        if lm.eos_ids().contains(&next) {
            finish = FinishReason::Eos;
            break;
        }
        tokens.push(next);
        history.push(next);
        if let Some(piece) = stream.push(next)? {
            let released = stops.push(&piece);
            text.push_str(&released.text);
            on_step(&released.text, tokens.len())?;
            if released.stopped {
                finish = FinishReason::Stop;
                break;
            }
        } else {
            on_step("", tokens.len())?;
        }
        if tokens.len() == options.max_tokens {
            break;
        }
        if session.position() >= lm.context_length() {
            finish = FinishReason::ContextFull;
            break;
        }
        logits = session.feed(&[next])?;
        decode_steps += 1;
    }
    if finish != FinishReason::Stop {
        let mut tail = String::new();
        if let Some(piece) = stream.finish()? {
            let released = stops.push(&piece);
            tail.push_str(&released.text);
            if released.stopped {
                finish = FinishReason::Stop;
            }
        }
        if finish != FinishReason::Stop {
            tail.push_str(&stops.finish());
        }
        if !tail.is_empty() {
            text.push_str(&tail);
            on_step(&tail, tokens.len())?;
        }
    }
    Ok(Generation {
        text,
        tokens,
        finish,
        prompt_tokens: prompt_ids.len(),
        prefix_tokens,
        prefill,
        decode: t1.elapsed(),
        decode_steps,
    })
}

pub(crate) struct Generate {
    spec: OpSpec,
}

impl Generate {
    pub(crate) fn new() -> Self {
        Generate {
            spec: OpSpec {
                name: "llm.generate".into(),
                version: 1,
                doc: "Generates text with a language model: the model's chat template (from the GGUF \
                      metadata or tokenizer_config.json) is applied to the optional system message and \
                      the prompt, then tokens are sampled until an end-of-turn token, a stop string or \
                      max_tokens. Tokens stream to the console as they come. Seeded: the same inputs \
                      give the same text. Models: llama GGUF files (e.g. `smollm2-135m-instruct`; the \
                      tokenizer is rebuilt from the file) and Hugging Face llama / qwen2 folders."
                    .into(),
                inputs: vec![
                    PortSpec::new("model", ValueType::Model, "the language model"),
                    PortSpec::new("prompt", ValueType::Text, "the user's message"),
                    PortSpec::optional(
                        "system",
                        ValueType::Text,
                        "system message; without it the template's default system message, if any, is used",
                    ),
                    PortSpec::with_default("max_tokens", ValueType::Int, 256i64, "the most tokens to generate"),
                    PortSpec::with_default(
                        "temperature",
                        ValueType::Float,
                        0.7,
                        "softmax temperature; 0 is greedy (always the most likely token)",
                    ),
                    PortSpec::optional("top_k", ValueType::Int, "sample among the k most likely tokens only"),
                    PortSpec::optional(
                        "top_p",
                        ValueType::Float,
                        "sample among the most likely tokens whose probabilities add up to p (nucleus)",
                    ),
                    PortSpec::with_default(
                        "repeat_penalty",
                        ValueType::Float,
                        1.1,
                        "penalty on tokens seen in the last repeat_last_n tokens; 1 disables it",
                    ),
                    PortSpec::with_default(
                        "repeat_last_n",
                        ValueType::Int,
                        64i64,
                        "window of the repeat penalty, in tokens (prompt included)",
                    ),
                    PortSpec::with_default("seed", ValueType::Int, 0i64, "seed of the sampling"),
                    PortSpec::optional("stop", ValueType::List, "texts that end the answer (left out of it)"),
                    PortSpec::with_default(
                        "precision",
                        ValueType::Text,
                        "auto",
                        "GGUF weights: `quantized` (kept in their format, 8-bit activations: llama.cpp's \
                         numerics and speed), `f32` (dequantized at load: transformers' numerics), `auto` \
                         (quantized)",
                    ),
                    PortSpec::with_default(
                        "chat",
                        ValueType::Bool,
                        true,
                        "apply the model's chat template; false feeds the prompt as is (completion)",
                    ),
                ],
                outputs: vec![PortSpec::new("text", ValueType::Text, "the generated answer")],
                output: false,
                cost: Cost::Heavy,
            },
        }
    }
}

/// Reads the generation inputs of the op.
fn options(inputs: &Inputs) -> Result<GenerateOptions> {
    let max_tokens = inputs.int("max_tokens")?;
    if max_tokens < 1 {
        bail!("max_tokens must be at least 1, got {max_tokens}");
    }
    let top_k = match inputs.opt_int("top_k")? {
        Some(k) if k < 1 => bail!("top_k must be at least 1, got {k}"),
        k => k.map(|k| k as usize),
    };
    let repeat_last_n = inputs.int("repeat_last_n")?;
    if repeat_last_n < 0 {
        bail!("repeat_last_n must be 0 or more, got {repeat_last_n}");
    }
    let stop = match inputs.get("stop") {
        None => Vec::new(),
        Some(_) => inputs
            .list("stop")?
            .iter()
            .map(|v| {
                v.as_text().map(str::to_string).ok_or_else(|| anyhow!("`stop` must list texts, got {}", v.value_type()))
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let sampling = SamplingParams {
        temperature: inputs.float("temperature")?,
        top_k,
        top_p: inputs.opt_float("top_p")?,
        repeat_penalty: inputs.float("repeat_penalty")? as f32,
        repeat_last_n: repeat_last_n as usize,
        // Negative seeds are fine: their bits seed the stream.
        seed: inputs.int("seed")? as u64,
    };
    sampling.validate()?;
    Ok(GenerateOptions { max_tokens: max_tokens as usize, sampling, stop })
}

impl Op for Generate {
    fn spec(&self) -> &OpSpec {
        &self.spec
    }

    fn shows_result(&self) -> bool {
        true
    }

    fn run(&self, inputs: &Inputs, ctx: &OpContext) -> Result<Outputs> {
        let options = options(inputs)?;
        let precision = Precision::parse(inputs.text("precision")?)?;
        let model = inputs.value("model")?;
        let model = model
            .as_object::<ResolvedModel>()
            .ok_or_else(|| anyhow!("input `model` should be a model, got {}", model.value_type()))?;
        // The plan reads the model's headers (tens of ms for a GGUF
        // vocabulary): keep it beside the model.
        let plan_key = model.pool_key(ctx.device(), &format!("llm-plan-{}", precision.name()));
        let plan = ctx
            .models()
            .get_or_load(&plan_key, Residence::Host, std::mem::size_of::<LoadPlan>() as u64, || LoadPlan::new(&model.path, precision))
            .map_err(|e| anyhow!("model `{}`: {e:#}", model.reference))?;
        let key = model.pool_key(ctx.device(), plan.loader);
        let lm = ctx
            .models()
            .get_or_load(&key, Residence::of(ctx.device()), plan.bytes, || LanguageModel::load(&model.path, ctx.device(), plan.precision))
            .map_err(|e| anyhow!("model `{}`: {e:#}", model.reference))?;
        let ids = lm.prompt_ids(inputs.text("prompt")?, inputs.opt_text("system")?, inputs.bool("chat")?)?;
        ctx.check_cancelled()?;
        let total = options.max_tokens as u64;
        let memo = ctx
            .memo_dir("kv-prefix")
            .and_then(|root| lm.prefix_memo(&root, &model.fingerprint))
            .map(|m| m.reading(ctx.memo_reads()));
        let generation = generate(&lm, &ids, &options, memo.as_ref(), &mut |piece, n| {
            if !piece.is_empty() {
                ctx.token(piece);
            }
            ctx.progress(n as u64, total);
            ctx.check_cancelled()
        })?;
        ctx.message(&format!(
            "{}: prompt {} tokens ({} from the prefix cache) at {:.1} tok/s, answer {} tokens at {:.1} tok/s ({:?})",
            lm.description(),
            generation.prompt_tokens,
            generation.prefix_tokens,
            generation.prefill_rate(),
            generation.tokens.len(),
            generation.decode_rate(),
            generation.finish,
        ));
        Ok(Outputs::single("text", Value::text(generation.text)))
    }
}
