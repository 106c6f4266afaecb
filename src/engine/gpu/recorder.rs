//! Recording a step: ops append dispatches (kernel, buffers, uniform parameters, workgroups)
//! and copies to a [`Recorder`]; a [`Runner`] then encodes them into one command encoder.
//!
//! The runner keeps what can be kept between steps: the uniform buffer every dispatch reads
//! its parameters from (one aligned slot per dispatch, written once per step), and a cache of
//! bind groups keyed by kernel, slot and buffers. A decode step therefore creates no GPU object
//! at all once the first one has run. With timestamps on, each dispatch gets its own pass with
//! begin/end timestamps, summed per op kind.

use std::collections::HashMap;

use super::super::EngineError;
use super::buffers::{Readback, u32s};
use super::context::GpuContext;
use super::kernels::Kernel;

/// Largest uniform parameter block of any kernel, in bytes.
const MAX_PARAMS: usize = 64;

/// One recorded dispatch.
pub struct Dispatch {
    pub kernel: Kernel,
    /// What the time is reported under (`matmul.qkv`, `attention`, ...).
    pub kind: &'static str,
    pub bindings: Vec<(u32, wgpu::Buffer)>,
    pub params: Vec<u8>,
    pub groups: [u32; 3],
}

/// A recorded buffer-to-buffer copy (ends the current compute pass).
pub struct Copy {
    pub src: wgpu::Buffer,
    pub src_offset: u64,
    pub dst: wgpu::Buffer,
    pub dst_offset: u64,
    pub size: u64,
}

enum Item {
    Dispatch(Dispatch),
    Copy(Copy),
}

/// The work of one step, in order.
#[derive(Default)]
pub struct Recorder {
    items: Vec<Item>,
}

impl Recorder {
    /// Appends a dispatch of `kernel` over `groups` workgroups with uniform `params`
    /// (binding 0) and storage `bindings`.
    pub fn dispatch<P: bytemuck::Pod>(
        &mut self,
        kernel: Kernel,
        kind: &'static str,
        params: &P,
        bindings: &[(u32, &wgpu::Buffer)],
        groups: [u32; 3],
    ) {
        let params = bytemuck::bytes_of(params).to_vec();
        debug_assert!(params.len() <= MAX_PARAMS && params.len().is_multiple_of(16));
        self.items.push(Item::Dispatch(Dispatch {
            kernel,
            kind,
            bindings: bindings.iter().map(|(i, b)| (*i, (*b).clone())).collect(),
            params,
            groups,
        }));
    }

    /// Appends a copy of `size` bytes.
    pub fn copy(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        self.items.push(Item::Copy(Copy {
            src: src.clone(),
            src_offset,
            dst: dst.clone(),
            dst_offset,
            size,
        }));
    }

    /// Dispatches recorded so far.
    pub fn dispatches(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i, Item::Dispatch(_)))
            .count()
    }
}

#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    /// The pipeline whose derived layout the bind group was made with.
    pipeline: wgpu::ComputePipeline,
    kernel: Kernel,
    slot: u32,
    buffers: Vec<(u32, wgpu::Buffer)>,
}

/// GPU time per op kind, from timestamp queries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// `(kind, dispatches, nanoseconds)`, in the order kinds first ran.
    pub kinds: Vec<(&'static str, usize, f64)>,
}

impl Profile {
    /// Adds `other`'s times to these.
    pub fn add(&mut self, other: &Profile) {
        for &(kind, n, ns) in &other.kinds {
            match self.kinds.iter_mut().find(|k| k.0 == kind) {
                Some(k) => {
                    k.1 += n;
                    k.2 += ns;
                }
                None => self.kinds.push((kind, n, ns)),
            }
        }
    }

    /// Total nanoseconds.
    pub fn total_ns(&self) -> f64 {
        self.kinds.iter().map(|k| k.2).sum()
    }
}

struct Timestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: Readback,
    /// Kind of each timed dispatch of the step in flight.
    kinds: Vec<&'static str>,
}

/// Encodes recorded steps, keeping the uniform buffer and bind groups between them.
pub struct Runner {
    uniform: Option<wgpu::Buffer>,
    slot_bytes: u64,
    slots: u32,
    cache: HashMap<BindKey, wgpu::BindGroup>,
    timestamps: Option<Timestamps>,
    bytes: Vec<u8>,
    /// Dispatches per command buffer; 0 keeps a step in one.
    submit_every: usize,
}

