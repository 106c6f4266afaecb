//! The CPU engine: a plain-Rust forward pass over one shard, f32 arithmetic on weights held as
//! the shard file stores them (f16, f32, or Q8_0/Q4_0/Q4_1 blocks read directly by
//! [`matmul`]). It is the oracle every other backend is tested against, and a working `cpu`
//! backend.

pub mod blocks;
pub mod gpt2;
pub mod kquants;
pub mod kv;
pub mod llama;
pub mod matmul;
pub mod ops;

use std::collections::HashMap;
use std::path::Path;

use half::f16;
use splitter::manifest::names;
use splitter::{Architecture, Manifest, ModelConfig, ShardInfo};

use self::kv::LayerCache;
use super::weights::{Matrix, ShardTensors};
use super::{
    Activations, EngineError, LogitsMode, SessionId, ShardExecutor, StepInput, StepOutput,
};

/// Token (and, for GPT-2, position) embeddings, held by the first shard.
struct Embedding {
    tokens: Matrix,            // (V, C)
    positions: Option<Matrix>, // (P, C), GPT-2 only
}

/// Final norm and output head, held by the last shard.
struct Head {
    norm_w: Vec<f16>,         // (C)
    norm_b: Option<Vec<f16>>, // (C), GPT-2 only
    /// `None` when the head is tied and the same shard holds the embedding.
    weight: Option<Matrix>, // (V, C)
}

enum Blocks {
    Gpt2(Vec<gpt2::Block>),
    Llama(Vec<llama::Block>),
}

/// One shard loaded for the CPU.
pub struct CpuShard {
    info: ShardInfo,
    arch: Architecture,
    cfg: ModelConfig,
    embedding: Option<Embedding>,
    blocks: Blocks,
    head: Option<Head>,
    sessions: HashMap<SessionId, Vec<LayerCache>>,
}

impl CpuShard {
    /// Loads shard `index` of the model in `dir` described by `manifest`.
    pub fn load(dir: &Path, manifest: &Manifest, index: usize) -> Result<Self, EngineError> {
        let info = manifest
            .shards
            .get(index)
            .ok_or_else(|| EngineError::Load {
                path: dir.display().to_string(),
                what: format!("no shard {index} (the model has {})", manifest.shards.len()),
            })?;
        let cfg = &manifest.config;
        let mut t = ShardTensors::load(&dir.join(&info.file), info)?;
        let (v, c) = (cfg.vocab_size, cfg.hidden_size);
        let arch = manifest.architecture;
        let embedding = if info.has_embedding {
            Some(match arch {
                Architecture::Gpt2 => Embedding {
                    tokens: t.take_matrix(names::gpt2::WTE, v, c)?,
                    positions: Some(t.take_matrix(names::gpt2::WPE, cfg.context_length, c)?),
                },
                Architecture::Llama => Embedding {
                    tokens: t.take_matrix(names::llama::EMBED, v, c)?,
                    positions: None,
                },
            })
        } else {
            None
        };
        let blocks = match arch {
            Architecture::Gpt2 => Blocks::Gpt2(
                info.layer_range()
                    .map(|i| gpt2::Block::load(&mut t, i, cfg))
                    .collect::<Result<_, _>>()?,
            ),
            Architecture::Llama => Blocks::Llama(
                info.layer_range()
                    .map(|i| llama::Block::load(&mut t, i, cfg))
                    .collect::<Result<_, _>>()?,
            ),
        };
        let head = if info.has_head {
            let (norm_w, norm_b, head_name) = match arch {
                Architecture::Gpt2 => (
                    t.take(names::gpt2::LN_F_W, &[c])?,
                    Some(t.take(names::gpt2::LN_F_B, &[c])?),
                    names::gpt2::HEAD,
                ),
                Architecture::Llama => {
                    (t.take(names::llama::NORM, &[c])?, None, names::llama::HEAD)
                }
            };
            let weight = if cfg.tied_head && info.has_embedding {
                None
            } else {
                Some(t.take_matrix(head_name, v, c)?)
            };
            Some(Head {
                norm_w,
                norm_b,
                weight,
            })
        } else {
            None
        };
        t.finish()?;
        Ok(CpuShard {
            info: info.clone(),
            arch,
            cfg: cfg.clone(),
            embedding,
            blocks,
            head,
            sessions: HashMap::new(),
        })
    }

    /// Turns token ids at positions `pos..` into hidden states `(T, C)`.
    fn embed(&self, emb: &Embedding, tokens: &[u32], pos: usize) -> Result<Vec<f32>, EngineError> {
        let c = self.cfg.hidden_size;
        let mut x = vec![0f32; tokens.len() * c]; // (T, C)
        let mut p = vec![0f32; c]; // (C)
        for (ti, &id) in tokens.iter().enumerate() {
            if id as usize >= self.cfg.vocab_size {
                return Err(EngineError::Token {
                    id,
                    vocab: self.cfg.vocab_size,
                });
            }
            let row = &mut x[ti * c..(ti + 1) * c];
            emb.tokens.row_f32(id as usize, row);
            if let Some(wpe) = &emb.positions {
                wpe.row_f32(pos + ti, &mut p);
                ops::add_inplace(row, &p);
            }
        }
        Ok(x)
    }

