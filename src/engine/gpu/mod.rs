//! The GPU engine: every op is a WGSL compute shader in shaders/ (one file per op family, core
//! WGSL only, so the browser loads the same files), run natively through wgpu.
//!
//! - [`context`]: adapter and device setup, limits and features, the pipeline cache.
//! - [`kernels`]: the shader files, their entry points, the workgroup sizes read from them.
//! - [`buffers`]: f16 weights packed two per u32 and split across bindings when large.
//! - [`ops`]: one function per op (shape checks, parameters, dispatch size).
//! - [`recorder`]: a step's dispatches, encoded into one command buffer with cached bind
//!   groups and optional timestamps per op kind.
//! - [`load`]: a shard's tensors uploaded and arranged for the kernels.
//! - [`forward`]: one transformer block recorded as dispatches.
//! - [`scratch`], [`session`]: the step's activation buffers and each session's KV cache.
//! - [`shard`]: [`GpuShard`], the [`ShardExecutor`](super::ShardExecutor) over a layer range.
//! - [`host`]: each op run once on host data, for tests against the CPU reference.
//!
//! Invariants: weights are uploaded once per shard and stay f16; a step submits one command
//! buffer and reads back only its result (hidden states, int8 bytes, logits or top-k pairs);
//! the engine blocks on `poll` only inside its own calls, which run on a worker thread.

pub mod buffers;
pub mod context;
pub mod forward;
pub mod host;
pub mod kernels;
pub mod load;
pub mod ops;
pub mod recorder;
pub mod scratch;
pub mod session;
pub mod shard;

pub use context::{GpuContext, GpuOptions};
pub use host::GpuOps;
pub use recorder::Profile;
pub use shard::{GpuShard, HostTimes};
