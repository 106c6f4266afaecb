//! Choosing the next token from logits: greedy, temperature, top-k, top-p and repetition
//! penalty, with a seeded generator so a seed reproduces a run. It works on a candidate list
//! `(id, logit)`, so the same code serves full logits and a shard's top-k.
//!
//! The random number behind the token at position `p` comes from `(seed, p)` alone (a ChaCha8
//! stream per position), not from how many draws came before. So a seeded run gives the same
//! tokens however it was computed: with speculative drafts (a drafted token is accepted when
//! the target's own sample at that position equals it, which is exact speculative sampling
//! for a draft that proposes one token with certainty), after a replay, or in a batch.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Sampling parameters of one generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p`; 1 keeps all.
    pub top_p: f32,
    /// Penalty above 1 for tokens already in the prompt or output (Hugging Face's rule).
    pub repetition_penalty: f32,
    /// Seed of the random generator; a fixed seed gives a reproducible run.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks the ranges, naming the parameter that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// A sampler: the parameters and the seed of its per-position random numbers.
pub struct Sampler {
    params: SamplingParams,
}

impl Sampler {
    /// A sampler seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        Sampler { params }
    }

    /// The uniform number in [0, 1) that decides the token at `position`.
    fn uniform(&self, position: usize) -> f32 {
        let mut rng = ChaCha8Rng::seed_from_u64(self.params.seed);
        rng.set_stream(position as u64);
        rng.random::<f32>()
    }

    /// Picks a token from full logits (index = id).
    pub fn sample_logits(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut cands: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l))
            .collect();
        self.sample(&mut cands, history)
    }

    /// Picks a token from candidates `(id, logit)`; `history` is the prompt and output so far,
    /// and its length is the position of the token picked. Panics on an empty candidate list
    /// (a caller bug, never input).
    pub fn sample(&mut self, cands: &mut [(u32, f32)], history: &[u32]) -> u32 {
        assert!(!cands.is_empty(), "no candidates to sample from");
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            for (id, l) in cands.iter_mut() {
                if history.contains(id) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        // Most likely first; ties broken by the lower id so greedy is deterministic.
        cands.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.temperature == 0.0 {
            return cands[0].0;
        }
        let mut n = cands.len();
        if p.top_k > 0 {
            n = n.min(p.top_k);
        }
        let max = cands[0].1;
        let mut probs: Vec<f32> = cands[..n]
            .iter()
            .map(|c| ((c.1 - max) / p.temperature).exp())
            .collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = n;
            for (i, q) in probs.iter().enumerate() {
                acc += q;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.uniform(history.len()) * total;
        for (i, q) in probs.iter().enumerate() {
            r -= q;
            if r <= 0.0 {
                return cands[i].0;
            }
        }
        cands[probs.len() - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f32) -> SamplingParams {
        SamplingParams {
            temperature: t,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_takes_argmax_and_lowest_id_on_ties() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample_logits(&[0.1, 3.0, -1.0, 3.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_can_change_the_greedy_choice() {
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            ..params(0.0)
        });
        assert_eq!(s.sample_logits(&[2.0, 1.5], &[0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_reproduces() {
        let mut s = Sampler::new(SamplingParams {
            top_k: 1,
            ..params(1.0)
        });
        let history = [3u32; 64];
        for n in 0..20 {
            assert_eq!(s.sample_logits(&[0.0, 0.5, 0.4], &history[..n]), 1);
        }
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params(1.0)
            });
            (0..30)
                .map(|n| s.sample_logits(&logits, &history[..n]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn the_token_at_a_position_depends_on_the_seed_and_position_alone() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let history = [5u32; 40];
        let mut a = Sampler::new(SamplingParams {
            seed: 11,
            ..params(1.0)
        });
        let forward: Vec<u32> = (0..40)
            .map(|n| a.sample_logits(&logits, &history[..n]))
            .collect();
        // Drawn in another order (as a replay or a verification step would), the same tokens.
        let mut b = Sampler::new(SamplingParams {
            seed: 11,
            ..params(1.0)
        });
        let backward: Vec<u32> = (0..40)
            .rev()
            .map(|n| b.sample_logits(&logits, &history[..n]))
            .collect();
        assert_eq!(forward, backward.into_iter().rev().collect::<Vec<_>>());
        assert!(
            forward
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 3,
            "positions draw different numbers: {forward:?}"
        );
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Probabilities about 0.84 / 0.11 / 0.04: top_p 0.5 keeps only id 2.
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.5,
            seed: 3,
            ..params(1.0)
        });
        let history = [0u32; 50];
        for n in 0..50 {
            assert_eq!(s.sample_logits(&[1.0, 0.0, 3.0], &history[..n]), 2);
        }
    }

    #[test]
    fn temperature_sampling_follows_the_distribution() {
        let mut s = Sampler::new(SamplingParams {
            seed: 1,
            ..params(1.0)
        });
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25 / 0.75
        let history = vec![7u32; 4000];
        let ones = (0..4000)
            .filter(|&n| s.sample_logits(&logits, &history[..n]) == 1)
            .count();
        let frac = ones as f32 / 4000.0;
        assert!(
            (frac - 0.75).abs() < 0.03,
            "sampled id 1 with frequency {frac}"
        );
    }
}
