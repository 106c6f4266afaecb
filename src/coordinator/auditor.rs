//! Audits by recomputation, part two: the auditor thread. It follows every audited *stream*
//! (one session's rows through one hop of one route: session, epoch, shards first..=last)
//! from position 0, keeping the hop's inputs and the node's outputs as they are relayed, and
//! when the core closes a window it recomputes every row since the last window in one CPU
//! prefill over the hop's shards (its own executors, loaded from the model directory the
//! coordinator serves, lazily) and compares them with what the node returned (audit.rs).
//!
//! Why whole streams: the K/V a hop attends to at position p depends on every earlier row,
//! so the only way to recompute row p is to have computed rows 0..p; windows keep that cheap
//! (a prefill per window, not a decode step per row) and cover every row, so a lie cannot
//! hide between two audits.
//!
//! The thread runs at the lowest CPU priority (SCHED_IDLE, its own rayon pool's threads too),
//! so on a machine shared with nodes it uses the time they leave idle; `--audit-cpus` keeps it
//! on given CPUs, a thread each. It never blocks the core:
//! jobs come through a channel, verdicts go back through a callback.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use splitter::Manifest;

use super::audit::{Mismatch, compare_hidden, compare_top};
use super::wire::WireEncoding;
use crate::engine::{Activations, LogitsMode, SessionId, ShardExecutor, StepInput, StepOutput};
use crate::protocol::{Activation, Frame, Limits, MessageType, Tokens, TopLogits};

/// One stream: a session's rows through one hop of the route of one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamKey {
    pub session: u64,
    pub epoch: u64,
    pub first: usize,
    pub last: usize,
}

/// What the node returned for a hop.
#[derive(Debug, Clone, PartialEq)]
pub enum Returned {
    /// Hidden states (the relayed frame, checked).
    Hidden(Frame),
    /// The top logits of the step's last `rows` rows.
    Top(TopLogits),
}

/// Work for the auditor.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditJob {
    /// A hop of a step: its input (a tokens or activation frame) at position `pos`, and what the
    /// node returned. A `pos` below what the stream holds cuts the stream there first (rejected
    /// drafts, a rollback, a replay from 0).
    Record {
        key: StreamKey,
        node: u64,
        pos: usize,
        input: Frame,
        output: Returned,
        encoding: WireEncoding,
    },
    /// Recompute and compare every row recorded since the last window; the verdict carries
    /// `audit`.
    Close { key: StreamKey, audit: u64 },
    /// The session ended: forget its streams.
    End { session: u64 },
}

/// How an audit window ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// Every row up to `end` matched.
    Passed,
    /// The row at position `pos` did not.
    Failed { pos: usize, mismatch: Mismatch },
    /// The auditor could not recompute (it says why); nothing is known of these rows.
    Skipped(String),
}

/// The auditor's answer to a [`AuditJob::Close`].
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub audit: u64,
    pub key: StreamKey,
    pub node: u64,
    /// Rows of the stream audited so far (the window's end).
    pub end: usize,
    pub finding: Finding,
}

/// Where verdicts go (the coordinator hands them to its core).
pub type VerdictSink = Box<dyn Fn(Verdict) + Send>;

/// Handle to the auditor thread; dropping it stops the thread once its queue is done.
#[derive(Clone)]
pub struct Auditor {
    tx: crossbeam_channel::Sender<AuditJob>,
}

impl Auditor {
    /// Starts the thread for the model in `dir`.
    pub fn start(
        dir: PathBuf,
        manifest: Arc<Manifest>,
        cpus: Vec<usize>,
        sink: VerdictSink,
    ) -> Auditor {
        let (tx, rx) = crossbeam_channel::unbounded::<AuditJob>();
        std::thread::Builder::new()
            .name("synapse-auditor".into())
            .spawn(move || {
                lower_priority();
                pin(&cpus);
                let threads = cpus.clone();
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(cpus.len())
                    .thread_name(|i| format!("synapse-audit-{i}"))
                    .start_handler(move |i| {
                        lower_priority();
                        if let Some(&c) = threads.get(i) {
                            pin(&[c]);
                        }
                    })
                    .build()
                    .ok();
                let mut state = State::new(dir, manifest);
                for job in rx {
                    let verdict = match &pool {
                        Some(p) => p.install(|| state.run(job)),
                        None => state.run(job),
                    };
                    if let Some(v) = verdict {
                        sink(v);
                    }
                }
            })
            .expect("spawning the auditor thread");
        Auditor { tx }
    }

