//! [`GpuShard`]: a shard's weights on the GPU and the [`ShardExecutor`] that runs its layer
//! range. A step is one command buffer: upload the input, embed (first shard), every block,
//! then either the final norm and head (last shard: logits, or top-k on the GPU) or the
//! boundary activation (f32, or int8 quantized on the GPU); one read-back at the end.
//!
//! Kept between steps: pipelines (in the context), scratch buffers sized for the largest `T`
//! seen, the uniform buffer and bind groups (in the [`Runner`]), the read-back buffer. Created
//! per session: its KV caches, freed by `close_session`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use splitter::{Architecture, Manifest, ModelConfig, ShardInfo};

use super::super::weights::ShardTensors;
use super::super::{
    Activations, EngineError, Int8Rows, LogitsMode, SessionId, ShardExecutor, StepInput, StepOutput,
};
use super::buffers::{Readback, f32s, storage, storage_init, u32s};
use super::context::GpuContext;
use super::forward::{Fusions, record_layer};
use super::load::ShardWeights;
use super::ops::{self, Epilogue, MatmulIo, MatmulKernel};
use super::recorder::{Profile, Recorder, Runner};
use super::scratch::{Scratch, heads};
use super::session::Session;

/// What a step reads back.
enum Want {
    Hidden,
    Int8,
    Logits(LogitsMode),
    /// The `k` best logits of each of the last `rows` tokens.
    TopK {
        k: usize,
        rows: usize,
    },
}

/// What it got.
enum Got {
    Hidden(Activations),
    Int8(Int8Rows),
    Logits(Activations),
    TopK(Vec<Vec<(u32, f32)>>),
}

/// One shard on the GPU.
pub struct GpuShard {
    ctx: Arc<GpuContext>,
    info: ShardInfo,
    arch: Architecture,
    cfg: ModelConfig,
    weights: ShardWeights,
    rope_table: Option<wgpu::Buffer>,
    scratch: Option<Scratch>,
    logits: Option<(wgpu::Buffer, usize)>,
    topk: Option<([wgpu::Buffer; 4], usize)>,
    sessions: HashMap<SessionId, Session>,
    runner: Runner,
    readback: Readback,
    matmul: MatmulKernel,
    fuse: Fusions,
    profile: Profile,
    dispatches: usize,
    host: HostTimes,
}

/// Where a step's wall time goes on the host.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostTimes {
    pub steps: usize,
    /// Checking, recording and encoding the command buffer, in seconds.
    pub encode_s: f64,
    /// From submission until the result is read back (GPU execution plus the wait).
    pub wait_s: f64,
}

impl GpuShard {
    /// Loads shard `index` of the model in `dir` onto `ctx`'s device.
    pub fn load(
        ctx: Arc<GpuContext>,
        dir: &Path,
        manifest: &Manifest,
        index: usize,
    ) -> Result<Self, EngineError> {
        let info = manifest
            .shards
            .get(index)
            .ok_or_else(|| EngineError::Load {
                path: dir.display().to_string(),
                what: format!("no shard {index} (the model has {})", manifest.shards.len()),
            })?;
        let mut t = ShardTensors::load(&dir.join(&info.file), info)?;
        let shard = Self::from_tensors(ctx, &mut t, info, manifest.architecture, &manifest.config)?;
        t.finish()?;
        Ok(shard)
    }

