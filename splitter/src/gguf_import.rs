//! Import of a llama.cpp GGUF file (architecture `llama`): hyper-parameters from the `llama.*`
//! keys, the tokenizer from `tokenizer.ggml.*`, and tensors dequantized to f32 and renamed to
//! the canonical (Hugging Face) names.
//!
//! llama.cpp's converter permutes the rows of the Q and K projections so that RoPE rotates
//! adjacent pairs `(x[2i], x[2i+1])`; the engines use Hugging Face's rotate-half convention, so
//! [`unpermute_rows`] undoes the permutation here, once, at import.

use std::collections::HashMap;
use std::path::Path;

use crate::checkpoint::{Checkpoint, TensorReader, check_shape};
use crate::error::{Result, SplitError};
use crate::gguf::GgufFile;
use crate::manifest::{Architecture, ModelConfig, Source, names::llama as n};
use crate::quant::GgmlType;
use crate::tokenizer_build::{self, PreTokenizer};

/// GGUF token type of control tokens (`<|im_start|>` and the like).
const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF token type of user-defined tokens, also matched whole.
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Opens a GGUF file.
pub fn open(path: &Path) -> Result<Checkpoint> {
    let file = GgufFile::open(path)?;
    let arch = file.get_str("general.architecture")?;
    if arch != "llama" {
        return Err(SplitError::unsupported(
            path,
            format!("architecture `{arch}` (GGUF import supports llama)"),
        ));
    }
    let tokens = file.get_str_array("tokenizer.ggml.tokens")?.to_vec();
    let hidden = file.get_u32("llama.embedding_length")? as usize;
    let heads = file.get_u32("llama.attention.head_count")? as usize;
    let head_dim = match file.get("llama.attention.key_length") {
        Some(_) => file.get_u32("llama.attention.key_length")? as usize,
        None if heads > 0 => hidden / heads,
        None => 0,
    };
    let opt_u32 = |key: &str| -> Result<Option<u32>> {
        match file.get(key) {
            Some(_) => file.get_u32(key).map(Some),
            None => Ok(None),
        }
    };
    if file.get("llama.rope.scaling.type").is_some() {
        let kind = file.get_str("llama.rope.scaling.type")?;
        if kind != "none" {
            return Err(SplitError::unsupported(
                path,
                format!("RoPE scaling `{kind}` (only plain RoPE is implemented)"),
            ));
        }
    }
    let eos = opt_u32("tokenizer.ggml.eos_token_id")?;
    let eot = opt_u32("tokenizer.ggml.eot_token_id")?;
    let bos = opt_u32("tokenizer.ggml.bos_token_id")?;
    let add_bos = match file.get("tokenizer.ggml.add_bos_token") {
        Some(_) => file.get_bool("tokenizer.ggml.add_bos_token")?,
        None => false,
    };
    let config = ModelConfig {
        vocab_size: tokens.len(),
        hidden_size: hidden,
        n_layers: file.get_u32("llama.block_count")? as usize,
        n_heads: heads,
        n_kv_heads: file
            .get_u32_opt("llama.attention.head_count_kv")?
            .map_or(heads, |x| x as usize),
        head_dim,
        ffn_size: file.get_u32("llama.feed_forward_length")? as usize,
        context_length: file.get_u32("llama.context_length")? as usize,
        norm_eps: file.get_f32("llama.attention.layer_norm_rms_epsilon")?,
        rope_theta: file.get_f32_opt("llama.rope.freq_base")?.unwrap_or(10000.0),
        tied_head: file.tensor("output.weight").is_none(),
        bos_token_id: bos,
        eos_token_ids: eos
            .into_iter()
            .chain(eot.filter(|t| Some(*t) != eos))
            .collect(),
        add_bos_token: add_bos && bos.is_some(),
    };
    config.validate(path)?;
    let tokenizer_json = tokenizer(&file, path, &tokens)?;
    let chat_template = file
        .get_str_opt("tokenizer.chat_template")?
        .map(str::to_string);
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    Ok(Checkpoint {
        path: path.to_path_buf(),
        arch: Architecture::Llama,
        config: config.clone(),
        tokenizer_json,
        chat_template,
        source: Source {
            name,
            format: "gguf".into(),
        },
        reader: Box::new(GgufReader { file, config }),
    })
}

