//! The CPU engine's key/value cache: per layer, every past token's keys and values in f32.

/// Keys and values of one layer for one session: `k, v (len, KV * hd)`.
#[derive(Debug, Default, Clone)]
pub struct LayerCache {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

impl LayerCache {
    /// Appends rows of keys and values (same length).
    pub fn append(&mut self, k: &[f32], v: &[f32]) {
        debug_assert_eq!(k.len(), v.len());
        self.k.extend_from_slice(k);
        self.v.extend_from_slice(v);
    }
}