    /// Queues a job (dropped when the thread has stopped).
    pub fn send(&self, job: AuditJob) {
        let _ = self.tx.send(job);
    }
}

/// The calling thread on `cpus` (none: anywhere); a refusal is logged and changes nothing.
fn pin(cpus: &[usize]) {
    if let Err(e) = crate::cpus::pin_current(cpus) {
        tracing::warn!("the auditor could not be pinned to CPUs {cpus:?}: {e}");
    }
}

/// The calling thread at the lowest CPU priority: Linux's SCHED_IDLE (it runs only when no
/// other thread wants the CPU), or nice 19 where that is refused.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: the param pointer is to a local that outlives the call; gettid and setpriority
    // take no pointers; a failure only leaves the priority as it was.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
        }
    }
}

/// A recorded row range: one hop of one step.
struct Rec {
    pos: usize,
    input: Input,
    output: Output,
}

enum Input {
    Tokens(Vec<u32>),
    Hidden(Activations),
}

impl Input {
    fn len(&self) -> usize {
        match self {
            Input::Tokens(t) => t.len(),
            Input::Hidden(h) => h.rows,
        }
    }
}

enum Output {
    Hidden(Vec<f32>),
    Top(TopLogits),
}

struct Stream {
    node: u64,
    /// The engine session holding this stream's caches on the auditor's executors.
    sid: SessionId,
    /// Rows in the auditor's caches (audited).
    end: usize,
    /// Rows recorded after `end`, in order.
    pending: Vec<Rec>,
    encoding: WireEncoding,
    /// Why this stream can no longer be audited (until it restarts at position 0).
    broken: Option<String>,
}

impl Stream {
    fn recorded(&self) -> usize {
        self.pending
            .last()
            .map_or(self.end, |r| r.pos + r.input.len())
    }
}

struct State {
    dir: PathBuf,
    manifest: Arc<Manifest>,
    shards: BTreeMap<usize, Box<dyn ShardExecutor>>,
    streams: HashMap<StreamKey, Stream>,
    next_sid: SessionId,
}

impl State {
    fn new(dir: PathBuf, manifest: Arc<Manifest>) -> State {
        State {
            dir,
            manifest,
            shards: BTreeMap::new(),
            streams: HashMap::new(),
            next_sid: 1,
        }
    }

    fn run(&mut self, job: AuditJob) -> Option<Verdict> {
        match job {
            AuditJob::Record {
                key,
                node,
                pos,
                input,
                output,
                encoding,
            } => {
                self.record(key, node, pos, &input, output, encoding);
                None
            }
            AuditJob::Close { key, audit } => Some(self.close(key, audit)),
            AuditJob::End { session } => {
                let gone: Vec<StreamKey> = self
                    .streams
                    .keys()
                    .filter(|k| k.session == session)
                    .copied()
                    .collect();
                for k in gone {
                    self.drop_stream(k);
                }
                // Shards no stream uses any more are unloaded: the coordinator holds weights
                // only while it audits.
                let used: Vec<usize> = self.streams.keys().flat_map(|k| k.first..=k.last).collect();
                self.shards.retain(|i, _| used.contains(i));
                None
            }
        }
    }

    fn drop_stream(&mut self, key: StreamKey) {
        if let Some(s) = self.streams.remove(&key) {
            for ex in self.shards.values_mut() {
                if ex.session_len(s.sid).is_some() {
                    let _ = ex.close_session(s.sid);
                }
            }
        }
    }

