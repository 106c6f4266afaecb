//! The node's compute thread: it owns the loaded shard executors and runs jobs one at a time,
//! so neither the network loop nor the coordinator ever waits on a blocking computation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use splitter::Manifest;
use tokio::sync::oneshot;

use crate::coordinator::wire::{StepOutputKind, WireEncoding};
use crate::engine::{Activations, LogitsMode, SessionId, ShardExecutor, StepInput, StepOutput};
use crate::protocol::{self, Activation, Frame, TopLogit, TopLogits};

/// Loads shard `index` of a model directory into an executor (the CPU or GPU engine).
pub type ShardLoader = Arc<
    dyn Fn(&std::path::Path, &Manifest, usize) -> anyhow::Result<Box<dyn ShardExecutor>>
        + Send
        + Sync,
>;

/// What a step consumes on this node.
#[derive(Debug)]
pub enum StepData {
    Tokens(Vec<u32>),
    Hidden(Activations),
}

/// A step request from the coordinator.
#[derive(Debug)]
pub struct StepJob {
    pub step: u32,
    pub session: SessionId,
    pub pos: usize,
    pub first: usize,
    pub last: usize,
    pub output: StepOutputKind,
    pub input: StepData,
}

/// Work for the compute thread.
pub enum Job {
    Load {
        shard: usize,
        dir: PathBuf,
        manifest: Arc<Manifest>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Unload {
        shard: usize,
    },
    Step {
        job: StepJob,
        reply: oneshot::Sender<Result<Frame, String>>,
    },
    Close {
        session: SessionId,
    },
    /// Keep the first `len` tokens of `session`'s caches on every shard that holds them.
    Truncate {
        session: SessionId,
        len: usize,
    },
    /// Drop every shard (the coordinator connection was lost).
    Reset,
    /// Measure this machine's speed again (GFLOP/s), on the compute thread so that it does
    /// not compete with a step.
    Measure {
        reply: oneshot::Sender<f64>,
    },
}

/// Counters a node keeps about itself (read by tests and status displays).
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Shards loaded now.
    pub shards: AtomicUsize,
    /// Session caches open now, summed over shards.
    pub open_sessions: AtomicUsize,
    /// Steps run.
    pub steps: AtomicUsize,
    /// Bytes of weights of the loaded shards, as the engines hold them.
    pub weights_bytes: AtomicU64,
    /// Bytes of KV cache of the open sessions.
    pub kv_bytes: AtomicU64,
}

/// Handle to the compute thread; dropping every handle stops it.
#[derive(Clone)]
pub struct Worker {
    tx: crossbeam_channel::Sender<Job>,
}

impl Worker {
    /// Starts the compute thread with `loader` as its engine, keeping `stats` up to date.
    pub fn start(loader: ShardLoader, stats: Arc<NodeStats>) -> Worker {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        std::thread::Builder::new()
            .name("synapse-node-compute".into())
            .spawn(move || {
                let mut shards: BTreeMap<usize, Box<dyn ShardExecutor>> = BTreeMap::new();
                let mut sessions: BTreeMap<usize, BTreeSet<SessionId>> = BTreeMap::new();
                for job in rx {
                    if let Job::Step { job: j, .. } = &job {
                        for i in j.first..=j.last {
                            sessions.entry(i).or_default().insert(j.session);
                        }
                        stats.steps.fetch_add(1, Ordering::Relaxed);
                    }
                    run_job(&loader, &mut shards, job);
                    // Recount from the executors: the truth about what is held.
                    let open: usize = shards
                        .iter()
                        .map(|(i, ex)| {
                            sessions.get(i).map_or(0, |s| {
                                s.iter().filter(|id| ex.session_len(**id).is_some()).count()
                            })
                        })
                        .sum();
                    for (i, s) in sessions.iter_mut() {
                        if let Some(ex) = shards.get(i) {
                            s.retain(|id| ex.session_len(*id).is_some());
                        } else {
                            s.clear();
                        }
                    }
                    stats.open_sessions.store(open, Ordering::Relaxed);
                    stats.shards.store(shards.len(), Ordering::Relaxed);
                    let held = shards.values().map(|ex| ex.memory()).fold(
                        crate::engine::MemoryUse::default(),
                        |a, m| crate::engine::MemoryUse {
                            weights: a.weights + m.weights,
                            kv: a.kv + m.kv,
                        },
                    );
                    stats.weights_bytes.store(held.weights, Ordering::Relaxed);
                    stats.kv_bytes.store(held.kv, Ordering::Relaxed);
                }
            })
            .expect("spawning the compute thread");
        Worker { tx }
    }

    /// Queues a job; false when the thread has stopped.
    pub fn send(&self, job: Job) -> bool {
        self.tx.send(job).is_ok()
    }
}

