//! The splitter against its inputs, read back independently: the synthetic GPT-2 and Llama
//! fixtures (Hugging Face safetensors, quantized GGUF) and the default model's GGUF, split into
//! 1, 2, 3 or more shards, must tile the layers, hold exactly the tensors each shard needs,
//! recombine to the original within f16 rounding and balance bytes optimally. Bad inputs must
//! give errors that name the file and leave nothing behind, and `synapse split` must report
//! both on the command line.
//!
//! Nothing here trusts the splitter's own helpers for what it checks: the original safetensors
//! are decoded here, the GPT-2 Conv1D transpose and llama.cpp's Q/K permutation are written out
//! again, and the optimal cut is found by brute force.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;

use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use sha2::{Digest, Sha256};
use splitter::gguf::GgufFile;
use splitter::{Checkpoint, Manifest, ShardInfo, SplitOptions};

const MODELS: [&str; 3] = ["gpt2-hf", "llama-hf", "llama-gguf"];
/// f16 rounding of an original value `a`: relative 2^-11 for normal values, absolute 2^-25 for
/// subnormals; `|shard - a| <= ATOL + RTOL * |a|` covers both with a little room.
const RTOL: f32 = 1e-3;
const ATOL: f32 = 1e-6;

// ----------------------------------------------------------------------------- helpers

fn input_of(model: &str) -> PathBuf {
    let dir = common::fixtures().join(model);
    if model.contains("gguf") {
        dir.join("model.gguf")
    } else {
        dir
    }
}

/// A tensor read back as f32, row-major.
#[derive(Debug, Clone, PartialEq)]
struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// What the test knows about a fixture from its own files, not from the splitter.
struct Facts {
    arch: &'static str,
    n_layers: usize,
    tied: bool,
    /// Tensors in one layer.
    per_layer: usize,
    /// Tensors only the first shard holds.
    embedding: &'static [&'static str],
    /// The final norm's tensors, which the last shard holds with the head.
    final_norm: &'static [&'static str],
}

fn facts(model: &str) -> Facts {
    let json = |dir: &Path| -> Value {
        let text = std::fs::read_to_string(dir.join("config.json")).expect("config.json");
        serde_json::from_str(&text).expect("config.json is JSON")
    };
    let get = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}")) as usize;
    const GPT2_EMB: &[&str] = &["wte.weight", "wpe.weight"];
    const GPT2_NORM: &[&str] = &["ln_f.weight", "ln_f.bias"];
    const LLAMA_EMB: &[&str] = &["model.embed_tokens.weight"];
    const LLAMA_NORM: &[&str] = &["model.norm.weight"];
    match model {
        "gpt2-hf" => {
            let c = json(&input_of(model));
            Facts {
                arch: "gpt2",
                n_layers: get(&c, "n_layer"),
                tied: c["tie_word_embeddings"].as_bool().unwrap_or(true),
                per_layer: 12,
                embedding: GPT2_EMB,
                final_norm: GPT2_NORM,
            }
        }
        "llama-hf" => {
            let c = json(&input_of(model));
            Facts {
                arch: "llama",
                n_layers: get(&c, "num_hidden_layers"),
                tied: c["tie_word_embeddings"].as_bool().unwrap_or(false),
                per_layer: 9,
                embedding: LLAMA_EMB,
                final_norm: LLAMA_NORM,
            }
        }
        _ => {
            let g = GgufFile::open(input_of(model)).expect("fixture GGUF opens");
            Facts {
                arch: "llama",
                n_layers: g.get_u32("llama.block_count").expect("block_count") as usize,
                tied: g.tensor("output.weight").is_none(),
                per_layer: 9,
                embedding: LLAMA_EMB,
                final_norm: LLAMA_NORM,
            }
        }
    }
}

/// Which part of the model a shard tensor belongs to, from its (Hugging Face) name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Embedding,
    Layer(usize),
    Head,
}

fn part_of(name: &str) -> Option<Part> {
    match name {
        "wte.weight" | "wpe.weight" | "model.embed_tokens.weight" => Some(Part::Embedding),
        "ln_f.weight" | "ln_f.bias" | "model.norm.weight" | "lm_head.weight" => Some(Part::Head),
        _ => {
            let rest = name
                .strip_prefix("h.")
                .or_else(|| name.strip_prefix("model.layers."))?;
            let (i, _) = rest.split_once('.')?;
            i.parse().ok().map(Part::Layer)
        }
    }
}

/// Decodes a safetensors tensor of type F32, F16 or BF16 to f32.
fn decode(what: &str, view: &TensorView) -> Vec<f32> {
    let d = view.data();
    match view.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => panic!("{what}: unexpected dtype {other:?}"),
    }
}

/// Reads shard `info` of `dir`, checking its size, sha256 and tensor list (names, shapes, f16)
/// against the manifest; returns the file's bytes.
fn check_shard_file(dir: &Path, info: &ShardInfo) -> Vec<u8> {
    let path = dir.join(&info.file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let p = path.display();
    assert_eq!(bytes.len() as u64, info.bytes, "{p}: size vs manifest");
    let sha = format!("{:x}", Sha256::digest(&bytes));
    assert_eq!(sha, info.sha256, "{p}: sha256 vs manifest");
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{p}: {e}"));
    let mut in_file = BTreeMap::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F16, "{p}: `{name}` is not f16");
        in_file.insert(name, view.shape().to_vec());
    }
    let listed: BTreeMap<String, Vec<usize>> = info
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    assert_eq!(listed.len(), info.tensors.len(), "{p}: a name listed twice");
    assert_eq!(
        in_file, listed,
        "{p}: file contents vs manifest tensor list"
    );
    bytes
}

/// Every tensor of a shard file, as f32.
fn shard_tensors(bytes: &[u8]) -> BTreeMap<String, Tensor> {
    let st = SafeTensors::deserialize(bytes).expect("checked by check_shard_file");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = decode(&name, &view);
            let shape = view.shape().to_vec();
            (name, Tensor { shape, data })
        })
        .collect()
}

/// A split model directory read back: the manifest (parsed, not validated by the splitter)
/// and each shard's tensors.
struct Split {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<BTreeMap<String, Tensor>>,
}