    /// Builds a shard from tensors already in memory (`synapse bench --synthetic` makes them).
    pub fn from_tensors(
        ctx: Arc<GpuContext>,
        t: &mut ShardTensors,
        info: &ShardInfo,
        arch: Architecture,
        cfg: &ModelConfig,
    ) -> Result<Self, EngineError> {
        let h = heads(cfg);
        if h.hd > ctx.consts.att_max_hd as usize || !h.hd.is_multiple_of(4) {
            return Err(EngineError::Gpu(format!(
                "head size {} is not a multiple of 4 or above the attention kernel's \
                 ATT_MAX_HD {}",
                h.hd, ctx.consts.att_max_hd
            )));
        }
        ctx.warm_up()?;
        let weights = ShardWeights::upload(&ctx, t, info, arch, cfg)?;
        let rope_table = match arch {
            Architecture::Llama => Some(storage_init(
                &ctx,
                "rope cos/sin",
                bytemuck::cast_slice(&ops::rope_table(
                    cfg.rope_theta,
                    cfg.head_dim,
                    cfg.context_length,
                )),
            )),
            Architecture::Gpt2 => None,
        };
        ctx.take_errors()?;
        let runner = Runner::new(&ctx);
        // Fusing the norms into the products saves dispatches but makes every workgroup of the
        // product compute the row statistics: a win for RMSNorm on a GPU, a loss for
        // LayerNorm's two passes (measured on an H100) and on a CPU adapter (lavapipe), where
        // workgroup barriers are dear.
        let fuse_norms =
            ctx.adapter_info().device_type != wgpu::DeviceType::Cpu && arch == Architecture::Llama;
        Ok(GpuShard {
            ctx,
            info: info.clone(),
            arch,
            cfg: cfg.clone(),
            weights,
            rope_table,
            scratch: None,
            logits: None,
            topk: None,
            sessions: HashMap::new(),
            runner,
            readback: Readback::default(),
            matmul: MatmulKernel::Auto,
            fuse: Fusions {
                norms: fuse_norms,
                // Off only to measure it (docs/PERF.md): one dispatch fewer a block.
                combine: std::env::var("SYNAPSE_GPU_FUSE_COMBINE").map_or(true, |v| v != "0"),
                qkv_in_attention: std::env::var("SYNAPSE_GPU_FUSE_QKV").map_or(true, |v| v != "0"),
            },
            profile: Profile::default(),
            dispatches: 0,
            host: HostTimes::default(),
        })
    }

