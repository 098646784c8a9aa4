//! Choosing the next token from the logits, and stop strings.
//!
//! The order follows transformers' `generate`: repeat penalty (over the last
//! `repeat_last_n` tokens of prompt and answer, as llama.cpp windows it),
//! then temperature, top-k, top-p, and a draw from what is left. Temperature
//! 0 is greedy (argmax, the lowest id on ties); top-k and top-p then do
//! nothing. Draws come from a SplitMix64 stream seeded with `seed`, so a seed
//! gives the same answer on every machine (given the same logits).

use anyhow::{bail, Result};

use crate::tensor::rng::SplitMix64;

/// How tokens are chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p`.
    pub top_p: Option<f64>,
    /// Divides positive logits (multiplies negative ones) of tokens seen in
    /// the window; 1 disables it.
    pub repeat_penalty: f32,
    /// Window of the repeat penalty: the last `n` tokens of prompt and answer.
    pub repeat_last_n: usize,
    /// Seed of the draws.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.7, top_k: None, top_p: None, repeat_penalty: 1.1, repeat_last_n: 64, seed: 0 }
    }
}

impl SamplingParams {
    /// Greedy decoding without repeat penalty.
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, repeat_penalty: 1.0, ..SamplingParams::default() }
    }

    /// Checks the ranges of the parameters.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            bail!("temperature must be 0 (greedy) or positive, got {}", self.temperature);
        }
        if self.top_k == Some(0) {
            bail!("top_k must be at least 1");
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                bail!("top_p must be in (0, 1], got {p}");
            }
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            bail!("repeat_penalty must be positive, got {}", self.repeat_penalty);
        }
        Ok(())
    }
}

/// Picks tokens with [`SamplingParams`]; holds the random stream.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
}

impl Sampler {
    /// A sampler whose stream starts at `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        let rng = SplitMix64::new(params.seed);
        Sampler { params, rng }
    }

    /// The next token for `logits` (modified in place), given the tokens so
    /// far (`history`, prompt included) for the repeat penalty.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let window = &history[history.len().saturating_sub(self.params.repeat_last_n)..];
        apply_repeat_penalty(logits, self.params.repeat_penalty, window);
        if self.params.temperature == 0.0 {
            return argmax(logits);
        }
        let candidates = candidates(logits, self.params.temperature, self.params.top_k, self.params.top_p);
        let u = (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        draw(&candidates, u)
    }
}

/// transformers' repetition penalty: each distinct token of `window` has its
/// logit divided by `penalty` if positive, multiplied if negative.
pub fn apply_repeat_penalty(logits: &mut [f32], penalty: f32, window: &[u32]) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = std::collections::HashSet::with_capacity(window.len());
    for &id in window {
        if let Some(l) = logits.get_mut(id as usize) {
            if seen.insert(id) {
                *l = if *l >= 0.0 { *l / penalty } else { *l * penalty };
            }
        }
    }
}

