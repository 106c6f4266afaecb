//! A lying node for tests: a real CPU node whose messages to the coordinator pass through a
//! WebSocket proxy that can rewrite, drop or add messages before the coordinator sees them.
//! The node computes honestly; only what reaches the coordinator lies, which is exactly what a
//! buggy driver, a lost GPU or an edited page looks like from the coordinator's side.
//!
//! The proxy remembers every `step` the coordinator sent through it, so a rewrite knows what
//! the frame it rewrites was asked for ([`Seen`]). The rewrite can be swapped at run time
//! ([`Liar::set`]), e.g. honest first, then lying. By default the proxy serves one connection:
//! once the coordinator drops the liar, its reconnects are refused, so a test sees one eviction.
//!
//! The proxy can also drop what the coordinator sends the node ([`Liar::drop_down`]), so that
//! the node misses messages (a node that ignores `truncate`, say).
//!
//! The proxied node reads its shards from a model directory (it cannot download through the
//! proxy, which speaks only WebSocket).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use synapse::coordinator::wire::CoordinatorMessage;
use synapse::protocol::{self, Activation, Encoding, Frame, Limits, TopLogits};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use super::cluster::{CpuNode, cpu_node_with};

/// A message from the node to the coordinator, as the rewrite sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// A control message (JSON).
    Text(String),
    /// A SYN1 frame.
    Binary(Vec<u8>),
    /// Not a message: the proxy waits this long before sending what follows (a slow or
    /// stalled node).
    Sleep(std::time::Duration),
}

/// What the proxy knows when one of the node's messages passes.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// For a frame: the `step` message it answers (by request id), if the proxy saw it.
    pub step: Option<CoordinatorMessage>,
    /// Binary frames the node sent before this one on this connection.
    pub frames_before: usize,
}

/// Rewrites one message of the node: the messages returned go to the coordinator instead (none
/// drops it, two duplicate it).
pub type Rewrite = Arc<dyn Fn(&Seen, Msg) -> Vec<Msg> + Send + Sync>;

/// Decides which of the coordinator's control messages never reach the node.
pub type DropDown = Arc<dyn Fn(&CoordinatorMessage) -> bool + Send + Sync>;

/// A real CPU node behind a rewriting proxy.
pub struct Liar {
    pub node: CpuNode,
    /// The proxy's address (what the node connects to).
    pub addr: SocketAddr,
    rewrite: Arc<Mutex<Option<Rewrite>>>,
    drop_down: Arc<Mutex<Option<DropDown>>>,
    /// Connections the proxy accepted.
    pub connections: Arc<AtomicUsize>,
    /// Messages the rewrite changed, dropped or added.
    pub lies: Arc<AtomicUsize>,
}

impl Liar {
    /// Replaces the rewrite (`None`: pass everything through unchanged).
    pub fn set(&self, rewrite: Option<Rewrite>) {
        *self.rewrite.lock().unwrap() = rewrite;
    }

    /// Drops the coordinator's control messages that `f` picks before the node sees them
    /// (`None`: deliver everything).
    pub fn drop_down(&self, f: Option<DropDown>) {
        *self.drop_down.lock().unwrap() = f;
    }
}

/// Starts a proxy in front of the coordinator at `coordinator` and a CPU node `name` joining
/// through it with `token`, reading shards from `model_dir`. `configure` may change the node's
/// settings (claimed speed, memory) before it starts; `reconnects` lets the proxy accept the
/// node again after the coordinator dropped it.
pub async fn lying_node(
    coordinator: SocketAddr,
    token: &str,
    name: &str,
    model_dir: &Path,
    rewrite: Option<Rewrite>,
    reconnects: bool,
    configure: impl FnOnce(&mut synapse::node::NodeConfig),
) -> Liar {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rewrite = Arc::new(Mutex::new(rewrite));
    let drop_down: Arc<Mutex<Option<DropDown>>> = Default::default();
    let connections = Arc::new(AtomicUsize::new(0));
    let lies = Arc::new(AtomicUsize::new(0));
    {
        let (rewrite, connections, lies) = (rewrite.clone(), connections.clone(), lies.clone());
        let drop_down = drop_down.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if !reconnects && connections.load(Ordering::SeqCst) > 0 {
                    drop(tcp); // refused: the node keeps retrying against nothing
                    continue;
                }
                connections.fetch_add(1, Ordering::SeqCst);
                let (rewrite, lies, drop_down) = (rewrite.clone(), lies.clone(), drop_down.clone());
                tokio::spawn(proxy(tcp, coordinator, rewrite, drop_down, lies));
            }
        });
    }
    let url = format!("ws://{addr}/ws?token={token}");
    let node = cpu_node_with(url, name, Some(model_dir), model_dir, configure);
    Liar {
        node,
        addr,
        rewrite,
        drop_down,
        connections,
        lies,
    }
}

