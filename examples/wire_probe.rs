//! Experiment behind SYN1's RICE encoding (docs/PERF.md, "Wire encodings"): candidate
//! activation codecs simulated on SmolLM2 hidden states (sizes include the 24-byte header),
//! scored by wire_eval's teacher-forced top-1 agreement and mean KL against an f32 wire.
//! Usage: `wire_probe [filter-substring...]` (simulations), `wire_probe eval` (the real
//! encodings, as `synapse bench --wire` measures them). Set DUMP=FILE to save the f32 rows.
use synapse::wire_eval::{CodecFactory, RowCodec};

type Enc = Box<dyn Fn(usize, &[f32], &mut Vec<f32>) -> usize>;
struct Sim {
    f: std::rc::Rc<Enc>,
    n: usize,
}
impl RowCodec for Sim {
    fn round_trip(&mut self, row: &[f32], _seq: u16) -> anyhow::Result<(usize, Vec<f32>)> {
        let mut out = Vec::new();
        let b = (self.f)(self.n, row, &mut out);
        self.n += 1;
        Ok((b + 24, out))
    }
}
fn f16r(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}
fn top_idx(x: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|a, b| x[*b].abs().total_cmp(&x[*a].abs()));
    idx.truncate(k);
    idx
}
fn signs(n: usize) -> Vec<f32> {
    let mut s = 0x9E37_79B9u32;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            if s & 1 == 1 { -1.0 } else { 1.0 }
        })
        .collect()
}
fn fwht(v: &mut [f32]) {
    let n = v.len();
    let mut h = 1;
    while h < n {
        for i in (0..n).step_by(2 * h) {
            for j in i..i + h {
                let (a, b) = (v[j], v[j + h]);
                v[j] = a + b;
                v[j + h] = a - b;
            }
        }
        h *= 2;
    }
    let s = 1.0 / (n as f32).sqrt();
    v.iter_mut().for_each(|x| *x *= s);
}
/// int8 row, k outliers (u16 idx + f16), optional f16 for row 0.
fn int8_out(n: usize, x: &[f32], out: &mut Vec<f32>, k: usize, sink_f16: bool) -> usize {
    if sink_f16 && n.is_multiple_of(100_000) {
        out.extend(x.iter().map(|&v| f16r(v)));
        return x.len() * 2;
    }
    let o = top_idx(x, k);
    let mut y = x.to_vec();
    o.iter().for_each(|&i| y[i] = 0.0);
    let m = y.iter().fold(0f32, |a, v| a.max(v.abs()));
    let s = if m == 0.0 { 1.0 } else { m / 127.0 };
    out.extend(y.iter().map(|&v| (v / s).round() * s));
    o.iter().for_each(|&i| out[i] = f16r(x[i]));
    x.len() + 4 + k * 4 + 1
}
/// k outliers, random-sign Hadamard blocks of `b`, int `bits` per block with f16 scale
/// (scale = clip * rms or max when clip == 0).
#[allow(clippy::too_many_arguments)]
fn had(
    n: usize,
    x: &[f32],
    out: &mut Vec<f32>,
    k: usize,
    bits: u32,
    b: usize,
    clip: f32,
    sink: bool,
) -> usize {
    if sink && n.is_multiple_of(100_000) {
        out.extend(x.iter().map(|&v| f16r(v)));
        return x.len() * 2;
    }
    let o = top_idx(x, k);
    let mut y = x.to_vec();
    o.iter().for_each(|&i| y[i] = 0.0);
    let sg = signs(y.len());
    y.iter_mut().zip(&sg).for_each(|(v, s)| *v *= s);
    let qmax = ((1 << (bits - 1)) - 1) as f32;
    for blk in y.chunks_mut(b) {
        fwht(blk);
        let m = if clip == 0.0 {
            blk.iter().fold(0f32, |a, v| a.max(v.abs()))
        } else {
            clip * (blk.iter().map(|v| v * v).sum::<f32>() / blk.len() as f32).sqrt()
        };
        let s = f16r(if m == 0.0 { 1.0 } else { m / qmax });
        blk.iter_mut()
            .for_each(|v| *v = (*v / s).round().clamp(-qmax, qmax) * s);
        fwht(blk);
    }
    y.iter_mut().zip(&sg).for_each(|(v, s)| *v *= s);
    o.iter().for_each(|&i| y[i] = f16r(x[i]));
    out.extend(y);
    (x.len() * bits as usize).div_ceil(8) + x.len().div_ceil(b) * 2 + k * 4 + 1
}
#[allow(dead_code)]
fn eg_bits(q: &[i32]) -> (usize, u32) {
    let zz = |v: i32| ((v << 1) ^ (v >> 31)) as u32 as u64;
    (0..16u32)
        .map(|k| {
            let bits: u64 = q
                .iter()
                .map(|&v| {
                    let u = zz(v) + (1u64 << k);
                    2 * (63 - u.leading_zeros() as u64) - k as u64 + 1
                })
                .sum();
            (bits as usize, k)
        })
        .min()
        .unwrap()
}
static HOP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static ENT: std::sync::Mutex<[f64; 4]> = std::sync::Mutex::new([0.0; 4]);
#[allow(dead_code)]
fn rice_bits(q: &[i32]) -> usize {
    let zz = |v: i32| ((v << 1) ^ (v >> 31)) as u32 as u64;
    (0..16u32)
        .map(|k| {
            q.iter()
                .map(|&v| {
                    let u = zz(v);
                    let hi = u >> k;
                    if hi < 16 {
                        (hi + 1 + k as u64) as usize
                    } else {
                        // 16 ones then exp-Golomb order k of the rest
                        let w = u - (16u64 << k) + (1u64 << k);
                        16 + (2 * (63 - w.leading_zeros() as u64) - k as u64 + 1) as usize
                    }
                })
                .sum::<usize>()
        })
        .min()
        .unwrap()
}
/// Uniform step = alpha * rms of the row without its top `k` (which travel as f16 with a
/// 10-bit index), exp-Golomb or escaped Rice, whichever is smaller for the row.
#[allow(dead_code)]
fn ecsq(x: &[f32], out: &mut Vec<f32>, alpha: f32, k: usize, kf: usize) -> usize {
    let o = top_idx(x, k.max(kf));
    let mut y = x.to_vec();
    o.iter().for_each(|&i| y[i] = 0.0);
    let rms = (y.iter().map(|v| v * v).sum::<f32>() / y.len() as f32).sqrt();
    let step = f16r(alpha * rms);
    let mut z = x.to_vec();
    o[..k].iter().for_each(|&i| z[i] = 0.0);
    let q: Vec<i32> = z.iter().map(|&v| (v / step).round() as i32).collect();
    let (eg, _) = eg_bits(&q);
    let rc = rice_bits(&q);
    let mut hist = std::collections::HashMap::new();
    q.iter()
        .for_each(|v| *hist.entry(*v).or_insert(0usize) += 1);
    let n = q.len() as f64;
    let h: f64 = hist
        .values()
        .map(|&c| -(c as f64) * (c as f64 / n).log2())
        .sum();
    {
        let mut e = ENT.lock().unwrap();
        e[0] += eg as f64;
        e[1] += rc as f64;
        e[2] += h;
        e[3] += 1.0;
    }
    out.extend(q.iter().map(|&v| v as f32 * step));
    o[..k].iter().for_each(|&i| out[i] = f16r(x[i]));
    (eg.min(rc) + k * 26).div_ceil(8) + 4
}
#[allow(dead_code)]
fn ecsq_abs(x: &[f32], out: &mut Vec<f32>, step: f32) -> usize {
    let q: Vec<i32> = x.iter().map(|&v| (v / step).round() as i32).collect();
    let rc = rice_bits(&q);
    out.extend(q.iter().map(|&v| v as f32 * step));
    rc.div_ceil(8) + 4
}
#[allow(dead_code)]
fn rice(x: &[f32], out: &mut Vec<f32>, est: u8, a: f32) -> usize {
    let mut m: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    m.sort_by(|a, b| a.total_cmp(b));
    let scale = match est {
        0 => (m[..m.len() - 8].iter().map(|v| v * v).sum::<f32>() / (m.len() - 8) as f32).sqrt(),
        1 => m[m.len() / 2],
        _ => m[..m.len() - 8].iter().sum::<f32>() / (m.len() - 8) as f32,
    };
    let step = a * scale;
    let q: Vec<i32> = x.iter().map(|&v| (v / step).round() as i32).collect();
    let rc = rice_bits(&q);
    out.extend(q.iter().map(|&v| v as f32 * step));
    rc.div_ceil(8) + 5
}
fn main() {
    let m = synapse::model::ModelDir::open(&synapse::fetch::default_model_dir()).unwrap();
    let text = std::fs::read_to_string("/work/main/assets/wire-eval.txt").unwrap();
    let filters: Vec<String> = std::env::args().skip(1).collect();
    if filters.first().map(String::as_str) == Some("eval") {
        // The official measurement: every Encoding plus rice-compact, as `bench --wire` sees it.
        let r = synapse::wire_eval::evaluate(&m, &text, 300, synapse::protocol::Encoding::Rice)
            .unwrap();
        for x in r {
            println!("{}", serde_json::to_string(&x).unwrap());
        }
        return;
    }
    let mut v: Vec<(String, bool, CodecFactory)> = vec![];
    let mut add = |name: &str, f: Enc| {
        if name != "f32"
            && !filters.is_empty()
            && !filters.iter().any(|p| name.contains(p.as_str()))
        {
            return;
        }
        let f = std::rc::Rc::new(f);
        v.push((
            name.to_string(),
            false,
            Box::new(move || {
                let hop = HOP.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 2;
                Box::new(Sim {
                    f: f.clone(),
                    n: hop * 100_000,
                }) as Box<dyn RowCodec>
            }),
        ));
    };
    add(
        "f32",
        Box::new(|_, x, o| {
            if let Ok(path) = std::env::var("DUMP") {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .unwrap();
                x.iter()
                    .for_each(|v| f.write_all(&v.to_le_bytes()).unwrap());
            }
            o.extend_from_slice(x);
            x.len() * 4
        }),
    );
    add(
        "f16",
        Box::new(|_, x, o| {
            o.extend(x.iter().map(|&v| f16r(v)));
            x.len() * 2
        }),
    );
    add("int8+8out", Box::new(|n, x, o| int8_out(n, x, o, 8, false)));
    //add("int8+8out+sinkf16", Box::new(|n, x, o| int8_out(n, x, o, 8, true)));
    add(
        "had5-64-max+8out",
        Box::new(|n, x, o| had(n, x, o, 8, 5, 64, 0.0, false)),
    );
    add(
        "had5-64-max+8out+sink",
        Box::new(|n, x, o| had(n, x, o, 8, 5, 64, 0.0, true)),
    );
    //add("had5-64-clip3+8out+sink", Box::new(|n, x, o| had(n, x, o, 8, 5, 64, 3.0, true)));
    for ratio in [0.03f32, 0.04, 0.05, 0.06, 0.08, 0.12, 0.13, 0.14] {
        let name = format!("real-rice-{ratio}");
        if filters.is_empty() || filters.iter().any(|p| name.contains(p.as_str())) {
            v.push((name, false, synapse::wire_eval::rice_codec(ratio)));
        }
    }
    let r = synapse::wire_eval::evaluate_codecs(&m, &text, 300, v).unwrap();
    for x in r {
        println!(
            "{:28} bytes {:7.1} ratio {:5.2} top1 {:.4} kl {:.5}",
            x.encoding, x.bytes_per_token, x.ratio_vs_f32, x.top1_agreement, x.mean_kl
        );
    }
    let e = ENT.lock().unwrap();
    if e[3] > 0.0 {
        println!(
            "ecsq rows {}: exp-golomb {:.1} bytes/row, rice {:.1}, order-0 entropy {:.1}",
            e[3],
            e[0] / 8.0 / e[3],
            e[1] / 8.0 / e[3],
            e[2] / 8.0 / e[3]
        );
    }
}
