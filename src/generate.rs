//! Generation on shards held in this process: run the shards one after another for each step,
//! sample from the last shard's logits, and stream text as it completes.
//!
//! The distributed coordinator runs the same loop with the hops going over the network; this is
//! the single-process form used by `synapse generate` and by tests.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::engine::{Activations, LogitsMode, SessionId, ShardExecutor, StepInput, StepOutput};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{TextStream, Tokenizer};

/// A chain of shards covering the whole model, run in order.
pub struct LocalPipeline {
    shards: Vec<Box<dyn ShardExecutor>>,
}

impl LocalPipeline {
    /// Chains `shards`, which must be in order and start at the embedding.
    pub fn new(shards: Vec<Box<dyn ShardExecutor>>) -> Result<Self> {
        if shards.is_empty() {
            bail!("a pipeline needs at least one shard");
        }
        for (i, s) in shards.iter().enumerate() {
            if s.shard().index != i {
                bail!("shard {} is at place {i} of the pipeline", s.shard().index);
            }
        }
        if !shards[shards.len() - 1].shard().has_head {
            bail!("the last shard of the pipeline has no output head");
        }
        Ok(LocalPipeline { shards })
    }

    /// Opens `session` on every shard.
    pub fn open(&mut self, session: SessionId) -> Result<()> {
        for s in &mut self.shards {
            s.open_session(session)?;
        }
        Ok(())
    }

    /// Closes `session` on every shard, freeing its caches.
    pub fn close(&mut self, session: SessionId) -> Result<()> {
        for s in &mut self.shards {
            s.close_session(session)?;
        }
        Ok(())
    }

    /// Runs `tokens` at positions `pos..` through every shard; returns the logits.
    pub fn forward(
        &mut self,
        session: SessionId,
        pos: usize,
        tokens: &[u32],
        mode: LogitsMode,
    ) -> Result<Activations> {
        let mut hidden: Option<Activations> = None;
        for s in &mut self.shards {
            let input = match &hidden {
                None => StepInput::Tokens(tokens),
                Some(h) => StepInput::Hidden(h),
            };
            match s.step(session, pos, input, mode)? {
                StepOutput::Hidden(h) => hidden = Some(h),
                StepOutput::Logits(l) => return Ok(l),
            }
        }
        unreachable!("new() checked that the last shard has the head")
    }
}

/// What one generation produced.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    /// Generated ids only (the prompt excluded).
    pub ids: Vec<u32>,
    pub text: String,
    #[serde(skip)]
    pub prefill_time: Duration,
    #[serde(skip)]
    pub decode_time: Duration,
}

/// Generates up to `max_tokens` after `prompt_ids`, calling `on_text` with each completed piece
/// of text. Stops early at any of `eos`.
pub fn generate(
    pipe: &mut LocalPipeline,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
    max_tokens: usize,
    eos: &[u32],
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    if prompt_ids.is_empty() {
        bail!("the prompt is empty: nothing to continue");
    }
    params.validate().map_err(anyhow::Error::msg)?;
    let session: SessionId = 1;
    pipe.open(session)?;
    let result = run(
        pipe,
        session,
        tok,
        prompt_ids,
        params,
        max_tokens,
        eos,
        &mut on_text,
    );
    pipe.close(session)?;
    result
}

#[allow(clippy::too_many_arguments)]
fn run(
    pipe: &mut LocalPipeline,
    session: SessionId,
    tok: &Tokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
    max_tokens: usize,
    eos: &[u32],
    on_text: &mut impl FnMut(&str),
) -> Result<Generation> {
    let mut sampler = Sampler::new(params.clone());
    let mut stream = TextStream::default();
    let mut history = prompt_ids.to_vec();
    let mut ids = Vec::new();
    let mut text = String::new();
    let mut emit = |piece: Option<String>, text: &mut String| {
        if let Some(p) = piece {
            on_text(&p);
            text.push_str(&p);
        }
    };
    let start = Instant::now();
    let mut logits = pipe
        .forward(session, 0, prompt_ids, LogitsMode::Last)
        .context("prefill")?;
    let prefill_time = start.elapsed();
    let start = Instant::now();
    while ids.len() < max_tokens {
        let next = sampler.sample_logits(&logits.data, &history);
        if eos.contains(&next) {
            break;
        }
        ids.push(next);
        history.push(next);
        emit(stream.push(tok, next)?, &mut text);
        if ids.len() == max_tokens {
            break;
        }
        let pos = history.len() - 1;
        logits = pipe
            .forward(session, pos, &[next], LogitsMode::Last)
            .with_context(|| format!("decode step at position {pos}"))?;
    }
    emit(stream.finish(tok)?, &mut text);
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        ids,
        text,
        prefill_time,
        decode_time: start.elapsed(),
    })
}