/// tokenizer.json from the GGUF's byte-level BPE vocabulary and merges.
fn tokenizer(file: &GgufFile, path: &Path, tokens: &[String]) -> Result<String> {
    let model = file.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(SplitError::unsupported(
            path,
            format!("tokenizer.ggml.model `{model}` (supported: gpt2, the byte-level BPE)"),
        ));
    }
    let pre_name = file
        .get_str_opt("tokenizer.ggml.pre")?
        .unwrap_or("default")
        .to_string();
    let pre = PreTokenizer::from_gguf_name(&pre_name).ok_or_else(|| {
        SplitError::unsupported(
            path,
            format!("tokenizer.ggml.pre `{pre_name}` (supported: default, gpt2, smollm)"),
        )
    })?;
    let merges: Vec<(String, String)> = file
        .get_str_array("tokenizer.ggml.merges")?
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    SplitError::corrupt(
                        path,
                        format!("tokenizer.ggml.merges[{i}] `{m}` is not two tokens"),
                    )
                })
        })
        .collect::<Result<_>>()?;
    let types = file
        .get_i32_array_opt("tokenizer.ggml.token_type")?
        .unwrap_or_else(|| vec![1; tokens.len()]);
    if types.len() != tokens.len() {
        return Err(SplitError::corrupt(
            path,
            format!("{} token types for {} tokens", types.len(), tokens.len()),
        ));
    }
    let mut vocab = HashMap::with_capacity(tokens.len());
    let mut special = Vec::new();
    for (i, (t, ty)) in tokens.iter().zip(&types).enumerate() {
        if vocab.insert(t.clone(), i as u32).is_some() {
            return Err(SplitError::corrupt(
                path,
                format!("token `{t}` appears twice in tokenizer.ggml.tokens"),
            ));
        }
        if *ty == TOKEN_TYPE_CONTROL || *ty == TOKEN_TYPE_USER_DEFINED {
            special.push(t.clone());
        }
    }
    tokenizer_build::byte_level_bpe(path, vocab, merges, &special, pre)
}

/// [`unpermute_rows`] on rows of `row_bytes` bytes each (a row of GGML blocks): the
/// permutation moves whole rows, so it commutes with (de)quantization.
pub fn unpermute_byte_rows(w: &[u8], heads: usize, row_bytes: usize) -> Vec<u8> {
    let rows = w.len() / row_bytes;
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0u8; w.len()];
    for h in 0..heads {
        for j in 0..half {
            for (hf_row, gguf_row) in [(j, 2 * j), (half + j, 2 * j + 1)] {
                let src = (h * hd + gguf_row) * row_bytes;
                let dst = (h * hd + hf_row) * row_bytes;
                out[dst..dst + row_bytes].copy_from_slice(&w[src..src + row_bytes]);
            }
        }
    }
    out
}

