//! Each kernel run once on host data: upload, one op, read back. This is how tests compare
//! every shader with the CPU reference ops on the same inputs; it creates buffers per call and
//! is not how the engine runs (see [`GpuShard`](super::GpuShard)).

use std::sync::Arc;

use half::f16;

use super::super::EngineError;
use super::buffers::{GpuMatrix, GpuVector, Readback, f32s, storage, storage_init, u32s};
use super::context::GpuContext;
use super::ops::{self, Epilogue, Heads, MatmulIo, MatmulKernel, NormKind};
use super::recorder::{Recorder, Runner};

/// `(q, k cache, v cache)` as [`GpuOps::qkv_rope`] returns them.
pub type QkvCaches = (Vec<f32>, Vec<f32>, Vec<f32>);

/// Runs single ops on host data.
pub struct GpuOps {
    ctx: Arc<GpuContext>,
    runner: Runner,
    readback: Readback,
}

fn bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

impl GpuOps {
    pub fn new(ctx: Arc<GpuContext>) -> Self {
        let runner = Runner::new(&ctx);
        GpuOps {
            ctx,
            runner,
            readback: Readback::default(),
        }
    }

    /// The device these ops run on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// Encodes `rec`, copies `out` (its first `len` 4-byte values) back, and returns the bytes.
    fn run(
        &mut self,
        rec: Recorder,
        out: &wgpu::Buffer,
        len: usize,
    ) -> Result<Vec<u8>, EngineError> {
        let ctx = self.ctx.clone();
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("ops") });
        self.runner.encode(&ctx, &mut encoder, rec)?;
        let size = (len.max(1) * 4) as u64;
        let rb = self.readback.reserve(&ctx, size);
        encoder.copy_buffer_to_buffer(out, 0, rb, 0, size);
        ctx.queue.submit([encoder.finish()]);
        let out = self.readback.read(&ctx, size)?;
        self.runner.clear_cache();
        Ok(out)
    }

    /// This device's matrix-vector speed in GFLOP/s, the shape of a decode step: one 2048 x 2048
    /// f16 matrix uploaded once, then 16 matvec dispatches in one submission, timed to
    /// completion (after a warm-up that builds the pipeline). Nodes report it for placement.
    pub fn measure_gflops(&mut self) -> Result<f64, EngineError> {
        const N: usize = 2048;
        const REPS: usize = 16;
        let ctx = self.ctx.clone();
        let w: Vec<f16> = (0..N * N)
            .map(|i| f16::from_f32(((i % 31) as f32 - 15.0) / 64.0))
            .collect();
        let x: Vec<f32> = (0..N).map(|i| (i % 7) as f32 / 7.0).collect();
        let xb = storage_init(&ctx, "probe x", bytes(&x));
        let wm = GpuMatrix::upload(&ctx, "probe w", &w, N, N)?;
        let out = storage(&ctx, "probe out", (N * 4) as u64);
        let io = MatmulIo::plain(&xb, &out, 1, N);
        let record = |reps: usize| {
            let mut rec = Recorder::default();
            for _ in 0..reps {
                let plain = Epilogue::default();
                ops::matmul(
                    &mut rec,
                    &ctx,
                    "probe",
                    &io,
                    &wm,
                    None,
                    plain,
                    MatmulKernel::Vec,
                );
            }
            rec
        };
        self.run(record(1), &out, 1)?; // warm-up: builds the pipeline
        let started = std::time::Instant::now();
        self.run(record(REPS), &out, 1)?;
        let secs = started.elapsed().as_secs_f64();
        Ok(2.0 * (N * N * REPS) as f64 / secs.max(1e-9) / 1e9)
    }

    /// Token (and position) embedding: `(T, C)`.
    pub fn embed(
        &mut self,
        table: &[f16],
        cols: usize,
        positions: Option<&[f16]>,
        tokens: &[u32],
        pos: usize,
    ) -> Result<Vec<f32>, EngineError> {
        let ctx = self.ctx.clone();
        let table = GpuMatrix::upload(&ctx, "table", table, table.len() / cols, cols)?;
        let positions = positions
            .map(|p| GpuMatrix::upload(&ctx, "positions", p, p.len() / cols, cols))
            .transpose()?;
        let tok = storage_init(&ctx, "tokens", bytemuck::cast_slice(tokens));
        let out = storage(&ctx, "out", (tokens.len() * cols * 4) as u64);
        let mut rec = Recorder::default();
        ops::embed(
            &mut rec,
            &ctx,
            &tok,
            tokens.len(),
            &table,
            positions.as_ref(),
            pos,
            &out,
        );
        Ok(f32s(&self.run(rec, &out, tokens.len() * cols)?))
    }

    /// LayerNorm (with `b`) or RMSNorm (without) of `x (rows, C)`.
    pub fn norm(
        &mut self,
        x: &[f32],
        w: &[f16],
        b: Option<&[f16]>,
        eps: f32,
    ) -> Result<Vec<f32>, EngineError> {
        let ctx = self.ctx.clone();
        let c = w.len();
        let rows = x.len() / c;
        let xb = storage_init(&ctx, "x", bytes(x));
        let wv = GpuVector::upload(&ctx, "w", w);
        let bv = b.map(|b| GpuVector::upload(&ctx, "b", b));
        let out = storage(&ctx, "out", (x.len() * 4) as u64);
        let kind = if b.is_some() {
            NormKind::Layer
        } else {
            NormKind::Rms
        };
        let mut rec = Recorder::default();
        ops::norm(
            &mut rec,
            &ctx,
            kind,
            &xb,
            0,
            rows,
            &wv,
            bv.as_ref(),
            eps,
            &out,
        );
        Ok(f32s(&self.run(rec, &out, x.len())?))
    }

    /// `x (T, K) @ w (N, K)^T (+ bias) (gelu)`, or that added onto `acc (T, N)` when given.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &mut self,
        x: &[f32],
        w: &[f16],
        bias: Option<&[f16]>,
        t: usize,
        k: usize,
        gelu: bool,
        acc: Option<&[f32]>,
        which: MatmulKernel,
    ) -> Result<Vec<f32>, EngineError> {
        let ctx = self.ctx.clone();
        let n = w.len() / k;
        let xb = storage_init(&ctx, "x", bytes(x));
        let wm = GpuMatrix::upload(&ctx, "w", w, n, k)?;
        let bv = bias.map(|b| GpuVector::upload(&ctx, "bias", b));
        let out = match acc {
            Some(a) => storage_init(&ctx, "out", bytes(a)),
            None => storage(&ctx, "out", (t * n * 4) as u64),
        };
        let mut rec = Recorder::default();
        let io = MatmulIo::plain(&xb, &out, t, n);
        let epilogue = Epilogue {
            gelu,
            accumulate: acc.is_some(),
        };
        ops::matmul(
            &mut rec,
            &ctx,
            "matmul",
            &io,
            &wm,
            bv.as_ref(),
            epilogue,
            which,
        );
        Ok(f32s(&self.run(rec, &out, t * n)?))
    }

    /// `norm(x) (T, K) @ w (N, K)^T`: LayerNorm (with `norm_b`) or RMSNorm of each x row,
    /// fused into the product's input.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_normed(
        &mut self,
        x: &[f32],
        w: &[f16],
        t: usize,
        k: usize,
        norm_w: &[f16],
        norm_b: Option<&[f16]>,
        eps: f32,
        which: MatmulKernel,
    ) -> Result<Vec<f32>, EngineError> {
        let ctx = self.ctx.clone();
        let n = w.len() / k;
        let xb = storage_init(&ctx, "x", bytes(x));
        let wm = GpuMatrix::upload(&ctx, "w", w, n, k)?;
        let nw = GpuVector::upload(&ctx, "norm w", norm_w);
        let nb = norm_b.map(|b| GpuVector::upload(&ctx, "norm b", b));
        let out = storage(&ctx, "out", (t * n * 4) as u64);
        let mut rec = Recorder::default();
        let io = MatmulIo {
            norm: Some(ops::InputNorm {
                kind: if nb.is_some() {
                    NormKind::Layer
                } else {
                    NormKind::Rms
                },
                w: &nw,
                b: nb.as_ref(),
                eps,
            }),
            ..MatmulIo::plain(&xb, &out, t, n)
        };
        ops::matmul(
            &mut rec,
            &ctx,
            "matmul",
            &io,
            &wm,
            None,
            Epilogue::default(),
            which,
        );
        Ok(f32s(&self.run(rec, &out, t * n)?))
    }

    /// `silu(gate) * up` of `gate_up (T, 2K)` rows `[gate | up]`, times `w (N, K)^T`: the
    /// SwiGLU down projection with the gate fused into the product's input.
    pub fn matmul_gated(
        &mut self,
        gate_up: &[f32],
        w: &[f16],
        t: usize,
        k: usize,
        which: MatmulKernel,
    ) -> Result<Vec<f32>, EngineError> {
        let ctx = self.ctx.clone();
        let n = w.len() / k;
        let xb = storage_init(&ctx, "gate_up", bytes(gate_up));
        let wm = GpuMatrix::upload(&ctx, "w", w, n, k)?;
        let out = storage(&ctx, "out", (t * n * 4) as u64);
        let mut rec = Recorder::default();
        let io = MatmulIo {
            gated: true,
            ..MatmulIo::plain(&xb, &out, t, n)
        };
        ops::matmul(
            &mut rec,
            &ctx,
            "matmul",
            &io,
            &wm,
            None,
            Epilogue::default(),
            which,
        );
        Ok(f32s(&self.run(rec, &out, t * n)?))
    }

    /// `x + y`.
    pub fn add(&mut self, x: &[f32], y: &[f32]) -> Result<Vec<f32>, EngineError> {
        let ctx = self.ctx.clone();
        let xb = storage_init(&ctx, "x", bytes(x));
        let yb = storage_init(&ctx, "y", bytes(y));
        let mut rec = Recorder::default();
        ops::add(&mut rec, &ctx, &xb, &yb, 1, x.len());
        Ok(f32s(&self.run(rec, &xb, x.len())?))
    }

    /// `x (rows, n) + bias (n)`.
    pub fn bias_add(&mut self, x: &[f32], bias: &[f16]) -> Result<Vec<f32>, EngineError> {
        let ctx = self.ctx.clone();
        let xb = storage_init(&ctx, "x", bytes(x));
        let bv = GpuVector::upload(&ctx, "bias", bias);
        let mut rec = Recorder::default();
        ops::bias_add(&mut rec, &ctx, &xb, &bv, x.len() / bias.len());
        Ok(f32s(&self.run(rec, &xb, x.len())?))
    }

    /// `gelu_tanh(x)`.
    pub fn gelu(&mut self, x: &[f32]) -> Result<Vec<f32>, EngineError> {
        let ctx = self.ctx.clone();
        let xb = storage_init(&ctx, "x", bytes(x));
        let mut rec = Recorder::default();
        ops::gelu(&mut rec, &ctx, &xb, x.len());
        Ok(f32s(&self.run(rec, &xb, x.len())?))
    }

    /// `silu(gate) * up` for `gate_up (rows, 2n)` rows `[gate | up]`: `(rows, n)`.
    pub fn silu_mul(&mut self, gate_up: &[f32], n: usize) -> Result<Vec<f32>, EngineError> {
        let ctx = self.ctx.clone();
        let rows = gate_up.len() / (2 * n);
        let gu = storage_init(&ctx, "gate_up", bytes(gate_up));
        let out = storage(&ctx, "out", (rows * n * 4) as u64);
        let mut rec = Recorder::default();
        ops::silu_mul(&mut rec, &ctx, &gu, &out, rows, n);
        Ok(f32s(&self.run(rec, &out, rows * n)?))
    }

    /// RoPE of `x (T, heads * hd)` at positions `pos..`.
    pub fn rope(
        &mut self,
        x: &[f32],
        heads: usize,
        hd: usize,
        pos: usize,
        theta: f32,
    ) -> Result<Vec<f32>, EngineError> {
        let ctx = self.ctx.clone();
        let t = x.len() / (heads * hd);
        let table = storage_init(&ctx, "rope", bytes(&ops::rope_table(theta, hd, pos + t)));
        let xb = storage_init(&ctx, "x", bytes(x));
        let mut rec = Recorder::default();
        ops::rope(&mut rec, &ctx, &xb, &table, t, heads, hd, pos);
        Ok(f32s(&self.run(rec, &xb, x.len())?))
    }

    /// Splits `qkv (T, (H + 2 KV) hd)` into caches that already hold `pos` rows of `k_prev`,
    /// `v_prev`; returns `(q, k cache, v cache)` with `pos + T` cache rows.
    #[allow(clippy::too_many_arguments)]
    pub fn qkv_rope(
        &mut self,
        qkv: &[f32],
        k_prev: &[f32],
        v_prev: &[f32],
        pos: usize,
        h: Heads,
        theta: Option<f32>,
    ) -> Result<QkvCaches, EngineError> {
        let ctx = self.ctx.clone();
        let (qd, kvd) = (h.heads * h.hd, h.kv_heads * h.hd);
        let t = qkv.len() / (qd + 2 * kvd);
        let table =
            theta.map(|th| storage_init(&ctx, "rope", bytes(&ops::rope_table(th, h.hd, pos + t))));
        let src = storage_init(&ctx, "qkv", bytes(qkv));
        let q = storage(&ctx, "q", (t * qd * 4) as u64);
        let mut kc = k_prev.to_vec();
        kc.resize((pos + t) * kvd, 0.0);
        let mut vc = v_prev.to_vec();
        vc.resize((pos + t) * kvd, 0.0);
        let kb = storage_init(&ctx, "k", bytes(&kc));
        let vb = storage_init(&ctx, "v", bytes(&vc));
        let mut rec = Recorder::default();
        ops::qkv_rope(
            &mut rec,
            &ctx,
            &src,
            &q,
            &kb,
            &vb,
            table.as_ref(),
            t,
            pos,
            h,
        );
        let qo = f32s(&self.run(rec, &q, t * qd)?);
        let ko = f32s(&self.run(Recorder::default(), &kb, kc.len())?);
        let vo = f32s(&self.run(Recorder::default(), &vb, vc.len())?);
        Ok((qo, ko, vo))
    }

    /// One decode step's attention from the qkv product's row `qkv ((H + 2 KV) hd)` over caches
    /// holding `pos` rows of `k_prev`, `v_prev`, RoPE by `theta` if any: with `fused`, the partial
    /// pass reads qkv itself and appends the new row (what decode records); without, qkv_rope
    /// runs first. Returns `(attention output, k cache, v cache)` with `pos + 1` cache rows.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_attention(
        &mut self,
        qkv: &[f32],
        k_prev: &[f32],
        v_prev: &[f32],
        pos: usize,
        h: Heads,
        theta: Option<f32>,
        fused: bool,
    ) -> Result<QkvCaches, EngineError> {
        let ctx = self.ctx.clone();
        let (qd, kvd) = (h.heads * h.hd, h.kv_heads * h.hd);
        if qkv.len() != qd + 2 * kvd || k_prev.len() != pos * kvd || v_prev.len() != pos * kvd {
            return Err(EngineError::Shape(format!(
                "decode_attention takes one qkv row of {} and {pos} cache rows of {kvd}",
                qd + 2 * kvd
            )));
        }
        let table =
            theta.map(|th| storage_init(&ctx, "rope", bytes(&ops::rope_table(th, h.hd, pos + 1))));
        let src = storage_init(&ctx, "qkv", bytes(qkv));
        let q = storage(&ctx, "q", (qd * 4) as u64);
        let mut kc = k_prev.to_vec();
        kc.resize((pos + 1) * kvd, 0.0);
        let mut vc = v_prev.to_vec();
        vc.resize((pos + 1) * kvd, 0.0);
        let kb = storage_init(&ctx, "k", bytes(&kc));
        let vb = storage_init(&ctx, "v", bytes(&vc));
        let slots =
            h.heads * (pos + 1).div_ceil(ctx.consts.att_wg as usize) + ops::ATTENTION_TARGET_GROUPS;
        let ml = storage(&ctx, "ml", (slots * 8) as u64);
        let acc = storage(&ctx, "acc", (slots * h.hd * 4) as u64);
        let out = storage(&ctx, "out", (qd * 4) as u64);
        let scratch = ops::AttnScratch { ml: &ml, acc: &acc };
        let mut rec = Recorder::default();
        let from_qkv = if fused {
            Some(ops::FromQkv {
                qkv: &src,
                rope_table: table.as_ref(),
            })
        } else {
            ops::qkv_rope(
                &mut rec,
                &ctx,
                &src,
                &q,
                &kb,
                &vb,
                table.as_ref(),
                1,
                pos,
                h,
            );
            None
        };
        let parts = ops::attention_partial(
            &mut rec, &ctx, from_qkv, &q, &kb, &vb, &scratch, 1, pos, h, None,
        );
        ops::attention_combine(&mut rec, &ctx, &parts, &out);
        let att = f32s(&self.run(rec, &out, qd)?);
        let ko = f32s(&self.run(Recorder::default(), &kb, kc.len())?);
        let vo = f32s(&self.run(Recorder::default(), &vb, vc.len())?);
        Ok((att, ko, vo))
    }

    /// Causal attention of `q (T, H hd)` over `k, v (pos + T, KV hd)`; `splits` forces the
    /// key split count.
    pub fn attention(
        &mut self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        pos: usize,
        h: Heads,
        splits: Option<usize>,
    ) -> Result<Vec<f32>, EngineError> {
        let ctx = self.ctx.clone();
        let t = q.len() / (h.heads * h.hd);
        let qb = storage_init(&ctx, "q", bytes(q));
        let kb = storage_init(&ctx, "k", bytes(k));
        let vb = storage_init(&ctx, "v", bytes(v));
        let most = (pos + t).div_ceil(ctx.consts.att_wg as usize).max(1);
        let slots = t * h.heads * most.max(splits.unwrap_or(1)) + ops::ATTENTION_TARGET_GROUPS;
        let ml = storage(&ctx, "ml", (slots * 8) as u64);
        let acc = storage(&ctx, "acc", (slots * h.hd * 4) as u64);
        let out = storage(&ctx, "out", (q.len() * 4) as u64);
        let mut rec = Recorder::default();
        let scratch = ops::AttnScratch { ml: &ml, acc: &acc };
        ops::attention(
            &mut rec, &ctx, &qb, &kb, &vb, &scratch, &out, t, pos, h, splits,
        );
        Ok(f32s(&self.run(rec, &out, q.len())?))
    }

    /// One query row's attention over `k, v (pos + 1, KV hd)` times `w (N, H hd)^T`, with the
    /// key splits merged inside the product's input (`fused`, what decode records) or by the
    /// combine dispatch first; `splits` forces the key split count.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_product(
        &mut self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        pos: usize,
        h: Heads,
        splits: Option<usize>,
        w: &[f16],
        fused: bool,
    ) -> Result<Vec<f32>, EngineError> {
        let ctx = self.ctx.clone();
        let kd = h.heads * h.hd;
        if q.len() != kd || !w.len().is_multiple_of(kd) {
            return Err(EngineError::Shape(format!(
                "attention_product takes one row of {kd} and a matrix {kd} wide"
            )));
        }
        let n = w.len() / kd;
        let qb = storage_init(&ctx, "q", bytes(q));
        let kb = storage_init(&ctx, "k", bytes(k));
        let vb = storage_init(&ctx, "v", bytes(v));
        let most = (pos + 1).div_ceil(ctx.consts.att_wg as usize).max(1);
        let slots = h.heads * most.max(splits.unwrap_or(1)) + ops::ATTENTION_TARGET_GROUPS;
        let ml = storage(&ctx, "ml", (slots * 8) as u64);
        let acc = storage(&ctx, "acc", (slots * h.hd * 4) as u64);
        let att = storage(&ctx, "att", (kd * 4) as u64);
        let wm = GpuMatrix::upload(&ctx, "w", w, n, kd)?;
        let out = storage(&ctx, "out", (n * 4) as u64);
        let mut rec = Recorder::default();
        let scratch = ops::AttnScratch { ml: &ml, acc: &acc };
        let parts = ops::attention_partial(
            &mut rec, &ctx, None, &qb, &kb, &vb, &scratch, 1, pos, h, splits,
        );
        let io = if fused {
            if !parts.mergeable_by_matvec(&ctx) {
                return Err(EngineError::Shape(format!(
                    "{} heads x {} splits of {} do not fit the merging matvec",
                    h.heads, parts.splits, h.hd
                )));
            }
            MatmulIo {
                combine: Some(parts),
                ..MatmulIo::plain(&acc, &out, 1, n)
            }
        } else {
            ops::attention_combine(&mut rec, &ctx, &parts, &att);
            MatmulIo::plain(&att, &out, 1, n)
        };
        ops::matmul(
            &mut rec,
            &ctx,
            "matmul.o",
            &io,
            &wm,
            None,
            Epilogue::default(),
            MatmulKernel::Vec,
        );
        Ok(f32s(&self.run(rec, &out, n)?))
    }

    /// The `k` largest of `vals` as `(index, value)`, best first, ties to the lower index.
    pub fn top_k(&mut self, vals: &[f32], k: usize) -> Result<Vec<(u32, f32)>, EngineError> {
        let ctx = self.ctx.clone();
        let vb = storage_init(&ctx, "logits", bytes(vals));
        let m = ops::topk_scratch(&ctx, vals.len(), k) as u64 * 4;
        let c = [
            storage(&ctx, "cand v0", m),
            storage(&ctx, "cand i0", m),
            storage(&ctx, "cand v1", m),
            storage(&ctx, "cand i1", m),
        ];
        let mut rec = Recorder::default();
        let (ov, oi) = ops::top_k(
            &mut rec,
            &ctx,
            &vb,
            vals.len(),
            k,
            [(&c[0], &c[1]), (&c[2], &c[3])],
        );
        let (ov, oi) = (ov.clone(), oi.clone());
        let v = f32s(&self.run(rec, &ov, k)?);
        let i = u32s(&self.run(Recorder::default(), &oi, k)?);
        Ok(i.into_iter().zip(v).collect())
    }

    /// SYN1 int8 of `x (rows, cols)`: `(q, scales)`.
    pub fn quantize_int8(
        &mut self,
        x: &[f32],
        cols: usize,
    ) -> Result<(Vec<i8>, Vec<f32>), EngineError> {
        let ctx = self.ctx.clone();
        let rows = x.len() / cols;
        let xb = storage_init(&ctx, "x", bytes(x));
        let sb = storage(&ctx, "scales", (rows * 4) as u64);
        let qb = storage(&ctx, "q", x.len().div_ceil(4) as u64 * 4);
        let mut rec = Recorder::default();
        ops::quantize_int8(&mut rec, &ctx, &xb, rows, cols, &sb, &qb);
        let qbytes = self.run(rec, &qb, x.len().div_ceil(4))?;
        let q = qbytes[..x.len()].iter().map(|&b| b as i8).collect();
        let scales = f32s(&self.run(Recorder::default(), &sb, rows)?);
        Ok((q, scales))
    }

    /// `q * scale` of its row, `(rows, cols)`.
    pub fn dequantize_int8(
        &mut self,
        q: &[i8],
        scales: &[f32],
        cols: usize,
    ) -> Result<Vec<f32>, EngineError> {
        let ctx = self.ctx.clone();
        let rows = scales.len();
        let qbytes: Vec<u8> = q.iter().map(|&v| v as u8).collect();
        let qb = storage_init(&ctx, "q", &qbytes);
        let sb = storage_init(&ctx, "scales", bytes(scales));
        let xb = storage(&ctx, "x", (q.len() * 4) as u64);
        let mut rec = Recorder::default();
        ops::dequantize_int8(&mut rec, &ctx, &qb, &sb, rows, cols, &xb);
        Ok(f32s(&self.run(rec, &xb, q.len())?))
    }
}
