//! Reads one shard file (safetensors) into memory and hands out its tensors by name, with
//! their logical shapes and storage types checked against the manifest.
//!
//! f16 and f32 tensors are held as values; block tensors (`q8_0`, `q4_0`, `q4_1`, `q4_k`,
//! `q6_k`) are held as
//! the GGML blocks the file carries ([`Stored::Blocks`]). The CPU engine computes on those
//! directly ([`ShardTensors::take_matrix`]); [`ShardTensors::take`] expands any tensor to f16,
//! which is how the GPU engine loads block tensors until it has kernels for them.

use std::collections::HashMap;
use std::path::Path;

use half::f16;
use safetensors::SafeTensors;
use splitter::write::safetensors_dtype;
use splitter::{ShardInfo, TensorType};

use super::EngineError;

/// A tensor's values as the shard file stores them.
#[derive(Debug, Clone)]
pub enum Stored {
    F16(Vec<f16>),
    F32(Vec<f32>),
    /// GGML blocks of `ty`, rows of whole blocks one after another.
    Blocks {
        ty: TensorType,
        bytes: Vec<u8>,
    },
}

impl Stored {
    /// The storage type.
    pub fn ty(&self) -> TensorType {
        match self {
            Stored::F16(_) => TensorType::F16,
            Stored::F32(_) => TensorType::F32,
            Stored::Blocks { ty, .. } => *ty,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Stored::F16(v) => v.len() * 2,
            Stored::F32(v) => v.len() * 4,
            Stored::Blocks { bytes, .. } => bytes.len(),
        }
    }
}

/// A `(rows, cols)` weight matrix in its storage type: each row is one output feature.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Stored,
}

impl Matrix {
    /// An f16 matrix (synthetic weights, tests).
    pub fn f16(rows: usize, cols: usize, data: Vec<f16>) -> Matrix {
        assert_eq!(data.len(), rows * cols, "f16 matrix is not (rows, cols)");
        Matrix {
            rows,
            cols,
            data: Stored::F16(data),
        }
    }

    /// Row `r` as f32 into `out` (`cols` long): the embedding lookup reads only the rows it
    /// needs this way.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        let c = self.cols;
        match &self.data {
            Stored::F16(v) => v[r * c..(r + 1) * c].convert_to_f32_slice(out),
            Stored::F32(v) => out.copy_from_slice(&v[r * c..(r + 1) * c]),
            Stored::Blocks { ty, bytes } => {
                let rb = ty.row_bytes(c);
                super::cpu::blocks::decode_row(*ty, &bytes[r * rb..(r + 1) * rb], out)
            }
        }
    }
}

/// The tensors of one shard file, by name: `(logical shape, values)`.
pub struct ShardTensors {
    path: String,
    tensors: HashMap<String, (Vec<usize>, Stored)>,
}

