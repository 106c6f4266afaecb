//! What the simulator knows of a model: its shapes (from a model directory's manifest, or a
//! named preset for a model nobody has downloaded), the weight type its matrices are stored in,
//! and from those the bytes and multiply-adds of every layer, the embedding and the head.
//!
//! Bytes come from the shapes and the GGML block sizes (`splitter::quant::GgmlType`), shards
//! from the splitter's own balancing (`splitter::plan::balance`), with the same rule as
//! `splitter::write::split` for where the embedding and a tied head go.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use splitter::checkpoint::{Part, canonical_tensors, head_name};
use splitter::quant::GgmlType;
use splitter::{Architecture, Manifest, ModelConfig};

use super::SimError;

/// How the matrices of a model are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightType {
    /// What `synapse split` writes today.
    F16,
    Q8_0,
    Q4_0,
    Q4_1,
    /// llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for the head and for `attn_v`/`ffn_down` of the
    /// layers llama.cpp gives more bits (its `use_more_bits`).
    #[serde(rename = "q4_k_m")]
    Q4KM,
}

impl WeightType {
    /// Every weight type, for help texts.
    pub const ALL: [WeightType; 5] = [
        WeightType::F16,
        WeightType::Q8_0,
        WeightType::Q4_0,
        WeightType::Q4_1,
        WeightType::Q4KM,
    ];

    /// Its name as flags and scenario files spell it.
    pub fn name(self) -> &'static str {
        match self {
            WeightType::F16 => "f16",
            WeightType::Q8_0 => "q8_0",
            WeightType::Q4_0 => "q4_0",
            WeightType::Q4_1 => "q4_1",
            WeightType::Q4KM => "q4_k_m",
        }
    }

    /// Parses a name (case-insensitive); the error lists the known ones.
    pub fn parse(s: &str) -> Result<WeightType, SimError> {
        WeightType::ALL
            .into_iter()
            .find(|w| w.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                SimError::Invalid(format!(
                    "unknown weight type `{s}`: choose one of {}",
                    WeightType::ALL.map(WeightType::name).join(", ")
                ))
            })
    }

    /// The GGML type of one matrix.
    fn ggml(self, role: Role, layer: usize, n_layers: usize) -> GgmlType {
        match self {
            WeightType::F16 => GgmlType::F16,
            WeightType::Q8_0 => GgmlType::Q8_0,
            WeightType::Q4_0 => GgmlType::Q4_0,
            WeightType::Q4_1 => GgmlType::Q4_1,
            WeightType::Q4KM => match role {
                Role::Head => GgmlType::Q6_K,
                Role::MoreBits if use_more_bits(layer, n_layers) => GgmlType::Q6_K,
                _ => GgmlType::Q4_K,
            },
        }
    }

    /// Bytes of a vector (norm weights, biases): f16 in f16 shards, f32 beside quantized blocks.
    fn vector_bytes(self, n: usize) -> u64 {
        n as u64 * if self == WeightType::F16 { 2 } else { 4 }
    }
}

/// What a matrix does, which decides its type in a mixed format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Head,
    /// `attn_v` and `ffn_down`, which Q4_K_M keeps at Q6_K in some layers.
    MoreBits,
    Other,
}

/// llama.cpp's `use_more_bits(i_layer, n_layers)`.
fn use_more_bits(i: usize, n: usize) -> bool {
    // After the first eighth, every third layer (`i >= n / 8` holds there).
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Bytes of a `rows x cols` matrix stored as `ty`. A row that is not a whole number of blocks
/// falls back as llama.cpp does (K types to the 32-wide type of about the same size).
fn matrix_bytes(ty: GgmlType, rows: usize, cols: usize) -> u64 {
    let fallback = |t: GgmlType| match t {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q6_K => GgmlType::Q8_0,
        _ => GgmlType::F16,
    };
    let mut t = ty;
    for _ in 0..3 {
        if cols.is_multiple_of(t.block_size())
            && let Some(b) = t.bytes_for((rows * cols) as u64)
        {
            return b;
        }
        t = fallback(t);
    }
    (rows * cols) as u64 * 2
}

/// A model as the simulator sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelShape {
    pub name: String,
    pub arch: Architecture,
    pub config: ModelConfig,
    pub weights: WeightType,
}

/// Bytes and multiply-adds of one part of the model.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PartCost {
    pub bytes: u64,
    /// Weights used per token (one multiply-add each): matrix elements, lookups excluded.
    pub macs: u64,
}

/// One shard: a layer range, its size, and whether it holds the embedding and the head.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShardShape {
    pub index: usize,
    /// First and last layer, inclusive.
    pub layers: [usize; 2],
    pub bytes: u64,
    pub has_embedding: bool,
    pub has_head: bool,
}

impl ShardShape {
    pub fn layer_range(&self) -> Range<usize> {
        self.layers[0]..self.layers[1] + 1
    }
}

/// The model shapes `--shape` knows, by name.
pub const PRESETS: [&str; 4] = [
    "SmolLM2-135M",
    "Llama-3.2-1B",
    "Llama-3.2-3B",
    "Llama-3.1-8B",
];