impl Split {
    fn read(dir: &Path) -> Split {
        let text = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest.json");
        let manifest: Manifest = serde_json::from_str(&text).expect("manifest.json parses");
        let shards = manifest
            .shards
            .iter()
            .map(|s| shard_tensors(&check_shard_file(dir, s)))
            .collect();
        Split {
            dir: dir.to_path_buf(),
            manifest,
            shards,
        }
    }

    /// All shards' tensors together; a name in two shards is a failure.
    fn union(&self) -> BTreeMap<String, Tensor> {
        let mut all = BTreeMap::new();
        for shard in &self.shards {
            for (name, t) in shard {
                let dup = all.insert(name.clone(), t.clone());
                assert!(
                    dup.is_none(),
                    "{}: `{name}` in two shards",
                    self.dir.display()
                );
            }
        }
        all
    }
}

fn split_n(input: &Path, parent: &Path, n: usize) -> Split {
    Split::read(&common::split(input, parent, n))
}

/// Largest deviation found by [`check_rounding`], for the summary line.
#[derive(Default)]
struct Worst {
    err: f32,
    at: String,
}

impl Worst {
    fn summary(&self) -> String {
        if self.at.is_empty() {
            "every element exact".into()
        } else {
            format!("max |err| {:e} at {}", self.err, self.at)
        }
    }
}

/// Checks that `got` (from a shard) is `want` (the original) rounded to f16, element-wise;
/// the failure names the tensor, element, both values and the tolerance.
fn check_rounding(what: &str, got: &Tensor, want: &Tensor, worst: &mut Worst) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    assert_eq!(got.data.len(), want.data.len(), "{what}: element count");
    let cols = *want.shape.last().unwrap_or(&1);
    for (i, (g, w)) in got.data.iter().zip(&want.data).enumerate() {
        let err = (g - w).abs();
        let allowed = ATOL + RTOL * w.abs();
        assert!(
            err <= allowed,
            "{what}: element {i} (row {}, col {}) is {g}, original {w}: |err| {err:e} > {allowed:e}",
            i / cols,
            i % cols
        );
        if err > worst.err {
            *worst = Worst {
                err,
                at: format!("{what}[{i}]"),
            };
        }
    }
}

/// Bit-exact equality of two tensors, naming the first differing element.
fn assert_identical(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.shape, b.shape, "{what}: shape");
    if let Some(i) = (0..a.data.len()).find(|&i| a.data[i].to_bits() != b.data[i].to_bits()) {
        panic!(
            "{what}: element {i} differs: {} vs {}",
            a.data[i], b.data[i]
        );
    }
}

/// Every path under `root`, relative to it.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(root).expect("under root").to_path_buf());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn opts(shards: usize, force: bool) -> SplitOptions {
    SplitOptions {
        shards,
        force,
        progress: false,
        weights: splitter::WeightsMode::F16,
    }
}

/// Opens `input` and splits it into `root/out`, expecting an error. Fails if anything panics,
/// if the split succeeds, or if anything under `root` (input copies, outputs, temporary
/// directories) differs afterwards. Returns the message, checked to name `file`.
fn split_error(root: &Path, input: &Path, shards: usize, file: &Path) -> String {
    let before = tree(root);
    let out = root.join("out");
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let ckpt = splitter::open(input)?;
        splitter::split(&ckpt, &out, &opts(shards, false))
    }));
    let msg = match result {
        Err(_) => panic!("{}: the splitter panicked", input.display()),
        Ok(Ok(_)) => panic!("{}: split succeeded, expected an error", input.display()),
        Ok(Err(e)) => e.to_string(),
    };
    assert_eq!(
        tree(root),
        before,
        "{}: left behind files: {msg}",
        input.display()
    );
    assert!(
        msg.contains(&file.display().to_string()),
        "error does not name {}: {msg}",
        file.display()
    );
    msg
}

/// Whether `msg` states that the valid shard counts are 1 to `n_layers`.
fn states_range(msg: &str, n_layers: usize) -> bool {
    let l = n_layers;
    [
        format!("1 and {l}"),
        format!("1 to {l}"),
        format!("1..={l}"),
        format!("1-{l}"),
    ]
    .iter()
    .any(|f| msg.contains(f.as_str()))
}

/// Copies the files of `src` into a new folder `dst`.
fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir").flatten() {
        std::fs::copy(e.path(), dst.join(e.file_name())).expect("copy");
    }
}

// ----------------------------------------------------------------------------- structure