impl ShardTensors {
    /// Reads `path`, checking its size against the manifest's `info.bytes` and every tensor's
    /// safetensors dtype and shape against the type and shape `info.tensors` records.
    pub fn load(path: &Path, info: &ShardInfo) -> Result<Self, EngineError> {
        let shown = path.display().to_string();
        let err = |what: String| EngineError::Load {
            path: shown.clone(),
            what,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        if bytes.len() as u64 != info.bytes {
            return Err(err(format!(
                "{} bytes, the manifest says {}",
                bytes.len(),
                info.bytes
            )));
        }
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| err(format!("not safetensors: {e}")))?;
        let declared: HashMap<&str, _> =
            info.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let bad = |what: String| EngineError::Tensor {
                path: shown.clone(),
                tensor: name.clone(),
                what,
            };
            let Some(t) = declared.get(name.as_str()) else {
                return Err(bad("not listed in the manifest".into()));
            };
            let (want_dtype, want_shape) =
                (safetensors_dtype(t.dtype), t.dtype.stored_shape(&t.shape));
            if view.dtype() != want_dtype || view.shape() != want_shape.as_slice() {
                return Err(bad(format!(
                    "stored as {:?} {:?}; a {} tensor of shape {:?} is stored as {want_dtype:?} \
                     {want_shape:?}",
                    view.dtype(),
                    view.shape(),
                    t.dtype,
                    t.shape
                )));
            }
            let data = view.data();
            let stored = match t.dtype {
                TensorType::F16 => Stored::F16(
                    data.chunks_exact(2)
                        .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])))
                        .collect(),
                ),
                TensorType::F32 => Stored::F32(
                    data.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                ty => Stored::Blocks {
                    ty,
                    bytes: data.to_vec(),
                },
            };
            tensors.insert(name, (t.shape.clone(), stored));
        }
        Ok(ShardTensors {
            path: shown,
            tensors,
        })
    }

    /// Wraps f16 tensors already in memory (synthetic weights for benchmarks); `label` stands
    /// for the file name in errors.
    pub fn from_memory(label: &str, tensors: HashMap<String, (Vec<usize>, Vec<f16>)>) -> Self {
        ShardTensors {
            path: label.to_string(),
            tensors: tensors
                .into_iter()
                .map(|(n, (s, v))| (n, (s, Stored::F16(v))))
                .collect(),
        }
    }

    /// Wraps tensors of any storage type already in memory.
    pub fn from_stored(label: &str, tensors: HashMap<String, (Vec<usize>, Stored)>) -> Self {
        ShardTensors {
            path: label.to_string(),
            tensors,
        }
    }

    fn remove(&mut self, name: &str, shape: &[usize]) -> Result<Stored, EngineError> {
        let (found, data) = self
            .tensors
            .remove(name)
            .ok_or_else(|| EngineError::Tensor {
                path: self.path.clone(),
                tensor: name.into(),
                what: "missing".into(),
            })?;
        if found != shape {
            return Err(EngineError::Tensor {
                path: self.path.clone(),
                tensor: name.into(),
                what: format!("shape {found:?}, expected {shape:?}"),
            });
        }
        Ok(data)
    }

    /// Removes and returns tensor `name`, which must have shape `shape`, as f16. A block
    /// tensor is dequantized (the GPU engine's interim path; f16 is exact for the block
    /// types' values only up to f16 rounding of `q * d (+ m)`).
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f16>, EngineError> {
        Ok(match self.remove(name, shape)? {
            Stored::F16(v) => v,
            Stored::F32(v) => v.iter().map(|x| f16::from_f32(*x)).collect(),
            Stored::Blocks { ty, bytes } => {
                let n: usize = shape.iter().product();
                let mut out = vec![0f32; n];
                let cols = shape.last().copied().unwrap_or(1);
                for (o, b) in out
                    .chunks_exact_mut(cols)
                    .zip(bytes.chunks_exact(ty.row_bytes(cols)))
                {
                    super::cpu::blocks::decode_row(ty, b, o);
                }
                out.iter().map(|x| f16::from_f32(*x)).collect()
            }
        })
    }

    /// Removes and returns matrix `name` of shape `[rows, cols]` in its storage type.
    pub fn take_matrix(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Matrix, EngineError> {
        let data = self.remove(name, &[rows, cols])?;
        Ok(Matrix { rows, cols, data })
    }

    /// Like [`take`](Self::take) for a tensor that may be absent.
    pub fn take_optional(
        &mut self,
        name: &str,
        shape: &[usize],
    ) -> Result<Option<Vec<f16>>, EngineError> {
        if self.tensors.contains_key(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Names left untaken: a shard carrying tensors the engine did not expect is suspicious.
    pub fn finish(self) -> Result<(), EngineError> {
        match self.tensors.keys().next() {
            None => Ok(()),
            Some(name) => Err(EngineError::Tensor {
                path: self.path,
                tensor: name.clone(),
                what: "unexpected in this shard".into(),
            }),
        }
    }
}