    /// Final norm and output head on the rows of `x (T, C)` that `mode` asks for: `(rows, V)`.
    fn logits(&self, head: &Head, x: &[f32], mode: LogitsMode) -> Activations {
        let (c, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let t = x.len() / c;
        let mut rows = match mode {
            LogitsMode::All => x.to_vec(),
            LogitsMode::Last => x[(t - 1) * c..].to_vec(),
        }; // (R, C)
        match &head.norm_b {
            Some(b) => ops::layernorm(&mut rows, &head.norm_w, b, c, self.cfg.norm_eps),
            None => ops::rmsnorm(&mut rows, &head.norm_w, c, self.cfg.norm_eps),
        }
        let r = rows.len() / c;
        let weight = match (&head.weight, &self.embedding) {
            (Some(w), _) => w,
            (None, Some(e)) => &e.tokens,
            (None, None) => unreachable!("load() keeps a tied head only beside the embedding"),
        };
        let mut out = vec![0f32; r * v]; // (R, V)
        matmul::matmul(&mut out, &rows, weight, None, r);
        Activations {
            rows: r,
            cols: v,
            data: out,
        }
    }
}

impl ShardExecutor for CpuShard {
    fn shard(&self) -> &ShardInfo {
        &self.info
    }

    fn memory(&self) -> crate::engine::MemoryUse {
        // Weights as the shard file holds them (loaded as they are, blocks included); caches
        // are f32.
        let kv = self
            .sessions
            .values()
            .flatten()
            .map(|c| (c.k.capacity() + c.v.capacity()) as u64 * 4)
            .sum();
        crate::engine::MemoryUse {
            weights: self.info.bytes,
            kv,
        }
    }

    fn open_session(&mut self, session: SessionId) -> Result<(), EngineError> {
        if self.sessions.contains_key(&session) {
            return Err(EngineError::Session {
                session,
                what: "already open".into(),
            });
        }
        let n = self.info.layer_range().len();
        self.sessions
            .insert(session, vec![LayerCache::default(); n]);
        Ok(())
    }

    fn close_session(&mut self, session: SessionId) -> Result<(), EngineError> {
        self.sessions
            .remove(&session)
            .map(|_| ())
            .ok_or(EngineError::Session {
                session,
                what: "not open".into(),
            })
    }

    fn session_len(&self, session: SessionId) -> Option<usize> {
        let kv_dim = self.cfg.n_kv_heads * self.cfg.head_dim;
        self.sessions
            .get(&session)
            .map(|caches| caches[0].k.len() / kv_dim)
    }

    fn truncate_session(&mut self, session: SessionId, len: usize) -> Result<(), EngineError> {
        crate::engine::check_truncate(session, self.session_len(session), len)?;
        let kv_dim = self.cfg.n_kv_heads * self.cfg.head_dim;
        for c in self.sessions.get_mut(&session).expect("checked") {
            c.k.truncate(len * kv_dim);
            c.v.truncate(len * kv_dim);
        }
        Ok(())
    }

    fn step(
        &mut self,
        session: SessionId,
        pos: usize,
        input: StepInput<'_>,
        mode: LogitsMode,
    ) -> Result<StepOutput, EngineError> {
        let c = self.cfg.hidden_size;
        input.check(
            session,
            self.session_len(session),
            pos,
            &self.info,
            &self.cfg,
        )?;
        let t = input.len();
        let mut x = match (input, &self.embedding) {
            (StepInput::Tokens(ids), Some(emb)) => self.embed(emb, ids, pos)?,
            (StepInput::Hidden(h), _) => h.data.clone(),
            (StepInput::Tokens(_), None) => {
                unreachable!("checked: only the first shard takes tokens")
            }
        }; // (T, C)
        let caches = self.sessions.get_mut(&session).expect("checked above");
        match &self.blocks {
            Blocks::Gpt2(blocks) => {
                for (b, cache) in blocks.iter().zip(caches.iter_mut()) {
                    b.forward(&mut x, cache, pos, &self.cfg);
                }
            }
            Blocks::Llama(blocks) => {
                for (b, cache) in blocks.iter().zip(caches.iter_mut()) {
                    b.forward(&mut x, cache, pos, &self.cfg);
                }
            }
        }
        Ok(match &self.head {
            Some(head) => StepOutput::Logits(self.logits(head, &x, mode)),
            None => StepOutput::Hidden(Activations {
                rows: t,
                cols: c,
                data: x,
            }),
        })
    }
}

impl CpuShard {
    /// The architecture this shard belongs to.
    pub fn architecture(&self) -> Architecture {
        self.arch
    }
}