/// Relays one node connection to the coordinator, rewriting what the node sends.
async fn proxy(
    tcp: tokio::net::TcpStream,
    coordinator: SocketAddr,
    rewrite: Arc<Mutex<Option<Rewrite>>>,
    drop_down: Arc<Mutex<Option<DropDown>>>,
    lies: Arc<AtomicUsize>,
) {
    let path = Arc::new(Mutex::new(String::from("/ws")));
    let p = path.clone();
    // The handshake callback's error type is tungstenite's (a whole HTTP response).
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, resp: Response| {
        *p.lock().unwrap() = req
            .uri()
            .path_and_query()
            .map(|x| x.to_string())
            .unwrap_or_default();
        Ok(resp)
    };
    let Ok(node_ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let url = format!("ws://{coordinator}{}", path.lock().unwrap());
    let Ok((coord_ws, _)) = tokio_tungstenite::connect_async(url).await else {
        return;
    };
    let (mut node_tx, mut node_rx) = node_ws.split();
    let (mut coord_tx, mut coord_rx) = coord_ws.split();
    let steps: Arc<Mutex<HashMap<u32, CoordinatorMessage>>> = Default::default();
    let seen_steps = steps.clone();
    let down = async move {
        while let Some(Ok(m)) = coord_rx.next().await {
            if let Message::Text(t) = &m
                && let Ok(msg) = serde_json::from_str::<CoordinatorMessage>(t)
            {
                if let CoordinatorMessage::Step { step: id, .. } = &msg {
                    seen_steps.lock().unwrap().insert(*id, msg.clone());
                }
                let f = drop_down.lock().unwrap().clone();
                if f.is_some_and(|f| f(&msg)) {
                    continue;
                }
            }
            let close = matches!(m, Message::Close(_));
            if node_tx.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = node_tx.close().await;
    };
    let up = async move {
        let mut frames = 0usize;
        while let Some(Ok(m)) = node_rx.next().await {
            let (msg, seen) = match m {
                Message::Text(t) => (Msg::Text(t.to_string()), Seen::default()),
                Message::Binary(b) => {
                    let id = protocol::RawHeader::read(&b).map(|h| h.request_id);
                    let seen = Seen {
                        step: id.and_then(|id| steps.lock().unwrap().remove(&id)),
                        frames_before: frames,
                    };
                    frames += 1;
                    (Msg::Binary(b.to_vec()), seen)
                }
                Message::Close(c) => {
                    let _ = coord_tx.send(Message::Close(c)).await;
                    break;
                }
                other => {
                    let _ = coord_tx.send(other).await;
                    continue;
                }
            };
            let f = rewrite.lock().unwrap().clone();
            let out = match f {
                Some(f) => {
                    let out = f(&seen, msg.clone());
                    if out != [msg] {
                        lies.fetch_add(1, Ordering::SeqCst);
                    }
                    out
                }
                None => vec![msg],
            };
            for m in out {
                let m = match m {
                    Msg::Text(t) => Message::text(t),
                    Msg::Binary(b) => Message::binary(b),
                    Msg::Sleep(d) => {
                        tokio::time::sleep(d).await;
                        continue;
                    }
                };
                if coord_tx.send(m).await.is_err() {
                    return;
                }
            }
        }
        let _ = coord_tx.close().await;
    };
    tokio::select! {
        _ = down => {}
        _ = up => {}
    }
}

/// A rewrite that changes only the SYN1 frames the node sends (decoded), leaving control
/// messages alone; `f` returns the frame to send instead, or `None` to pass it unchanged.
pub fn frames(f: impl Fn(&Seen, &Frame) -> Option<Vec<u8>> + Send + Sync + 'static) -> Rewrite {
    Arc::new(move |seen: &Seen, m: Msg| match m {
        Msg::Binary(b) => {
            let frame =
                protocol::decode(&b, &Limits::default()).expect("the node sent a valid frame");
            vec![Msg::Binary(f(seen, &frame).unwrap_or(b))]
        }
        other => vec![other],
    })
}

/// Re-encodes an ACTIVATION frame after `edit` changed its values (rows, cols, data), in the
/// frame's own encoding.
pub fn edit_activation(frame: &Frame, edit: impl FnOnce(&mut Activation)) -> Option<Vec<u8>> {
    if frame.msg_type != protocol::MessageType::Activation {
        return None;
    }
    let mut a = Activation::from_frame(frame, &Limits::default()).ok()?;
    edit(&mut a);
    let enc = Encoding::from_flags(frame.flags);
    let f = a
        .to_frame(frame.seq_pos, frame.request_id, enc, false)
        .expect("re-encoding the edited activation");
    Some(protocol::encode(&f))
}

/// Re-encodes a TOP_LOGITS frame after `edit` changed its entries.
pub fn edit_top_logits(frame: &Frame, edit: impl FnOnce(&mut TopLogits)) -> Option<Vec<u8>> {
    if frame.msg_type != protocol::MessageType::TopLogits {
        return None;
    }
    let mut t = TopLogits::from_frame(frame, &Limits::default()).ok()?;
    edit(&mut t);
    let f = t
        .to_frame(frame.seq_pos, frame.request_id)
        .expect("re-encoding the edited top logits");
    Some(protocol::encode(&f))
}
