//! Putting a simulation together: the coordinator's placement of the shards on the devices,
//! the route it implies, each hop's time for a decode step and for the prefill, memory per
//! device, and the devices that get nothing or slow the pipeline down, each with its reason.

use serde::Serialize;

use super::SimError;
use super::model::{ModelShape, ShardShape};
use super::profile::DeviceProfile;
use super::timing::{self, COORDINATOR_STEP_MS, HopTime};
use crate::coordinator::placement::{self, NodeCapacity};
use crate::coordinator::wire::WireEncoding;

/// One device in a simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimDevice {
    /// Node id: a real node's own; virtual devices get ids after every real one, as devices
    /// joining later would.
    pub id: u64,
    pub name: String,
    pub profile: DeviceProfile,
    /// A connected node (true) or a virtual one from a profile.
    pub real: bool,
}

/// First id given to virtual devices.
pub const VIRTUAL_ID_BASE: u64 = 1 << 40;

/// What to simulate beyond the devices and the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimOptions {
    /// Prompt length for the time to first token.
    pub prompt_tokens: usize,
    /// Tokens generated; decode speed is taken halfway through them.
    pub gen_tokens: usize,
    /// Hidden-state encoding between nodes (the coordinator's default is RICE).
    pub encoding: WireEncoding,
    /// Candidates the last shard returns (`CoordinatorConfig::top_k`).
    pub top_k: usize,
    /// Generations running at once (a classroom: one per student). Nodes run steps one at a
    /// time in arrival order, so sessions overlap in the pipeline: while one is on device 2,
    /// another is on device 1.
    pub sessions: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            prompt_tokens: 128,
            gen_tokens: 128,
            encoding: WireEncoding::Rice,
            top_k: 64,
            sessions: 1,
        }
    }
}

/// The placement the coordinator picks for these devices when they are all connected and no
/// shard is placed yet: `coordinator::placement::place` itself, fed what each node's `hello`
/// would say (memory and measured speed). The simulator's only call into placement.
pub fn coordinator_placement(shard_bytes: &[u64], devices: &[SimDevice]) -> Vec<Option<u64>> {
    let caps: Vec<NodeCapacity> = devices
        .iter()
        .map(|d| NodeCapacity {
            id: d.id,
            memory_bytes: d.profile.memory_bytes,
            gflops: d.profile.hello_gflops(),
        })
        .collect();
    placement::place(shard_bytes, &vec![None; shard_bytes.len()], &caps)
}

/// Bytes of weights placement lets a device hold.
fn usable(d: &SimDevice) -> u64 {
    placement::usable(&NodeCapacity {
        id: d.id,
        memory_bytes: d.profile.memory_bytes,
        gflops: d.profile.hello_gflops(),
    })
}

/// One device's part.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceReport {
    pub id: u64,
    pub name: String,
    pub profile: String,
    pub real: bool,
    pub shards: Vec<usize>,
    /// First and last layer it runs.
    pub layers: Option<[usize; 2]>,
    /// Weights it holds.
    pub weight_bytes: u64,
    /// Its key/value cache at the end of the generation (one session).
    pub kv_bytes: u64,
    /// What it lends.
    pub memory_bytes: u64,
    /// Compute per decode token and for the prefill, milliseconds (0 when it holds nothing).
    pub decode_compute_ms: f64,
    pub prefill_compute_ms: f64,
}

/// One hop of the route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HopReport {
    pub device: u64,
    pub name: String,
    pub first_shard: usize,
    pub last_shard: usize,
    pub decode: HopTime,
    pub prefill: HopTime,
}

/// A device that got nothing, or one the pipeline would be faster without.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Left {
    pub device: u64,
    pub name: String,
    pub reason: String,
}

/// Where a decode token's time goes, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Breakdown {
    pub compute_ms: f64,
    pub network_ms: f64,
    pub coordinator_ms: f64,
}