    fn record(
        &mut self,
        key: StreamKey,
        node: u64,
        pos: usize,
        input: &Frame,
        output: Returned,
        encoding: WireEncoding,
    ) {
        if pos == 0 {
            // A new stream, or a replay from the start: begin again.
            self.drop_stream(key);
        }
        if !self.streams.contains_key(&key) {
            self.streams.insert(
                key,
                Stream {
                    node,
                    sid: self.next_sid,
                    end: 0,
                    pending: Vec::new(),
                    encoding,
                    broken: None,
                },
            );
            self.next_sid += 1;
        }
        let s = self.streams.get_mut(&key).expect("inserted above");
        s.node = node;
        if s.broken.is_some() {
            return;
        }
        let recorded = s.recorded();
        if pos > recorded {
            s.broken = Some(format!(
                "rows {recorded}..{pos} of the stream were never recorded"
            ));
            return;
        }
        if pos < recorded {
            // Cut back: rows at `pos` and after are gone from the session (rejected drafts,
            // a rollback); what came before is still to be audited.
            s.pending.retain(|r| r.pos < pos);
            if let Some(r) = s.pending.last_mut()
                && r.pos + r.input.len() > pos
            {
                // A step cut part-way: keep its first rows. Its outputs past the cut were
                // never used (nothing after `pos` is kept), so they are not audited.
                let keep = pos - r.pos;
                truncate_rec(r, keep);
            }
            if pos < s.end {
                let sid = s.sid;
                s.end = pos;
                for ex in self.shards.values_mut() {
                    if ex.session_len(sid).is_some_and(|l| l > pos) {
                        let _ = ex.truncate_session(sid, pos);
                    }
                }
            }
        }
        let limits = Limits::default();
        let input = match input.msg_type {
            MessageType::Tokens => Tokens::from_frame(input, &limits)
                .map(|t| Input::Tokens(t.ids))
                .map_err(|e| e.to_string()),
            _ => Activation::from_frame(input, &limits)
                .map_err(|e| e.to_string())
                .and_then(|a| {
                    Activations::new(a.rows as usize, a.cols as usize, a.data)
                        .map(Input::Hidden)
                        .map_err(|e| e.to_string())
                }),
        };
        let output = match output {
            Returned::Hidden(f) => Activation::from_frame(&f, &limits)
                .map(|a| Output::Hidden(a.data))
                .map_err(|e| e.to_string()),
            Returned::Top(t) => Ok(Output::Top(t)),
        };
        match (input, output) {
            (Ok(input), Ok(output)) => s.pending.push(Rec { pos, input, output }),
            (Err(e), _) | (_, Err(e)) => s.broken = Some(format!("a recorded frame: {e}")),
        }
    }

    fn close(&mut self, key: StreamKey, audit: u64) -> Verdict {
        let (node, end, broken) = match self.streams.get(&key) {
            Some(s) => (s.node, s.recorded(), s.broken.clone()),
            None => (0, 0, Some("the stream was never recorded".into())),
        };
        let finding = match broken {
            Some(why) => Finding::Skipped(why),
            None => self.audit_window(key).unwrap_or_else(|why| {
                if let Some(s) = self.streams.get_mut(&key) {
                    s.broken = Some(why.clone());
                }
                Finding::Skipped(why)
            }),
        };
        Verdict {
            audit,
            key,
            node,
            end,
            finding,
        }
    }

