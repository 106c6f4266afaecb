//! Writing a model directory from a [`Checkpoint`]: one safetensors file per shard (only the
//! tensors that shard needs, each in the type [`weights_mode::choose`] picks), `tokenizer.json`
//! and `manifest.json`.
//!
//! Everything is written into a hidden temporary directory beside the target and renamed into
//! place only when complete, so a failure (bad tensor, full disk, Ctrl-C) never leaves a
//! half-written model directory behind.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use sha2::{Digest, Sha256};

use crate::checkpoint::{Checkpoint, Part, canonical_tensors, embedding_name, head_name};
use crate::error::{Result, SplitError};
use crate::manifest::{
    FORMAT_NAME, FORMAT_VERSION, MANIFEST_FILE, Manifest, ShardInfo, TOKENIZER_FILE, TensorInfo,
};
use crate::plan;
use crate::quantize::quantize;
use crate::tensor_type::TensorType;
pub use crate::weights_mode::WeightsMode;
use crate::weights_mode::{Choice, Notes, choose};

/// Options of [`split`].
#[derive(Debug, Clone)]
pub struct SplitOptions {
    /// Number of shards, 1 to the number of layers.
    pub shards: usize,
    /// Replace an existing output directory.
    pub force: bool,
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Storage type of the matrices.
    pub weights: WeightsMode,
}

/// What [`split_with_notes`] wrote.
#[derive(Debug, Clone)]
pub struct SplitOutcome {
    pub manifest: Manifest,
    /// One line per conversion the source needed (e.g. `converted 30 Q6_K tensors to q8_0`).
    pub notes: Vec<String>,
}

/// The file name of shard `i` of `n`.
pub fn shard_file_name(i: usize, n: usize) -> String {
    format!("shard-{:02}-of-{:02}.safetensors", i, n)
}

/// Splits `ckpt` into `opts.shards` shards written to `out`.
pub fn split(ckpt: &Checkpoint, out: &Path, opts: &SplitOptions) -> Result<Manifest> {
    split_with_notes(ckpt, out, opts).map(|o| o.manifest)
}

