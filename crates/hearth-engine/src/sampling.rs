//! Token sampling from logits.
//!
//! The chain follows llama.cpp's default order so that the same parameters
//! mean the same thing: repetition/presence/frequency penalties over the
//! recent window, then top-k, top-p (nucleus), min-p, temperature, and a
//! seeded draw. A temperature of zero (or below) is greedy decoding.

use crate::error::EngineError;
use crate::rng::Rng;

/// Sampling parameters; the defaults are greedy with no penalties.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits; `<= 0` means greedy (argmax).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`; 1 disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely; 0 disables.
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of recently seen tokens; 1 disables.
    pub repeat_penalty: f32,
    /// Subtracted once from the logit of every recently seen token.
    pub presence_penalty: f32,
    /// Subtracted per occurrence from the logit of recently seen tokens.
    pub frequency_penalty: f32,
    /// How many of the most recent tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Seed of the random draw.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks that every parameter is in its domain.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |what: &str| Err(EngineError::InvalidParameter(what.to_string()));
        if !self.temperature.is_finite() {
            return bad("temperature must be a finite number");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p must be in [0, 1]");
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad("repeat_penalty must be a positive number");
        }
        if !self.presence_penalty.is_finite() || !self.frequency_penalty.is_finite() {
            return bad("presence_penalty and frequency_penalty must be finite");
        }
        Ok(())
    }

    fn penalises(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }
}

/// A sampler with its random state and reusable buffers.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    candidates: Vec<(u32, f32)>,
    counts: Vec<(u32, u32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self, EngineError> {
        params.validate()?;
        let rng = Rng::new(params.seed);
        Ok(Self {
            params,
            rng,
            candidates: Vec::new(),
            counts: Vec::new(),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits` (modified in place by penalties),
    /// given the tokens seen so far (`history`, prompt included).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        if self.params.penalises() {
            self.apply_penalties(logits, history);
        }
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let p = &self.params;
        let candidates = &mut self.candidates;
        candidates.clear();
        candidates.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_nan())
                .map(|(i, &l)| (i as u32, l)),
        );
        if candidates.is_empty() {
            return 0;
        }
        // Highest logit first, ties by lower id: a total order, so keeping
        // the top k by partial selection sorts them exactly as a full sort
        // would, without sorting the whole vocabulary.
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < candidates.len() {
            candidates.select_nth_unstable_by(p.top_k - 1, order);
            candidates.truncate(p.top_k);
        }
        candidates.sort_unstable_by(order);
        if p.top_p < 1.0 {
            let probs = softmax_of(candidates);
            let mut cumulative = 0.0;
            let mut keep = candidates.len();
            for (i, prob) in probs.iter().enumerate() {
                cumulative += prob;
                if cumulative >= p.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            candidates.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            let threshold = candidates[0].1 + p.min_p.ln();
            let keep = candidates.iter().take_while(|c| c.1 >= threshold).count();
            candidates.truncate(keep.max(1));
        }
        for c in candidates.iter_mut() {
            c.1 /= p.temperature;
        }
        let probs = softmax_of(candidates);
        let mut draw = self.rng.next_f64();
        for (c, prob) in candidates.iter().zip(&probs) {
            if draw < *prob {
                return c.0;
            }
            draw -= prob;
        }
        candidates[candidates.len() - 1].0
    }

    fn apply_penalties(&mut self, logits: &mut [f32], history: &[u32]) {
        let p = &self.params;
        let window = &history[history.len().saturating_sub(p.penalty_last_n)..];
        self.counts.clear();
        for &id in window {
            match self.counts.iter_mut().find(|(t, _)| *t == id) {
                Some((_, n)) => *n += 1,
                None => self.counts.push((id, 1)),
            }
        }
        for &(id, count) in &self.counts {
            let Some(logit) = logits.get_mut(id as usize) else {
                continue;
            };
            if *logit <= 0.0 {
                *logit *= p.repeat_penalty;
            } else {
                *logit /= p.repeat_penalty;
            }
            *logit -= count as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }
}

/// Index of the largest logit (the first one on ties; NaNs never win).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_value {
            best = i;
            best_value = v;
        }
    }
    best as u32
}

/// Probabilities of `candidates` (sorted descending by logit).
fn softmax_of(candidates: &[(u32, f32)]) -> Vec<f64> {
    let max = candidates.first().map_or(0.0, |c| c.1) as f64;
    let exps: Vec<f64> = candidates
        .iter()
        .map(|c| (c.1 as f64 - max).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SamplingParams {
        SamplingParams {
            temperature: 1.0,
            ..SamplingParams::default()
        }
    }

    #[test]
    fn greedy_picks_argmax_and_skips_nan() {
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(s.sample(&mut [0.1, f32::NAN, 3.0, 2.9], &[]), 2);
    }

    #[test]
    fn top_k_one_is_greedy_whatever_the_seed() {
        for seed in 0..20 {
            let mut s = Sampler::new(SamplingParams {
                top_k: 1,
                seed,
                ..params()
            })
            .unwrap();
            assert_eq!(s.sample(&mut [1.0, 5.0, 4.9, -1.0], &[]), 1);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.7 keeps two tokens.
        let logits = [3.0, 2.0, 1.0, 0.0];
        for seed in 0..200 {
            let mut s = Sampler::new(SamplingParams {
                top_p: 0.7,
                seed,
                ..params()
            })
            .unwrap();
            assert!(s.sample(&mut logits.clone(), &[]) <= 1);
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let logits = [5.0, 4.5, 0.0, -3.0];
        for seed in 0..200 {
            let mut s = Sampler::new(SamplingParams {
                min_p: 0.1,
                seed,
                ..params()
            })
            .unwrap();
            assert!(s.sample(&mut logits.clone(), &[]) <= 1);
        }
    }

    #[test]
    fn seeded_draws_repeat_and_follow_the_distribution() {
        let logits = [1.0f32, 1.0, (2.0f32).ln() + 1.0];
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams { seed, ..params() }).unwrap();
            (0..4000)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        let picks = draw(5);
        let share = picks.iter().filter(|&&t| t == 2).count() as f64 / picks.len() as f64;
        assert!((share - 0.5).abs() < 0.04, "token 2 drawn {share}");
    }

    #[test]
    fn penalties_follow_llama_cpp_rules() {
        let p = SamplingParams {
            repeat_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(p).unwrap();
        let mut logits = [4.0, -4.0, 1.0];
        s.apply_penalties(&mut logits, &[0, 0, 1]);
        assert_eq!(logits, [4.0 / 2.0 - 0.5 - 0.5, -8.0 - 0.25 - 0.5, 1.0]);
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        for bad in [
            SamplingParams {
                top_p: 0.0,
                ..params()
            },
            SamplingParams {
                min_p: 1.5,
                ..params()
            },
            SamplingParams {
                temperature: f32::NAN,
                ..params()
            },
            SamplingParams {
                repeat_penalty: 0.0,
                ..params()
            },
        ] {
            assert!(Sampler::new(bad).is_err());
        }
    }
}
