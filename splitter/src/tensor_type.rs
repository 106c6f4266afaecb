//! Storage types of tensors in shard files, as recorded per tensor in the manifest.
//!
//! `f32` and `f16` tensors are plain safetensors tensors of their logical shape. A block type
//! (`q8_0`, `q4_0`, `q4_1`) is stored as a safetensors `U8` tensor of shape
//! `[rows, bytes per row]` whose bytes are GGML blocks exactly as ggml lays them out
//! (ggml-common.h): each row of the logical `[rows, cols]` matrix is `cols / block` consecutive
//! blocks (32 weights; 256 for the K-quants `q4_k`, `q6_k`), so a row never shares a block with
//! the next. Adding a type is one variant here plus its decoder and kernel in the CPU engine.

use serde::{Deserialize, Serialize};

use crate::quant::GgmlType;

/// How a tensor's values are stored in a shard file.
#[allow(non_camel_case_types)] // ggml's names
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TensorType {
    #[serde(rename = "f32")]
    F32,
    #[serde(rename = "f16")]
    F16,
    /// 32 weights in 34 bytes: f16 scale, 32 × i8.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 32 weights in 18 bytes: f16 scale, 32 × 4-bit offset by 8.
    #[serde(rename = "q4_0")]
    Q4_0,
    /// 32 weights in 20 bytes: f16 scale, f16 minimum, 32 × 4-bit.
    #[serde(rename = "q4_1")]
    Q4_1,
    /// 256 weights in 144 bytes: f16 scale and min, eight 6-bit sub-scales and mins, 4-bit.
    /// Kept from a GGUF only (Synapse does not quantize to it).
    #[serde(rename = "q4_k")]
    Q4_K,
    /// 256 weights in 210 bytes: 6-bit values, sixteen i8 sub-scales, f16 scale. Kept only.
    #[serde(rename = "q6_k")]
    Q6_K,
}

impl TensorType {
    /// Every storage type, in order of decreasing size per weight.
    pub const ALL: [TensorType; 7] = [
        TensorType::F32,
        TensorType::F16,
        TensorType::Q8_0,
        TensorType::Q6_K,
        TensorType::Q4_1,
        TensorType::Q4_K,
        TensorType::Q4_0,
    ];

    /// The block types `synapse split --weights` can quantize f16/f32 values into.
    pub const QUANTIZABLE: [TensorType; 3] = [TensorType::Q8_0, TensorType::Q4_0, TensorType::Q4_1];

    /// The manifest's name, e.g. `q4_1`.
    pub fn name(self) -> &'static str {
        match self {
            TensorType::F32 => "f32",
            TensorType::F16 => "f16",
            TensorType::Q8_0 => "q8_0",
            TensorType::Q4_0 => "q4_0",
            TensorType::Q4_1 => "q4_1",
            TensorType::Q4_K => "q4_k",
            TensorType::Q6_K => "q6_k",
        }
    }

    /// The type named `s` (case-insensitive).
    pub fn parse(s: &str) -> Option<TensorType> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }

    /// The GGML type with the same layout.
    pub fn ggml(self) -> GgmlType {
        match self {
            TensorType::F32 => GgmlType::F32,
            TensorType::F16 => GgmlType::F16,
            TensorType::Q8_0 => GgmlType::Q8_0,
            TensorType::Q4_0 => GgmlType::Q4_0,
            TensorType::Q4_1 => GgmlType::Q4_1,
            TensorType::Q4_K => GgmlType::Q4_K,
            TensorType::Q6_K => GgmlType::Q6_K,
        }
    }

    /// The storage type whose layout is GGML type `g`, if shards keep it as it is.
    pub fn from_ggml(g: GgmlType) -> Option<TensorType> {
        Self::ALL.into_iter().find(|t| t.ggml() == g)
    }

    /// True for the GGML block types (stored as `U8` rows of blocks).
    pub fn is_block(self) -> bool {
        !matches!(self, TensorType::F32 | TensorType::F16)
    }

    /// Elements per block (1 for f32 and f16).
    pub fn block_size(self) -> usize {
        self.ggml().block_size()
    }

    /// Bytes per block (per element for f32 and f16).
    pub fn block_bytes(self) -> usize {
        self.ggml().type_size()
    }

    /// Checks that a tensor of logical shape `shape` can be stored in this type: block types
    /// need a matrix whose rows are whole blocks.
    pub fn check_shape(self, shape: &[usize]) -> Result<(), String> {
        if !self.is_block() {
            return Ok(());
        }
        match shape {
            [_, cols] if cols.is_multiple_of(self.block_size()) => Ok(()),
            [_, cols] => Err(format!(
                "{} needs rows of whole {}-element blocks; a row has {cols} elements",
                self.name(),
                self.block_size()
            )),
            _ => Err(format!(
                "{} is for matrices; shape {shape:?} is not two-dimensional",
                self.name()
            )),
        }
    }

    /// Bytes of one row of `cols` elements (a whole number of blocks for block types).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_size() * self.block_bytes()
    }

    /// Bytes of a tensor of logical shape `shape` (already checked by [`check_shape`]).
    ///
    /// [`check_shape`]: TensorType::check_shape
    pub fn bytes_for(self, shape: &[usize]) -> usize {
        let n: usize = shape.iter().product();
        n / self.block_size() * self.block_bytes()
    }

    /// The shape of the safetensors tensor holding a tensor of logical shape `shape`: the
    /// shape itself, or `[rows, bytes per row]` for a block type.
    pub fn stored_shape(self, shape: &[usize]) -> Vec<usize> {
        match (self.is_block(), shape) {
            (true, [rows, cols]) => vec![*rows, self.row_bytes(*cols)],
            _ => shape.to_vec(),
        }
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_parse() {
        for t in TensorType::ALL {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
            assert_eq!(serde_json::from_str::<TensorType>(&json).unwrap(), t);
            assert_eq!(TensorType::parse(&t.name().to_uppercase()), Some(t));
            assert_eq!(TensorType::from_ggml(t.ggml()), Some(t));
        }
        assert_eq!(TensorType::parse("q5_k"), None);
    }

    #[test]
    fn block_types_store_rows_of_blocks() {
        let t = TensorType::Q4_1;
        assert_eq!(t.stored_shape(&[3, 64]), vec![3, 40]);
        assert_eq!(t.bytes_for(&[3, 64]), 120);
        assert!(t.check_shape(&[3, 48]).unwrap_err().contains("48"));
        assert_eq!(TensorType::Q6_K.stored_shape(&[2, 512]), vec![2, 420]);
        assert!(
            TensorType::Q4_K.check_shape(&[2, 64]).is_err(),
            "K-quant rows are 256s"
        );
        assert!(t.check_shape(&[64]).is_err());
        assert_eq!(TensorType::F16.stored_shape(&[64]), vec![64]);
        assert_eq!(TensorType::F16.bytes_for(&[3, 5]), 30);
    }
}