    /// The device this shard runs on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Bytes of weights on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        self.weights.bytes
    }

    /// Bytes of KV cache held by open sessions.
    pub fn session_bytes(&self) -> u64 {
        self.sessions.values().map(Session::bytes).sum()
    }

    /// Forces one matrix-product kernel (tests and benchmarks).
    pub fn set_matmul_kernel(&mut self, which: MatmulKernel) {
        self.matmul = which;
    }

    /// Fuses each block's norms into the products that read them (the default for Llama on
    /// GPUs) or runs them as their own dispatches (the default otherwise).
    pub fn set_fuse_norms(&mut self, on: bool) {
        self.fuse.norms = on;
    }

    /// Merges attention's key splits inside the o product's input at decode (the default) or
    /// in a dispatch of their own.
    pub fn set_fuse_combine(&mut self, on: bool) {
        self.fuse.combine = on;
    }

    /// Does decode's q/k/v split, RoPE and cache append inside attention's partial pass (the
    /// default) or in a dispatch of their own.
    pub fn set_fuse_qkv(&mut self, on: bool) {
        self.fuse.qkv_in_attention = on;
    }

    /// Turns per-dispatch GPU timestamps on (an error where the adapter has none) or off.
    pub fn set_profiling(&mut self, on: bool) -> Result<(), EngineError> {
        self.runner.set_profiling(&self.ctx, on)
    }

    /// Host time per phase summed over the steps since the last call.
    pub fn take_host_times(&mut self) -> HostTimes {
        std::mem::take(&mut self.host)
    }

    /// Dispatches the last step recorded.
    pub fn last_dispatches(&self) -> usize {
        self.dispatches
    }

    /// GPU time per op kind summed over the steps since the last call.
    pub fn take_profile(&mut self) -> Profile {
        std::mem::take(&mut self.profile)
    }

    fn ensure_scratch(&mut self, t: usize) {
        if self.scratch.as_ref().is_some_and(|s| s.cap >= t) {
            return;
        }
        let cap = t
            .next_power_of_two()
            .max(8)
            .min(self.cfg.context_length.max(t));
        self.scratch = Some(Scratch::new(&self.ctx, &self.cfg, self.arch, cap));
        self.runner.clear_cache();
    }

    /// The logits buffer, for at least `rows` rows if the binding limit allows; returns it and
    /// the rows it holds.
    fn logits_buffer(&mut self, rows: usize) -> (wgpu::Buffer, usize) {
        let v = self.cfg.vocab_size;
        let most = ((self.ctx.max_binding() / (v as u64 * 4)) as usize).max(1);
        let want = rows.min(most);
        if let Some((b, r)) = &self.logits
            && *r >= want
        {
            return (b.clone(), *r);
        }
        let r = want.next_power_of_two().min(most);
        let b = storage(&self.ctx, "logits", (r * v * 4) as u64);
        if let Some((old, _)) = self.logits.replace((b.clone(), r)) {
            self.runner.forget(&[old]);
        }
        (b, r)
    }

    fn topk_buffers(&mut self, k: usize) -> [wgpu::Buffer; 4] {
        if let Some((b, kk)) = &self.topk
            && *kk >= k
        {
            return b.clone();
        }
        let n = ops::topk_scratch(&self.ctx, self.cfg.vocab_size, k) as u64 * 4;
        let b = [
            storage(&self.ctx, "top-k values 0", n),
            storage(&self.ctx, "top-k ids 0", n),
            storage(&self.ctx, "top-k values 1", n),
            storage(&self.ctx, "top-k ids 1", n),
        ];
        if let Some((old, _)) = self.topk.replace((b.clone(), k)) {
            self.runner.forget(&old);
        }
        b
    }

    fn check_step(
        &self,
        session: SessionId,
        pos: usize,
        input: &StepInput<'_>,
    ) -> Result<(), EngineError> {
        let cached = self.sessions.get(&session).map(|s| s.len);
        input.check(session, cached, pos, &self.info, &self.cfg)
    }

    /// Runs one step and reads back what `want` asks for.
    fn run(
        &mut self,
        session: SessionId,
        pos: usize,
        input: StepInput<'_>,
        want: Want,
    ) -> Result<Got, EngineError> {
        self.check_step(session, pos, &input)?;
        let started = Instant::now();
        let has_head = self.weights.head.is_some();
        match want {
            Want::Logits(_) | Want::TopK { .. } if !has_head => {
                return Err(EngineError::Shape(format!(
                    "shard {} has no output head",
                    self.info.index
                )));
            }
            Want::Hidden | Want::Int8 if has_head => {
                return Err(EngineError::Shape(format!(
                    "shard {} ends in the output head: it returns logits",
                    self.info.index
                )));
            }
            _ => {}
        }
        let ctx = self.ctx.clone();
        let (c, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let t = input.len();
        self.ensure_scratch(t);
        let logits = match want {
            Want::Logits(LogitsMode::All) => Some(self.logits_buffer(t)),
            Want::Logits(LogitsMode::Last) | Want::TopK { .. } => Some(self.logits_buffer(1)),
            _ => None,
        };
        let topk = match want {
            Want::TopK { k, .. } => Some(self.topk_buffers(k)),
            _ => None,
        };
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        let n_layers = self.weights.layers.len();
        let kv_dim = self.cfg.n_kv_heads * self.cfg.head_dim;
        let sess = self.sessions.get_mut(&session).expect("checked");
        let old = sess.reserve(
            &ctx,
            &mut encoder,
            n_layers,
            kv_dim,
            pos + t,
            self.cfg.context_length,
        )?;
        if !old.is_empty() {
            self.runner.forget(&old);
        }
        let sess = &self.sessions[&session];
        let s = self.scratch.as_ref().expect("ensured");
        match input {
            StepInput::Tokens(ids) => {
                ctx.queue
                    .write_buffer(&s.tokens, 0, bytemuck::cast_slice(ids))
            }
            StepInput::Hidden(h) => ctx
                .queue
                .write_buffer(&s.x, 0, bytemuck::cast_slice(&h.data)),
        }

        let mut rec = Recorder::default();
        if let Some(emb) = &self.weights.embedding {
            ops::embed(
                &mut rec,
                &ctx,
                &s.tokens,
                t,
                &emb.tokens,
                emb.positions.as_ref(),
                pos,
                &s.x,
            );
        }
        let buf = s.activ();
        for (layer, (k, vb)) in self.weights.layers.iter().zip(&sess.layers) {
            record_layer(
                &mut rec,
                &ctx,
                self.arch,
                &self.cfg,
                layer,
                &buf,
                (k, vb),
                self.rope_table.as_ref(),
                t,
                pos,
                self.matmul,
                self.fuse,
            );
        }

        // What comes back, and where it lies in the read-back buffer.
        let read_bytes: u64;
        match want {
            Want::Hidden => {
                read_bytes = (t * c * 4) as u64;
                let rb = self.readback.reserve(&ctx, read_bytes).clone();
                rec.copy(&s.x, 0, &rb, 0, read_bytes);
            }
            Want::Int8 => {
                ops::quantize_int8(&mut rec, &ctx, &s.x, t, c, &s.scales, &s.q8);
                let qbytes = (t * c).div_ceil(4) as u64 * 4;
                read_bytes = qbytes + (t * 4) as u64;
                let rb = self.readback.reserve(&ctx, read_bytes).clone();
                rec.copy(&s.q8, 0, &rb, 0, qbytes);
                rec.copy(&s.scales, 0, &rb, qbytes, (t * 4) as u64);
            }
            Want::Logits(_) | Want::TopK { .. } => {
                let head = self.weights.head.as_ref().expect("checked");
                let weight = match (&head.weight, &self.weights.embedding) {
                    (Some(w), _) => w,
                    (None, Some(e)) => &e.tokens,
                    (None, None) => unreachable!("a tied head is kept only beside the embedding"),
                };
                let (rows, first) = match want {
                    Want::Logits(LogitsMode::All) => (t, 0),
                    Want::TopK { rows, .. } => (rows, t - rows),
                    _ => (1, t - 1),
                };
                let kind = ShardWeights::norm_kind(self.arch);
                ops::norm(
                    &mut rec,
                    &ctx,
                    kind,
                    &s.x,
                    first,
                    rows,
                    &head.norm_w,
                    head.norm_b.as_ref(),
                    self.cfg.norm_eps,
                    &s.a,
                );
                let (lb, group) = logits.expect("made above");
                if let Want::TopK { k, .. } = want {
                    // A row at a time through the one-row logits buffer (the browser engine
                    // does the same): row r's values at r*k*8, its ids after them.
                    let b = topk.as_ref().expect("made above");
                    read_bytes = (rows * k * 8) as u64;
                    let rb = self.readback.reserve(&ctx, read_bytes).clone();
                    for r in 0..rows {
                        self.head_rows(&mut rec, weight, &s.a, r, 1, &lb);
                        let (ov, oi) =
                            ops::top_k(&mut rec, &ctx, &lb, v, k, [(&b[0], &b[1]), (&b[2], &b[3])]);
                        let at = (r * k * 8) as u64;
                        rec.copy(ov, 0, &rb, at, (k * 4) as u64);
                        rec.copy(oi, 0, &rb, at + (k * 4) as u64, (k * 4) as u64);
                    }
                } else {
                    read_bytes = (rows * v * 4) as u64;
                    let rb = self.readback.reserve(&ctx, read_bytes).clone();
                    let mut r0 = 0;
                    while r0 < rows {
                        let g = group.min(rows - r0);
                        self.head_rows(&mut rec, weight, &s.a, r0, g, &lb);
                        rec.copy(&lb, 0, &rb, (r0 * v * 4) as u64, (g * v * 4) as u64);
                        r0 += g;
                    }
                }
            }
        }
        self.dispatches = rec.dispatches();
        self.runner.encode(&ctx, &mut encoder, rec)?;
        let cmd = encoder.finish();
        let submitted = Instant::now();
        ctx.queue.submit([cmd]);
        let bytes = self.readback.read(&ctx, read_bytes)?;
        self.host.steps += 1;
        self.host.encode_s += (submitted - started).as_secs_f64();
        self.host.wait_s += submitted.elapsed().as_secs_f64();
        drop(old);
        if let Some(p) = self.runner.read_profile(&ctx)? {
            self.profile.add(&p);
        }
        self.sessions.get_mut(&session).expect("checked").len = pos + t;
        Ok(match want {
            Want::Hidden => Got::Hidden(Activations::new(t, c, f32s(&bytes))?),
            Want::Int8 => {
                let n = t * c;
                let qbytes = n.div_ceil(4) * 4;
                Got::Int8(Int8Rows {
                    rows: t,
                    cols: c,
                    q: bytes[..n].iter().map(|&b| b as i8).collect(),
                    scales: f32s(&bytes[qbytes..]),
                })
            }
            Want::Logits(_) => {
                Got::Logits(Activations::new(bytes.len() / (v * 4), v, f32s(&bytes))?)
            }
            Want::TopK { k, rows } => Got::TopK(
                (0..rows)
                    .map(|r| {
                        let row = &bytes[r * k * 8..(r + 1) * k * 8];
                        let vals = f32s(&row[..k * 4]);
                        let ids = u32s(&row[k * 4..]);
                        ids.into_iter().zip(vals).collect()
                    })
                    .collect(),
            ),
        })
    }

    /// Records `logits (g, V) = a[r0..r0 + g] @ head^T`.
    fn head_rows(
        &self,
        rec: &mut Recorder,
        weight: &super::buffers::GpuMatrix,
        a: &wgpu::Buffer,
        r0: usize,
        g: usize,
        logits: &wgpu::Buffer,
    ) {
        let io = MatmulIo {
            x_row: r0,
            ..MatmulIo::plain(a, logits, g, self.cfg.vocab_size)
        };
        ops::matmul(
            rec,
            &self.ctx,
            "matmul.head",
            &io,
            weight,
            None,
            Epilogue::default(),
            self.matmul,
        );
    }
}

