//! Import of a Hugging Face model folder: `config.json`, `model.safetensors` or sharded
//! `*.safetensors` with `model.safetensors.index.json`, and a tokenizer (`tokenizer.json`, or
//! GPT-2's `vocab.json` + `merges.txt`). Architectures `gpt2` and `llama`; tensor types F32,
//! F16 and BF16.
//!
//! GPT-2 checkpoints store their linear layers as Conv1D with weights `[in, out]`; they are
//! transposed here to the canonical `[out, in]`, after checking the `[in, out]` shape. Llama
//! checkpoints already use `[out, in]` and rotate-half RoPE, the convention the engines use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::checkpoint::{Checkpoint, TensorReader, check_shape, transpose};
use crate::error::{Result, SplitError};
use crate::manifest::{Architecture, ModelConfig, Source};
use crate::tokenizer_build;

/// Opens the Hugging Face folder `dir`.
pub fn open(dir: &Path) -> Result<Checkpoint> {
    let config_path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| SplitError::io(&config_path, e))?;
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| SplitError::corrupt(&config_path, format!("not JSON: {e}")))?;
    let keys = Keys {
        path: &config_path,
        v: &cfg,
    };
    let model_type = keys.str("model_type")?;
    let (arch, config) = match model_type.as_str() {
        "gpt2" => (Architecture::Gpt2, gpt2_config(&keys)?),
        "llama" => (Architecture::Llama, llama_config(&keys)?),
        other => {
            return Err(SplitError::unsupported(
                &config_path,
                format!("model_type `{other}` (supported: gpt2, llama)"),
            ));
        }
    };
    config.validate(&config_path)?;
    let tok_config = read_json_opt(&dir.join("tokenizer_config.json"))?;
    let chat_template = tok_config.as_ref().and_then(chat_template);
    let mut config = config;
    if let Some(add) = tok_config
        .as_ref()
        .and_then(|t| t.get("add_bos_token"))
        .and_then(Value::as_bool)
    {
        config.add_bos_token = add && config.bos_token_id.is_some();
    }
    let tokenizer_json = tokenizer(dir)?;
    let reader = SafetensorsReader::open(dir, arch)?;
    Ok(Checkpoint {
        path: dir.to_path_buf(),
        arch,
        config,
        tokenizer_json,
        chat_template,
        source: Source {
            name: dir.display().to_string(),
            format: "huggingface".into(),
        },
        reader: Box::new(reader),
    })
}

/// Typed access to config.json keys with errors naming the key.
struct Keys<'a> {
    path: &'a Path,
    v: &'a Value,
}

impl Keys<'_> {
    fn err(&self, key: &str, what: &str) -> SplitError {
        SplitError::Config {
            path: self.path.to_path_buf(),
            key: key.into(),
            what: what.into(),
        }
    }
    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| self.err(key, "expected a non-negative integer")),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?.ok_or_else(|| self.err(key, "missing"))
    }
    fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| self.err(key, "expected a number")),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, "expected true or false")),
        }
    }
    fn str(&self, key: &str) -> Result<String> {
        self.v
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.err(key, "missing or not a string"))
    }
    /// An id or a list of ids (Hugging Face allows both for `eos_token_id`).
    fn ids(&self, key: &str) -> Result<Vec<u32>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_u64()
                        .map(|x| x as u32)
                        .ok_or_else(|| self.err(key, "expected token ids"))
                })
                .collect(),
            Some(v) => v
                .as_u64()
                .map(|x| vec![x as u32])
                .ok_or_else(|| self.err(key, "expected a token id")),
        }
    }
}