/// Every fixture split into 1, 2 and 3 shards: a valid manifest whose shards tile the layers in
/// order, the embedding first and the final norm and head last (a tied head stored as
/// `lm_head.weight` only when the last shard is not also the first), each shard holding only its
/// own layers' tensors, all of them, each tensor once, and files matching the manifest.
#[test]
fn every_split_tiles_the_layers_and_holds_only_its_tensors() {
    for model in MODELS {
        let f = facts(model);
        let tmp = tempfile::tempdir().expect("tempdir");
        for n in 1..=3 {
            let s = split_n(&input_of(model), tmp.path(), n);
            let m = &s.manifest;
            let at = format!("{model} into {n}");
            assert_eq!(
                (m.format.as_str(), m.version, m.dtype.as_str()),
                ("synapse-shards", splitter::manifest::FORMAT_VERSION, "f16"),
                "{at}"
            );
            assert_eq!(m.architecture.to_string(), f.arch, "{at}");
            assert_eq!(m.config.n_layers, f.n_layers, "{at}: n_layers");
            assert_eq!(m.config.tied_head, f.tied, "{at}: tied_head");
            assert_eq!(m.shards.len(), n, "{at}: shard count");
            let files: BTreeSet<PathBuf> = m
                .shards
                .iter()
                .map(|x| PathBuf::from(&x.file))
                .chain([PathBuf::from("manifest.json"), PathBuf::from(&m.tokenizer)])
                .collect();
            assert_eq!(tree(&s.dir), files, "{at}: directory contents");
            let tok = std::fs::read_to_string(s.dir.join(&m.tokenizer)).expect("tokenizer");
            serde_json::from_str::<Value>(&tok).expect("tokenizer.json is JSON");

            let mut next = 0;
            for (i, info) in m.shards.iter().enumerate() {
                let at = format!("{at}, shard {i} (layers {:?})", info.layers);
                let last = i + 1 == n;
                assert_eq!(info.index, i, "{at}");
                assert_eq!(
                    info.layers[0], next,
                    "{at}: starts where the previous ended"
                );
                assert!(info.layers[1] >= info.layers[0], "{at}: empty");
                next = info.layers[1] + 1;
                assert_eq!((info.has_embedding, info.has_head), (i == 0, last), "{at}");
                let mut per_layer = BTreeMap::<usize, usize>::new();
                for name in s.shards[i].keys() {
                    match part_of(name) {
                        Some(Part::Embedding) => assert_eq!(i, 0, "{at}: holds `{name}`"),
                        Some(Part::Head) => assert!(last, "{at}: holds `{name}`"),
                        Some(Part::Layer(l)) => {
                            assert!(
                                (info.layers[0]..=info.layers[1]).contains(&l),
                                "{at}: holds `{name}`"
                            );
                            *per_layer.entry(l).or_default() += 1;
                        }
                        None => panic!("{at}: unexpected tensor `{name}`"),
                    }
                }
                for l in info.layers[0]..=info.layers[1] {
                    let count = per_layer.get(&l).copied().unwrap_or(0);
                    assert_eq!(count, f.per_layer, "{at}: tensors of layer {l}");
                }
                let has = |t: &str| s.shards[i].contains_key(t);
                if i == 0 {
                    for t in f.embedding {
                        assert!(has(t), "{at}: no `{t}`");
                    }
                }
                if last {
                    for t in f.final_norm {
                        assert!(has(t), "{at}: no `{t}`");
                    }
                    let want_head = !f.tied || n > 1;
                    assert_eq!(has("lm_head.weight"), want_head, "{at}: lm_head.weight");
                }
            }
            assert_eq!(next, f.n_layers, "{at}: shards cover every layer");
            s.union(); // no tensor in two shards
        }
        assert_eq!(
            tree(tmp.path())
                .iter()
                .filter(|p| p.components().count() == 1)
                .count(),
            3,
            "{model}: only the three output directories in the parent"
        );
    }
}

// ----------------------------------------------------------------------------- recombination

/// The part of a GPT-2 layer tensor's name after `h.{i}.`.
fn gpt2_suffix(name: &str) -> Option<&str> {
    let (i, suffix) = name.strip_prefix("h.")?.split_once('.')?;
    i.parse::<usize>().ok().map(|_| suffix)
}

/// GPT-2 weights stored as Conv1D `[in, out]`.
fn is_conv1d(name: &str) -> bool {
    const CONV1D: [&str; 4] = [
        "attn.c_attn.weight",
        "attn.c_proj.weight",
        "mlp.c_fc.weight",
        "mlp.c_proj.weight",
    ];
    gpt2_suffix(name).is_some_and(|s| CONV1D.contains(&s))
}

/// The original tensors of a Hugging Face folder in the shards' layout, read here: every
/// `*.safetensors` file, `transformer.` stripped, GPT-2's causal-mask buffers skipped, and
/// GPT-2's Conv1D weights transposed from `[in, out]` to `[out, in]`.
fn hf_original(dir: &Path, gpt2: bool) -> BTreeMap<String, Tensor> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no safetensors", dir.display());
    let mut out = BTreeMap::new();
    for path in files {
        let bytes = std::fs::read(&path).expect("read");
        let st = SafeTensors::deserialize(&bytes).expect("fixture safetensors");
        for (name, view) in st.tensors() {
            let name = name
                .strip_prefix("transformer.")
                .unwrap_or(&name)
                .to_string();
            let suffix = gpt2_suffix(&name);
            if gpt2 && matches!(suffix, Some("attn.bias" | "attn.masked_bias")) {
                continue;
            }
            let mut t = Tensor {
                shape: view.shape().to_vec(),
                data: decode(&name, &view),
            };
            if gpt2 && is_conv1d(&name) {
                // Conv1D: (in, out) in the file; the shards store (out, in).
                let [rows, cols] = t.shape[..] else {
                    panic!("`{name}` has shape {:?}", t.shape)
                };
                let mut data = vec![0f32; t.data.len()]; // (cols, rows)
                for r in 0..rows {
                    for c in 0..cols {
                        data[c * rows + r] = t.data[r * cols + c];
                    }
                }
                t = Tensor {
                    shape: vec![cols, rows],
                    data,
                };
            }
            assert!(out.insert(name.clone(), t).is_none(), "`{name}` twice");
        }
    }
    out
}

/// The Hugging Face fixtures: for 1, 2 and 3 shards the union of the shards is the original
/// checkpoint (as read above) within f16 rounding, a tied head being the embedding.
#[test]
fn hf_shards_recombine_to_the_original_safetensors() {
    for model in ["gpt2-hf", "llama-hf"] {
        let f = facts(model);
        let emb = f.embedding[0];
        let original = hf_original(&input_of(model), f.arch == "gpt2");
        assert_eq!(original.contains_key("lm_head.weight"), !f.tied, "{model}");
        let tmp = tempfile::tempdir().expect("tempdir");
        for n in 1..=3 {
            let union = split_n(&input_of(model), tmp.path(), n).union();
            let mut want = original.clone();
            if f.tied && n > 1 {
                want.insert("lm_head.weight".into(), original[emb].clone());
            }
            let names = |m: &BTreeMap<String, Tensor>| m.keys().cloned().collect::<Vec<_>>();
            assert_eq!(
                names(&union),
                names(&want),
                "{model} into {n}: tensor names"
            );
            let mut worst = Worst::default();
            for (name, w) in &want {
                check_rounding(
                    &format!("{model}/{n} `{name}`"),
                    &union[name],
                    w,
                    &mut worst,
                );
            }
            eprintln!("{model} into {n}: {}", worst.summary());
        }
    }
}