impl ShardExecutor for GpuShard {
    fn shard(&self) -> &ShardInfo {
        &self.info
    }

    fn memory(&self) -> crate::engine::MemoryUse {
        crate::engine::MemoryUse {
            weights: self.weight_bytes(),
            kv: self.session_bytes(),
        }
    }

    fn open_session(&mut self, session: SessionId) -> Result<(), EngineError> {
        if self.sessions.contains_key(&session) {
            return Err(EngineError::Session {
                session,
                what: "already open".into(),
            });
        }
        self.sessions.insert(session, Session::new());
        Ok(())
    }

    fn close_session(&mut self, session: SessionId) -> Result<(), EngineError> {
        let s = self.sessions.remove(&session).ok_or(EngineError::Session {
            session,
            what: "not open".into(),
        })?;
        let buffers: Vec<wgpu::Buffer> = s
            .layers
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect();
        self.runner.forget(&buffers);
        for b in &buffers {
            b.destroy();
        }
        Ok(())
    }

    fn session_len(&self, session: SessionId) -> Option<usize> {
        self.sessions.get(&session).map(|s| s.len)
    }

    fn truncate_session(&mut self, session: SessionId, len: usize) -> Result<(), EngineError> {
        crate::engine::check_truncate(session, self.session_len(session), len)?;
        // The cache buffers keep their size; the next step's append overwrites from `len`, and
        // attention reads only the first `len + t` rows.
        self.sessions.get_mut(&session).expect("checked").len = len;
        Ok(())
    }