/// The index of the largest logit, the lowest one on ties (NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// The tokens that may be drawn, with their probabilities (summing to 1):
/// most likely first (ties by id) when top-k or top-p cut the vocabulary,
/// else every token in id order. The result does not depend on how the
/// standard library selects and sorts (the order is total), so a seed gives
/// the same draws with every toolchain.
pub fn candidates(logits: &[f32], temperature: f64, top_k: Option<usize>, top_p: Option<f64>) -> Vec<(u32, f64)> {
    let valid: Vec<u32> = (0..logits.len() as u32).filter(|&i| !logits[i as usize].is_nan()).collect();
    let Some(max) = valid.iter().map(|&i| logits[i as usize]).max_by(f32::total_cmp) else { return vec![(0, 1.0)] };
    let weight = |i: u32| ((logits[i as usize] as f64 - max as f64) / temperature).exp();
    let cmp = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    // The `k` most likely of `ids`, sorted.
    let best = |ids: &[u32], k: usize| -> Vec<u32> {
        let mut ids = ids.to_vec();
        if k < ids.len() {
            ids.select_nth_unstable_by(k - 1, cmp);
            ids.truncate(k);
        }
        ids.sort_unstable_by(cmp);
        ids
    };
    let pool = match top_k {
        Some(k) if k < valid.len() => best(&valid, k),
        _ => valid,
    };
    let total: f64 = pool.iter().map(|&i| weight(i)).sum();
    let Some(p) = top_p.filter(|&p| p < 1.0) else {
        return pool.into_iter().map(|i| (i, weight(i) / total)).collect();
    };
    // Top-p needs the most likely tokens in order, rarely more than a few
    // dozen: sort a growing head of the pool until it holds mass p.
    let mut head = 64;
    loop {
        let sorted = best(&pool, head.min(pool.len()));
        let mut cumulative = 0.0;
        let mut probs = Vec::new();
        for &i in &sorted {
            let q = weight(i) / total;
            probs.push((i, q));
            cumulative += q;
            if cumulative >= p {
                break;
            }
        }
        if cumulative >= p || sorted.len() == pool.len() {
            let kept: f64 = probs.iter().map(|c| c.1).sum();
            probs.iter_mut().for_each(|c| c.1 /= kept);
            return probs;
        }
        head *= 4;
    }
}

/// The candidate that `u` in `[0, 1)` falls on in the cumulative distribution.
fn draw(candidates: &[(u32, f64)], u: f64) -> u32 {
    let mut cumulative = 0.0;
    for &(id, p) in candidates {
        cumulative += p;
        if u < cumulative {
            return id;
        }
    }
    candidates.last().map_or(0, |c| c.0)
}

/// What [`StopStrings::push`] lets out.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    /// Text that can no longer be part of a stop string.
    pub text: String,
    /// True once a stop string appeared: generation ends, and the stop string
    /// and what follows it are dropped.
    pub stopped: bool,
}

/// Watches the generated text for stop strings. Text that could still be
/// the beginning of a stop string is held back, so that streamed tokens never
/// show a stop string (or a piece of one).
#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
}