#[allow(clippy::too_many_arguments)]
fn llama(
    vocab: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv: usize,
    head_dim: usize,
    ffn: usize,
    tied: bool,
    context: usize,
) -> ModelConfig {
    ModelConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        n_layers: layers,
        n_heads: heads,
        n_kv_heads: kv,
        head_dim,
        ffn_size: ffn,
        context_length: context,
        norm_eps: 1e-5,
        rope_theta: 500_000.0,
        tied_head: tied,
        bos_token_id: None,
        eos_token_ids: Vec::new(),
        add_bos_token: false,
    }
}

impl ModelShape {
    /// A named shape (case-insensitive, "-Instruct" ignored) with the given weight type. The
    /// numbers are those of the models' published `config.json`.
    pub fn preset(name: &str, weights: WeightType) -> Result<ModelShape, SimError> {
        let key = name.to_ascii_lowercase();
        let key = key.trim_end_matches("-instruct");
        let (canonical, config) = match key {
            "smollm2-135m" => (
                "SmolLM2-135M",
                llama(49152, 576, 30, 9, 3, 64, 1536, true, 8192),
            ),
            "llama-3.2-1b" => (
                "Llama-3.2-1B",
                llama(128256, 2048, 16, 32, 8, 64, 8192, true, 131072),
            ),
            "llama-3.2-3b" => (
                "Llama-3.2-3B",
                llama(128256, 3072, 28, 24, 8, 128, 8192, true, 131072),
            ),
            "llama-3.1-8b" => (
                "Llama-3.1-8B",
                llama(128256, 4096, 32, 32, 8, 128, 14336, false, 131072),
            ),
            _ => {
                return Err(SimError::Invalid(format!(
                    "unknown model shape `{name}`: choose one of {}, or give a model directory",
                    PRESETS.join(", ")
                )));
            }
        };
        Ok(ModelShape {
            name: canonical.into(),
            arch: Architecture::Llama,
            config,
            weights,
        })
    }

    /// The shapes of a split model directory, priced as the manifest's summary type (`dtype`):
    /// a K-quant summary is priced as the Q4_K_M mix, f32 as f16 (the simulator has no f32).
    pub fn from_manifest(m: &Manifest) -> Result<ModelShape, SimError> {
        let weights = match m.dtype.as_str() {
            "q4_k" | "q6_k" => WeightType::Q4KM,
            "f32" => WeightType::F16,
            other => WeightType::parse(other)?,
        };
        Ok(ModelShape {
            name: m.source.name.clone(),
            arch: m.architecture,
            config: m.config.clone(),
            weights,
        })
    }

    /// Bytes and multiply-adds of `part`, as `splitter::write::split` lays it out; the tied
    /// head's copy in the last shard is counted by [`ModelShape::head`].
    fn part(&self, part: Part) -> PartCost {
        let c = &self.config;
        let mut cost = PartCost::default();
        let layer = match part {
            Part::Layer(i) => i,
            _ => 0,
        };
        for (p, name, shape) in canonical_tensors(self.arch, c) {
            if p != part || (c.tied_head && name == head_name(self.arch)) {
                continue;
            }
            match shape.as_slice() {
                [rows, cols] => {
                    let role = if part == Part::Head {
                        Role::Head
                    } else if name.contains("v_proj") || name.contains("down_proj") {
                        Role::MoreBits
                    } else {
                        Role::Other
                    };
                    let ty = self.weights.ggml(role, layer, c.n_layers);
                    cost.bytes += matrix_bytes(ty, *rows, *cols);
                    if part != Part::Embedding {
                        cost.macs += (rows * cols) as u64;
                    }
                }
                dims => cost.bytes += self.weights.vector_bytes(dims.iter().product()),
            }
        }
        cost
    }

    /// Layer `i`.
    pub fn layer(&self, i: usize) -> PartCost {
        self.part(Part::Layer(i))
    }

    /// The embedding (a lookup: bytes, no multiply-adds per token).
    pub fn embedding(&self) -> PartCost {
        self.part(Part::Embedding)
    }

    /// The final norm and head; `separate` when the head is not in the embedding's shard (a
    /// tied head is then stored a second time, in the last shard).
    pub fn head(&self, separate: bool) -> PartCost {
        let mut cost = self.part(Part::Head);
        if self.config.tied_head {
            let (v, h) = (self.config.vocab_size, self.config.hidden_size);
            let head_ty = self.weights.ggml(Role::Head, 0, self.config.n_layers);
            if separate {
                cost.bytes += matrix_bytes(head_ty, v, h);
            }
            cost.macs += (v * h) as u64;
        }
        cost
    }

    /// Bytes of the whole model across `n` shards.
    pub fn total_bytes(&self, n: usize) -> u64 {
        let layers: u64 = (0..self.config.n_layers).map(|i| self.layer(i).bytes).sum();
        layers + self.embedding().bytes + self.head(n > 1).bytes
    }

