//! The native node: connects to a coordinator's WebSocket, says what it is (adapter, memory,
//! measured speed), downloads and loads the shards it is given, and runs steps on its compute
//! thread. It reconnects with backoff when the connection fails for any reason (the coordinator
//! went away, timed out, or sent something malformed), and stops with an error only when the
//! coordinator refuses its join token.

pub mod download;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use splitter::Manifest;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use self::worker::{Job, NodeStats, ShardLoader, StepData, StepJob, Worker};
use crate::coordinator::wire::{CONTROL_VERSION, CoordinatorMessage, NodeKind, NodeMessage};
use crate::engine::Activations;
use crate::protocol::{self, Activation, Frame, Limits, MessageType, Tokens};

/// How a node is set up.
#[derive(Clone)]
pub struct NodeConfig {
    /// The coordinator's node endpoint with the join token: `ws://HOST:PORT/ws?token=T`.
    pub url: String,
    pub name: String,
    pub kind: NodeKind,
    /// `cpu` or `gpu`, reported to the coordinator.
    pub backend: String,
    pub adapter: String,
    /// Memory offered for weights and caches.
    pub memory_bytes: u64,
    /// Where downloaded shards are kept.
    pub cache_dir: PathBuf,
    /// A directory that already holds the coordinator's model (in-process local nodes): shard
    /// files found there with the right hash are not downloaded.
    pub model_dir: Option<PathBuf>,
    pub loader: ShardLoader,
    /// Measured GFLOP/s, reported in `hello`.
    pub gflops: f64,
    /// Counters the node keeps up to date.
    pub stats: Arc<NodeStats>,
    /// Measure the CPU's speed again this often while the node is idle, and report it (a
    /// speed measured while other work shared the machine undersells it). `None`: never.
    pub remeasure: Option<Duration>,
    /// Simulated network delay each way (tests and benchmarks only: `--net-delay-ms`). Every
    /// message the node sends leaves twice this long after it was queued, in order, as if
    /// request and reply had each crossed a slower network.
    pub net_delay: Duration,
}

/// How often the node reports what it holds (when it changed).
const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// A node re-measures its speed only after this long without a step.
const IDLE_BEFORE_MEASURE: Duration = Duration::from_secs(5);

/// Why a connection ended.
enum End {
    /// The coordinator went away: reconnect.
    Lost(anyhow::Error),
    /// `shutdown` fired; the connection was closed with a close frame.
    Stopped,
}

type Shutdown = tokio::sync::watch::Receiver<bool>;

/// Runs the node until the coordinator refuses it (an error) or `shutdown` fires.
pub async fn run(cfg: NodeConfig, mut shutdown: Shutdown) -> Result<()> {
    let worker = Worker::start(cfg.loader.clone(), cfg.stats.clone());
    let mut backoff = Duration::from_millis(250);
    loop {
        let started = Instant::now();
        let result = connect_once(&cfg, &worker, &mut shutdown).await;
        worker.send(Job::Reset);
        match result {
            Ok(End::Lost(e)) => tracing::warn!(node = %cfg.name, "lost the coordinator: {e:#}"),
            Ok(End::Stopped) => return Ok(()),
            Err(e) => return Err(e),
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(250);
        }
        tracing::info!(node = %cfg.name, "reconnecting in {:?}", backoff);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// The coordinator's HTTP base (`http://HOST:PORT`) from its WebSocket URL.
pub fn http_base(ws_url: &str) -> Result<String> {
    let rest = ws_url
        .strip_prefix("ws://")
        .map(|r| ("http://", r))
        .or_else(|| ws_url.strip_prefix("wss://").map(|r| ("https://", r)))
        .ok_or_else(|| anyhow!("node URL must start with ws:// or wss://, got `{ws_url}`"))?;
    let host = rest.1.split('/').next().unwrap_or_default();
    Ok(format!("{}{host}", rest.0))
}

/// Time allowed for the TCP connection and the WebSocket upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// One connection: Ok(End) when it should be retried, Err when the node must stop (the
/// coordinator refused the join token). Anything that goes wrong on an open connection (a
/// malformed message included) drops that connection and the node reconnects.
async fn connect_once(cfg: &NodeConfig, worker: &Worker, shutdown: &mut Shutdown) -> Result<End> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    // No Nagle: a step's small frames must not wait for the previous one's acknowledgement.
    let connect = tokio_tungstenite::connect_async_with_config(cfg.url.as_str(), None, true);
    let connected = tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, connect) => r,
        _ = shutdown.changed() => return Ok(End::Stopped),
    };
    let ws = match connected {
        Err(_) => {
            return Ok(End::Lost(anyhow!(
                "connecting to {} timed out after {CONNECT_TIMEOUT:?}",
                cfg.url
            )));
        }
        Ok(Ok((ws, _))) => ws,
        Ok(Err(WsError::Http(resp))) if resp.status() == 401 || resp.status() == 403 => {
            bail!(
                "the coordinator refused this node's join token (HTTP {})",
                resp.status()
            );
        }
        Ok(Err(e)) => {
            return Ok(End::Lost(
                anyhow!(e).context(format!("connecting to {}", cfg.url)),
            ));
        }
    };
    Ok(serve_connection(cfg, worker, ws, shutdown).await)
}

