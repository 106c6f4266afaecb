//! The CPU reference ops: plain f32 arithmetic over row-major buffers, f16 weights converted on
//! the fly. Every GPU shader is tested against these functions, so they favour clarity over
//! speed; only the matrix product is parallel (rayon) because it is where the time goes.
//!
//! Shapes are written `(rows, cols)`; `T` is tokens in the step, `C` the hidden size.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Weight rows converted per rayon task: large enough to amortise scheduling.
const ROWS_PER_TASK: usize = 32;

/// `out (T, N) = x (T, K) @ w (N, K)^T + bias (N)`: every weight row is one output feature.
pub fn matmul(out: &mut [f32], x: &[f32], w: &[f16], bias: Option<&[f16]>, t: usize, k: usize) {
    let n = w.len() / k;
    assert_eq!(w.len(), n * k, "weight is not (N, K)");
    assert_eq!(x.len(), t * k, "input is not (T, K)");
    assert_eq!(out.len(), t * n, "output is not (T, N)");
    // Each task converts its weight rows once and uses them for all T tokens: (rows, T).
    let blocks: Vec<Vec<f32>> = w
        .par_chunks(ROWS_PER_TASK * k)
        .map(|rows| {
            let mut row = vec![0f32; k];
            let nrows = rows.len() / k;
            let mut acc = vec![0f32; nrows * t]; // (rows, T)
            for (r, wrow) in rows.chunks_exact(k).enumerate() {
                wrow.convert_to_f32_slice(&mut row);
                for ti in 0..t {
                    acc[r * t + ti] = dot(&row, &x[ti * k..(ti + 1) * k]);
                }
            }
            acc
        })
        .collect();
    scatter_rows(out, &blocks, bias, t, n, ROWS_PER_TASK);
}

/// Writes per-task results `parts[p]` (rows, T), task `p` holding output features
/// `p * rows_per_task..`, into `out` (T, N), adding each feature's bias.
pub fn scatter_rows(
    out: &mut [f32],
    parts: &[Vec<f32>],
    bias: Option<&[f16]>,
    t: usize,
    n: usize,
    rows_per_task: usize,
) {
    for (p, acc) in parts.iter().enumerate() {
        let n0 = p * rows_per_task;
        for r in 0..acc.len() / t {
            let b = bias.map_or(0.0, |bb| bb[n0 + r].to_f32());
            for ti in 0..t {
                out[ti * n + n0 + r] = acc[r * t + ti] + b;
            }
        }
    }
}

/// Dot product with eight independent accumulators, so the compiler can vectorise it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Converts f16 weights to f32 (used for small vectors: norms, biases).
pub fn to_f32(w: &[f16]) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    w.convert_to_f32_slice(&mut out);
    out
}

/// LayerNorm over each row of `x (T, C)` in place: `(x - mean) / sqrt(var + eps) * w + b`,
/// with the biased variance, as GPT-2 does.
pub fn layernorm(x: &mut [f32], w: &[f16], b: &[f16], c: usize, eps: f32) {
    let (w, b) = (to_f32(w), to_f32(b));
    for row in x.chunks_exact_mut(c) {
        let mean = row.iter().sum::<f32>() / c as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for i in 0..c {
            row[i] = (row[i] - mean) * inv * w[i] + b[i];
        }
    }
}

/// RMSNorm over each row of `x (T, C)` in place: `x / sqrt(mean(x^2) + eps) * w`, as Llama does.
pub fn rmsnorm(x: &mut [f32], w: &[f16], c: usize, eps: f32) {
    let w = to_f32(w);
    for row in x.chunks_exact_mut(c) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / c as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for i in 0..c {
            row[i] = row[i] * inv * w[i];
        }
    }
}

/// GPT-2's gelu, tanh form: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, in place.
pub fn gelu_tanh(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for v in x {
        let u = SQRT_2_OVER_PI * (*v + 0.044715 * *v * *v * *v);
        *v = 0.5 * *v * (1.0 + u.tanh());
    }
}

/// SwiGLU's gated product in place: `gate = silu(gate) * up`, with `silu(g) = g / (1 + e^-g)`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len());
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `x += y`, the residual connection.
pub fn add_inplace(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len());
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Rotary position embedding, Hugging Face "rotate half" convention, in place on
/// `x (T, heads * hd)`: row `t` is at position `pos + t`; within each head, element `i` pairs
/// with `i + hd/2` and turns by `angle = position * theta^(-2i/hd)`.
pub fn rope(x: &mut [f32], heads: usize, hd: usize, pos: usize, theta: f32) {
    let half = hd / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / hd as f32))
        .collect();
    for (t, row) in x.chunks_exact_mut(heads * hd).enumerate() {
        let p = (pos + t) as f32;
        for head in row.chunks_exact_mut(hd) {
            for i in 0..half {
                let (sin, cos) = (p * inv_freq[i]).sin_cos();
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * cos - b * sin;
                head[i + half] = b * cos + a * sin;
            }
        }
    }
}

