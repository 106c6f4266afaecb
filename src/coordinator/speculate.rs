//! Speculative decoding's decisions, as plain functions and state (no I/O): which tokens to
//! draft ([`prompt_lookup`]: continue an n-gram that already occurred in the prompt or the
//! output, no draft model needed) and how many ([`DraftControl`]: from the measured acceptance
//! rate and the measured cost of a step of one row against a step of several, so speculation
//! never makes a session slower than plain decoding; it turns itself off and probes now and
//! then).
//!
//! The drafts of a step go through the pipeline as one multi-token step after the session's
//! last token; the last node returns top logits for every position, and the session machine
//! (session.rs) keeps the longest prefix of drafts that its own sampler would have produced,
//! plus the sampler's token at the first mismatch. Greedy or seeded, the output is the one a
//! non-speculative run gives, token for token (see sampling.rs on the per-position seed).

/// Speculation settings of a coordinator (`--speculate`, `--draft-max`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeculateConfig {
    /// Draft at all (a request may still turn it off for itself).
    pub enabled: bool,
    /// Most tokens drafted in one step.
    pub max_draft: usize,
    /// Shortest n-gram (suffix of the sequence) a draft continues.
    pub ngram_min: usize,
    /// Longest n-gram tried first.
    pub ngram_max: usize,
}

impl Default for SpeculateConfig {
    fn default() -> Self {
        SpeculateConfig {
            enabled: true,
            max_draft: 8,
            ngram_min: 3,
            ngram_max: 4,
        }
    }
}

/// Prompt-lookup drafting: the tokens that followed the most recent earlier occurrence of the
/// sequence's last n tokens (n from `ngram_max` down to `ngram_min`, longest match first), at
/// most `max` of them. Where that continuation reaches the end of the sequence the copy goes
/// on copying itself (the text is taken to repeat with its period), so a loop of a few tokens
/// drafts `max` tokens, not one. Empty when no suffix occurred before.
pub fn prompt_lookup(seq: &[u32], ngram_min: usize, ngram_max: usize, max: usize) -> Vec<u32> {
    let len = seq.len();
    if max == 0 || ngram_min == 0 {
        return Vec::new();
    }
    for n in (ngram_min..=ngram_max).rev() {
        if len < n + 1 {
            continue;
        }
        let pattern = &seq[len - n..];
        // The most recent occurrence that is not the suffix itself.
        if let Some(start) = (0..len - n).rev().find(|&i| &seq[i..i + n] == pattern) {
            let from = start + n;
            let period = len - from;
            return (0..max).map(|j| seq[from + j % period]).collect();
        }
    }
    Vec::new()
}

/// Decays the evidence so that the estimates follow a session whose text changes character.
const DECAY: f64 = 0.9;
/// Steps between probes while drafting is off.
const PROBE_EVERY: usize = 8;
/// Tokens drafted by a probe.
const PROBE_DRAFT: usize = 2;

/// How many tokens a session drafts next, learned from its own steps: the acceptance of each
/// drafted token (modelled as independent with probability `a`, so `n` drafts yield
/// `(1 - a^(n+1)) / (1 - a)` tokens a step) and the step time `base + n * per_draft`, both
/// measured; the draft length maximises tokens per second, and is 0 (plain decoding) when
/// no length beats it.
#[derive(Debug, Clone)]
pub struct DraftControl {
    max: usize,
    /// Decayed counts of accepted and rejected drafted tokens (a step that accepted `m` of `n`
    /// counts `m` successes and one failure if `m < n`).
    accepted: f64,
    rejected: f64,
    /// Mean time of a one-row decode step, s (decayed mean).
    base: Option<f64>,
    /// Mean extra time per drafted row, s.
    per_draft: Option<f64>,
    /// Steps since drafting was last tried while off.
    idle: usize,
    /// Totals for the session's report.
    pub drafted_total: usize,
    pub accepted_total: usize,
}

impl DraftControl {
    /// A controller drafting at most `max` tokens a step.
    pub fn new(max: usize) -> DraftControl {
        DraftControl {
            max,
            // A prior of a = 0.8, worth two and a half tokens of evidence, until the session
            // shows its own: a prompt-lookup draft exists only where the text repeats, and a
            // couple of rejections are enough to shorten the drafts.
            accepted: 2.0,
            rejected: 0.5,
            base: None,
            per_draft: None,
            idle: 0,
            drafted_total: 0,
            accepted_total: 0,
        }
    }

    /// Estimated probability that a drafted token is accepted.
    pub fn acceptance(&self) -> f64 {
        self.accepted / (self.accepted + self.rejected)
    }

    /// Expected tokens of a step that drafts `n`.
    fn tokens(a: f64, n: usize) -> f64 {
        (0..=n).map(|i| a.powi(i as i32)).sum()
    }

    /// The extra cost of a drafted row relative to a one-row step (a prior of a tenth until
    /// measured: a multi-row product reads the weights once, so a row costs far less than a step).
    fn relative_cost(&self) -> f64 {
        match (self.base, self.per_draft) {
            (Some(b), Some(p)) if b > 0.0 => (p / b).max(0.0),
            _ => 0.1,
        }
    }

    /// The draft length that maximises expected tokens per unit of time, in `0..=limit`.
    pub fn best_len(&self, limit: usize) -> usize {
        let a = self.acceptance();
        let c = self.relative_cost();
        let rate = |n: usize| Self::tokens(a, n) / (1.0 + c * n as f64);
        (0..=limit.min(self.max))
            .max_by(|&x, &y| rate(x).total_cmp(&rate(y)).then(y.cmp(&x)))
            .unwrap_or(0)
    }