/// Undoes llama.cpp's Q/K row permutation for one projection `(heads * hd, cols)`.
///
/// llama.cpp stores, within each head, row `2i` = Hugging Face row `i` and row `2i + 1` = HF
/// row `i + hd/2` (it reshapes to `(heads, 2, hd/2, cols)` and swaps axes 1 and 2). Here the
/// inverse: HF row `j < hd/2` comes from GGUF row `2j`, HF row `hd/2 + j` from GGUF row `2j + 1`.
pub fn unpermute_rows(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for j in 0..half {
            for (hf_row, gguf_row) in [(j, 2 * j), (half + j, 2 * j + 1)] {
                let src = (h * hd + gguf_row) * cols;
                let dst = (h * hd + hf_row) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

/// GGUF tensor name of a canonical name, and the number of heads to un-permute by (Q and K).
fn gguf_name(canon: &str, cfg: &ModelConfig) -> Option<(String, Option<usize>)> {
    match canon {
        n::EMBED => return Some(("token_embd.weight".into(), None)),
        n::NORM => return Some(("output_norm.weight".into(), None)),
        n::HEAD => return Some(("output.weight".into(), None)),
        _ => {}
    }
    let rest = canon.strip_prefix("model.layers.")?;
    let (i, suffix) = rest.split_once('.')?;
    let (g, heads) = match suffix {
        "input_layernorm.weight" => ("attn_norm", None),
        "self_attn.q_proj.weight" => ("attn_q", Some(cfg.n_heads)),
        "self_attn.k_proj.weight" => ("attn_k", Some(cfg.n_kv_heads)),
        "self_attn.v_proj.weight" => ("attn_v", None),
        "self_attn.o_proj.weight" => ("attn_output", None),
        "post_attention_layernorm.weight" => ("ffn_norm", None),
        "mlp.gate_proj.weight" => ("ffn_gate", None),
        "mlp.up_proj.weight" => ("ffn_up", None),
        "mlp.down_proj.weight" => ("ffn_down", None),
        _ => return None,
    };
    Some((format!("blk.{i}.{g}.weight"), heads))
}

struct GgufReader {
    file: GgufFile,
    config: ModelConfig,
}

impl GgufReader {
    /// The GGUF name of canonical tensor `name` (checked to have shape `shape`) and the heads
    /// to un-permute its rows by.
    fn locate(&self, name: &str, shape: &[usize]) -> Result<(String, Option<usize>)> {
        let path = self.file.path();
        let (g, heads) =
            gguf_name(name, &self.config).ok_or_else(|| SplitError::MissingTensor {
                path: path.to_path_buf(),
                tensor: name.to_string(),
            })?;
        let found = self
            .file
            .tensor_shape(&g)
            .ok_or_else(|| SplitError::MissingTensor {
                path: path.to_path_buf(),
                tensor: g.clone(),
            })?;
        check_shape(path, &g, &found, shape)?;
        Ok((g, heads))
    }
}

impl TensorReader for GgufReader {
    fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (g, heads) = self.locate(name, shape)?;
        let data = self.file.tensor_f32(&g)?;
        Ok(match heads {
            Some(h) => unpermute_rows(&data, h, shape[1]),
            None => data,
        })
    }

    fn source_type(&self, name: &str) -> Option<GgmlType> {
        let (g, _) = gguf_name(name, &self.config)?;
        self.file.tensor(&g).map(|t| t.ty)
    }

    fn read_raw(&self, name: &str, shape: &[usize]) -> Result<Vec<u8>> {
        let (g, heads) = self.locate(name, shape)?;
        let bytes = self.file.tensor_bytes(&g)?;
        Ok(match heads {
            Some(h) => unpermute_byte_rows(bytes, h, bytes.len() / shape[0]),
            None => bytes.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's permute, written as its converter does (reshape/swap on indices).
    fn permute(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
        let rows = w.len() / cols;
        let hd = rows / heads;
        let mut out = vec![0f32; w.len()];
        // out viewed as (heads, hd/2, 2, cols) = w viewed as (heads, 2, hd/2, cols) with axes 1, 2 swapped.
        for h in 0..heads {
            for a in 0..2 {
                for b in 0..hd / 2 {
                    let src = (h * hd + a * (hd / 2) + b) * cols;
                    let dst = (h * hd + b * 2 + a) * cols;
                    out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (heads, hd, cols) = (3, 8, 5);
        let w: Vec<f32> = (0..heads * hd * cols).map(|i| i as f32).collect();
        let p = permute(&w, heads, cols);
        assert_ne!(p, w);
        assert_eq!(unpermute_rows(&p, heads, cols), w);
        // The byte-row version moves the same rows.
        let bytes: Vec<u8> = p.iter().map(|v| *v as u8).collect();
        let back: Vec<f32> = unpermute_byte_rows(&bytes, heads, cols)
            .iter()
            .map(|b| *b as f32)
            .collect();
        let want: Vec<f32> = w.iter().map(|v| (*v as u8) as f32).collect();
        assert_eq!(back, want);
        // Row 1 of the GGUF (pair partner of row 0) is HF row hd/2.
        assert_eq!(&p[cols..2 * cols], &w[(hd / 2) * cols..(hd / 2 + 1) * cols]);
    }
}