/// Causal attention of `q (T, H * hd)` against the cached keys and values
/// `k, v (pos + T, KV * hd)`, where query row `t` sits at position `pos + t` and sees keys
/// `0..=pos + t`. Query head `h` reads key/value head `h / (H / KV)` (grouped-query attention;
/// GPT-2 has `KV = H`). Returns `(T, H * hd)`.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pos: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
) -> Vec<f32> {
    let t = q.len() / (heads * hd);
    let kv_dim = kv_heads * hd;
    let group = heads / kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; t * heads * hd]; // (T, H * hd)
    let mut scores = vec![0f32; pos + t]; // (keys)
    for ti in 0..t {
        let n_keys = pos + ti + 1;
        for h in 0..heads {
            let kvh = h / group;
            let qh = &q[(ti * heads + h) * hd..][..hd];
            let mut max = f32::NEG_INFINITY;
            for j in 0..n_keys {
                let s = dot(qh, &k[j * kv_dim + kvh * hd..][..hd]) * scale;
                scores[j] = s;
                max = max.max(s);
            }
            let mut sum = 0.0;
            for s in &mut scores[..n_keys] {
                *s = (*s - max).exp();
                sum += *s;
            }
            let o = &mut out[(ti * heads + h) * hd..][..hd];
            for j in 0..n_keys {
                let p = scores[j] / sum;
                let vj = &v[j * kv_dim + kvh * hd..][..hd];
                for d in 0..hd {
                    o[d] += p * vj[d];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16s(v: &[f32]) -> Vec<f16> {
        v.iter().map(|&x| f16::from_f32(x)).collect()
    }

    #[test]
    fn matmul_matches_naive_with_bias_on_awkward_sizes() {
        let (t, k, n) = (3, 37, 70);
        let x: Vec<f32> = (0..t * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 11 % 17) as f32 - 8.0) / 16.0)
            .collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32 / 8.0).collect();
        let mut out = vec![0f32; t * n];
        matmul(&mut out, &x, &f16s(&w), Some(&f16s(&b)), t, k);
        for ti in 0..t {
            for ni in 0..n {
                let want: f32 = (0..k).map(|j| x[ti * k + j] * w[ni * k + j]).sum::<f32>() + b[ni];
                let got = out[ti * n + ni];
                assert!((got - want).abs() < 1e-4, "({ti},{ni}): {got} vs {want}");
            }
        }
    }

    #[test]
    fn rope_rotates_half_pairs_and_keeps_norm() {
        let hd = 8;
        let mut x: Vec<f32> = (0..hd).map(|i| i as f32 + 1.0).collect();
        let before: f32 = x.iter().map(|v| v * v).sum();
        rope(&mut x, 1, hd, 3, 10000.0);
        let after: f32 = x.iter().map(|v| v * v).sum();
        assert!((before - after).abs() < 1e-3);
        // Pair (0, 4) turns by 3 radians (inv_freq 1 for i = 0).
        let (s, c) = 3f32.sin_cos();
        assert!((x[0] - (1.0 * c - 5.0 * s)).abs() < 1e-5);
        assert!((x[4] - (5.0 * c + 1.0 * s)).abs() < 1e-5);
    }

    #[test]
    fn attention_on_one_key_returns_its_value() {
        let (heads, kv, hd) = (4, 2, 3);
        let q = vec![0.5f32; heads * hd];
        let k: Vec<f32> = (0..kv * hd).map(|i| i as f32).collect();
        let v: Vec<f32> = (0..kv * hd).map(|i| 10.0 + i as f32).collect();
        let out = attention(&q, &k, &v, 0, heads, kv, hd);
        for h in 0..heads {
            let kvh = h / 2;
            assert_eq!(&out[h * hd..(h + 1) * hd], &v[kvh * hd..(kvh + 1) * hd]);
        }
    }

    #[test]
    fn norms_match_their_formulas() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        rmsnorm(&mut x, &f16s(&[1.0, 1.0, 2.0, 1.0]), 4, 0.0);
        let rms = (30.0f32 / 4.0).sqrt();
        assert!((x[2] - 6.0 / rms).abs() < 1e-6);
        let mut y = vec![1.0, 2.0, 3.0, 4.0];
        layernorm(&mut y, &f16s(&[1.0; 4]), &f16s(&[0.5; 4]), 4, 0.0);
        let sd = 1.25f32.sqrt();
        assert!((y[0] - (-1.5 / sd + 0.5)).abs() < 1e-6);
    }
}