    fn step(
        &mut self,
        session: SessionId,
        pos: usize,
        input: StepInput<'_>,
        mode: LogitsMode,
    ) -> Result<StepOutput, EngineError> {
        let want = if self.weights.head.is_some() {
            Want::Logits(mode)
        } else {
            Want::Hidden
        };
        Ok(match self.run(session, pos, input, want)? {
            Got::Hidden(h) => StepOutput::Hidden(h),
            Got::Logits(l) => StepOutput::Logits(l),
            Got::Int8(_) | Got::TopK(_) => unreachable!("asked for f32"),
        })
    }

    fn step_top_k(
        &mut self,
        session: SessionId,
        pos: usize,
        input: StepInput<'_>,
        k: usize,
    ) -> Result<Vec<(u32, f32)>, EngineError> {
        let mut rows = self.step_top_k_rows(session, pos, input, k, 1)?;
        Ok(rows.pop().expect("one row"))
    }

    fn step_top_k_rows(
        &mut self,
        session: SessionId,
        pos: usize,
        input: StepInput<'_>,
        k: usize,
        rows: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>, EngineError> {
        let most = (self.ctx.consts.topk_chunk as usize).min(self.cfg.vocab_size);
        if k == 0 || k > most {
            return Err(EngineError::Shape(format!(
                "top-k needs 1 <= k <= {most}, got {k}"
            )));
        }
        crate::engine::check_logit_rows(rows, input.len())?;
        match self.run(session, pos, input, Want::TopK { k, rows })? {
            Got::TopK(v) => Ok(v),
            _ => unreachable!("asked for top-k"),
        }
    }

    fn step_int8(
        &mut self,
        session: SessionId,
        pos: usize,
        input: StepInput<'_>,
    ) -> Result<Int8Rows, EngineError> {
        match self.run(session, pos, input, Want::Int8)? {
            Got::Int8(q) => Ok(q),
            _ => unreachable!("asked for int8"),
        }
    }
}