/// llama.cpp's Q/K row permutation, as its converter writes it: view the `(heads * hd, cols)`
/// matrix as `(heads, 2, hd/2, cols)` and swap axes 1 and 2.
fn permute_llama_cpp(w: &Tensor, heads: usize) -> Tensor {
    let [rows, cols] = w.shape[..] else {
        panic!("permute of shape {:?}", w.shape)
    };
    assert_eq!(rows % (2 * heads), 0, "{rows} rows, {heads} heads");
    let hd = rows / heads;
    let mut data = vec![0f32; w.data.len()];
    for h in 0..heads {
        for a in 0..2 {
            for b in 0..hd / 2 {
                let src = (h * hd + a * (hd / 2) + b) * cols; // (h, a, b)
                let dst = (h * hd + b * 2 + a) * cols; // (h, b, a)
                data[dst..dst + cols].copy_from_slice(&w.data[src..src + cols]);
            }
        }
    }
    Tensor {
        shape: w.shape.clone(),
        data,
    }
}

/// Hugging Face name of a llama.cpp tensor, and whether its rows are Q/K-permuted.
fn hf_name_of(gguf_name: &str) -> (String, Option<&'static str>) {
    match gguf_name {
        "token_embd.weight" => return ("model.embed_tokens.weight".into(), None),
        "output_norm.weight" => return ("model.norm.weight".into(), None),
        "output.weight" => return ("lm_head.weight".into(), None),
        _ => {}
    }
    let rest = gguf_name.strip_prefix("blk.").expect("blk.");
    let (i, kind) = rest.split_once('.').expect("blk.N.");
    let (hf, permuted) = match kind {
        "attn_norm.weight" => ("input_layernorm.weight", None),
        "attn_q.weight" => (
            "self_attn.q_proj.weight",
            Some("llama.attention.head_count"),
        ),
        "attn_k.weight" => (
            "self_attn.k_proj.weight",
            Some("llama.attention.head_count_kv"),
        ),
        "attn_v.weight" => ("self_attn.v_proj.weight", None),
        "attn_output.weight" => ("self_attn.o_proj.weight", None),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", None),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", None),
        "ffn_up.weight" => ("mlp.up_proj.weight", None),
        "ffn_down.weight" => ("mlp.down_proj.weight", None),
        other => panic!("unexpected GGUF tensor kind `{other}`"),
    };
    (format!("model.layers.{i}.{hf}"), permuted)
}

/// The GGUF fixture: 1, 2 and 3 shards hold bit-identical tensors; the tied head equals the
/// embedding; and every tensor equals the GGUF's dequantized values within f16 rounding, Q and K
/// after permuting the shard's rows back the llama.cpp way.
#[test]
fn gguf_shards_recombine_and_q_k_are_unpermuted() {
    let input = input_of("llama-gguf");
    let tmp = tempfile::tempdir().expect("tempdir");
    let unions: Vec<_> = (1..=3)
        .map(|n| split_n(&input, tmp.path(), n).union())
        .collect();
    let (one, three) = (&unions[0], &unions[2]);
    let emb = &one["model.embed_tokens.weight"];
    assert!(
        !one.contains_key("lm_head.weight"),
        "1 shard: tied head stored twice"
    );
    for (n, u) in unions.iter().enumerate().skip(1) {
        let n = n + 1;
        assert_identical(
            &format!("{n} shards: tied lm_head.weight"),
            &u["lm_head.weight"],
            emb,
        );
        let mut rest = u.clone();
        rest.remove("lm_head.weight");
        assert_eq!(
            rest.keys().collect::<Vec<_>>(),
            one.keys().collect::<Vec<_>>(),
            "{n} shards vs 1: names"
        );
        for (name, t) in &rest {
            assert_identical(&format!("{n} shards vs 1: `{name}`"), t, &one[name]);
        }
    }

    let g = GgufFile::open(&input).expect("fixture GGUF");
    let mut worst = Worst::default();
    let mut permuted = 0;
    let mut seen = BTreeSet::new();
    for t in g.tensors() {
        let (hf, heads_key) = hf_name_of(&t.name);
        let want = Tensor {
            shape: t.dims.iter().rev().copied().collect(),
            data: g.tensor_f32(&t.name).expect("dequantize"),
        };
        let got = three
            .get(&hf)
            .unwrap_or_else(|| panic!("`{}` (as `{hf}`) in no shard", t.name));
        let what = format!("`{hf}` vs GGUF `{}` ({})", t.name, t.ty);
        match heads_key {
            Some(key) => {
                let heads = g.get_u32(key).expect("head count") as usize;
                let as_gguf = permute_llama_cpp(got, heads);
                check_rounding(&what, &as_gguf, &want, &mut worst);
                // The permutation is not the identity on this data, so the check has teeth.
                let moved = got.data.iter().zip(&want.data);
                let moved = moved.filter(|(a, b)| (*a - *b).abs() > ATOL + RTOL * b.abs());
                assert!(moved.count() > 0, "{what}: stored un-permuted?");
                permuted += 1;
            }
            None => check_rounding(&what, got, &want, &mut worst),
        }
        seen.insert(hf);
    }
    let n_layers = g.get_u32("llama.block_count").expect("block_count") as usize;
    assert_eq!(permuted, 2 * n_layers, "Q and K of every layer");
    seen.insert("lm_head.weight".into()); // tied: the embedding, checked above
    assert_eq!(
        seen,
        three.keys().cloned().collect(),
        "shard tensors vs GGUF tensors"
    );
    eprintln!("llama-gguf: {}", worst.summary());
}

// ----------------------------------------------------------------------------- balance

/// Tensor bytes (f16) of every layer, of the first shard's non-layer tensors and of the last
/// shard's, and of each shard, from the manifest.
struct Bytes {
    layers: Vec<u64>,
    first: u64,
    last: u64,
    shards: Vec<u64>,
}

fn bytes_of(m: &Manifest) -> Bytes {
    let n = m.shards.len();
    let mut b = Bytes {
        layers: vec![0; m.config.n_layers],
        first: 0,
        last: 0,
        shards: vec![0; n],
    };
    for (i, s) in m.shards.iter().enumerate() {
        for t in &s.tensors {
            let size = 2 * t.shape.iter().product::<usize>() as u64;
            b.shards[i] += size;
            match part_of(&t.name) {
                Some(Part::Layer(l)) => b.layers[l] += size,
                _ if i == 0 => b.first += size,
                _ if i + 1 == n => b.last += size,
                _ => panic!("shard {i}: `{}`", t.name),
            }
        }
    }
    b
}

