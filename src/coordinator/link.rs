//! One node's WebSocket connection, a thin driver of the core: the hello handshake, then a
//! `select!` loop that forwards what the core queued for the node and hands the core what the
//! node sends (decoded and checked for shape here, judged there). Anything malformed or out of
//! order closes this connection with a reason; other nodes are unaffected. Generic over the
//! socket's `Sink`/`Stream`, so tests can drive it without a socket.

use std::fmt::Display;
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;

use super::state::{Hello, MemoryReport};
use super::wire::{CONTROL_VERSION, MAX_CONTROL_BYTES, NodeMessage};
use super::{Coordinator, close_message};
use crate::protocol::{self, Limits};

/// Time a node has to say hello after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one node until it disconnects, breaks the protocol, or the core removes it.
pub async fn serve_node<S, E>(coord: Coordinator, socket: S, address: Option<std::net::IpAddr>)
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Unpin,
    E: Display,
{
    let (mut sink, mut stream) = socket.split();
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(Message::Text(t)))) if t.len() <= MAX_CONTROL_BYTES => {
            serde_json::from_str::<NodeMessage>(&t).ok()
        }
        _ => None,
    };
    let hello = match hello {
        Some(NodeMessage::Hello {
            version,
            name,
            kind,
            backend,
            adapter,
            memory_bytes,
            gflops,
        }) if version == CONTROL_VERSION => Hello {
            name,
            kind,
            backend,
            adapter,
            memory_bytes,
            gflops,
            address,
        },
        _ => {
            let reason =
                format!("expected a `hello` message of control version {CONTROL_VERSION} first");
            let _ = sink.send(close_message(&reason)).await;
            return;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let id = match coord.add_node(hello, tx) {
        Ok(id) => id,
        Err(why) => {
            tracing::info!("refused a node: {why}");
            let _ = sink.send(close_message(&why)).await;
            return;
        }
    };
    let limits = Limits::default();
    let reason = loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(close @ Message::Close(_)) => {
                    let why = match &close {
                        Message::Close(Some(f)) => f.reason.to_string(),
                        _ => "removed by the coordinator".to_string(),
                    };
                    let _ = sink.send(close).await;
                    break why;
                }
                None => {
                    let _ = sink.send(close_message("removed by the coordinator")).await;
                    break "removed by the coordinator".to_string();
                }
                Some(m) => if sink.send(m).await.is_err() { break "send failed".to_string() },
            },
            incoming = stream.next() => match incoming {
                None => break "disconnected".into(),
                Some(Err(e)) => break format!("connection error: {e}"),
                Some(Ok(Message::Close(_))) => break "closed the connection".into(),
                Some(Ok(Message::Text(t))) => {
                    if let Err(why) = handle_text(&coord, id, &t) {
                        let _ = sink.send(close_message(&why)).await;
                        break why;
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    let handled = protocol::decode(&b, &limits)
                        .map_err(|e| format!("bad frame: {e}"))
                        .and_then(|frame| coord.act(|hub, now| hub.core.on_frame(now, id, frame)));
                    if let Err(why) = handled {
                        let _ = sink.send(close_message(&why)).await;
                        break why;
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    };
    coord.remove_node(id, &reason);
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
        NodeMessage::Hello { .. } => Err("`hello` sent twice".into()),
        NodeMessage::ShardProgress { shard, fraction } => {
            check(shard)?;
            coord.act(|hub, _| hub.core.shard_progress(node, shard, fraction));
            Ok(())
        }
        NodeMessage::ShardReady { shard } => {
            check(shard)?;
            coord.act(|hub, now| hub.core.shard_ready(now, node, shard));
            Ok(())
        }
        NodeMessage::ShardFailed { shard, error } => {
            check(shard)?;
            coord.act(|hub, _| hub.core.shard_failed(node, shard, error));
            Ok(())
        }
        NodeMessage::StepFailed { step, error } => {
            coord.act(|hub, now| hub.core.on_step_failed(now, node, step, error))
        }
        NodeMessage::Report {
            weights_bytes,
            kv_bytes,
            gflops,
        } => {
            let held = MemoryReport {
                weights_bytes,
                kv_bytes,
            };
            coord.act(|hub, now| hub.core.node_report(now, node, held, gflops));
            Ok(())
        }
    }
}
