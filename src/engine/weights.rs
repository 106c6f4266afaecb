//! Reads one shard file (safetensors, f16) into memory and hands out its tensors by name with
//! their shapes checked against what the architecture expects.

use std::collections::HashMap;
use std::path::Path;

use half::f16;
use safetensors::{Dtype, SafeTensors};

use super::EngineError;

/// The f16 tensors of one shard file, by name.
pub struct ShardTensors {
    path: String,
    tensors: HashMap<String, (Vec<usize>, Vec<f16>)>,
}

impl ShardTensors {
    /// Reads `path`, checking its size against `expected_bytes` (from the manifest) and that
    /// every tensor is f16.
    pub fn load(path: &Path, expected_bytes: u64) -> Result<Self, EngineError> {
        let shown = path.display().to_string();
        let err = |what: String| EngineError::Load {
            path: shown.clone(),
            what,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        if bytes.len() as u64 != expected_bytes {
            return Err(err(format!(
                "{} bytes, the manifest says {expected_bytes}",
                bytes.len()
            )));
        }
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| err(format!("not safetensors: {e}")))?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F16 {
                return Err(EngineError::Tensor {
                    path: shown.clone(),
                    tensor: name,
                    what: format!("dtype {:?}, expected F16", view.dtype()),
                });
            }
            let data: Vec<f16> = view
                .data()
                .chunks_exact(2)
                .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])))
                .collect();
            tensors.insert(name, (view.shape().to_vec(), data));
        }
        Ok(ShardTensors {
            path: shown,
            tensors,
        })
    }

    /// Wraps tensors already in memory (synthetic weights for benchmarks); `label` stands for
    /// the file name in errors.
    pub fn from_memory(label: &str, tensors: HashMap<String, (Vec<usize>, Vec<f16>)>) -> Self {
        ShardTensors {
            path: label.to_string(),
            tensors,
        }
    }

    /// Removes and returns tensor `name`, which must have shape `shape`.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f16>, EngineError> {
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