/// The smallest possible largest shard over every cut of the layers into `n` contiguous
/// non-empty ranges, the first shard also carrying `first` bytes and the last `last`.
fn brute_force_best(layers: &[u64], first: u64, last: u64, n: usize) -> u64 {
    fn go(b: (&[u64], u64, u64, usize), s: usize, start: usize, worst: u64, best: &mut u64) {
        let (layers, first, last, n) = b;
        let l = layers.len();
        let ends: Vec<usize> = if s + 1 == n {
            vec![l]
        } else {
            (start + 1..=l - (n - 1 - s)).collect()
        };
        for end in ends {
            let mut size: u64 = layers[start..end].iter().sum();
            if s == 0 {
                size += first;
            }
            if s + 1 == n {
                size += last;
            }
            let worst = worst.max(size);
            if s + 1 == n {
                *best = (*best).min(worst);
            } else {
                go(b, s + 1, end, worst, best);
            }
        }
    }
    let mut best = u64::MAX;
    go((layers, first, last, n), 0, 0, 0, &mut best);
    best
}

/// Checks that the split's largest shard is the brute-force optimum.
fn assert_optimal(what: &str, m: &Manifest) {
    let n = m.shards.len();
    let b = bytes_of(m);
    let best = brute_force_best(&b.layers, b.first, b.last, n);
    let got = *b.shards.iter().max().expect("shards");
    let ranges: Vec<_> = m.shards.iter().map(|s| s.layers).collect();
    assert_eq!(
        got, best,
        "{what}: largest shard {got} bytes, best possible {best} (ranges {ranges:?}, sizes {:?})",
        b.shards
    );
    eprintln!("{what}: ranges {ranges:?}, shard bytes {:?}", b.shards);
}