    /// How many tokens to draft now, with `available` candidate tokens from the drafter.
    pub fn draft_len(&mut self, available: usize) -> usize {
        if available == 0 {
            return 0;
        }
        let n = self.best_len(available);
        if n > 0 {
            self.idle = 0;
            return n;
        }
        // Off: try a short draft now and then, so a session whose text turns repetitive
        // turns it back on.
        self.idle += 1;
        if self.idle >= PROBE_EVERY {
            self.idle = 0;
            return PROBE_DRAFT.min(available).min(self.max);
        }
        0
    }

    /// A decode step of `1 + drafted` rows took `secs` (when measured) and `accepted` of its
    /// drafts were kept.
    pub fn observe(&mut self, drafted: usize, accepted: usize, secs: Option<f64>) {
        if drafted > 0 {
            self.accepted = self.accepted * DECAY + accepted as f64;
            self.rejected = self.rejected * DECAY + f64::from(u8::from(accepted < drafted));
            self.drafted_total += drafted;
            self.accepted_total += accepted;
        }
        let Some(secs) = secs.filter(|s| s.is_finite() && *s > 0.0) else {
            return;
        };
        let mean =
            |old: Option<f64>, x: f64| Some(old.map_or(x, |o| o * DECAY + x * (1.0 - DECAY)));
        if drafted == 0 {
            self.base = mean(self.base, secs);
        } else if let Some(b) = self.base {
            self.per_draft = mean(self.per_draft, ((secs - b) / drafted as f64).max(0.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_continues_the_latest_earlier_occurrence_of_the_longest_suffix() {
        //            0  1  2  3  4  5  6  7  8  9
        let seq = [1, 2, 3, 4, 9, 2, 3, 7, 8, 2, 3];
        // Suffix [2, 3] occurred at 1 and 5: the latest (5) continues with 7, 8, 2.
        assert_eq!(prompt_lookup(&seq, 2, 4, 3), vec![7, 8, 2]);
        // A longer suffix [8, 2, 3] never occurred before; [2, 3] did. Past the end of the
        // sequence the copy repeats with its period ([7, 8, 2, 3]).
        assert_eq!(prompt_lookup(&seq, 2, 3, 8), vec![7, 8, 2, 3, 7, 8, 2, 3]);
        // At most `max`.
        assert_eq!(prompt_lookup(&seq, 2, 4, 1), vec![7]);
        assert!(prompt_lookup(&[5, 6, 7], 2, 4, 4).is_empty(), "no repeat");
        assert!(prompt_lookup(&[], 2, 4, 4).is_empty());
        assert!(prompt_lookup(&seq, 2, 4, 0).is_empty());
        // The longest match wins over a more recent shorter one.
        let seq = [1, 2, 3, 5, 0, 3, 6, 1, 2, 3];
        assert_eq!(prompt_lookup(&seq, 1, 3, 2), vec![5, 0]);
    }

    #[test]
    fn a_repeated_run_drafts_its_own_continuation() {
        let seq: Vec<u32> = [10, 11, 12, 13].repeat(3);
        assert_eq!(prompt_lookup(&seq, 2, 4, 6), vec![10, 11, 12, 13, 10, 11]);
        // A token repeated: its last occurrence is right before the suffix, the copy still
        // gives a whole draft.
        let seq = [5, 9, 9, 9, 9];
        assert_eq!(prompt_lookup(&seq, 3, 4, 4), vec![9, 9, 9, 9]);
    }

    #[test]
    fn drafting_follows_acceptance_and_cost() {
        let mut c = DraftControl::new(8);
        // Rows cost little and every draft is accepted: draft the most.
        for _ in 0..20 {
            c.observe(0, 0, Some(0.010));
            c.observe(8, 8, Some(0.012));
        }
        assert!(c.acceptance() > 0.9, "{}", c.acceptance());
        assert_eq!(c.draft_len(8), 8);
        assert_eq!(c.draft_len(3), 3, "no more than the drafter has");
        assert_eq!(c.draft_len(0), 0);
        assert_eq!((c.drafted_total, c.accepted_total), (160, 160));

        // Nothing is accepted: drafting turns off, and probes now and then.
        let mut c = DraftControl::new(8);
        for _ in 0..30 {
            c.observe(0, 0, Some(0.010));
            c.observe(4, 0, Some(0.014));
        }
        assert!(c.acceptance() < 0.1);
        let lens: Vec<usize> = (0..2 * PROBE_EVERY).map(|_| c.draft_len(8)).collect();
        assert_eq!(lens.iter().filter(|&&n| n > 0).count(), 2, "{lens:?}");
        assert!(lens.iter().all(|&n| n == 0 || n == PROBE_DRAFT));

        // Half accepted, but a row costs as much as a step: not worth it.
        let mut c = DraftControl::new(8);
        for _ in 0..30 {
            c.observe(0, 0, Some(0.010));
            c.observe(2, 1, Some(0.030));
        }
        assert_eq!(c.best_len(8), 0);
        // The same acceptance with cheap rows: worth a few.
        let mut c = DraftControl::new(8);
        for _ in 0..30 {
            c.observe(0, 0, Some(0.010));
            c.observe(2, 1, Some(0.0105));
        }
        let n = c.best_len(8);
        assert!((1..=8).contains(&n), "{n}");
    }
}
