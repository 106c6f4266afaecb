//! The simulator checked against a real cluster, shared by the CPU calibration test
//! (tests/sim_calibration.rs) and the browser one (tests/browser.rs): one greedy generation
//! measured through the coordinator's events, and the simulator's prediction for the same
//! devices and placement.
//!
//! The dev box is shared and its load moves by 3x from one second to the next, so a speed
//! probed before the run says little about the run. Each node's speed is therefore taken from
//! the same run, and each phase is predicted from the other: the decode prediction uses the
//! speeds the nodes showed on the prompt's step (their prefill hop times), the prefill
//! prediction the speeds they showed on decode steps. What is tested is the model itself: how
//! one token's cost relates to a prompt's (the engine's matrix-matrix gain, as this CPU's probe
//! measures it), the fixed costs,
//! attention, and how hops, the network and the coordinator add up.

use std::time::{Duration, Instant};

use synapse::coordinator::Coordinator;
use synapse::coordinator::events::Event;
use synapse::coordinator::http::status_json;
use synapse::coordinator::session::{GenerateEvent, GenerateRequest};
use synapse::coordinator::wire::NodeKind;
use synapse::sampling::SamplingParams;
use synapse::sim::predict::{SimDevice, SimOptions};
use synapse::sim::profile::{Backend, CPU_MATMUL_GAIN, DeviceProfile, LOOPBACK};
use synapse::sim::timing::compute_s;
use synapse::sim::{ModelShape, ShardShape, simulate_with};
use tokio::sync::mpsc;

/// A connected node as `/api/status` describes it.
#[derive(Debug, Clone)]
pub struct NodeMeta {
    pub id: u64,
    pub name: String,
    pub kind: NodeKind,
    pub adapter: String,
    pub memory_bytes: u64,
}

/// One hop as the coordinator relayed it.
#[derive(Debug, Clone, Copy)]
pub struct Hop {
    pub node: u64,
    pub first_shard: usize,
    pub tokens: usize,
    pub micros: u64,
}

/// What one cluster run measured.
pub struct Measured {
    pub prompt_tokens: usize,
    pub generated: usize,
    pub decode_tps: f64,
    pub prefill_s: f64,
    /// Per node: its prefill time and its median decode time per step, seconds (the
    /// coordinator's wait on its hops, summed over the hops it runs in one step).
    pub node_times: Vec<(u64, f64, f64)>,
    pub placement: Vec<Option<u64>>,
    pub nodes: Vec<NodeMeta>,
}

/// The nodes and the placement `/api/status` shows now.
pub fn cluster_now(coord: &Coordinator) -> (Vec<NodeMeta>, Vec<Option<u64>>) {
    let s = status_json(coord);
    let placement = s["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["node"].as_u64())
        .collect();
    let nodes = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| NodeMeta {
            id: x["id"].as_u64().unwrap(),
            name: x["name"].as_str().unwrap().to_string(),
            kind: serde_json::from_value(x["kind"].clone()).unwrap(),
            adapter: x["adapter"].as_str().unwrap_or("").to_string(),
            memory_bytes: x["memory_bytes"].as_u64().unwrap(),
        })
        .collect();
    (nodes, placement)
}

/// Runs one greedy generation of `prompt` for up to `gen_tokens` and measures it.
pub async fn measure(
    coord: &Coordinator,
    prompt: &str,
    gen_tokens: usize,
    timeout: Duration,
) -> Measured {
    let (nodes, placement) = cluster_now(coord);
    let mut events = coord.subscribe();
    let (tx, mut rx) = mpsc::channel(256);
    let req = GenerateRequest {
        stream: true,
        prompt: prompt.into(),
        max_tokens: gen_tokens,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        // The simulator predicts plain decoding: one token a trip.
        speculate: Some(false),
    };
    let c = coord.clone();
    let gen_task = tokio::spawn(async move { c.generate(req, tx).await });
    let mut opened = None;
    let mut prompt_tokens = 0;
    let mut token_times = Vec::new();
    let mut relayed: Vec<Hop> = Vec::new();
    let end = Instant::now() + timeout;
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(Event::SessionOpened { prompt_tokens: p, .. }) => {
                    opened = Some(Instant::now());
                    prompt_tokens = p;
                }
                Ok(Event::TokenSampled { .. }) => token_times.push(Instant::now()),
                Ok(Event::FrameRelayed { node, first_shard, tokens, micros, .. }) => {
                    relayed.push(Hop { node, first_shard, tokens, micros })
                }
                Ok(Event::SessionClosed { .. }) => break,
                Ok(e @ (Event::ShardLoading { .. } | Event::ShardPlaced { .. } | Event::SessionReplayed { .. })) => {
                    eprintln!("calibration: during the run: {e:?}");
                }
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            },
            g = rx.recv() => if let Some(GenerateEvent::Error { message }) = g {
                panic!("generation failed: {message}");
            },
            _ = tokio::time::sleep_until(end.into()) => panic!("the generation took over {timeout:?}"),
        }
    }
    let _ = gen_task.await;
    let opened = opened.expect("the session opened");
    assert!(token_times.len() >= 8, "only {} tokens", token_times.len());
    let decode_s = (*token_times.last().unwrap() - token_times[0]).as_secs_f64();
    Measured {
        prompt_tokens,
        generated: token_times.len(),
        decode_tps: (token_times.len() - 1) as f64 / decode_s,
        prefill_s: (token_times[0] - opened).as_secs_f64(),
        node_times: node_times(&relayed, prompt_tokens),
        placement,
        nodes,
    }
}