/// Asks for 0 and `n_layers + 1` shards: errors stating the valid range, nothing written.
fn assert_bad_counts_refused(what: &str, ckpt: &Checkpoint, parent: &Path) {
    let l = ckpt.config.n_layers;
    for n in [0, l + 1] {
        let before = tree(parent);
        let out = parent.join(format!("bad-{n}"));
        let msg = match splitter::split(ckpt, &out, &opts(n, false)) {
            Ok(_) => panic!("{what}: {n} shards accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            states_range(&msg, l),
            "{what}: {n} shards: `{msg}` omits 1..={l}"
        );
        assert_eq!(tree(parent), before, "{what}: {n} shards left files");
    }
}

/// The fixtures split into 2 and 3 shards are balanced optimally; 3 (= n_layers) gives one
/// layer per shard; 0 and n_layers + 1 shards are refused with the valid range.
#[test]
fn fixture_splits_are_balanced_optimally() {
    for model in MODELS {
        let tmp = tempfile::tempdir().expect("tempdir");
        let l = facts(model).n_layers;
        for n in [2, l] {
            let s = split_n(&input_of(model), tmp.path(), n);
            assert_optimal(&format!("{model} into {n}"), &s.manifest);
            if n == l {
                let ranges: Vec<_> = s.manifest.shards.iter().map(|x| x.layers).collect();
                let one_each: Vec<_> = (0..l).map(|i| [i, i]).collect();
                assert_eq!(ranges, one_each, "{model}: one layer per shard");
            }
        }
        let ckpt = splitter::open(&input_of(model)).expect("open");
        assert_bad_counts_refused(model, &ckpt, tmp.path());
    }
}

/// The default model's GGUF (SmolLM2-135M, 30 layers, tied head) split into 3 shards: files match
/// the manifest and the largest shard is the brute-force optimum; 0 and 31 shards are refused.
#[test]
fn default_model_split_is_balanced_optimally() {
    common::default_model();
    let gguf = synapse::fetch::default_gguf_path();
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let start = std::time::Instant::now();
    let ckpt = splitter::open(&gguf).unwrap_or_else(|e| panic!("{}: {e}", gguf.display()));
    let out = tmp.path().join("smollm2-3");
    let m = splitter::split(&ckpt, &out, &opts(3, false)).expect("split");
    eprintln!("split {} in {:.2?}", gguf.display(), start.elapsed());
    let on_disk: Manifest = serde_json::from_str(
        &std::fs::read_to_string(out.join("manifest.json")).expect("manifest"),
    )
    .expect("manifest parses");
    assert_eq!(on_disk, m, "returned manifest vs manifest.json");
    for s in &m.shards {
        check_shard_file(&out, s);
    }
    assert_optimal("SmolLM2 into 3", &m);
    assert_bad_counts_refused("SmolLM2", &ckpt, tmp.path());
}

// ----------------------------------------------------------------------------- bad inputs

/// Byte position of the type field of tensor `name`'s info record in a GGUF file.
fn type_field(bytes: &[u8], g: &GgufFile, name: &str) -> usize {
    let t = g.tensor(name).unwrap_or_else(|| panic!("no `{name}`"));
    let record: Vec<u8> = [&(name.len() as u64).to_le_bytes()[..], name.as_bytes()].concat();
    let pos = bytes[..g.data_start()]
        .windows(record.len())
        .rposition(|w| w == record)
        .unwrap_or_else(|| panic!("tensor info of `{name}` not found"));
    // name, u32 dim count, u64 dims, then the u32 type.
    let at = pos + record.len() + 4 + 8 * t.dims.len();
    let ty = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!(ty, t.ty as u32, "type field of `{name}` located");
    at
}

/// A GGUF cut at many points (header, metadata, tensor infos, data, mid-tensor) or with a
/// wrong magic: an error naming the file, and nothing left behind.
#[test]
fn truncated_or_foreign_gguf_fails_cleanly() {
    let src = input_of("llama-gguf");
    let bytes = std::fs::read(&src).expect("read");
    let g = GgufFile::open(&src).expect("fixture GGUF");
    let ds = g.data_start();
    let first = &g.tensors()[0].name;
    let info_start = type_field(&bytes, &g, first) - 8 * g.tensors()[0].dims.len() - 4;
    let last = g
        .tensors()
        .iter()
        .max_by_key(|t| t.offset)
        .expect("tensors");
    let mid_tensor = ds + last.offset as usize + last.n_bytes() / 2;
    let cuts = [
        0,
        3,
        12,
        40,
        ds / 3,
        info_start,
        ds - 1,
        ds + 1,
        bytes.len() / 2,
        mid_tensor,
        bytes.len() - 1,
    ];
    for cut in cuts {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().join("cut.gguf");
        std::fs::write(&path, &bytes[..cut]).expect("write");
        let msg = split_error(root.path(), &path, 3, &path);
        if cut > ds {
            assert!(msg.contains("truncated"), "cut at {cut} (data): {msg}");
        }
        eprintln!("cut at {cut}: {msg}");
    }
    let root = tempfile::tempdir().expect("tempdir");
    let path = root.path().join("magic.gguf");
    let mut m = bytes.clone();
    m[..4].copy_from_slice(b"GGUX");
    std::fs::write(&path, &m).expect("write");
    let msg = split_error(root.path(), &path, 3, &path);
    assert!(msg.contains("GGUF"), "{msg}");
}

/// A tensor whose type id is patched to an unsupported type (IQ4_NL: same size as Q4_0, so it
/// fails only when read, mid-split), a type whose blocks do not fit (Q2_K) and an unknown id:
/// errors naming the file, the tensor and the type, and nothing left behind.
#[test]
fn unsupported_gguf_tensor_type_is_named() {
    let src = input_of("llama-gguf");
    let bytes = std::fs::read(&src).expect("read");
    let g = GgufFile::open(&src).expect("fixture GGUF");
    let q4_0 = splitter::quant::GgmlType::Q4_0;
    let victim = g
        .tensors()
        .iter()
        .filter(|t| t.ty == q4_0)
        .find(|t| t.name.starts_with("blk.1."))
        .expect("a Q4_0 tensor in block 1 of the fixture")
        .name
        .clone();
    let cases = [
        (victim.as_str(), 20u32, "IQ4_NL"),
        ("blk.0.ffn_norm.weight", 10, "Q2_K"),
        ("token_embd.weight", 99, " 99"),
    ];
    for (tensor, id, shows) in cases {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().join("patched.gguf");
        let mut m = bytes.clone();
        let at = type_field(&m, &g, tensor);
        m[at..at + 4].copy_from_slice(&id.to_le_bytes());
        std::fs::write(&path, &m).expect("write");
        let msg = split_error(root.path(), &path, 3, &path);
        assert!(
            msg.contains(shows) && msg.contains(tensor),
            "type {id} on `{tensor}`: {msg}"
        );
        eprintln!("type {id} on `{tensor}`: {msg}");
    }
}

/// Rewrites `path` without tensor `drop`, with the safetensors crate.
fn rewrite_without(path: &Path, drop: &str) {
    let bytes = std::fs::read(path).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let kept: Vec<(String, TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != drop)
        .collect();
    assert_eq!(kept.len() + 1, st.len(), "`{drop}` in {}", path.display());
    let (_, meta) = SafeTensors::read_metadata(&bytes).expect("header");
    let out = safetensors::serialize(kept, meta.metadata().clone()).expect("serialize");
    std::fs::write(path, out).expect("write");
}

/// Rewrites key `key` of `dir/config.json`.
fn edit_config(dir: &Path, key: &str, value: Value) {
    let path = dir.join("config.json");
    let mut c: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("config.json");
    c[key] = value;
    std::fs::write(&path, serde_json::to_string(&c).expect("json")).expect("write");
}

/// Broken Hugging Face folders: config.json missing, not JSON, or of an unsupported model type;
/// a tensor missing; a hidden size that contradicts the tensors; a truncated safetensors file.
/// Each gives an error naming the file (and the key, tensor or shapes), leaving nothing behind.
#[test]
fn broken_hf_folders_fail_cleanly() {
    type Breaker = fn(&Path) -> (PathBuf, Vec<String>);
    let cases: [(&str, &str, Breaker); 9] = [
        ("gpt2-hf", "no config.json", |d| {
            std::fs::remove_file(d.join("config.json")).expect("rm");
            (d.join("config.json"), vec![])
        }),
        ("llama-hf", "config.json not JSON", |d| {
            std::fs::write(d.join("config.json"), "{\"model_type\": ").expect("write");
            (d.join("config.json"), vec![])
        }),
        ("llama-hf", "model_type bert", |d| {
            edit_config(d, "model_type", "bert".into());
            (
                d.join("config.json"),
                vec!["unsupported".into(), "bert".into()],
            )
        }),
        ("gpt2-hf", "missing tensor", |d| {
            rewrite_without(&d.join("model.safetensors"), "h.1.mlp.c_fc.weight");
            (
                d.join("model.safetensors"),
                vec!["h.1.mlp.c_fc.weight".into()],
            )
        }),
        ("llama-hf", "missing tensor", |d| {
            let f = d.join("model-00002-of-00002.safetensors");
            rewrite_without(&f, "model.layers.2.mlp.up_proj.weight");
            let words = ["model.layers.2.mlp.up_proj.weight", ".safetensors"];
            (d.to_path_buf(), words.map(String::from).to_vec())
        }),
        ("gpt2-hf", "n_embd 48 -> 60", |d| {
            edit_config(d, "n_embd", 60.into());
            (d.join("model.safetensors"), vec!["60".into(), "48".into()])
        }),
        ("llama-hf", "hidden_size 64 -> 80", |d| {
            edit_config(d, "hidden_size", 80.into());
            let words = ["80", "64", ".safetensors"];
            (d.to_path_buf(), words.map(String::from).to_vec())
        }),
        ("llama-hf", "safetensors cut in the data", |d| {
            let f = d.join("model-00002-of-00002.safetensors");
            let b = std::fs::read(&f).expect("read");
            std::fs::write(&f, &b[..b.len() - 100]).expect("write");
            (f, vec![])
        }),
        ("gpt2-hf", "safetensors cut in the header", |d| {
            let f = d.join("model.safetensors");
            let b = std::fs::read(&f).expect("read");
            std::fs::write(&f, &b[..20]).expect("write");
            (f, vec![])
        }),
    ];
    for (model, what, breaker) in cases {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join(model);
        copy_dir(&input_of(model), &dir);
        let (file, words) = breaker(&dir);
        let msg = split_error(root.path(), &dir, 3, &file);
        for w in &words {
            assert!(
                msg.contains(w.as_str()),
                "{model}, {what}: `{w}` not in: {msg}"
            );
        }
        if what.contains("->") {
            // A shape error names a tensor of the checkpoint and its shape in the file.
            let original = hf_original(&input_of(model), model == "gpt2-hf");
            let raw = |n: &str| {
                let t = &original[n];
                let mut s = t.shape.clone();
                if model == "gpt2-hf" && is_conv1d(n) {
                    s.reverse();
                }
                format!("{s:?}")
            };
            let named = original.keys().filter(|n| msg.contains(&format!("`{n}`")));
            let named: Vec<_> = named.collect();
            assert!(!named.is_empty(), "{model}, {what}: no tensor named: {msg}");
            assert!(
                named.iter().any(|n| msg.contains(&raw(n))),
                "{model}, {what}: the file's shape is not given: {msg}"
            );
        }
        eprintln!("{model}, {what}: {msg}");
    }
}

/// An existing non-empty output directory is refused without force (contents untouched, no
/// temporary directory left) and replaced with it.
#[test]
fn existing_output_needs_force() {
    let input = input_of("llama-gguf");
    let root = tempfile::tempdir().expect("tempdir");
    let out = root.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    std::fs::write(out.join("keep.txt"), "mine").expect("write");
    let ckpt = splitter::open(&input).expect("open");
    let before = tree(root.path());
    let e = splitter::split(&ckpt, &out, &opts(2, false)).expect_err("non-empty output");
    let msg = e.to_string();
    assert!(msg.contains(&out.display().to_string()), "{msg}");
    assert!(
        msg.contains("force"),
        "does not say how to replace it: {msg}"
    );
    assert_eq!(tree(root.path()), before, "refused split changed files");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).expect("kept"),
        "mine"
    );

    let m = splitter::split(&ckpt, &out, &opts(2, true)).expect("forced split");
    let s = Split::read(&out);
    assert_eq!(s.manifest, m);
    assert!(
        !out.join("keep.txt").exists(),
        "old contents survive --force"
    );
    let top: Vec<_> = tree(root.path())
        .into_iter()
        .filter(|p| p.components().count() == 1)
        .collect();
    assert_eq!(top, [PathBuf::from("out")], "leftovers beside the output");
}

