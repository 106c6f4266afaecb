//! One node's WebSocket connection: the hello handshake, then a `select!` loop that forwards
//! queued messages to the node and handles what it sends. Anything malformed or out of order
//! closes this connection with a reason; other nodes are unaffected.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::Coordinator;
use super::state::NodeInfo;
use super::wire::{CONTROL_VERSION, CoordinatorMessage, MAX_CONTROL_BYTES, NodeMessage};
use crate::protocol::{self, Limits};

/// Time a node has to say hello after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// WebSocket close code for a policy violation (RFC 6455).
const CLOSE_POLICY: u16 = 1008;

/// Serves one node until it disconnects or breaks the protocol.
pub async fn serve_node(coord: Coordinator, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(Message::Text(t)))) if t.len() <= MAX_CONTROL_BYTES => {
            serde_json::from_str::<NodeMessage>(&t).ok()
        }
        _ => None,
    };
    let info = match hello {
        Some(NodeMessage::Hello {
            version,
            name,
            kind,
            backend,
            adapter,
            memory_bytes,
            gflops,
        }) if version == CONTROL_VERSION => NodeInfo {
            id: 0,
            name: name.chars().take(64).collect(),
            kind,
            adapter: adapter.chars().take(128).collect(),
            backend: backend.chars().take(16).collect(),
            memory_bytes,
            gflops: if gflops.is_finite() && gflops > 0.0 {
                gflops
            } else {
                0.001
            },
        },
        _ => {
            let reason =
                format!("expected a `hello` message of control version {CONTROL_VERSION} first");
            let _ = sink.send(close(&reason)).await;
            return;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let id = coord.add_node(info, tx.clone());
    let welcome = CoordinatorMessage::Welcome {
        node_id: id,
        manifest: Box::new((**coord.manifest()).clone()),
    };
    let _ = tx.send(Message::Text(
        serde_json::to_string(&welcome).expect("serialises").into(),
    ));
    coord.place();
    coord.rebalance();
    let limits = Limits::default();
    let reason = loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Message::Close(_)) | None => {
                    let _ = sink.send(close("removed by the coordinator")).await;
                    break "removed by the coordinator".to_string();
                }
                Some(m) => if let Err(e) = sink.send(m).await { break format!("send failed: {e}") },
            },
            incoming = stream.next() => match incoming {
                None => break "disconnected".into(),
                Some(Err(e)) => break format!("connection error: {e}"),
                Some(Ok(Message::Close(_))) => break "closed the connection".into(),
                Some(Ok(Message::Text(t))) => {
                    if let Err(why) = handle_text(&coord, id, &t) {
                        let _ = sink.send(close(&why)).await;
                        break why;
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    if let Err(why) = handle_frame(&coord, id, &b, &limits) {
                        let _ = sink.send(close(&why)).await;
                        break why;
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    };
    coord.remove_node(id, &reason);
}

fn close(reason: &str) -> Message {
    // Close reasons are limited to 123 bytes.
    let mut r = reason.to_string();
    while r.len() > 120 {
        r.pop();
    }
    Message::Close(Some(CloseFrame {
        code: CLOSE_POLICY,
        reason: r.into(),
    }))
}

fn handle_text(coord: &Coordinator, node: u64, text: &str) -> Result<(), String> {
    if text.len() > MAX_CONTROL_BYTES {
        return Err(format!(
            "control message of {} bytes (limit {MAX_CONTROL_BYTES})",
            text.len()
        ));
    }
    let msg: NodeMessage =
        serde_json::from_str(text).map_err(|e| format!("bad control message: {e}"))?;
    let n_shards = coord.manifest().shards.len();
    let check = |shard: usize| {
        if shard < n_shards {
            Ok(())
        } else {
            Err(format!("no shard {shard}"))
        }
    };
    match msg {
        NodeMessage::Hello { .. } => return Err("`hello` sent twice".into()),
        NodeMessage::ShardProgress { shard, fraction } => {
            check(shard)?;
            coord.shard_progress(node, shard, fraction)
        }
        NodeMessage::ShardReady { shard } => {
            check(shard)?;
            coord.shard_ready(node, shard)
        }
        NodeMessage::ShardFailed { shard, error } => {
            check(shard)?;
            coord.shard_failed(node, shard, error)
        }
        NodeMessage::StepFailed { step, error } => {
            let p = coord.state().pending.remove(&step);
            match p {
                Some(p) if p.node == node => {
                    let _ = p.reply.send(Err(error));
                }
                _ => {
                    return Err(format!(
                        "`step_failed` for step {step}, which this node was not running"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn handle_frame(
    coord: &Coordinator,
    node: u64,
    bytes: &[u8],
    limits: &Limits,
) -> Result<(), String> {
    let frame = protocol::decode(bytes, limits).map_err(|e| format!("bad frame: {e}"))?;
    let mut st = coord.state();
    match st.pending.remove(&frame.request_id) {
        Some(p) if p.node == node => {
            if let Some(n) = st.nodes.get_mut(&node) {
                n.tokens_processed += frame.dim0 as u64;
            }
            drop(st);
            let _ = p.reply.send(Ok(frame));
            Ok(())
        }
        Some(p) => {
            // Put it back: it belongs to another node.
            st.pending.insert(frame.request_id, p);
            Err(format!(
                "frame for request {} which this node was not asked for",
                frame.request_id
            ))
        }
        None => Err(format!(
            "frame for request {} which is not pending",
            frame.request_id
        )),
    }
}