fn run_job(loader: &ShardLoader, shards: &mut BTreeMap<usize, Box<dyn ShardExecutor>>, job: Job) {
    match job {
        Job::Load {
            shard,
            dir,
            manifest,
            reply,
        } => {
            let r = loader(&dir, &manifest, shard).map_err(|e| format!("{e:#}"));
            let _ = reply.send(r.map(|ex| {
                shards.insert(shard, ex);
            }));
        }
        Job::Unload { shard } => {
            shards.remove(&shard);
        }
        Job::Close { session } => {
            for ex in shards.values_mut() {
                let _ = ex.close_session(session);
            }
        }
        Job::Truncate { session, len } => {
            // A shard that cannot (the session is unknown there, or shorter) is left alone:
            // the session's next step there fails with the position it expected, which the
            // coordinator handles as any failed step (a replay).
            for ex in shards.values_mut() {
                if ex.session_len(session).is_some() {
                    let _ = ex.truncate_session(session, len);
                }
            }
        }
        Job::Reset => shards.clear(),
        Job::Measure { reply } => {
            let _ = reply.send(crate::node::measure_cpu_gflops());
        }
        Job::Step { job, reply } => {
            let _ = reply.send(run_step(shards, job));
        }
    }
}

fn run_step(
    shards: &mut BTreeMap<usize, Box<dyn ShardExecutor>>,
    job: StepJob,
) -> Result<Frame, String> {
    if job.first > job.last {
        return Err(format!(
            "step {}: empty shard range {}..={}",
            job.step, job.first, job.last
        ));
    }
    let seq = protocol::seq_pos_for((job.pos + input_len(&job.input)) as u64);
    let mut hidden: Option<Activations> = None;
    for index in job.first..=job.last {
        let ex = shards
            .get_mut(&index)
            .ok_or_else(|| format!("shard {index} is not loaded on this node"))?;
        match ex.session_len(job.session) {
            None if job.pos == 0 => ex.open_session(job.session).map_err(|e| e.to_string())?,
            None => {
                return Err(format!(
                    "session {} is unknown to shard {index} at position {}",
                    job.session, job.pos
                ));
            }
            Some(_) => {}
        }
        let input = match (&hidden, &job.input) {
            (Some(h), _) => StepInput::Hidden(h),
            (None, StepData::Tokens(t)) => StepInput::Tokens(t),
            (None, StepData::Hidden(h)) => StepInput::Hidden(h),
        };
        let err = |e: crate::engine::EngineError| format!("shard {index}: {e}");
        if index < job.last {
            match ex
                .step(job.session, job.pos, input, LogitsMode::Last)
                .map_err(err)?
            {
                StepOutput::Hidden(h) => hidden = Some(h),
                StepOutput::Logits(_) => {
                    return Err(format!(
                        "shard {index} returned logits before the end of the range"
                    ));
                }
            }
            continue;
        }
        // The last shard of the range produces what goes on the wire.
        return match job.output {
            StepOutputKind::TopK { k, rows } => {
                let top = ex
                    .step_top_k_rows(job.session, job.pos, input, k, rows)
                    .map_err(err)?;
                let entries = top
                    .into_iter()
                    .flatten()
                    .map(|(id, logit)| TopLogit { id, logit })
                    .collect();
                TopLogits { entries, rows }
                    .to_frame(seq, job.step)
                    .map_err(|e| e.to_string())
            }
            StepOutputKind::Hidden {
                encoding: WireEncoding::Int8,
            } => {
                // The engine quantized per SYN1 (on the GPU for the WGSL engine): send as is.
                let q = ex.step_int8(job.session, job.pos, input).map_err(err)?;
                protocol::int8_frame(seq, job.step, q.rows as u32, q.cols as u32, q.q, q.scales)
                    .map_err(|e| e.to_string())
            }
            StepOutputKind::Hidden {
                encoding: enc @ (WireEncoding::F32 | WireEncoding::Rice),
            } => match ex
                .step(job.session, job.pos, input, LogitsMode::Last)
                .map_err(err)?
            {
                StepOutput::Hidden(h) => {
                    let act = Activation::new(h.rows as u32, h.cols as u32, h.data)
                        .map_err(|e| e.to_string())?;
                    act.to_frame(seq, job.step, enc.protocol(), false)
                        .map_err(|e| e.to_string())
                }
                StepOutput::Logits(_) => Err(format!(
                    "shard {index} holds the head; the step asked for hidden states"
                )),
            },
        };
    }
    unreachable!("the range is not empty")
}

fn input_len(d: &StepData) -> usize {
    match d {
        StepData::Tokens(t) => t.len(),
        StepData::Hidden(h) => h.rows,
    }
}