/// Everything a simulation predicts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub model: String,
    pub weights: String,
    pub options: SimOptions,
    pub shards: Vec<ShardShape>,
    /// Per shard, the device the coordinator puts it on.
    pub placement: Vec<Option<u64>>,
    /// Every shard has a device.
    pub complete: bool,
    pub devices: Vec<DeviceReport>,
    pub hops: Vec<HopReport>,
    /// Decode, halfway through the generation (0 when incomplete).
    pub decode_tokens_per_second: f64,
    pub decode_ms_per_token: f64,
    pub decode: Breakdown,
    /// Tokens per second summed over `options.sessions` generations running at once: each
    /// alone would decode at `decode_tokens_per_second`, but no device can run more than one
    /// step at a time, so the busiest device (or the coordinator's relaying) caps the total.
    pub aggregate_tokens_per_second: f64,
    /// The prompt's step (the first token comes out of it), seconds.
    pub time_to_first_token_s: f64,
    pub prefill: Breakdown,
    /// Devices holding no shard, with why.
    pub unused: Vec<Left>,
    /// Devices holding shards that the pipeline would be faster without.
    pub slowing: Vec<Left>,
    /// Shards no device can hold, with why.
    pub problems: Vec<String>,
}

/// Simulates `shards` of `model` on `devices`, placed as the coordinator would place them.
pub fn simulate(
    model: &ModelShape,
    shards: &[ShardShape],
    devices: &[SimDevice],
    opts: &SimOptions,
) -> Result<Report, SimError> {
    let mut report = simulate_once(model, shards, devices, opts)?;
    if report.complete {
        report.slowing = slowing(model, shards, devices, opts, &report);
    }
    Ok(report)
}

/// Simulates a given placement (per shard, a device id or `None`), e.g. what a running
/// coordinator reports in `/api/status`. Ids must name given devices.
pub fn simulate_with(
    model: &ModelShape,
    shards: &[ShardShape],
    devices: &[SimDevice],
    opts: &SimOptions,
    placement: Vec<Option<u64>>,
) -> Result<Report, SimError> {
    check(shards, devices, opts)?;
    if placement.len() != shards.len() {
        return Err(SimError::Invalid(format!(
            "a placement of {} shards for a model of {}",
            placement.len(),
            shards.len()
        )));
    }
    if let Some(bad) = placement
        .iter()
        .flatten()
        .find(|id| !devices.iter().any(|d| d.id == **id))
    {
        return Err(SimError::Invalid(format!(
            "the placement names node {bad}, which is not given"
        )));
    }
    predict(model, shards, devices, opts, placement)
}

fn check(shards: &[ShardShape], devices: &[SimDevice], opts: &SimOptions) -> Result<(), SimError> {
    if shards.is_empty() {
        return Err(SimError::Invalid("the model has no shards".into()));
    }
    if opts.prompt_tokens == 0 || opts.gen_tokens == 0 || opts.sessions == 0 {
        return Err(SimError::Invalid(
            "the prompt and the generation need at least one token each, and at least one \
             session runs"
                .into(),
        ));
    }
    for d in devices {
        d.profile.validate()?;
    }
    let mut ids: Vec<u64> = devices.iter().map(|d| d.id).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(SimError::Invalid("two devices share a node id".into()));
    }
    Ok(())
}

fn simulate_once(
    model: &ModelShape,
    shards: &[ShardShape],
    devices: &[SimDevice],
    opts: &SimOptions,
) -> Result<Report, SimError> {
    check(shards, devices, opts)?;
    let bytes: Vec<u64> = shards.iter().map(|s| s.bytes).collect();
    let placed = coordinator_placement(&bytes, devices);
    predict(model, shards, devices, opts, placed)
}

