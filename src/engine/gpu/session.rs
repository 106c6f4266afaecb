//! Per-session key/value caches on the GPU: per layer, `k` and `v` buffers of
//! `(capacity, kv_dim)` f32 rows. Capacity doubles when a step needs more (the old rows are
//! copied inside that step's command buffer), up to the model's context length. Dropping a
//! session drops its buffers, which returns the memory.

use super::super::EngineError;
use super::buffers::storage;
use super::context::GpuContext;

/// Rows a fresh cache holds before it first grows.
const INITIAL_ROWS: usize = 64;

/// One session's caches.
pub struct Session {
    /// Tokens cached.
    pub len: usize,
    capacity: usize,
    /// `(k, v)` per layer of the shard.
    pub layers: Vec<(wgpu::Buffer, wgpu::Buffer)>,
}

impl Session {
    /// An empty session; buffers come with the first step.
    pub fn new() -> Self {
        Session {
            len: 0,
            capacity: 0,
            layers: Vec::new(),
        }
    }

    /// Bytes of GPU memory held.
    pub fn bytes(&self) -> u64 {
        self.layers.iter().map(|(k, v)| k.size() + v.size()).sum()
    }

    /// Makes room for `rows` tokens, recording copies of the cached rows into the new buffers;
    /// returns the replaced buffers (to forget their bind groups).
    pub fn reserve(
        &mut self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        n_layers: usize,
        kv_dim: usize,
        rows: usize,
        context: usize,
    ) -> Result<Vec<wgpu::Buffer>, EngineError> {
        if rows <= self.capacity && self.layers.len() == n_layers {
            return Ok(Vec::new());
        }
        let row_bytes = (kv_dim * 4) as u64;
        let most = ((ctx.max_binding() / row_bytes) as usize).min(context);
        if rows > most {
            return Err(EngineError::Gpu(format!(
                "a KV cache of {rows} rows of {kv_dim} floats exceeds the largest storage \
                 binding ({} bytes)",
                ctx.max_binding()
            )));
        }
        let capacity = rows
            .max(INITIAL_ROWS)
            .max(self.capacity * 2)
            .next_power_of_two()
            .min(most);
        let mut old = Vec::new();
        let mut layers = Vec::with_capacity(n_layers);
        for l in 0..n_layers {
            let k = storage(
                ctx,
                &format!("k cache layer {l}"),
                capacity as u64 * row_bytes,
            );
            let v = storage(
                ctx,
                &format!("v cache layer {l}"),
                capacity as u64 * row_bytes,
            );
            if let Some((ok, ov)) = self.layers.get(l)
                && self.len > 0
            {
                let used = self.len as u64 * row_bytes;
                encoder.copy_buffer_to_buffer(ok, 0, &k, 0, used);
                encoder.copy_buffer_to_buffer(ov, 0, &v, 0, used);
            }
            layers.push((k, v));
        }
        for (k, v) in std::mem::replace(&mut self.layers, layers) {
            old.push(k);
            old.push(v);
        }
        self.capacity = capacity;
        Ok(old)
    }
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}