// ----------------------------------------------------------------------------- CLI

fn synapse(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_synapse"))
        .args(args)
        .output()
        .expect("running synapse")
}

/// `synapse split`: success prints the output directory last; a bad file or `--shards 0` exits
/// non-zero with `synapse: error:` and a message naming the file or the valid range.
#[test]
fn cli_split_reports_output_and_errors() {
    let input = input_of("llama-gguf");
    let root = tempfile::tempdir().expect("tempdir");
    let out = root.path().join("model");
    let run = |input: &Path, out: &Path, shards: &str| {
        synapse(&[
            "split".as_ref(),
            input.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--shards".as_ref(),
            shards.as_ref(),
        ])
    };
    let ok = run(&input, &out, "2");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "exit {:?}: {stderr}", ok.status);
    let last = stdout.lines().rfind(|l| !l.trim().is_empty());
    assert_eq!(
        last,
        Some(out.display().to_string().as_str()),
        "stdout: {stdout}"
    );
    assert_eq!(Split::read(&out).manifest.shards.len(), 2);

    let bad = root.path().join("bad.gguf");
    let mut bytes = std::fs::read(&input).expect("read");
    bytes[..4].copy_from_slice(b"GGUX");
    std::fs::write(&bad, &bytes).expect("write");
    let missing = root.path().join("absent.gguf");
    for file in [&bad, &missing] {
        let out = root.path().join("never");
        let r = run(file, &out, "2");
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{}: exit 0", file.display());
        assert!(stderr.starts_with("synapse: error:"), "stderr: {stderr}");
        assert!(
            stderr.contains(&file.display().to_string()),
            "stderr: {stderr}"
        );
        assert!(!out.exists(), "{}: output written", file.display());
    }

    let out0 = root.path().join("zero");
    let r = run(&input, &out0, "0");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "--shards 0: exit 0");
    assert!(stderr.starts_with("synapse: error:"), "stderr: {stderr}");
    assert!(
        states_range(&stderr, 3),
        "--shards 0 does not give the range: {stderr}"
    );
    assert!(!out0.exists(), "--shards 0 wrote output");
    let top: BTreeSet<_> = tree(root.path())
        .into_iter()
        .filter(|p| p.components().count() == 1)
        .collect();
    let want: BTreeSet<PathBuf> = ["model", "bad.gguf"].iter().map(PathBuf::from).collect();
    assert_eq!(top, want, "leftovers");
}

/// Every tensor of every shard written with `--weights MODE` is, byte for byte, what the
/// independent reference (gguf-py's `quantize`, or the GGUF's own blocks with rows
/// un-permuted) holds, with the type and stored shape the manifest records.
#[test]
fn weights_modes_write_the_reference_bytes() {
    for (model, mode) in common::WEIGHTS_CASES {
        let reference = common::weights_reference(model, mode);
        let ref_bytes =
            std::fs::read(common::weights_reference_path(model, mode, "safetensors")).unwrap();
        let want = SafeTensors::deserialize(&ref_bytes).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        for n in [1, 3] {
            let at = format!("{model} --weights {mode}, {n} shards");
            let (dir, _) = common::split_weights(&input_of(model), tmp.path(), n, mode);
            let m = Manifest::load(&dir).unwrap();
            let mut seen = BTreeSet::new();
            for info in &m.shards {
                let bytes = check_sizes(&dir, info);
                let st = SafeTensors::deserialize(&bytes).unwrap();
                for t in &info.tensors {
                    // A tied head is the embedding's bytes again.
                    let source = if t.name == "lm_head.weight" && m.config.tied_head {
                        "model.embed_tokens.weight"
                    } else {
                        t.name.as_str()
                    };
                    seen.insert(source.to_string());
                    assert_eq!(
                        t.dtype.name(),
                        reference.types[source],
                        "{at}: type of `{}`",
                        t.name
                    );
                    let got = st.tensor(&t.name).unwrap();
                    let exp = want.tensor(source).unwrap();
                    assert_eq!(got.dtype(), exp.dtype(), "{at}: dtype of `{}`", t.name);
                    assert_eq!(
                        got.shape(),
                        exp.shape(),
                        "{at}: stored shape of `{}`",
                        t.name
                    );
                    let row = exp.data().len() / exp.shape()[0];
                    let bad: Vec<usize> = got
                        .data()
                        .chunks(row)
                        .zip(exp.data().chunks(row))
                        .enumerate()
                        .filter(|(_, (a, b))| a != b)
                        .map(|(i, _)| i)
                        .collect();
                    assert!(
                        bad.is_empty(),
                        "{at}: `{}`: {} of {} rows differ from the reference, first row {}",
                        t.name,
                        bad.len(),
                        exp.shape()[0],
                        bad[0]
                    );
                }
            }
            assert_eq!(seen.len(), reference.types.len(), "{at}: tensors covered");
        }
    }
}