fn predict(
    model: &ModelShape,
    shards: &[ShardShape],
    devices: &[SimDevice],
    opts: &SimOptions,
    placed: Vec<Option<u64>>,
) -> Result<Report, SimError> {
    let bytes: Vec<u64> = shards.iter().map(|s| s.bytes).collect();
    let complete = placed.iter().all(Option::is_some);
    let ctx = opts.prompt_tokens + opts.gen_tokens;
    let device = |id: u64| devices.iter().find(|d| d.id == id);

    // The route: consecutive shards of one device are one hop (`State::route`).
    let mut runs: Vec<(u64, usize, usize)> = Vec::new();
    for (i, p) in placed.iter().enumerate() {
        let Some(id) = *p else { continue };
        match runs.last_mut() {
            Some((d, _, last)) if *d == id && *last + 1 == i => *last = i,
            _ => runs.push((id, i, i)),
        }
    }
    let mut hops = Vec::new();
    let decode_pos = opts.prompt_tokens + opts.gen_tokens / 2;
    if complete {
        let n = runs.len();
        for (h, &(id, a, b)) in runs.iter().enumerate() {
            let d = device(id).expect("placement names only given devices");
            let held: Vec<&ShardShape> = shards[a..=b].iter().collect();
            let step = |t, pos| {
                timing::hop(
                    model,
                    &held,
                    &d.profile,
                    t,
                    pos,
                    h == 0,
                    h + 1 == n,
                    opts.encoding,
                    opts.top_k,
                )
            };
            hops.push(HopReport {
                device: id,
                name: d.name.clone(),
                first_shard: a,
                last_shard: b,
                decode: step(1, decode_pos),
                prefill: step(opts.prompt_tokens, 0),
            });
        }
    }

    let mut reports = Vec::new();
    let mut unused = Vec::new();
    let smallest = bytes.iter().copied().min().unwrap_or(0);
    for d in devices {
        let mine: Vec<usize> = (0..shards.len())
            .filter(|&i| placed[i] == Some(d.id))
            .collect();
        let weight_bytes: u64 = mine.iter().map(|&i| shards[i].bytes).sum();
        let layers = mine
            .first()
            .zip(mine.last())
            .map(|(&a, &b)| [shards[a].layers[0], shards[b].layers[1]]);
        let n_layers = layers.map_or(0, |[a, b]| b + 1 - a);
        let kv_bytes =
            (n_layers * ctx) as u64 * model.kv_bytes_per_position(d.profile.kv_bytes_per_value);
        let mine_hops = hops.iter().filter(|h| h.device == d.id);
        let (dec, pre) = mine_hops.fold((0.0, 0.0), |(a, b), h| {
            (a + h.decode.compute_s * 1e3, b + h.prefill.compute_s * 1e3)
        });
        if mine.is_empty() {
            unused.push(Left {
                device: d.id,
                name: d.name.clone(),
                reason: unused_reason(d, smallest, shards.len(), devices.len()),
            });
        }
        reports.push(DeviceReport {
            id: d.id,
            name: d.name.clone(),
            profile: d.profile.name.clone(),
            real: d.real,
            shards: mine,
            layers,
            weight_bytes,
            kv_bytes,
            memory_bytes: d.profile.memory_bytes,
            decode_compute_ms: dec,
            prefill_compute_ms: pre,
        });
    }

    let mut problems = Vec::new();
    for (i, p) in placed.iter().enumerate() {
        if p.is_none() {
            let room = devices.iter().map(usable).max().unwrap_or(0);
            problems.push(format!(
                "shard {i} ({}) has no device: it needs {}, the roomiest device can hold {} of \
                 weights{}",
                layer_text(&shards[i]),
                mb(shards[i].bytes),
                mb(room),
                if devices.is_empty() {
                    " (there are no devices)"
                } else {
                    " after what it already holds"
                }
            ));
        }
    }

    let sum = |f: &dyn Fn(&HopReport) -> HopTime| {
        hops.iter().fold(Breakdown::default(), |mut b, h| {
            let t = f(h);
            b.compute_ms += t.compute_s * 1e3;
            b.network_ms += t.network_s * 1e3;
            b
        })
    };
    let mut decode = sum(&|h| h.decode);
    let mut prefill = sum(&|h| h.prefill);
    let (mut tps, mut ms, mut ttft, mut aggregate) = (0.0, 0.0, 0.0, 0.0);
    if complete {
        decode.coordinator_ms = COORDINATOR_STEP_MS;
        prefill.coordinator_ms = COORDINATOR_STEP_MS;
        ms = decode.compute_ms + decode.network_ms + decode.coordinator_ms;
        tps = 1e3 / ms;
        ttft = (prefill.compute_ms + prefill.network_ms + prefill.coordinator_ms) / 1e3;
        let busiest = devices
            .iter()
            .map(|d| {
                hops.iter()
                    .filter(|h| h.device == d.id)
                    .map(|h| h.decode.compute_s)
                    .sum::<f64>()
            })
            .fold(0.0, f64::max);
        let relay_s = (COORDINATOR_STEP_MS + hops.len() as f64 * timing::COORDINATOR_HOP_MS) / 1e3;
        aggregate = (opts.sessions as f64 * tps)
            .min(1.0 / busiest.max(1e-9))
            .min(1.0 / relay_s);
    }
    Ok(Report {
        model: model.name.clone(),
        weights: model.weights.name().into(),
        options: opts.clone(),
        shards: shards.to_vec(),
        placement: placed,
        complete,
        devices: reports,
        hops,
        decode_tokens_per_second: tps,
        decode_ms_per_token: ms,
        decode,
        aggregate_tokens_per_second: aggregate,
        time_to_first_token_s: ttft,
        prefill,
        unused,
        slowing: Vec::new(),
        problems,
    })
}