    /// Recomputes the stream's pending rows in one step through its shards and compares.
    fn audit_window(&mut self, key: StreamKey) -> Result<Finding, String> {
        for i in key.first..=key.last {
            if !self.shards.contains_key(&i) {
                let ex = crate::engine::cpu::CpuShard::load(&self.dir, &self.manifest, i)
                    .map_err(|e| format!("loading shard {i} to audit it: {e}"))?;
                self.shards.insert(i, Box::new(ex));
            }
        }
        let s = self.streams.get_mut(&key).expect("checked by the caller");
        if s.pending.is_empty() {
            return Ok(Finding::Passed);
        }
        let start = s.end;
        let recs = std::mem::take(&mut s.pending);
        let rows: usize = recs.iter().map(|r| r.input.len()).sum();
        let input = match &recs[0].input {
            Input::Tokens(_) => Input::Tokens(
                recs.iter()
                    .flat_map(|r| match &r.input {
                        Input::Tokens(t) => t.clone(),
                        Input::Hidden(_) => Vec::new(),
                    })
                    .collect(),
            ),
            Input::Hidden(h) => {
                let cols = h.cols;
                let mut data = Vec::with_capacity(rows * cols);
                for r in &recs {
                    match &r.input {
                        Input::Hidden(h) if h.cols == cols => data.extend_from_slice(&h.data),
                        _ => return Err("a stream's inputs changed kind or width".into()),
                    }
                }
                Input::Hidden(Activations::new(rows, cols, data).map_err(|e| e.to_string())?)
            }
        };
        if input.len() != rows {
            return Err("a stream's inputs changed kind".into());
        }
        let (sid, encoding) = (s.sid, s.encoding);
        let mut hidden: Option<Activations> = None;
        let mut logits: Option<Activations> = None;
        for i in key.first..=key.last {
            let ex = self.shards.get_mut(&i).expect("loaded above");
            match ex.session_len(sid) {
                None if start == 0 => ex.open_session(sid).map_err(|e| e.to_string())?,
                None => return Err(format!("shard {i} lost the stream's caches")),
                Some(_) => {}
            }
            let step_input = match (&hidden, &input) {
                (Some(h), _) => StepInput::Hidden(h),
                (None, Input::Tokens(t)) => StepInput::Tokens(t),
                (None, Input::Hidden(h)) => StepInput::Hidden(h),
            };
            match ex
                .step(sid, start, step_input, LogitsMode::All)
                .map_err(|e| format!("recomputing shard {i}: {e}"))?
            {
                StepOutput::Hidden(h) => hidden = Some(h),
                StepOutput::Logits(l) => logits = Some(l),
            }
        }
        let s = self.streams.get_mut(&key).expect("present");
        s.end = start + rows;
        // Compare each recorded step with its rows of our output.
        let mut offset = 0;
        for r in &recs {
            let n = r.input.len();
            let at = |row: usize| r.pos + row;
            match (&r.output, &hidden, &logits) {
                (Output::Hidden(theirs), Some(h), None) => {
                    let cols = h.cols;
                    let ours = &h.data[offset * cols..(offset + n) * cols];
                    if let Err(m) = compare_hidden(theirs, ours, cols, encoding) {
                        let row = match &m {
                            Mismatch::Hidden { row, .. } => *row,
                            _ => 0,
                        };
                        return Ok(Finding::Failed {
                            pos: at(row),
                            mismatch: m,
                        });
                    }
                }
                (Output::Top(top), _, Some(l)) => {
                    let vocab = l.cols;
                    let rows = top.rows.min(n);
                    let from = offset + n - rows;
                    let ours = &l.data[from * vocab..(offset + n) * vocab];
                    if let Err(m) = compare_top(top, ours, vocab) {
                        let row = match &m {
                            Mismatch::Id { row, .. }
                            | Mismatch::Logit { row, .. }
                            | Mismatch::Omitted { row, .. } => *row,
                            _ => 0,
                        };
                        return Ok(Finding::Failed {
                            pos: at(n - rows + row),
                            mismatch: m,
                        });
                    }
                }
                _ => return Err("the node's output kind does not match the hop's shards".into()),
            }
            offset += n;
        }
        Ok(Finding::Passed)
    }
}

/// Keeps the first `keep` rows of a recorded step, and its outputs for those rows (top
/// logits cover the step's last rows, so only those before the cut stay).
fn truncate_rec(r: &mut Rec, keep: usize) {
    let n = r.input.len();
    match &mut r.input {
        Input::Tokens(t) => t.truncate(keep),
        Input::Hidden(h) => {
            h.data.truncate(keep * h.cols);
            h.rows = keep;
        }
    }
    match &mut r.output {
        Output::Hidden(d) => {
            let cols = d.len().checked_div(n).unwrap_or(0);
            d.truncate(keep * cols);
        }
        Output::Top(t) => {
            let per_row = t.entries.len().checked_div(t.rows).unwrap_or(0);
            let first = n.saturating_sub(t.rows);
            let left = keep.saturating_sub(first).min(t.rows);
            t.entries.truncate(left * per_row);
            t.rows = left;
        }
    }
}