fn gpt2_config(k: &Keys) -> Result<ModelConfig> {
    let hidden = k.usize("n_embd")?;
    let heads = k.usize("n_head")?;
    if let Some(act) = k.v.get("activation_function").and_then(Value::as_str)
        && act != "gelu_new"
        && act != "gelu_pytorch_tanh"
    {
        return Err(SplitError::unsupported(
            k.path,
            format!("activation_function `{act}` (Synapse runs gelu_new)"),
        ));
    }
    let bos = k.ids("bos_token_id")?.first().copied();
    Ok(ModelConfig {
        vocab_size: k.usize("vocab_size")?,
        hidden_size: hidden,
        n_layers: k.usize("n_layer")?,
        n_heads: heads,
        n_kv_heads: heads,
        head_dim: hidden.checked_div(heads).unwrap_or(0),
        ffn_size: k.usize_opt("n_inner")?.unwrap_or(4 * hidden),
        context_length: k
            .usize_opt("n_positions")?
            .map_or_else(|| k.usize("n_ctx"), Ok)?,
        norm_eps: k.f32_or("layer_norm_epsilon", 1e-5)?,
        rope_theta: 0.0,
        tied_head: k.bool_or("tie_word_embeddings", true)?,
        bos_token_id: bos,
        eos_token_ids: k.ids("eos_token_id")?,
        add_bos_token: false,
    })
}

fn llama_config(k: &Keys) -> Result<ModelConfig> {
    let hidden = k.usize("hidden_size")?;
    let heads = k.usize("num_attention_heads")?;
    if let Some(act) = k.v.get("hidden_act").and_then(Value::as_str)
        && act != "silu"
    {
        return Err(SplitError::unsupported(
            k.path,
            format!("hidden_act `{act}` (Synapse runs silu)"),
        ));
    }
    if !matches!(k.v.get("rope_scaling"), None | Some(Value::Null)) {
        return Err(SplitError::unsupported(
            k.path,
            "rope_scaling (only plain RoPE is implemented)",
        ));
    }
    let bos = k.ids("bos_token_id")?.first().copied();
    Ok(ModelConfig {
        vocab_size: k.usize("vocab_size")?,
        hidden_size: hidden,
        n_layers: k.usize("num_hidden_layers")?,
        n_heads: heads,
        n_kv_heads: k.usize_opt("num_key_value_heads")?.unwrap_or(heads),
        head_dim: k
            .usize_opt("head_dim")?
            .unwrap_or(hidden.checked_div(heads).unwrap_or(0)),
        ffn_size: k.usize("intermediate_size")?,
        context_length: k.usize("max_position_embeddings")?,
        norm_eps: k.f32_or("rms_norm_eps", 1e-6)?,
        rope_theta: k.f32_or("rope_theta", 10000.0)?,
        tied_head: k.bool_or("tie_word_embeddings", false)?,
        bos_token_id: bos,
        eos_token_ids: k.ids("eos_token_id")?,
        add_bos_token: bos.is_some(),
    })
}

fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| SplitError::corrupt(path, format!("not JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SplitError::io(path, e)),
    }
}