fn unused_reason(d: &SimDevice, smallest: u64, n_shards: usize, n_devices: usize) -> String {
    let room = usable(d);
    if room < smallest {
        format!(
            "cannot hold any shard: it lends {} ({} for weights after the {:.0}% kept for \
             caches), the smallest shard is {}",
            mb(d.profile.memory_bytes),
            mb(room),
            placement::MEMORY_HEADROOM * 100.0,
            mb(smallest)
        )
    } else if n_shards < n_devices {
        format!(
            "no shard left for it: the model has {n_shards} shards for {n_devices} devices, and \
             the coordinator gives them to the fastest split (re-split with more shards to use \
             more devices)"
        )
    } else {
        "no shard: the coordinator's placement found no faster split that uses it (it is \
         slower than the devices that share the model)"
            .into()
    }
}

/// Devices holding shards that the pipeline would decode at least 5% faster without (their
/// hop costs more than their compute saves).
fn slowing(
    model: &ModelShape,
    shards: &[ShardShape],
    devices: &[SimDevice],
    opts: &SimOptions,
    report: &Report,
) -> Vec<Left> {
    let mut out = Vec::new();
    for h in &report.hops {
        let rest: Vec<SimDevice> = devices
            .iter()
            .filter(|d| d.id != h.device)
            .cloned()
            .collect();
        let Ok(without) = simulate_once(model, shards, &rest, opts) else {
            continue;
        };
        let score = |r: &Report| {
            if opts.sessions > 1 {
                r.aggregate_tokens_per_second
            } else {
                r.decode_tokens_per_second
            }
        };
        if without.complete && score(&without) > score(report) * 1.05 {
            out.push(Left {
                device: h.device,
                name: h.name.clone(),
                reason: format!(
                    "slows the pipeline: without it {} would be {:.2} tok/s instead of {:.2} \
                     (its hop costs {:.1} ms of network and {:.1} ms of compute a token)",
                    if opts.sessions > 1 {
                        "the total"
                    } else {
                        "decode"
                    },
                    score(&without),
                    score(report),
                    h.decode.network_s * 1e3,
                    h.decode.compute_s * 1e3
                ),
            });
        }
    }
    out
}

/// The shard count (1 to the number of layers) whose split, placed by the coordinator on
/// `devices`, decodes fastest (one session), or gives the most tokens per second in all (several
/// sessions); ties (within 1%) go to fewer shards. `None` when no split fits.
pub fn best_split(
    model: &ModelShape,
    devices: &[SimDevice],
    opts: &SimOptions,
) -> Result<Option<(usize, Report)>, SimError> {
    let mut best: Option<(usize, Report)> = None;
    for n in 1..=model.config.n_layers {
        let shards = model.plan(n)?;
        let r = simulate_once(model, &shards, devices, opts)?;
        if !r.complete {
            continue;
        }
        let score = |r: &Report| {
            if opts.sessions > 1 {
                r.aggregate_tokens_per_second
            } else {
                r.decode_tokens_per_second
            }
        };
        let better = best
            .as_ref()
            .is_none_or(|(_, b)| score(&r) > score(b) * 1.01);
        if better {
            best = Some((n, r));
        }
    }
    match best {
        Some((n, _)) => {
            let shards = model.plan(n)?;
            Ok(Some((n, simulate(model, &shards, devices, opts)?)))
        }
        None => Ok(None),
    }
}