/// Per node: the sum of its hops on the prompt's step, and the median over decode steps of the
/// sum of its hops in one step (a node holding shards 0-3 and 5-9 runs two hops a step).
pub fn node_times(relayed: &[Hop], prompt: usize) -> Vec<(u64, f64, f64)> {
    let mut nodes: Vec<u64> = relayed.iter().map(|r| r.node).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
        .into_iter()
        .map(|n| {
            let mine: Vec<&Hop> = relayed.iter().filter(|r| r.node == n).collect();
            let mut firsts: Vec<usize> = mine.iter().map(|r| r.first_shard).collect();
            firsts.sort_unstable();
            firsts.dedup();
            let per_step = firsts.len().max(1);
            let pre: f64 = mine
                .iter()
                .filter(|r| r.tokens == prompt)
                .take(per_step)
                .map(|r| r.micros as f64 / 1e6)
                .sum();
            let singles: Vec<f64> = mine
                .iter()
                .filter(|r| r.tokens == 1)
                .map(|r| r.micros as f64 / 1e6)
                .collect();
            let mut dec: Vec<f64> = singles
                .chunks_exact(per_step)
                .map(|c| c.iter().sum())
                .collect();
            dec.sort_by(f64::total_cmp);
            let pre = if pre > 0.0 { pre } else { f64::NAN };
            (n, pre, dec.get(dec.len() / 2).copied().unwrap_or(f64::NAN))
        })
        .collect()
}

/// The runs of consecutive shards `node` holds: one hop each.
pub fn hops_of<'a>(
    shards: &'a [ShardShape],
    placement: &[Option<u64>],
    node: u64,
) -> Vec<Vec<&'a ShardShape>> {
    let mut hops: Vec<Vec<&ShardShape>> = Vec::new();
    let mut last: Option<usize> = None;
    for s in shards.iter().filter(|s| placement[s.index] == Some(node)) {
        match (last, hops.last_mut()) {
            (Some(l), Some(h)) if l + 1 == s.index => h.push(s),
            _ => hops.push(vec![s]),
        }
        last = Some(s.index);
    }
    hops
}

/// The speed (GFLOP/s, as a node's matvec probe would report it) at which `profile` computes
/// its `hops` in `seconds` for a step of `t` tokens at `pos`: compute time is a fixed part plus
/// a part inversely proportional to the speed.
pub fn speed_for(
    shape: &ModelShape,
    hops: &[Vec<&ShardShape>],
    profile: &DeviceProfile,
    t: usize,
    pos: usize,
    seconds: f64,
) -> f64 {
    let at = |g: f64| {
        let mut p = profile.clone();
        let gain = p.matmul_gflops / p.matvec_gflops;
        (p.matvec_gflops, p.bandwidth_gbs, p.matmul_gflops) = (g, g, g * gain);
        hops.iter()
            .map(|h| compute_s(shape, h, &p, t, pos))
            .sum::<f64>()
    };
    let fixed = at(1e12);
    let variable = at(1.0) - fixed;
    variable / (seconds - fixed).max(1e-6)
}

/// This machine's CPU matrix-matrix gain (per-token prefill speed over decode speed) on a
/// working set of `bytes` of f16 weights (2048 x 2048 matrices, one pass over all of them per
/// timing, one- and eight-token passes alternating, median of nine), measured once per test
/// process. The nodes here run on this CPU,
/// and the gain depends on where a model's weights live: 3.4-3.7 for a matrix that fits in
/// cache, about 3.5 for SmolLM2 on the first dev box, near 5 on one whose 480 MB L3 holds much
/// of it. The constant a hello implies ([`CPU_MATMUL_GAIN`]) would test the machine rather
/// than the model.
pub fn cpu_gain(bytes: u64) -> f64 {
    static GAIN: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *GAIN.get_or_init(|| {
        let (n, k, t) = (2048usize, 2048usize, 8usize);
        let count = bytes.div_ceil((n * k * 2) as u64).clamp(1, 256) as usize;
        let mats: Vec<Vec<half::f16>> = (0..count)
            .map(|m| {
                (0..n * k)
                    .map(|i| half::f16::from_f32((((i + m) % 31) as f32 - 15.0) / 64.0))
                    .collect()
            })
            .collect();
        let x: Vec<f32> = (0..k * t).map(|i| (i % 7) as f32 / 7.0).collect();
        let mut out = vec![0f32; n * t];
        let mut pass = |tokens: usize| {
            let t0 = Instant::now();
            for w in &mats {
                synapse::engine::cpu::ops::matmul(
                    &mut out[..n * tokens],
                    &x[..k * tokens],
                    w,
                    None,
                    tokens,
                    k,
                );
            }
            t0.elapsed().as_secs_f64().max(1e-9)
        };
        pass(t); // warm-up
        // One-token and t-token passes alternate, so a change in the machine's state falls on
        // both; the medians of nine.
        let (mut ones, mut manys): (Vec<f64>, Vec<f64>) =
            (0..9).map(|_| (pass(1), pass(t))).unzip();
        ones.sort_by(f64::total_cmp);
        manys.sort_by(f64::total_cmp);
        let (one, many) = (ones[4], manys[4]);
        let extra = (many - one).max(one / CPU_MATMUL_GAIN / 4.0);
        let gain = (one * (t - 1) as f64 / extra).max(1.0);
        eprintln!(
            "this CPU's matrix-matrix gain over {count} matrices ({} MB of f16): {gain:.2}",
            (count * n * k * 2) >> 20
        );
        gain
    })
}