/// The chat template of tokenizer_config.json: a string, or the `default` of a named list.
fn chat_template(tok_config: &Value) -> Option<String> {
    match tok_config.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

fn tokenizer(dir: &Path) -> Result<String> {
    let path = dir.join("tokenizer.json");
    if path.exists() {
        let json = std::fs::read_to_string(&path).map_err(|e| SplitError::io(&path, e))?;
        tokenizer_build::check(&path, &json)?;
        return Ok(json);
    }
    if dir.join("vocab.json").exists() && dir.join("merges.txt").exists() {
        return tokenizer_build::from_vocab_merges(dir, &["<|endoftext|>".to_string()]);
    }
    Err(SplitError::unsupported(
        dir,
        "no tokenizer: expected tokenizer.json or vocab.json + merges.txt",
    ))
}

/// Tensors of one or more safetensors files, by their name in the file.
struct SafetensorsReader {
    arch: Architecture,
    /// model.safetensors, or the index that maps names to files: where a missing tensor is missing from.
    origin: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    /// Canonical name -> (file index, name in that file).
    index: HashMap<String, (usize, String)>,
}

impl SafetensorsReader {
    fn open(dir: &Path, arch: Architecture) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let origin = if single.exists() {
            single.clone()
        } else {
            index_path.clone()
        };
        let file_names: Vec<String> = if single.exists() {
            vec!["model.safetensors".into()]
        } else if index_path.exists() {
            let idx = read_json_opt(&index_path)?.unwrap_or(Value::Null);
            let map = idx
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| SplitError::corrupt(&index_path, "no `weight_map` object"))?;
            let mut names: Vec<String> = Vec::new();
            for (tensor, f) in map {
                let f = f.as_str().ok_or_else(|| {
                    SplitError::corrupt(&index_path, format!("`{tensor}` maps to a non-string"))
                })?;
                if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                    return Err(SplitError::corrupt(
                        &index_path,
                        format!("`{tensor}` maps outside the folder: `{f}`"),
                    ));
                }
                if !names.iter().any(|n| n == f) {
                    names.push(f.to_string());
                }
            }
            names.sort();
            names
        } else {
            return Err(SplitError::unsupported(
                dir,
                "no model.safetensors or model.safetensors.index.json",
            ));
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (fi, name) in file_names.iter().enumerate() {
            let path = dir.join(name);
            let file = std::fs::File::open(&path).map_err(|e| SplitError::io(&path, e))?;
            // SAFETY: the map is read-only and lives as long as the reader; a file changed
            // underneath us can give wrong values but not memory unsafety in safe readers.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| SplitError::io(&path, e))?;
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| SplitError::corrupt(&path, format!("not a safetensors file: {e}")))?;
            for tensor in st.names() {
                if let Some(canon) = canonical_name(arch, tensor)
                    && index
                        .insert(canon.clone(), (fi, tensor.to_string()))
                        .is_some()
                {
                    return Err(SplitError::corrupt(
                        &path,
                        format!("tensor `{canon}` appears twice"),
                    ));
                }
            }
            files.push((path, map));
        }
        Ok(SafetensorsReader {
            arch,
            origin,
            files,
            index,
        })
    }

    fn raw(&self, canon: &str) -> Result<(&Path, Vec<usize>, Vec<f32>)> {
        let (fi, name) = self
            .index
            .get(canon)
            .ok_or_else(|| SplitError::MissingTensor {
                path: self.origin.clone(),
                tensor: canon.to_string(),
            })?;
        let (path, map) = &self.files[*fi];
        let st =
            SafeTensors::deserialize(map).map_err(|e| SplitError::corrupt(path, e.to_string()))?;
        let view = st
            .tensor(name)
            .map_err(|e| SplitError::corrupt(path, format!("tensor `{name}`: {e}")))?;
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
            other => {
                return Err(SplitError::unsupported(
                    path,
                    format!("tensor `{name}` has dtype {other:?} (supported: F32, F16, BF16)"),
                ));
            }
        };
        Ok((path, view.shape().to_vec(), values))
    }
}

/// Maps a checkpoint tensor name to its canonical name; `None` for tensors Synapse ignores
/// (GPT-2's causal-mask buffers, rotary caches).
fn canonical_name(arch: Architecture, name: &str) -> Option<String> {
    match arch {
        Architecture::Gpt2 => {
            let n = name.strip_prefix("transformer.").unwrap_or(name);
            if n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias") {
                return None;
            }
            Some(n.to_string())
        }
        Architecture::Llama => {
            if name.ends_with("rotary_emb.inv_freq") {
                return None;
            }
            Some(name.to_string())
        }
    }
}

/// GPT-2 tensors stored as Conv1D `[in, out]`, which are transposed on import.
fn is_conv1d(name: &str) -> bool {
    name.ends_with(".weight")
        && (name.contains(".attn.c_attn.")
            || name.contains(".attn.c_proj.")
            || name.contains(".mlp.c_fc.")
            || name.contains(".mlp.c_proj."))
}

impl TensorReader for SafetensorsReader {
    fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let source = name;
        let (path, found, data) = self.raw(source)?;
        if self.arch == Architecture::Gpt2 && is_conv1d(name) {
            // Conv1D: the file holds [in, out]; the engines want [out, in].
            let file_shape: Vec<usize> = shape.iter().rev().copied().collect();
            check_shape(path, source, &found, &file_shape)?;
            return Ok(transpose(&data, file_shape[0], file_shape[1]));
        }
        check_shape(path, source, &found, shape)?;
        Ok(data)
    }
}