/// Megabytes or gigabytes, for reasons and tables.
pub fn mb(bytes: u64) -> String {
    if bytes >= 10_000_000_000 {
        format!("{:.1} GB", bytes as f64 / 1e9)
    } else if bytes >= 1_000_000_000 {
        format!("{:.2} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.0} MB", bytes as f64 / 1e6)
    }
}

fn layer_text(s: &ShardShape) -> String {
    if s.layers[0] == s.layers[1] {
        format!("layer {}", s.layers[0])
    } else {
        format!("layers {}-{}", s.layers[0], s.layers[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::model::WeightType;

    fn devices(profile: &str, n: usize) -> Vec<SimDevice> {
        let p = DeviceProfile::built_in(profile).unwrap();
        (0..n)
            .map(|i| SimDevice {
                id: VIRTUAL_ID_BASE + i as u64,
                name: format!("{profile}-{i}"),
                profile: p.clone(),
                real: false,
            })
            .collect()
    }

    #[test]
    fn placement_is_the_coordinators() {
        // Whatever the simulator reports as placement is exactly what the coordinator's
        // function returns for the same nodes.
        let m = ModelShape::preset("SmolLM2-135M", WeightType::F16).unwrap();
        let shards = m.plan(3).unwrap();
        let mut devs = devices("laptop-igpu", 2);
        devs.extend(devices("phone", 1).into_iter().map(|mut d| {
            d.id += 10;
            d
        }));
        let r = simulate(&m, &shards, &devs, &SimOptions::default()).unwrap();
        let caps: Vec<NodeCapacity> = devs
            .iter()
            .map(|d| NodeCapacity {
                id: d.id,
                memory_bytes: d.profile.memory_bytes,
                gflops: d.profile.hello_gflops(),
            })
            .collect();
        let bytes: Vec<u64> = shards.iter().map(|s| s.bytes).collect();
        assert_eq!(r.placement, placement::place(&bytes, &[None; 3], &caps));
        assert!(r.complete);
        assert!(r.decode_tokens_per_second > 0.0);
    }

    #[test]
    fn a_model_too_big_for_everyone_says_so() {
        let m = ModelShape::preset("Llama-3.1-8B", WeightType::F16).unwrap();
        let shards = m.plan(2).unwrap();
        let r = simulate(&m, &shards, &devices("phone", 3), &SimOptions::default()).unwrap();
        assert!(!r.complete);
        assert_eq!(r.decode_tokens_per_second, 0.0);
        assert!(!r.problems.is_empty());
        assert!(r.problems[0].contains("has no device"), "{:?}", r.problems);
        assert!(
            r.unused
                .iter()
                .all(|u| u.reason.contains("cannot hold any shard"))
        );
    }

    #[test]
    fn more_devices_than_shards_are_named_with_the_reason() {
        let m = ModelShape::preset("SmolLM2-135M", WeightType::F16).unwrap();
        let shards = m.plan(3).unwrap();
        let r = simulate(
            &m,
            &shards,
            &devices("chromebook", 30),
            &SimOptions::default(),
        )
        .unwrap();
        assert!(r.complete);
        let used = r.devices.iter().filter(|d| !d.shards.is_empty()).count();
        assert!(used <= 3);
        assert_eq!(r.unused.len(), 30 - used);
        assert!(
            r.unused[0].reason.contains("3 shards for 30 devices"),
            "{:?}",
            r.unused[0]
        );
    }

    #[test]
    fn a_slow_link_is_named_as_slowing_the_pipeline() {
        // Two fast desktops and a phone on a terrible link: the phone's hop costs more than its
        // share of compute saves.
        let m = ModelShape::preset("SmolLM2-135M", WeightType::F16).unwrap();
        let shards = m.plan(30).unwrap();
        // Placement gives each device (in id order) one run of shards: the laptop sits in
        // the middle, where shards are single layers, not the heavy first or last one.
        let mut devs = devices("desktop-gpu", 2);
        devs[1].id = VIRTUAL_ID_BASE + 100;
        let mut slow = devices("laptop-igpu", 1).remove(0);
        slow.id = VIRTUAL_ID_BASE + 99;
        slow.profile.rtt_ms = 300.0;
        devs.push(slow);
        let r = simulate(&m, &shards, &devs, &SimOptions::default()).unwrap();
        if r.devices
            .iter()
            .any(|d| d.id == VIRTUAL_ID_BASE + 99 && !d.shards.is_empty())
        {
            assert_eq!(r.slowing.len(), 1, "{:?}", r.slowing);
            assert!(r.slowing[0].reason.contains("slows the pipeline"));
        } else {
            panic!(
                "placement ignores links, so the laptop should hold shards: {:?}",
                r.placement
            );
        }
    }

    #[test]
    fn time_goes_where_the_hops_say() {
        let m = ModelShape::preset("Llama-3.2-1B", WeightType::Q4_0).unwrap();
        let shards = m.plan(16).unwrap();
        let r = simulate(
            &m,
            &shards,
            &devices("chromebook", 30),
            &SimOptions::default(),
        )
        .unwrap();
        assert!(r.complete);
        let hop_ms: f64 = r.hops.iter().map(|h| h.decode.total_s() * 1e3).sum();
        assert!((hop_ms + COORDINATOR_STEP_MS - r.decode_ms_per_token).abs() < 1e-6);
        // A Chromebook's hop is at least its 12 ms round trip.
        assert!(
            r.decode.network_ms >= r.hops.len() as f64 * 12.0,
            "{:?}",
            r.decode
        );
        // Every device with shards stays within what it lends.
        for d in &r.devices {
            assert!(d.weight_bytes + d.kv_bytes <= d.memory_bytes, "{d:?}");
        }
        assert!(r.time_to_first_token_s > r.decode_ms_per_token / 1e3);
    }

    #[test]
    fn the_best_split_is_at_least_as_fast_as_any() {
        let m = ModelShape::preset("Llama-3.2-1B", WeightType::Q4_0).unwrap();
        let devs = devices("laptop-igpu", 3);
        let (n, best) = best_split(&m, &devs, &SimOptions::default())
            .unwrap()
            .unwrap();
        for k in [1, 2, 3, 8, 16] {
            let r = simulate(&m, &m.plan(k).unwrap(), &devs, &SimOptions::default()).unwrap();
            assert!(
                r.decode_tokens_per_second <= best.decode_tokens_per_second * 1.011,
                "{k} shards beat the best ({n})"
            );
        }
    }

    #[test]
    fn sessions_overlap_in_the_pipeline_up_to_the_busiest_device() {
        let m = ModelShape::preset("Llama-3.2-1B", WeightType::Q4KM).unwrap();
        let devs = devices("chromebook", 30);
        let one = SimOptions::default();
        let many = SimOptions {
            sessions: 30,
            ..SimOptions::default()
        };
        let (_, a) = best_split(&m, &devs, &one).unwrap().unwrap();
        let (n, b) = best_split(&m, &devs, &many).unwrap().unwrap();
        assert!((a.aggregate_tokens_per_second - a.decode_tokens_per_second).abs() < 1e-9);
        // Thirty students: the model is cut across many Chromebooks, each a pipeline stage.
        assert!(n > 4, "{n} shards");
        assert!(b.aggregate_tokens_per_second > 3.0 * a.decode_tokens_per_second);
        let busiest = b
            .devices
            .iter()
            .map(|d| d.decode_compute_ms)
            .fold(0.0, f64::max);
        assert!(b.aggregate_tokens_per_second <= 1e3 / busiest + 1e-9);
        assert!(b.aggregate_tokens_per_second <= 30.0 * b.decode_tokens_per_second + 1e-9);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let m = ModelShape::preset("SmolLM2-135M", WeightType::F16).unwrap();
        let shards = m.plan(3).unwrap();
        let mut devs = devices("phone", 2);
        devs[1].id = devs[0].id;
        assert!(simulate(&m, &shards, &devs, &SimOptions::default()).is_err());
        let opts = SimOptions {
            prompt_tokens: 0,
            ..SimOptions::default()
        };
        assert!(simulate(&m, &shards, &devices("phone", 1), &opts).is_err());
    }
}