/// The simulator's devices for the measured nodes on loopback, each at `speed(id)`; CPU nodes
/// with this machine's measured matrix-matrix gain on `weight_bytes` ([`cpu_gain`]).
pub fn devices(
    nodes: &[NodeMeta],
    weight_bytes: u64,
    speed: &dyn Fn(u64) -> f64,
) -> Vec<SimDevice> {
    nodes
        .iter()
        .map(|n| {
            let mut p =
                DeviceProfile::from_hello(&n.name, n.kind, &n.adapter, n.memory_bytes, speed(n.id));
            if p.backend == Backend::Cpu {
                p.matmul_gflops = p.matvec_gflops * cpu_gain(weight_bytes);
            }
            (p.rtt_ms, p.link_mbps) = LOOPBACK;
            SimDevice {
                id: n.id,
                name: n.name.clone(),
                profile: p,
                real: true,
            }
        })
        .collect()
}

/// Predicted against measured for one run.
pub struct Compared {
    /// Predicted decode tokens/s over measured, minus one.
    pub decode_err: f64,
    /// Predicted time to first token over measured, minus one.
    pub prefill_err: f64,
    /// A row for docs/PERF.md.
    pub line: String,
}

/// The simulator's decode and prefill predictions for the run's own devices and placement.
pub fn compare(shape: &ModelShape, shards: &[ShardShape], m: &Measured, label: &str) -> Compared {
    let bytes = shards.iter().map(|s| s.bytes).sum();
    let base = devices(&m.nodes, bytes, &|_| 1.0);
    let mut from_prefill = Vec::new();
    let mut from_decode = Vec::new();
    for (id, pre, dec) in &m.node_times {
        let p = &base.iter().find(|d| d.id == *id).unwrap().profile;
        let hops = hops_of(shards, &m.placement, *id);
        let pos = m.prompt_tokens + m.generated / 2;
        from_prefill.push((*id, speed_for(shape, &hops, p, m.prompt_tokens, 0, *pre)));
        from_decode.push((*id, speed_for(shape, &hops, p, 1, pos, *dec)));
    }
    let lookup = |v: &[(u64, f64)], id: u64| v.iter().find(|x| x.0 == id).map_or(1.0, |x| x.1);
    let for_decode = devices(&m.nodes, bytes, &|id| lookup(&from_prefill, id));
    let for_prefill = devices(&m.nodes, bytes, &|id| lookup(&from_decode, id));
    let opts = SimOptions {
        prompt_tokens: m.prompt_tokens,
        gen_tokens: m.generated,
        ..SimOptions::default()
    };
    let r = simulate_with(shape, shards, &for_decode, &opts, m.placement.clone()).unwrap();
    let rp = simulate_with(shape, shards, &for_prefill, &opts, m.placement.clone()).unwrap();
    let decode_err = r.decode_tokens_per_second / m.decode_tps - 1.0;
    let prefill_err = rp.time_to_first_token_s / m.prefill_s - 1.0;
    let speeds: Vec<String> = from_prefill
        .iter()
        .zip(&from_decode)
        .map(|(a, b)| format!("{:.2}/{:.2}", a.1, b.1))
        .collect();
    let line = format!(
        "| {label} | {} | decode {:.2} predicted / {:.2} measured tok/s ({:+.0}%) | first token \
         after {} tokens: {:.2} / {:.2} s ({:+.0}%) | node speeds on prefill / decode hops {} \
         GFLOP/s |",
        r.hops.len(),
        r.decode_tokens_per_second,
        m.decode_tps,
        decode_err * 100.0,
        m.prompt_tokens,
        rp.time_to_first_token_s,
        m.prefill_s,
        prefill_err * 100.0,
        speeds.join(", ")
    );
    Compared {
        decode_err,
        prefill_err,
        line,
    }
}