/// Says hello and serves the coordinator's messages until the connection fails (`Lost` with
/// why) or `shutdown` fires (`Stopped`, after a close frame so the coordinator sees a clean
/// leave).
async fn serve_connection(
    cfg: &NodeConfig,
    worker: &Worker,
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    shutdown: &mut Shutdown,
) -> End {
    let (mut sink, mut stream) = ws.split();
    let hello = NodeMessage::Hello {
        version: CONTROL_VERSION,
        name: cfg.name.clone(),
        kind: cfg.kind,
        backend: cfg.backend.clone(),
        adapter: cfg.adapter.clone(),
        memory_bytes: cfg.memory_bytes,
        gflops: cfg.gflops,
    };
    let hello = serde_json::to_string(&hello).expect("serialises");
    match tokio::time::timeout(CONNECT_TIMEOUT, sink.send(Message::text(hello))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return End::Lost(anyhow!(e).context("sending `hello`")),
        Err(_) => {
            return End::Lost(anyhow!(
                "sending `hello` timed out after {CONNECT_TIMEOUT:?}"
            ));
        }
    }
    // Everything the node sends goes through one channel so background tasks can report.
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
    if !cfg.net_delay.is_zero() {
        out_rx = delay_line(out_rx, 2 * cfg.net_delay);
    }
    let base = match http_base(&cfg.url) {
        Ok(b) => b,
        Err(e) => return End::Lost(e),
    };
    let client = download::client(&cfg.url);
    let limits = Limits::default();
    let mut manifest: Option<(Arc<Manifest>, PathBuf)> = None;
    let mut pending_step: Option<CoordinatorMessage> = None;
    let mut report = Reporter::new(cfg);
    let mut report_every = tokio::time::interval(REPORT_INTERVAL);
    loop {
        tokio::select! {
            _ = report_every.tick() => report.tick(cfg, worker, &out_tx),
            msg = out_rx.recv() => {
                let Some(msg) = msg else { continue };
                if let Err(e) = sink.send(msg).await {
                    return End::Lost(e.into());
                }
            }
            incoming = stream.next() => {
                let msg = match incoming {
                    None => return End::Lost(anyhow!("connection closed")),
                    Some(Err(e)) => return End::Lost(e.into()),
                    Some(Ok(m)) => m,
                };
                let handled = match msg {
                    Message::Text(text) => handle_text(cfg, worker, &client, &base, &out_tx, &mut manifest, &mut pending_step, &text),
                    Message::Binary(bytes) => handle_frame(worker, &out_tx, &limits, &mut pending_step, &bytes),
                    Message::Close(_) => Err(anyhow!("the coordinator closed the connection")),
                    _ => Ok(()),
                };
                if let Err(e) = handled {
                    let _ = sink.send(Message::Close(None)).await;
                    return End::Lost(e);
                }
            }
            _ = shutdown.changed() => {
                let _ = sink.send(Message::Close(None)).await;
                let _ = sink.flush().await;
                return End::Stopped;
            }
        }
    }
}

/// Delays every message of `rx` by `delay` from when it was queued, keeping their order: one
/// task stamps messages as they come (it never sleeps, so stamps are exact), another releases
/// each at its time.
fn delay_line(
    mut rx: mpsc::UnboundedReceiver<Message>,
    delay: Duration,
) -> mpsc::UnboundedReceiver<Message> {
    let (stamped_tx, mut stamped_rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Message)>();
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if stamped_tx
                .send((tokio::time::Instant::now() + delay, m))
                .is_err()
            {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some((due, m)) = stamped_rx.recv().await {
            tokio::time::sleep_until(due).await;
            if out_tx.send(m).is_err() {
                break;
            }
        }
    });
    out_rx
}

/// Tells the coordinator what the node holds when it changes, and re-measures the node's
/// speed when it has been idle for a while (if configured).
struct Reporter {
    sent: Option<(u64, u64)>,
    steps: usize,
    idle_since: Instant,
    measured: Instant,
}