/// Size and sha256 of a shard file against the manifest; returns its bytes.
fn check_sizes(dir: &Path, info: &ShardInfo) -> Vec<u8> {
    let path = dir.join(&info.file);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, info.bytes, "{}: size", path.display());
    assert_eq!(
        format!("{:x}", Sha256::digest(&bytes)),
        info.sha256,
        "{}: sha256",
        path.display()
    );
    bytes
}

/// The notes say what could not be kept, one line per pair of types; `keep` on a Hugging Face
/// folder is f16; rows that are not whole blocks are refused with the tensor and its shape, and
/// nothing is left behind.
#[test]
fn weights_modes_note_conversions_and_refuse_partial_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = input_of("llama-gguf");
    let (_, notes) = common::split_weights(&gguf, tmp.path(), 2, "keep");
    assert_eq!(
        notes,
        vec!["converted 1 BF16 tensor to f16 (shards do not keep BF16)"]
    );
    let (_, notes) = common::split_weights(&gguf, tmp.path(), 2, "q4_1");
    let lines = notes.join("\n");
    for t in ["Q4_0", "Q8_0"] {
        assert!(
            lines.contains("re-quantized") && lines.contains(t),
            "{lines}"
        );
    }
    assert!(
        !lines.contains("F16") && !lines.contains("BF16"),
        "float sources are quantized silently: {lines}"
    );
    let (dir, notes) = common::split_weights(&input_of("llama-hf"), tmp.path(), 1, "keep");
    assert!(notes.is_empty(), "{notes:?}");
    let m = Manifest::load(&dir).unwrap();
    assert!(
        m.shards[0]
            .tensors
            .iter()
            .all(|t| t.dtype == splitter::TensorType::F16)
    );
    assert_eq!(m.dtype, "f16");

    let root = tmp.path().join("gpt2");
    std::fs::create_dir_all(&root).unwrap();
    let before = tree(&root);
    let ckpt = splitter::open(&input_of("gpt2-hf")).unwrap();
    let mut o = opts(1, false);
    o.weights = splitter::WeightsMode::parse("q8_0").unwrap();
    let err = splitter::split(&ckpt, &root.join("out"), &o)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("q8_0") && err.contains("48") && err.contains("--weights f16"),
        "{err}"
    );
    assert_eq!(tree(&root), before, "a refused split leaves nothing behind");
}

/// A directory written by an older Synapse (manifest version 1, no tensor types) is refused
/// with a message telling the user to re-split; a tensor type that does not fit its shape is
/// refused as corrupt.
#[test]
fn older_manifests_are_told_to_re_split() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = common::split_weights(&input_of("llama-hf"), tmp.path(), 1, "q4_1");
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["version"] = 1.into();
    for t in v["shards"][0]["tensors"].as_array_mut().unwrap() {
        t.as_object_mut().unwrap().remove("dtype");
    }
    std::fs::write(&path, v.to_string()).unwrap();
    let err = Manifest::load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("version 1") && err.contains("re-split") && err.contains("synapse split"),
        "{err}"
    );

    let mut v: Value = serde_json::from_str(&text).unwrap();
    let t = &mut v["shards"][0]["tensors"][0];
    t["dtype"] = "q8_0".into();
    t["shape"] = serde_json::json!([64]);
    let name = t["name"].as_str().unwrap().to_string();
    std::fs::write(&path, v.to_string()).unwrap();
    let err = Manifest::load(&dir).unwrap_err().to_string();
    assert!(err.contains(&name) && err.contains("q8_0"), "{err}");
}

/// `synapse split --weights`: `keep` on the GGUF fixture prints one note per converted type and
/// the weight summary; an unknown mode is refused by the argument parser with the choices, and
/// a mode the model's rows cannot take exits non-zero naming the tensor, writing nothing.
#[test]
fn cli_split_weights_flag() {
    let root = tempfile::tempdir().expect("tempdir");
    let split = |input: &Path, out: &Path, weights: &str| {
        synapse(&[
            "split".as_ref(),
            input.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--shards".as_ref(),
            "2".as_ref(),
            "--weights".as_ref(),
            weights.as_ref(),
        ])
    };
    let out = root.path().join("keep");
    let r = split(&input_of("llama-gguf"), &out, "keep");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "exit {:?}: {stderr}", r.status);
    let notes: Vec<&str> = stderr.lines().filter(|l| l.starts_with("note: ")).collect();
    assert_eq!(
        notes,
        ["note: converted 1 BF16 tensor to f16 (shards do not keep BF16)"],
        "{stderr}"
    );
    // The summary type is the one holding most matrix bytes: here the Q8_0 embedding, stored
    // twice (the last shard's tied head), outweighs this tiny model's Q4_1 layers.
    assert!(stderr.contains("weights keep (q8_0)"), "{stderr}");
    assert_eq!(Manifest::load(&out).unwrap().dtype, "q8_0");

    let never = root.path().join("never");
    let r = split(&input_of("llama-gguf"), &never, "q4_k");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        stderr.contains("q4_k") && stderr.contains("keep, f16, q8_0, q4_0, q4_1"),
        "{stderr}"
    );
    let r = split(&input_of("gpt2-hf"), &never, "q4_0");
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        stderr.starts_with("synapse: error:") && stderr.contains("`wte.weight` [297, 48]"),
        "{stderr}"
    );
    assert!(!never.exists(), "a refused split wrote output");
}