/// [`split`], also returning the notes on converted types (the CLI prints them).
pub fn split_with_notes(
    ckpt: &Checkpoint,
    out: &Path,
    opts: &SplitOptions,
) -> Result<SplitOutcome> {
    let cfg = &ckpt.config;
    let tensors = canonical_tensors(ckpt.arch, cfg);
    let head = head_name(ckpt.arch);
    // Every tensor's storage, decided once: `(name) -> choice`. A tied head is read from the
    // embedding, so it gets the embedding's choice.
    let mut notes = Notes::default();
    let mut choices: HashMap<String, Choice> = HashMap::new();
    for (_, name, shape) in &tensors {
        if cfg.tied_head && name == head {
            continue;
        }
        let c = choose(
            opts.weights,
            name,
            shape,
            ckpt.reader.source_type(name),
            &mut notes,
        )?;
        choices.insert(name.clone(), c);
    }
    if cfg.tied_head {
        let c = choices[embedding_name(ckpt.arch)];
        choices.insert(head.to_string(), c);
    }
    let size = |name: &str, shape: &[usize]| choices[name].ty.bytes_for(shape) as u64;
    let bytes_of = |part: Part| -> u64 {
        tensors
            .iter()
            .filter(|(p, name, _)| *p == part && !(cfg.tied_head && name == head))
            .map(|(_, n, s)| size(n, s))
            .sum()
    };
    let layer_bytes: Vec<u64> = (0..cfg.n_layers)
        .map(|i| bytes_of(Part::Layer(i)))
        .collect();
    let head_matrix = size(head, &[cfg.vocab_size, cfg.hidden_size]);
    // A tied head costs its bytes on the last shard unless that shard also holds the embedding.
    let head_extra = bytes_of(Part::Head)
        + if cfg.tied_head && opts.shards > 1 {
            head_matrix
        } else {
            0
        };
    let ranges = plan::balance(
        &layer_bytes,
        bytes_of(Part::Embedding),
        head_extra,
        opts.shards,
    )?;

    if out.exists() {
        let empty = out
            .read_dir()
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty && !opts.force {
            return Err(SplitError::Invalid(format!(
                "{} already exists and is not empty (pass --force to replace it)",
                out.display()
            )));
        }
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| SplitError::io(&parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".synapse-split-")
        .tempdir_in(&parent)
        .map_err(|e| SplitError::io(&parent, e))?;

    let total: u64 = ranges
        .iter()
        .enumerate()
        .map(|(i, r)| shard_tensors(ckpt, &tensors, i, &ranges, r).len() as u64)
        .sum();
    let bar = if opts.progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} tensors {elapsed}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut shards = Vec::new();
    for (i, range) in ranges.iter().enumerate() {
        bar.set_message(format!("shard {}/{}", i + 1, ranges.len()));
        let wanted = shard_tensors(ckpt, &tensors, i, &ranges, range);
        let mut data: Vec<(String, Vec<usize>, TensorType, Vec<u8>)> = Vec::new();
        for (name, source, shape) in &wanted {
            let choice = choices[name.as_str()];
            // Values are read (dequantized) even for a copy, to refuse non-finite weights.
            let values = ckpt.reader.read(source, shape)?;
            if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
                return Err(SplitError::corrupt(
                    &ckpt.path,
                    format!("tensor `{source}` holds a non-finite value at element {bad}"),
                ));
            }
            let bytes = if choice.copy && choice.ty.is_block() {
                ckpt.reader.read_raw(source, shape)?
            } else {
                let mut b = Vec::new();
                quantize(choice.ty, &values, &mut b)
                    .map_err(|e| SplitError::Invalid(format!("tensor `{source}`: {e}")))?;
                b
            };
            if bytes.len() != choice.ty.bytes_for(shape) {
                return Err(SplitError::corrupt(
                    &ckpt.path,
                    format!(
                        "tensor `{source}`: {} bytes of {}, expected {}",
                        bytes.len(),
                        choice.ty,
                        choice.ty.bytes_for(shape)
                    ),
                ));
            }
            data.push((name.clone(), shape.clone(), choice.ty, bytes));
            bar.inc(1);
        }
        let views: Vec<(String, TensorView)> = data
            .iter()
            .map(|(n, s, ty, b)| {
                Ok((
                    n.clone(),
                    TensorView::new(safetensors_dtype(*ty), ty.stored_shape(s), b)
                        .map_err(|e| SplitError::Invalid(e.to_string()))?,
                ))
            })
            .collect::<Result<_>>()?;
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT_NAME.to_string());
        meta.insert(
            "layers".to_string(),
            format!("{}-{}", range.start, range.end - 1),
        );
        let file_bytes = safetensors::serialize(views, Some(meta))
            .map_err(|e| SplitError::Invalid(e.to_string()))?;
        let file = shard_file_name(i, ranges.len());
        let path = tmp.path().join(&file);
        std::fs::write(&path, &file_bytes).map_err(|e| SplitError::io(&path, e))?;
        shards.push(ShardInfo {
            index: i,
            layers: [range.start, range.end - 1],
            file,
            bytes: file_bytes.len() as u64,
            sha256: hex(&Sha256::digest(&file_bytes)),
            has_embedding: i == 0,
            has_head: i + 1 == ranges.len(),
            tensors: data
                .iter()
                .map(|(n, s, ty, _)| TensorInfo {
                    name: n.clone(),
                    shape: s.clone(),
                    dtype: *ty,
                })
                .collect(),
        });
    }
    bar.finish_and_clear();

    let manifest = Manifest {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        architecture: ckpt.arch,
        config: cfg.clone(),
        tokenizer: TOKENIZER_FILE.into(),
        chat_template: ckpt.chat_template.clone(),
        dtype: main_type(&shards).name().into(),
        source: ckpt.source.clone(),
        shards,
    };
    manifest.validate(&out.join(MANIFEST_FILE))?;
    let tok_path = tmp.path().join(TOKENIZER_FILE);
    std::fs::write(&tok_path, &ckpt.tokenizer_json).map_err(|e| SplitError::io(&tok_path, e))?;
    let man_path = tmp.path().join(MANIFEST_FILE);
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    std::fs::write(&man_path, json).map_err(|e| SplitError::io(&man_path, e))?;

    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| SplitError::io(out, e))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, out).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        SplitError::io(out, e)
    })?;
    Ok(SplitOutcome {
        manifest,
        notes: notes.lines(),
    })
}

/// The safetensors dtype a tensor of storage type `ty` is written as.
pub fn safetensors_dtype(ty: TensorType) -> Dtype {
    match ty {
        TensorType::F32 => Dtype::F32,
        TensorType::F16 => Dtype::F16,
        _ => Dtype::U8,
    }
}

/// The storage type holding most matrix bytes (f16 when there are no matrices).
fn main_type(shards: &[ShardInfo]) -> TensorType {
    let mut bytes: HashMap<TensorType, usize> = HashMap::new();
    for t in shards.iter().flat_map(|s| &s.tensors) {
        if t.shape.len() == 2 {
            *bytes.entry(t.dtype).or_default() += t.dtype.bytes_for(&t.shape);
        }
    }
    TensorType::ALL
        .into_iter()
        .max_by_key(|t| bytes.get(t).copied().unwrap_or(0))
        .filter(|t| bytes.contains_key(t))
        .unwrap_or(TensorType::F16)
}

/// `(name in shard, name to read, shape)` of every tensor shard `i` holds. A tied head is read
/// from the embedding and stored as the head, unless the shard holds the embedding already.
fn shard_tensors(
    ckpt: &Checkpoint,
    tensors: &[(Part, String, Vec<usize>)],
    i: usize,
    ranges: &[Range<usize>],
    range: &Range<usize>,
) -> Vec<(String, String, Vec<usize>)> {
    let (first, last) = (i == 0, i + 1 == ranges.len());
    let head = head_name(ckpt.arch);
    tensors
        .iter()
        .filter(|(part, name, _)| match part {
            Part::Embedding => first,
            Part::Layer(l) => range.contains(l),
            Part::Head if name == head && ckpt.config.tied_head => last && !first,
            Part::Head => last,
        })
        .map(|(_, name, shape)| {
            let source = if name == head && ckpt.config.tied_head {
                embedding_name(ckpt.arch)
            } else {
                name
            };
            (name.clone(), source.to_string(), shape.clone())
        })
        .collect()
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