impl Reporter {
    fn new(cfg: &NodeConfig) -> Reporter {
        let now = Instant::now();
        Reporter {
            sent: None,
            steps: cfg.stats.steps.load(std::sync::atomic::Ordering::Relaxed),
            idle_since: now,
            measured: now,
        }
    }

    fn tick(&mut self, cfg: &NodeConfig, worker: &Worker, out: &mpsc::UnboundedSender<Message>) {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = &cfg.stats;
        let held = (
            stats.weights_bytes.load(Relaxed),
            stats.kv_bytes.load(Relaxed),
        );
        if self.sent != Some(held) {
            self.sent = Some(held);
            send_report(out, held, None);
        }
        let now = Instant::now();
        let steps = stats.steps.load(Relaxed);
        if steps != self.steps {
            self.steps = steps;
            self.idle_since = now;
        }
        let Some(every) = cfg.remeasure else { return };
        if now - self.measured < every || now - self.idle_since < IDLE_BEFORE_MEASURE {
            return;
        }
        self.measured = now;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !worker.send(Job::Measure { reply: tx }) {
            return;
        }
        let (out, stats) = (out.clone(), stats.clone());
        tokio::spawn(async move {
            if let Ok(g) = rx.await {
                tracing::debug!("measured {g:.2} GFLOP/s while idle");
                let held = (
                    stats.weights_bytes.load(Relaxed),
                    stats.kv_bytes.load(Relaxed),
                );
                send_report(&out, held, Some(g));
            }
        });
    }
}

fn send_report(out: &mpsc::UnboundedSender<Message>, held: (u64, u64), gflops: Option<f64>) {
    let m = NodeMessage::Report {
        weights_bytes: held.0,
        kv_bytes: held.1,
        gflops,
    };
    let _ = out.send(Message::text(
        serde_json::to_string(&m).expect("serialises"),
    ));
}

/// Handles one control message from the coordinator.
#[allow(clippy::too_many_arguments)]
fn handle_text(
    cfg: &NodeConfig,
    worker: &Worker,
    client: &reqwest::Client,
    base: &str,
    out_tx: &mpsc::UnboundedSender<Message>,
    manifest: &mut Option<(Arc<Manifest>, PathBuf)>,
    pending_step: &mut Option<CoordinatorMessage>,
    text: &str,
) -> Result<()> {
    let m: CoordinatorMessage = serde_json::from_str(text)
        .with_context(|| format!("bad control message from the coordinator: {text:.200}"))?;
    match m {
        CoordinatorMessage::Welcome {
            node_id,
            manifest: m,
        } => {
            tracing::info!(node = %cfg.name, node_id, "joined; model {} with {} shards", m.architecture, m.shards.len());
            let dir = cfg
                .model_dir
                .clone()
                .unwrap_or_else(|| cfg.cache_dir.join(model_key(&m)));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating the shard cache {}", dir.display()))?;
            *manifest = Some((Arc::new(*m), dir));
        }
        CoordinatorMessage::Load {
            shard,
            url,
            sha256,
            bytes,
        } => {
            let (m, dir) = manifest
                .clone()
                .ok_or_else(|| anyhow!("`load` before `welcome`"))?;
            spawn_load(
                client,
                base,
                worker.clone(),
                out_tx.clone(),
                m,
                dir,
                shard,
                url,
                sha256,
                bytes,
            );
        }
        CoordinatorMessage::Unload { shard } => {
            worker.send(Job::Unload { shard });
        }
        CoordinatorMessage::Close { session } => {
            worker.send(Job::Close { session });
        }
        CoordinatorMessage::Truncate { session, len } => {
            worker.send(Job::Truncate { session, len });
        }
        step @ CoordinatorMessage::Step { .. } => {
            if pending_step.replace(step).is_some() {
                bail!("two `step` messages without a frame between them");
            }
        }
    }
    Ok(())
}

/// Handles the binary frame that follows a `step` message: runs the step on the compute thread.
fn handle_frame(
    worker: &Worker,
    out_tx: &mpsc::UnboundedSender<Message>,
    limits: &Limits,
    pending_step: &mut Option<CoordinatorMessage>,
    bytes: &[u8],
) -> Result<()> {
    let Some(CoordinatorMessage::Step {
        step,
        session,
        pos,
        first,
        last,
        output,
    }) = pending_step.take()
    else {
        bail!("a binary frame arrived without a `step` message");
    };
    let frame = protocol::decode(bytes, limits).context("bad frame from the coordinator")?;
    if frame.request_id != step {
        bail!("frame for request {} after `step` {step}", frame.request_id);
    }
    let input = step_input(&frame, limits)?;
    let job = StepJob {
        step,
        session,
        pos,
        first,
        last,
        output,
        input,
    };
    spawn_step(worker.clone(), out_tx.clone(), job);
    Ok(())
}