/// Dispatches per command buffer unless `SYNAPSE_GPU_SUBMIT_EVERY` says otherwise (0: the
/// whole step in one). Submitting a step in pieces lets the GPU run the first dispatches while
/// the host still encodes the rest (docs/PERF.md, "GPU engine").
pub const SUBMIT_EVERY: usize = 24;

/// Queries in one timestamp set (wgpu's limit).
const MAX_QUERIES: u32 = wgpu::QUERY_SET_MAX_QUERIES;

impl Runner {
    pub fn new(ctx: &GpuContext) -> Self {
        let align = ctx.limits().min_uniform_buffer_offset_alignment as u64;
        Runner {
            uniform: None,
            slot_bytes: (MAX_PARAMS as u64).div_ceil(align) * align,
            slots: 0,
            cache: HashMap::new(),
            timestamps: None,
            bytes: Vec::new(),
            submit_every: std::env::var("SYNAPSE_GPU_SUBMIT_EVERY")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(SUBMIT_EVERY),
        }
    }

    /// Sets how many dispatches go in one command buffer before it is submitted (0: never
    /// split a step).
    pub fn set_submit_every(&mut self, n: usize) {
        self.submit_every = n;
    }

    /// Turns per-dispatch GPU timestamps on or off; an error when the adapter has none.
    pub fn set_profiling(&mut self, ctx: &GpuContext, on: bool) -> Result<(), EngineError> {
        if !on {
            self.timestamps = None;
            return Ok(());
        }
        if !ctx.has_timestamps() {
            return Err(EngineError::Gpu(format!(
                "adapter {} has no TIMESTAMP_QUERY feature: per-op GPU times are unavailable",
                ctx.adapter_name()
            )));
        }
        if self.timestamps.is_none() {
            let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("op timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: MAX_QUERIES,
            });
            let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamp resolve"),
                size: MAX_QUERIES as u64 * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            self.timestamps = Some(Timestamps {
                set,
                resolve,
                readback: Readback::default(),
                kinds: Vec::new(),
            });
        }
        Ok(())
    }

    /// Whether timestamps are on.
    pub fn profiling(&self) -> bool {
        self.timestamps.is_some()
    }

    /// Drops every cached bind group (after buffers they reference were replaced).
    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }

    /// Drops the cached bind groups that reference any of `buffers`, freeing them.
    pub fn forget(&mut self, buffers: &[wgpu::Buffer]) {
        self.cache
            .retain(|k, _| !k.buffers.iter().any(|(_, b)| buffers.contains(b)));
    }

    /// Encodes `rec` into `encoder`: writes every dispatch's parameters into the uniform
    /// buffer (one `write_buffer`, so call this once per step), then records the passes.
    /// Every `submit_every` dispatches the encoder so far is finished and submitted and
    /// `encoder` replaced by a fresh one, so the GPU starts while the rest is encoded; the
    /// caller submits what is left in `encoder`. Submissions run in order, so the step's
    /// dependencies hold across them.
    pub fn encode(
        &mut self,
        ctx: &GpuContext,
        encoder: &mut wgpu::CommandEncoder,
        rec: Recorder,
    ) -> Result<(), EngineError> {
        let n = rec.dispatches() as u32;
        if n > self.slots || self.uniform.is_none() {
            let slots = n.max(64).next_power_of_two();
            self.uniform = Some(ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("op parameters"),
                size: slots as u64 * self.slot_bytes,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
            self.slots = slots;
            self.cache.clear();
        }
        let uniform = self.uniform.clone().expect("made above");
        self.bytes.clear();
        self.bytes.resize(n as usize * self.slot_bytes as usize, 0);
        let mut slot = 0usize;
        for item in &rec.items {
            if let Item::Dispatch(d) = item {
                let at = slot * self.slot_bytes as usize;
                self.bytes[at..at + d.params.len()].copy_from_slice(&d.params);
                slot += 1;
            }
        }
        if n > 0 {
            ctx.queue.write_buffer(&uniform, 0, &self.bytes);
        }

        let timed = self.timestamps.is_some();
        if let Some(ts) = &mut self.timestamps {
            ts.kinds.clear();
        }
        let mut pass: Option<wgpu::ComputePass<'static>> = None;
        let mut slot = 0u32;
        for item in rec.items {
            match item {
                Item::Copy(c) => {
                    pass = None;
                    encoder.copy_buffer_to_buffer(
                        &c.src,
                        c.src_offset,
                        &c.dst,
                        c.dst_offset,
                        c.size,
                    );
                }
                Item::Dispatch(d) => {
                    if self.submit_every > 0
                        && slot > 0
                        && (slot as usize).is_multiple_of(self.submit_every)
                    {
                        pass = None;
                        let fresh =
                            ctx.device
                                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                                    label: Some("step part"),
                                });
                        let done = std::mem::replace(encoder, fresh);
                        ctx.queue.submit([done.finish()]);
                    }
                    let pipeline = ctx.pipeline(d.kernel)?;
                    let key = BindKey {
                        pipeline: pipeline.clone(),
                        kernel: d.kernel,
                        slot,
                        buffers: d.bindings,
                    };
                    let (slot_bytes, len) = (self.slot_bytes, d.params.len());
                    let bg = self
                        .cache
                        .entry(key)
                        .or_insert_with_key(|k| bind_group(ctx, &uniform, slot_bytes, k, len));
                    let query = self.timestamps.as_mut().and_then(|ts| {
                        let i = ts.kinds.len() as u32;
                        (2 * i + 1 < MAX_QUERIES).then(|| {
                            ts.kinds.push(d.kind);
                            i
                        })
                    });
                    if timed {
                        pass = None;
                    }
                    let p = pass.get_or_insert_with(|| {
                        let timestamp_writes = match (&self.timestamps, query) {
                            (Some(ts), Some(i)) => Some(wgpu::ComputePassTimestampWrites {
                                query_set: &ts.set,
                                beginning_of_pass_write_index: Some(2 * i),
                                end_of_pass_write_index: Some(2 * i + 1),
                            }),
                            _ => None,
                        };
                        encoder
                            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                                label: Some("step"),
                                timestamp_writes,
                            })
                            .forget_lifetime()
                    });
                    p.set_pipeline(&pipeline);
                    p.set_bind_group(0, &*bg, &[]);
                    p.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                    slot += 1;
                }
            }
        }
        drop(pass);
        if let Some(ts) = &mut self.timestamps {
            let q = 2 * ts.kinds.len() as u32;
            if q > 0 {
                encoder.resolve_query_set(&ts.set, 0..q, &ts.resolve, 0);
                let rb = ts.readback.reserve(ctx, q as u64 * 8);
                encoder.copy_buffer_to_buffer(&ts.resolve, 0, rb, 0, q as u64 * 8);
            }
        }
        Ok(())
    }

    /// After the step's submission: the GPU time per op kind of the timed dispatches.
    pub fn read_profile(&mut self, ctx: &GpuContext) -> Result<Option<Profile>, EngineError> {
        let Some(ts) = &mut self.timestamps else {
            return Ok(None);
        };
        let q = 2 * ts.kinds.len();
        if q == 0 {
            return Ok(Some(Profile::default()));
        }
        let words = u32s(&ts.readback.read(ctx, q as u64 * 8)?);
        let period = ctx.queue.get_timestamp_period() as f64;
        let mut profile = Profile::default();
        for (i, kind) in ts.kinds.iter().enumerate() {
            let at = |j: usize| words[2 * j] as u64 | ((words[2 * j + 1] as u64) << 32);
            let ns = at(2 * i + 1).saturating_sub(at(2 * i)) as f64 * period;
            profile.add(&Profile {
                kinds: vec![(kind, 1, ns)],
            });
        }
        Ok(Some(profile))
    }
}

/// A bind group for `key`: the dispatch's parameter slot of `uniform` at binding 0 and its
/// buffers, laid out as `key.pipeline` derived.
fn bind_group(
    ctx: &GpuContext,
    uniform: &wgpu::Buffer,
    slot_bytes: u64,
    key: &BindKey,
    params_len: usize,
) -> wgpu::BindGroup {
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: uniform,
            offset: key.slot as u64 * slot_bytes,
            size: wgpu::BufferSize::new(params_len as u64),
        }),
    }];
    for (binding, buffer) in &key.buffers {
        entries.push(wgpu::BindGroupEntry {
            binding: *binding,
            resource: buffer.as_entire_binding(),
        });
    }
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(key.kernel.entry()),
        layout: &key.pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}
