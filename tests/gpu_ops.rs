//! Every WGSL kernel against the CPU reference ops (src/engine/cpu/ops.rs) on random inputs of
//! awkward sizes (not multiples of any workgroup size), with tolerances that report the largest
//! error and where. Runs on whatever adapter wgpu picks: lavapipe on CI, so sizes stay small.

mod common;

use std::sync::{Arc, OnceLock};

use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use synapse::engine::cpu::ops;
use synapse::engine::gpu::kernels::Kernel;
use synapse::engine::gpu::ops::{Heads, MatmulKernel};
use synapse::engine::gpu::{GpuContext, GpuOps, GpuOptions};
use synapse::protocol::{INT8_MAX_Q, quantize_into};

/// f32 results of the same f16 weights: only summation order and fused multiply-adds differ.
const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

fn context() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = GpuContext::new(&GpuOptions::default()).expect("a GPU adapter (lavapipe on CI)");
        eprintln!("{}", ctx.describe());
        ctx
    })
    .clone()
}

/// A second device whose bindings are capped at 4 KiB, so matrices split into many chunks.
fn tiny_binding_context() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        GpuContext::new(&GpuOptions {
            max_binding_bytes: Some(4096),
            ..Default::default()
        })
        .expect("a GPU adapter")
    })
    .clone()
}

/// A third device with the subgroup matvec off, so the workgroup-reduction matvec is tested
/// where the adapter has subgroups too (the shared context uses them where it can).
fn no_subgroup_context() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = GpuContext::new(&GpuOptions::default()).expect("a GPU adapter");
        ctx.set_subgroup_matvec(false);
        ctx
    })
    .clone()
}

fn ops_on(ctx: Arc<GpuContext>) -> GpuOps {
    GpuOps::new(ctx)
}