    /// Cuts the model into `n` shards exactly as `synapse split --shards n` would.
    pub fn plan(&self, n: usize) -> Result<Vec<ShardShape>, SimError> {
        let layer_bytes: Vec<u64> = (0..self.config.n_layers)
            .map(|i| self.layer(i).bytes)
            .collect();
        let ranges = splitter::plan::balance(
            &layer_bytes,
            self.embedding().bytes,
            self.head(n > 1).bytes,
            n,
        )
        .map_err(|e| SimError::Invalid(e.to_string()))?;
        let last = ranges.len() - 1;
        Ok(ranges
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let mut bytes: u64 = r.clone().map(|l| layer_bytes[l]).sum();
                if i == 0 {
                    bytes += self.embedding().bytes;
                }
                if i == last {
                    bytes += self.head(n > 1).bytes;
                }
                ShardShape {
                    index: i,
                    layers: [r.start, r.end - 1],
                    bytes,
                    has_embedding: i == 0,
                    has_head: i == last,
                }
            })
            .collect())
    }

    /// A model directory's shards as they are (their real file sizes).
    pub fn shards_of(m: &Manifest) -> Vec<ShardShape> {
        m.shards
            .iter()
            .map(|s| ShardShape {
                index: s.index,
                layers: s.layers,
                bytes: s.bytes,
                has_embedding: s.has_embedding,
                has_head: s.has_head,
            })
            .collect()
    }

    /// Key/value cache bytes per layer per position, at `bytes_per_value`.
    pub fn kv_bytes_per_position(&self, bytes_per_value: u64) -> u64 {
        2 * (self.config.n_kv_heads * self.config.head_dim) as u64 * bytes_per_value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm2_f16_matches_the_real_split() {
        // The default model's 3-shard split holds 269 MB of weights (docs/PERF.md) plus the tied
        // head's copy in the last shard: 326 MB of shard files.
        let m = ModelShape::preset("SmolLM2-135M-Instruct", WeightType::F16).unwrap();
        let one = m.total_bytes(1);
        assert!((268_000_000..271_000_000).contains(&one), "{one}");
        let shards = m.plan(3).unwrap();
        let total: u64 = shards.iter().map(|s| s.bytes).sum();
        assert!((324_000_000..328_000_000).contains(&total), "{total}");
        assert_eq!(shards[0].layers[0], 0);
        assert_eq!(shards[2].layers[1], 29);
        assert!(shards[0].has_embedding && shards[2].has_head && !shards[1].has_head);
    }

    #[test]
    fn block_sizes_give_the_known_file_sizes() {
        // Llama-3.1-8B: ~16.1 GB in f16, ~8.5 GB in Q8_0, ~4.9 GB in Q4_K_M (llama.cpp's files).
        let gb = |w| {
            ModelShape::preset("Llama-3.1-8B", w)
                .unwrap()
                .total_bytes(1) as f64
                / 1e9
        };
        let (f16, q8, q4km, q40) = (
            gb(WeightType::F16),
            gb(WeightType::Q8_0),
            gb(WeightType::Q4KM),
            gb(WeightType::Q4_0),
        );
        assert!((15.9..16.2).contains(&f16), "f16 {f16}");
        assert!((8.4..8.6).contains(&q8), "q8_0 {q8}");
        assert!((4.7..5.0).contains(&q4km), "q4_k_m {q4km}");
        assert!((4.5..4.8).contains(&q40), "q4_0 {q40}");
        // Llama-3.2-1B, tied: 2.47 GB in f16.
        let one = ModelShape::preset("llama-3.2-1b", WeightType::F16).unwrap();
        let b = one.total_bytes(1) as f64 / 1e9;
        assert!((2.46..2.48).contains(&b), "{b}");
    }

    #[test]
    fn more_bits_follows_llama_cpp() {
        let n = 32;
        let hi: Vec<usize> = (0..n).filter(|&i| use_more_bits(i, n)).collect();
        assert_eq!(&hi[..6], &[0, 1, 2, 3, 6, 9]);
        assert!(hi.contains(&28) && hi.contains(&31));
    }

    #[test]
    fn unknown_names_are_refused_with_the_choices() {
        let e = ModelShape::preset("gpt-5", WeightType::F16).unwrap_err();
        assert!(e.to_string().contains("Llama-3.2-1B"), "{e}");
        let e = WeightType::parse("q3").unwrap_err();
        assert!(e.to_string().contains("q4_k_m"), "{e}");
        assert_eq!(WeightType::parse("Q4_K_M").unwrap(), WeightType::Q4KM);
    }

    #[test]
    fn every_shard_count_covers_the_model() {
        let m = ModelShape::preset("Llama-3.2-3B", WeightType::Q4_0).unwrap();
        for n in [1, 2, 7, 28] {
            let s = m.plan(n).unwrap();
            assert_eq!(s.len(), n);
            let total: u64 = s.iter().map(|x| x.bytes).sum();
            assert_eq!(total, m.total_bytes(n));
        }
        assert!(m.plan(29).is_err());
    }
}