impl StopStrings {
    /// A watcher for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        StopStrings { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), pending: String::new() }
    }

    /// Adds generated text; returns what may be shown.
    pub fn push(&mut self, text: &str) -> Released {
        self.pending.push_str(text);
        let first_stop = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min();
        if let Some(at) = first_stop {
            let text = self.pending[..at].to_string();
            self.pending.clear();
            return Released { text, stopped: true };
        }
        let hold = self.held_back();
        let cut = self.pending.len() - hold;
        let text = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        Released { text, stopped: false }
    }

    /// The text held back at the end of generation (it did not become a stop
    /// string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Length of the longest end of `pending` that begins a stop string.
    fn held_back(&self) -> usize {
        let p = &self.pending;
        self.stops
            .iter()
            .flat_map(|s| {
                (1..s.len().min(p.len() + 1))
                    .rev()
                    .find(|&n| s.is_char_boundary(n) && p.is_char_boundary(p.len() - n) && p.ends_with(&s[..n]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.2]), 1);
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&mut [0.1, 0.2, 5.0], &[]), 2);
    }

    #[test]
    fn repeat_penalty_divides_positive_and_multiplies_negative_logits_once() {
        let mut l = vec![2.0, -2.0, 1.0, 4.0];
        apply_repeat_penalty(&mut l, 2.0, &[0, 1, 1, 0]);
        assert_eq!(l, [1.0, -4.0, 1.0, 4.0]);
        // Only the window counts: token 3 (seen long ago) keeps its lead.
        let params = SamplingParams { repeat_penalty: 10.0, repeat_last_n: 2, ..SamplingParams::greedy() };
        let mut s = Sampler::new(params);
        assert_eq!(s.sample(&mut [0.0, 1.0, 0.5, 3.0], &[3, 0, 1]), 3);
        assert_eq!(s.sample(&mut [0.0, 1.0, 0.5, 3.0], &[1, 3]), 2);
    }

    #[test]
    fn top_k_and_top_p_cut_the_candidates() {
        let logits = [1.0f32, 4.0, 3.0, 2.0, 0.0];
        let all = candidates(&logits, 1.0, None, None);
        assert_eq!(all.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4], "id order without a cut");
        assert!((all.iter().map(|c| c.1).sum::<f64>() - 1.0).abs() < 1e-12);
        let k2 = candidates(&logits, 1.0, Some(2), None);
        assert_eq!(k2.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 2]);
        let e = std::f64::consts::E;
        assert!((k2[0].1 - e / (e + 1.0)).abs() < 1e-12);
        // p(1) = 0.636, p(2) = 0.234: 0.7 needs both, 0.5 the first alone.
        assert_eq!(candidates(&logits, 1.0, None, Some(0.7)).len(), 2);
        assert_eq!(candidates(&logits, 1.0, None, Some(0.5)).len(), 1);
        // A high temperature flattens the distribution: 0.7 then needs more.
        assert!(candidates(&logits, 10.0, None, Some(0.7)).len() > 2);
        // Top-p beyond the first sorted head: half of a flat distribution.
        let half = candidates(&vec![0.0f32; 10_000], 1.0, None, Some(0.50005));
        assert_eq!(half.len(), 5001);
        assert_eq!((half[0].0, half[5000].0), (0, 5000), "ties go by id");
        assert!((half[0].1 - 1.0 / 5001.0).abs() < 1e-12);
        // top-k 1 is greedy whatever the temperature.
        let mut s = Sampler::new(SamplingParams { top_k: Some(1), temperature: 5.0, ..SamplingParams::default() });
        assert!((0..20).all(|_| s.sample(&mut logits.clone(), &[]) == 1));
    }

    #[test]
    fn draws_follow_the_probabilities_and_the_seed() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let params = SamplingParams { temperature: 1.0, repeat_penalty: 1.0, seed: 7, ..SamplingParams::default() };
        let run = |params: SamplingParams| {
            let mut s = Sampler::new(params);
            (0..4000).map(|_| s.sample(&mut logits.clone(), &[])).collect::<Vec<u32>>()
        };
        let a = run(params.clone());
        assert_eq!(a, run(params.clone()), "same seed, same draws");
        assert_ne!(a, run(SamplingParams { seed: 8, ..params }), "another seed, other draws");
        let ones = a.iter().filter(|&&t| t == 1).count() as f64 / a.len() as f64;
        assert!((ones - 0.75).abs() < 0.03, "token 1 has p = 0.75, drawn {ones}");
        assert!(!a.contains(&2), "a token of probability 0 is never drawn");
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        let bad = [
            SamplingParams { temperature: -1.0, ..SamplingParams::default() },
            SamplingParams { top_k: Some(0), ..SamplingParams::default() },
            SamplingParams { top_p: Some(0.0), ..SamplingParams::default() },
            SamplingParams { top_p: Some(1.5), ..SamplingParams::default() },
            SamplingParams { repeat_penalty: 0.0, ..SamplingParams::default() },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
        }
        assert!(SamplingParams::default().validate().is_ok());
    }

    #[test]
    fn stop_strings_hold_back_possible_starts_and_cut_at_the_first_match() {
        let mut s = StopStrings::new(vec!["\nUser:".into(), "END".into()]);
        assert_eq!(s.push("Hello"), Released { text: "Hello".into(), stopped: false });
        assert_eq!(s.push(" wor"), Released { text: " wor".into(), stopped: false });
        assert_eq!(s.push("ld\nUs"), Released { text: "ld".into(), stopped: false });
        assert_eq!(s.push("ually"), Released { text: "\nUsually".into(), stopped: false });
        assert_eq!(s.push(" E"), Released { text: " ".into(), stopped: false });
        assert_eq!(s.push("ND and more"), Released { text: "".into(), stopped: true });

        let mut s = StopStrings::new(vec!["é!".into()]);
        assert_eq!(s.push("café"), Released { text: "caf".into(), stopped: false });
        assert_eq!(s.finish(), "é");

        let mut s = StopStrings::new(vec![String::new()]);
        assert_eq!(s.push("abc"), Released { text: "abc".into(), stopped: false });
    }
}