/// Measures this CPU's speed on a matrix-vector product like the engine's (GFLOP/s).
pub fn measure_cpu_gflops() -> f64 {
    let (n, k) = (1024usize, 1024usize);
    let w: Vec<half::f16> = (0..n * k)
        .map(|i| half::f16::from_f32(((i % 31) as f32 - 15.0) / 64.0))
        .collect();
    let x: Vec<f32> = (0..k).map(|i| (i % 7) as f32 / 7.0).collect();
    let mut out = vec![0f32; n];
    crate::engine::cpu::ops::matmul(&mut out, &x, &w, None, 1, k); // warm-up
    let iters = 8;
    let start = Instant::now();
    for _ in 0..iters {
        crate::engine::cpu::ops::matmul(&mut out, &x, &w, None, 1, k);
    }
    (2.0 * (n * k * iters) as f64) / start.elapsed().as_secs_f64().max(1e-9) / 1e9
}

/// Memory this machine has available (MemAvailable), or 4 GiB when it cannot be read.
pub fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(4 << 30, |kb| kb * 1024)
}

/// A directory name for a model: its architecture and the first shard's hash.
fn model_key(m: &Manifest) -> String {
    let h = m
        .shards
        .first()
        .map(|s| s.sha256.get(..16).unwrap_or(&s.sha256))
        .unwrap_or("empty");
    format!("{}-{h}", m.architecture)
}

fn step_input(frame: &Frame, limits: &Limits) -> Result<StepData> {
    match frame.msg_type {
        MessageType::Tokens => Ok(StepData::Tokens(Tokens::from_frame(frame, limits)?.ids)),
        MessageType::Activation => {
            let a = Activation::from_frame(frame, limits)?;
            Ok(StepData::Hidden(Activations::new(
                a.rows as usize,
                a.cols as usize,
                a.data,
            )?))
        }
        other => bail!("a step cannot take a {other:?} frame"),
    }
}

#[allow(clippy::too_many_arguments)]
fn spawn_load(
    client: &reqwest::Client,
    base: &str,
    worker: Worker,
    out: mpsc::UnboundedSender<Message>,
    manifest: Arc<Manifest>,
    dir: PathBuf,
    shard: usize,
    url: String,
    sha256: String,
    bytes: u64,
) {
    let client = client.clone();
    let full_url = format!("{base}{url}");
    tokio::spawn(async move {
        let send = |m: NodeMessage| {
            let _ = out.send(Message::text(
                serde_json::to_string(&m).expect("serialises"),
            ));
        };
        let result: Result<()> = async {
            let info = manifest
                .shards
                .get(shard)
                .ok_or_else(|| anyhow!("the model has no shard {shard}"))?;
            if info.sha256 != sha256 || info.bytes != bytes {
                bail!("`load` for shard {shard} disagrees with the manifest's size or sha256");
            }
            let file = info.file.clone();
            download::fetch_shard(&client, &full_url, &dir, &file, &sha256, bytes, |f| {
                send(NodeMessage::ShardProgress {
                    shard,
                    fraction: f * 0.9,
                })
            })
            .await?;
            let (tx, rx) = tokio::sync::oneshot::channel();
            worker.send(Job::Load {
                shard,
                dir: dir.clone(),
                manifest: manifest.clone(),
                reply: tx,
            });
            rx.await
                .map_err(|_| anyhow!("the compute thread stopped"))?
                .map_err(|e| anyhow!(e))
        }
        .await;
        send(match result {
            Ok(()) => NodeMessage::ShardReady { shard },
            Err(e) => NodeMessage::ShardFailed {
                shard,
                error: format!("{e:#}"),
            },
        });
    });
}

fn spawn_step(worker: Worker, out: mpsc::UnboundedSender<Message>, job: StepJob) {
    tokio::spawn(async move {
        let step = job.step;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let msg = if !worker.send(Job::Step { job, reply: tx }) {
            Err("the compute thread stopped".to_string())
        } else {
            rx.await
                .unwrap_or_else(|_| Err("the compute thread stopped".into()))
        };
        let m = match msg {
            Ok(frame) => Message::binary(protocol::encode(&frame)),
            Err(error) => Message::text(
                serde_json::to_string(&NodeMessage::StepFailed { step, error })
                    .expect("serialises"),
            ),
        };
        let _ = out.send(m);
    });
}