fn rand_f32(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

fn rand_f16(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f16> {
    rand_f32(rng, n, scale)
        .into_iter()
        .map(f16::from_f32)
        .collect()
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Shards loading on several threads at once share one pipeline per kernel: bind groups are
/// made from a pipeline's derived layout and fit no other pipeline.
#[test]
fn pipelines_built_concurrently_are_one_per_kernel() {
    let ctx = GpuContext::new(&GpuOptions::default()).unwrap();
    let built: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| ctx.pipeline(Kernel::Matvec).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(built.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn embedding_with_and_without_positions_and_split_tables() {
    let mut r = rng(1);
    let (v, c, p) = (53, 37, 20);
    let table = rand_f16(&mut r, v * c, 1.0);
    let positions = rand_f16(&mut r, p * c, 1.0);
    let tokens = [5u32, 52, 0, 17, 17, 40];
    let pos = 9;
    let want = |with_pos: bool| -> Vec<f32> {
        let mut out = Vec::new();
        for (t, &id) in tokens.iter().enumerate() {
            for j in 0..c {
                let mut x = table[id as usize * c + j].to_f32();
                if with_pos {
                    x += positions[(pos + t) * c + j].to_f32();
                }
                out.push(x);
            }
        }
        out
    };
    for ctx in [context(), tiny_binding_context()] {
        let mut g = ops_on(ctx);
        let got = g.embed(&table, c, Some(&positions), &tokens, pos).unwrap();
        common::assert_close("embed + positions", &got, &want(true), 0.0, 0.0);
        let got = g.embed(&table, c, None, &tokens, pos).unwrap();
        common::assert_close("embed", &got, &want(false), 0.0, 0.0);
    }
}

#[test]
fn layernorm_and_rmsnorm() {
    let mut r = rng(2);
    let mut g = ops_on(context());
    for (rows, c) in [(1, 37), (5, 300), (3, 577)] {
        let x = rand_f32(&mut r, rows * c, 3.0);
        let w = rand_f16(&mut r, c, 1.5);
        let b = rand_f16(&mut r, c, 0.5);
        let mut want = x.clone();
        ops::layernorm(&mut want, &w, &b, c, 1e-5);
        let got = g.norm(&x, &w, Some(&b), 1e-5).unwrap();
        common::assert_close(&format!("layernorm ({rows}, {c})"), &got, &want, ATOL, RTOL);
        let mut want = x.clone();
        ops::rmsnorm(&mut want, &w, c, 1e-5);
        let got = g.norm(&x, &w, None, 1e-5).unwrap();
        common::assert_close(&format!("rmsnorm ({rows}, {c})"), &got, &want, ATOL, RTOL);
    }
}

/// CPU `out = [acc +] gelu?(x @ w^T + b)`.
#[allow(clippy::too_many_arguments)]
fn cpu_matmul(
    x: &[f32],
    w: &[f16],
    b: Option<&[f16]>,
    t: usize,
    k: usize,
    gelu: bool,
    acc: Option<&[f32]>,
) -> Vec<f32> {
    let n = w.len() / k;
    let mut out = vec![0f32; t * n];
    ops::matmul(&mut out, x, w, b, t, k);
    if gelu {
        ops::gelu_tanh(&mut out);
    }
    if let Some(a) = acc {
        let mut s = a.to_vec();
        ops::add_inplace(&mut s, &out);
        out = s;
    }
    out
}

#[test]
fn matvec_and_tiled_matmul_with_every_epilogue() {
    let mut r = rng(3);
    let mut g = ops_on(context());
    for (t, k, n) in [(1, 37, 70), (3, 69, 131), (8, 64, 33)] {
        let x = rand_f32(&mut r, t * k, 1.0);
        let w = rand_f16(&mut r, n * k, 0.5);
        let b = rand_f16(&mut r, n, 0.5);
        let acc = rand_f32(&mut r, t * n, 1.0);
        for which in [MatmulKernel::Vec, MatmulKernel::Tiled] {
            for (bias, gelu, accumulate) in [
                (false, false, false),
                (true, false, false),
                (true, true, false),
                (false, false, true),
                (true, false, true),
            ] {
                let bias = bias.then_some(&b[..]);
                let accv = accumulate.then_some(&acc[..]);
                let want = cpu_matmul(&x, &w, bias, t, k, gelu, accv);
                let got = g.matmul(&x, &w, bias, t, k, gelu, accv, which).unwrap();
                common::assert_close(
                    &format!(
                        "{which:?} T={t} K={k} N={n} bias={} gelu={gelu} acc={accumulate}",
                        bias.is_some()
                    ),
                    &got,
                    &want,
                    ATOL,
                    RTOL,
                );
            }
        }
    }
}

#[test]
fn matvec_with_and_without_subgroup_sums() {
    // The shared context sums with subgroups where the adapter has them of one fixed size;
    // this one never does. Both against the CPU: plain, biased + accumulated, normed, gated.
    let mut r = rng(14);
    let with = context();
    eprintln!("subgroup matvec: {:?}", with.subgroup_matvec_size());
    for ctx in [with, no_subgroup_context()] {
        let sg = ctx.subgroup_matvec_size();
        let mut g = ops_on(ctx);
        // N >= 2K takes the subgroup kernel where there is one; the last case stays narrow.
        for (t, k, n) in [(1, 576, 1200), (2, 69, 150), (8, 64, 130), (1, 1536, 40)] {
            let x = rand_f32(&mut r, t * k, 1.0);
            let w = rand_f16(&mut r, n * k, 0.5);
            let b = rand_f16(&mut r, n, 0.5);
            let acc = rand_f32(&mut r, t * n, 1.0);
            let what = format!("subgroups {sg:?} T={t} K={k} N={n}");
            let want = cpu_matmul(&x, &w, Some(&b), t, k, false, Some(&acc));
            let got = g
                .matmul(&x, &w, Some(&b), t, k, false, Some(&acc), MatmulKernel::Vec)
                .unwrap();
            common::assert_close(&format!("bias+acc {what}"), &got, &want, ATOL, RTOL);
            let nw = rand_f16(&mut r, k, 1.5);
            let nb = rand_f16(&mut r, k, 0.5);
            for layer in [true, false] {
                let mut a = x.clone();
                if layer {
                    ops::layernorm(&mut a, &nw, &nb, k, 1e-5);
                } else {
                    ops::rmsnorm(&mut a, &nw, k, 1e-5);
                }
                let want = cpu_matmul(&a, &w, None, t, k, false, None);
                let nbias = layer.then_some(&nb[..]);
                let got = g
                    .matmul_normed(&x, &w, t, k, &nw, nbias, 1e-5, MatmulKernel::Vec)
                    .unwrap();
                common::assert_close(
                    &format!("normed layer={layer} {what}"),
                    &got,
                    &want,
                    ATOL,
                    RTOL,
                );
            }
            let gate_up = rand_f32(&mut r, t * 2 * k, 3.0);
            let (mut gate, mut up) = (Vec::new(), Vec::new());
            for row in gate_up.chunks_exact(2 * k) {
                gate.extend_from_slice(&row[..k]);
                up.extend_from_slice(&row[k..]);
            }
            ops::silu_mul(&mut gate, &up);
            let want = cpu_matmul(&gate, &w, None, t, k, false, None);
            let got = g
                .matmul_gated(&gate_up, &w, t, k, MatmulKernel::Vec)
                .unwrap();
            common::assert_close(&format!("gated {what}"), &got, &want, ATOL, RTOL);
        }
    }
}

#[test]
fn swiglu_gate_fused_into_the_product_input() {
    let mut r = rng(12);
    let mut g = ops_on(context());
    for (t, k, n, which) in [
        (1, 64, 37, MatmulKernel::Vec),
        (3, 45, 20, MatmulKernel::Vec),
        (9, 64, 70, MatmulKernel::Tiled),
        (5, 45, 20, MatmulKernel::Tiled),
    ] {
        let gate_up = rand_f32(&mut r, t * 2 * k, 3.0);
        let w = rand_f16(&mut r, n * k, 0.5);
        let (mut gate, mut up) = (Vec::new(), Vec::new());
        for row in gate_up.chunks_exact(2 * k) {
            gate.extend_from_slice(&row[..k]);
            up.extend_from_slice(&row[k..]);
        }
        ops::silu_mul(&mut gate, &up);
        let want = cpu_matmul(&gate, &w, None, t, k, false, None);
        let got = g.matmul_gated(&gate_up, &w, t, k, which).unwrap();
        common::assert_close(
            &format!("gated {which:?} T={t} K={k} N={n}"),
            &got,
            &want,
            ATOL,
            RTOL,
        );
    }
}

#[test]
fn layernorm_and_rmsnorm_fused_into_the_product_input() {
    let mut r = rng(13);
    let mut g = ops_on(context());
    for (t, k, n, which) in [
        (1, 64, 37, MatmulKernel::Vec),
        (3, 45, 20, MatmulKernel::Vec),
        (70, 64, 70, MatmulKernel::Tiled),
        (5, 45, 20, MatmulKernel::Tiled),
    ] {
        let x = rand_f32(&mut r, t * k, 3.0);
        let w = rand_f16(&mut r, n * k, 0.5);
        let nw = rand_f16(&mut r, k, 1.5);
        let nb = rand_f16(&mut r, k, 0.5);
        for layer in [true, false] {
            let mut a = x.clone();
            if layer {
                ops::layernorm(&mut a, &nw, &nb, k, 1e-5);
            } else {
                ops::rmsnorm(&mut a, &nw, k, 1e-5);
            }
            let want = cpu_matmul(&a, &w, None, t, k, false, None);
            let b = layer.then_some(&nb[..]);
            let got = g.matmul_normed(&x, &w, t, k, &nw, b, 1e-5, which).unwrap();
            common::assert_close(
                &format!("normed (layer={layer}) {which:?} T={t} K={k} N={n}"),
                &got,
                &want,
                ATOL,
                RTOL,
            );
        }
    }
}

#[test]
fn tiled_matmul_over_several_tiles() {
    let mut r = rng(4);
    let mut g = ops_on(context());
    let (t, k, n) = (70, 45, 131);
    let x = rand_f32(&mut r, t * k, 1.0);
    let w = rand_f16(&mut r, n * k, 0.5);
    let b = rand_f16(&mut r, n, 0.5);
    let want = cpu_matmul(&x, &w, Some(&b), t, k, false, None);
    let got = g
        .matmul(&x, &w, Some(&b), t, k, false, None, MatmulKernel::Auto)
        .unwrap();
    common::assert_close("matmul (70, 45) x (131, 45)^T", &got, &want, ATOL, RTOL);
}

#[test]
fn matmul_split_across_bindings() {
    let mut r = rng(5);
    let mut g = ops_on(tiny_binding_context());
    // 4 KiB bindings hold 40 rows of K = 45 (stride 48 halves): 131 rows make 4 chunks.
    let (k, n) = (45, 131);
    let w = rand_f16(&mut r, n * k, 0.5);
    let b = rand_f16(&mut r, n, 0.5);
    for (t, which) in [(2, MatmulKernel::Vec), (11, MatmulKernel::Tiled)] {
        let x = rand_f32(&mut r, t * k, 1.0);
        let want = cpu_matmul(&x, &w, Some(&b), t, k, false, None);
        let got = g
            .matmul(&x, &w, Some(&b), t, k, false, None, which)
            .unwrap();
        common::assert_close(&format!("chunked {which:?} T={t}"), &got, &want, ATOL, RTOL);
    }
}

#[test]
fn elementwise_ops() {
    let mut r = rng(6);
    let mut g = ops_on(context());
    let (rows, n) = (3, 301);
    let x = rand_f32(&mut r, rows * n, 4.0);
    let y = rand_f32(&mut r, rows * n, 4.0);
    let b = rand_f16(&mut r, n, 1.0);

    let mut want = x.clone();
    ops::add_inplace(&mut want, &y);
    common::assert_close("add", &g.add(&x, &y).unwrap(), &want, 0.0, 0.0);

    let want: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, v)| v + b[i % n].to_f32())
        .collect();
    common::assert_close("bias_add", &g.bias_add(&x, &b).unwrap(), &want, 0.0, 0.0);

    let mut wide = x.clone();
    wide.extend([40.0, -40.0, 0.0, 1e-3]); // saturated tanh both ways
    let mut want = wide.clone();
    ops::gelu_tanh(&mut want);
    common::assert_close("gelu", &g.gelu(&wide).unwrap(), &want, 1e-5, 1e-5);

    let mut gate_up = Vec::new();
    let (mut gate, mut up) = (Vec::new(), Vec::new());
    for row in 0..rows {
        gate.extend_from_slice(&x[row * n..(row + 1) * n]);
        up.extend_from_slice(&y[row * n..(row + 1) * n]);
        gate_up.extend_from_slice(&x[row * n..(row + 1) * n]);
        gate_up.extend_from_slice(&y[row * n..(row + 1) * n]);
    }
    ops::silu_mul(&mut gate, &up);
    common::assert_close(
        "silu_mul",
        &g.silu_mul(&gate_up, n).unwrap(),
        &gate,
        1e-5,
        1e-5,
    );
}

#[test]
fn rope_rotate_half_at_small_and_large_positions() {
    let mut r = rng(7);
    let mut g = ops_on(context());
    for (t, heads, hd, pos, theta) in [(4, 3, 10, 5, 10000.0), (2, 2, 64, 8000, 100000.0)] {
        let x = rand_f32(&mut r, t * heads * hd, 2.0);
        let mut want = x.clone();
        ops::rope(&mut want, heads, hd, pos, theta);
        let got = g.rope(&x, heads, hd, pos, theta).unwrap();
        common::assert_close(&format!("rope pos {pos}"), &got, &want, 1e-5, 1e-5);
    }
}

#[test]
fn qkv_split_with_rope_appends_to_the_cache() {
    let mut r = rng(8);
    let mut g = ops_on(context());
    let h = Heads {
        heads: 6,
        kv_heads: 2,
        hd: 10,
    };
    let (qd, kvd) = (h.heads * h.hd, h.kv_heads * h.hd);
    let (t, pos) = (3, 4);
    let qkv = rand_f32(&mut r, t * (qd + 2 * kvd), 2.0);
    let k_prev = rand_f32(&mut r, pos * kvd, 2.0);
    let v_prev = rand_f32(&mut r, pos * kvd, 2.0);
    for theta in [Some(10000.0f32), None] {
        let (mut q, mut k, mut v) = (Vec::new(), k_prev.clone(), v_prev.clone());
        let (mut k_new, mut v_new) = (Vec::new(), Vec::new());
        for row in qkv.chunks_exact(qd + 2 * kvd) {
            q.extend_from_slice(&row[..qd]);
            k_new.extend_from_slice(&row[qd..qd + kvd]);
            v_new.extend_from_slice(&row[qd + kvd..]);
        }
        if let Some(th) = theta {
            ops::rope(&mut q, h.heads, h.hd, pos, th);
            ops::rope(&mut k_new, h.kv_heads, h.hd, pos, th);
        }
        k.extend(k_new);
        v.extend(v_new);
        let (gq, gk, gv) = g.qkv_rope(&qkv, &k_prev, &v_prev, pos, h, theta).unwrap();
        common::assert_close("qkv_rope q", &gq, &q, 1e-5, 1e-5);
        common::assert_close("qkv_rope k cache", &gk, &k, 1e-5, 1e-5);
        common::assert_close("qkv_rope v cache", &gv, &v, 0.0, 0.0);
    }
}

#[test]
fn causal_grouped_query_attention_over_a_cache() {
    let mut r = rng(9);
    let mut g = ops_on(context());
    let cases = [
        // (T, pos, heads, kv heads, hd, forced splits)
        (1, 0, 3, 3, 16, None),
        (5, 0, 3, 3, 16, None),
        (1, 130, 6, 2, 12, None),
        (3, 70, 6, 2, 20, Some(1)),
        (3, 70, 6, 2, 20, Some(3)),
        (2, 200, 4, 1, 72, Some(2)),
    ];
    for (t, pos, heads, kv_heads, hd, splits) in cases {
        let h = Heads {
            heads,
            kv_heads,
            hd,
        };
        let q = rand_f32(&mut r, t * heads * hd, 1.0);
        let k = rand_f32(&mut r, (pos + t) * kv_heads * hd, 1.0);
        let v = rand_f32(&mut r, (pos + t) * kv_heads * hd, 1.0);
        let want = ops::attention(&q, &k, &v, pos, heads, kv_heads, hd);
        let got = g.attention(&q, &k, &v, pos, h, splits).unwrap();
        common::assert_close(
            &format!("attention T={t} pos={pos} H={heads} KV={kv_heads} hd={hd} splits={splits:?}"),
            &got,
            &want,
            ATOL,
            RTOL,
        );
    }
}

#[test]
fn decode_attention_reading_qkv_matches_qkv_rope_then_attention() {
    // Decode's fusion: the partial pass reads q and the new key and value from the qkv row,
    // rotates them, and appends the row to the caches itself.
    let mut r = rng(11);
    let mut g = ops_on(context());
    let cases = [
        // (pos, heads, kv heads, hd, RoPE theta)
        (0, 3, 3, 16, Some(10000.0)),
        (5, 3, 3, 16, None),
        (130, 6, 2, 12, Some(10000.0)),
        (600, 9, 3, 64, Some(100000.0)),
        (64, 4, 1, 72, None),
    ];
    for (pos, heads, kv_heads, hd, theta) in cases {
        let h = Heads {
            heads,
            kv_heads,
            hd,
        };
        let kvd = kv_heads * hd;
        let qkv = rand_f32(&mut r, (heads + 2 * kv_heads) * hd, 1.0);
        let kp = rand_f32(&mut r, pos * kvd, 1.0);
        let vp = rand_f32(&mut r, pos * kvd, 1.0);
        let what = format!("pos={pos} H={heads} KV={kv_heads} hd={hd} rope={theta:?}");
        let (wa, wk, wv) = g
            .decode_attention(&qkv, &kp, &vp, pos, h, theta, false)
            .unwrap();
        let (ga, gk, gv) = g
            .decode_attention(&qkv, &kp, &vp, pos, h, theta, true)
            .unwrap();
        common::assert_close(&format!("attention {what}"), &ga, &wa, ATOL, RTOL);
        common::assert_close(&format!("k cache {what}"), &gk, &wk, ATOL, RTOL);
        common::assert_close(&format!("v cache {what}"), &gv, &wv, 0.0, 0.0);
    }
}

#[test]
fn attention_merged_inside_the_o_product_matches_the_combine() {
    // Decode's fusion: the o product reads attention's split partials and merges them itself.
    let mut r = rng(10);
    let mut g = ops_on(context());
    let cases = [
        // (pos, heads, kv heads, hd, forced splits, output features)
        (0, 3, 3, 16, None, 24),
        (130, 6, 2, 12, None, 40),
        (200, 4, 1, 72, Some(2), 17),
        (600, 9, 3, 64, None, 64),
    ];
    for (pos, heads, kv_heads, hd, splits, n) in cases {
        let h = Heads {
            heads,
            kv_heads,
            hd,
        };
        let kd = heads * hd;
        let q = rand_f32(&mut r, kd, 1.0);
        let k = rand_f32(&mut r, (pos + 1) * kv_heads * hd, 1.0);
        let v = rand_f32(&mut r, (pos + 1) * kv_heads * hd, 1.0);
        let w = rand_f16(&mut r, n * kd, 0.2);
        let att = ops::attention(&q, &k, &v, pos, heads, kv_heads, hd);
        let want = cpu_matmul(&att, &w, None, 1, kd, false, None);
        let what = format!("pos={pos} H={heads} KV={kv_heads} hd={hd} splits={splits:?} N={n}");
        let fused = g
            .attention_product(&q, &k, &v, pos, h, splits, &w, true)
            .unwrap();
        common::assert_close(
            &format!("merged in the product {what}"),
            &fused,
            &want,
            ATOL,
            RTOL,
        );
        let separate = g
            .attention_product(&q, &k, &v, pos, h, splits, &w, false)
            .unwrap();
        common::assert_close(
            &format!("combine, then the product {what}"),
            &separate,
            &want,
            ATOL,
            RTOL,
        );
    }
}

#[test]
fn top_k_on_the_gpu_matches_a_sort() {
    let mut r = rng(10);
    let mut g = ops_on(context());
    let mut logits = rand_f32(&mut r, 3001, 8.0);
    logits[17] = 50.0;
    logits[2500] = 50.0; // a tie: the lower id comes first
    logits[999] = f32::NAN; // never selected
    for k in [1, 5, 50] {
        let want = synapse::engine::top_k(&logits, k);
        let got = g.top_k(&logits, k).unwrap();
        assert_eq!(got, want, "top-{k}");
    }
    let small = [0.5f32, -1.0, 2.0, 2.0, 0.0];
    assert_eq!(
        g.top_k(&small, 5).unwrap(),
        synapse::engine::top_k(&small, 5)
    );
}

#[test]
fn int8_quantize_and_dequantize_per_syn1() {
    let mut r = rng(11);
    let mut g = ops_on(context());
    let (rows, cols) = (4, 37);
    let mut x = rand_f32(&mut r, rows * cols, 5.0);
    for v in &mut x[2 * cols..3 * cols] {
        *v = 0.0; // an all-zero row: scale 1
    }
    let (gq, gs) = g.quantize_int8(&x, cols).unwrap();
    let mut q = Vec::new();
    let mut scales = Vec::new();
    for row in x.chunks_exact(cols) {
        scales.push(quantize_into(row, INT8_MAX_Q, 0, &mut q).unwrap());
    }
    assert_eq!(gs[2], 1.0, "an all-zero row has scale 1");
    common::assert_close("int8 scales", &gs, &scales, 0.0, 1e-6);
    let mut off_by_one = 0;
    for (i, (&a, &b)) in gq.iter().zip(&q).enumerate() {
        if a != b {
            // Only a tie decided differently by f32 (GPU) vs f64 (CPU) division may differ.
            let v = x[i] / scales[i / cols];
            assert!(
                (a as i32 - b as i32).abs() == 1 && (v - v.floor() - 0.5).abs() < 1e-4,
                "q[{i}]: gpu {a}, cpu {b}, x/scale {v}"
            );
            off_by_one += 1;
        }
    }
    assert!(off_by_one <= 2, "{off_by_one} values differ");
    let want: Vec<f32> = q
        .iter()
        .enumerate()
        .map(|(i, &v)| f32::from(v) * scales[i / cols])
        .collect();
    let got = g.dequantize_int8(&q, &scales, cols).unwrap();
    common::assert_close("int8 dequantize", &got, &want, 0.0, 0.0);
}

/// The speed probe a GPU node reports: a finite, positive rate, within what any device can do
/// (lavapipe here manages about 0.5 GFLOP/s; no device reaches 1e6).
#[test]
fn speed_probe_reports_a_plausible_rate() {
    let mut g = ops_on(context());
    let gflops = g.measure_gflops().expect("the probe runs");
    eprintln!("{}: {gflops:.2} GFLOP/s", g.context().adapter_name());
    assert!(
        gflops.is_finite() && gflops > 1e-3 && gflops < 1e6,
        "{gflops}"
    );
}
