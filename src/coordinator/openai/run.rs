//! Running one API generation: check the prompt against the context, wait for a slot, start
//! the coordinator's session, and turn its events into an OpenAI response (one JSON body) or
//! server-sent events ending in `[DONE]`. Stop strings end the session; so does a client that
//! goes away (dropping the event receiver makes the session's next send fail, which closes it
//! and frees every node's cache).

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::ApiState;
use super::error::ApiError;
use super::stop::StopMatcher;
use super::types::Params;
use crate::coordinator::session::{GenerateEvent, GenerateRequest};

/// Default `max_tokens` of `/v1/completions` (OpenAI's).
pub const COMPLETIONS_DEFAULT_MAX_TOKENS: usize = 16;

/// Which endpoint's shapes to use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Completion,
    Chat,
}

/// A request ready to run.
pub struct Job {
    pub kind: Kind,
    pub prompt: String,
    pub params: Params,
}

/// What a finished generation produced.
struct Outcome {
    text: String,
    prompt_tokens: usize,
    completion_tokens: usize,
    finish_reason: &'static str,
    drafted: usize,
    accepted: usize,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn finish_reason(reason: &str) -> &'static str {
    if reason == "max_tokens" {
        "length"
    } else {
        "stop"
    }
}

impl Kind {
    fn id(self) -> String {
        let r: u64 = rand::random();
        match self {
            Kind::Completion => format!("cmpl-{r:016x}"),
            Kind::Chat => format!("chatcmpl-{r:016x}"),
        }
    }

    fn choice(self, text: &str, finish: Option<&str>, streaming: bool, first: bool) -> Value {
        match (self, streaming) {
            (Kind::Completion, _) => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
            (Kind::Chat, false) => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish,
            }),
            (Kind::Chat, true) => {
                let delta = if first {
                    json!({"role": "assistant", "content": text})
                } else if finish.is_some() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        }
    }

    fn object(self, streaming: bool) -> &'static str {
        match (self, streaming) {
            (Kind::Completion, _) => "text_completion",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
        }
    }
}

/// OpenAI's usage object; speculative drafts are reported as OpenAI reports predicted outputs
/// (`completion_tokens_details.accepted_prediction_tokens` / `rejected_prediction_tokens`).
fn usage(o: &Outcome) -> Value {
    json!({
        "prompt_tokens": o.prompt_tokens,
        "completion_tokens": o.completion_tokens,
        "total_tokens": o.prompt_tokens + o.completion_tokens,
        "completion_tokens_details": {
            "accepted_prediction_tokens": o.accepted,
            "rejected_prediction_tokens": o.drafted - o.accepted.min(o.drafted),
        },
    })
}

/// Checks the prompt and the pipeline, takes a slot and runs `job`.
pub async fn run(state: ApiState, job: Job) -> Result<Response, ApiError> {
    let coord = &state.coord;
    let prompt_ids = coord
        .tokenizer()
        .encode(&job.prompt)
        .map_err(|e| ApiError::invalid(e.to_string(), Some("prompt")))?;
    let param = if job.kind == Kind::Chat {
        "messages"
    } else {
        "prompt"
    };
    if prompt_ids.is_empty() {
        return Err(ApiError::invalid(
            format!("{param}: the prompt is empty"),
            Some(param),
        ));
    }
    let ctx = coord.manifest().config.context_length;
    let room = ctx.saturating_sub(prompt_ids.len());
    let max_tokens = match (job.params.max_tokens, job.kind) {
        (Some(m), _) => m,
        (None, Kind::Completion) => COMPLETIONS_DEFAULT_MAX_TOKENS.min(room.max(1)),
        (None, Kind::Chat) => room.max(1),
    };
    if prompt_ids.len() + max_tokens > ctx {
        return Err(ApiError::ContextLength {
            context: ctx,
            total: prompt_ids.len() + max_tokens,
            prompt: prompt_ids.len(),
            completion: max_tokens,
            param,
        });
    }
    if let Some(why) = super::pipeline_problem(coord) {
        return Err(ApiError::NoPipeline(why));
    }
    let permit = state.admission.enter().await?;
    let (tx, rx) = mpsc::channel::<GenerateEvent>(64);
    let req = GenerateRequest {
        stream: job.params.stream,
        prompt: job.prompt,
        max_tokens,
        sampling: job.params.sampling.clone(),
        speculate: job.params.speculate,
    };
    let c = coord.clone();
    tokio::spawn(async move {
        let _slot = permit;
        c.generate(req, tx).await;
    });
    let stops = StopMatcher::new(job.params.stops.clone());
    if job.params.stream {
        Ok(stream(state, job.kind, job.params.include_usage, stops, rx))
    } else {
        let o = collect(stops, rx).await?;
        Ok(Json(json!({
            "id": job.kind.id(),
            "object": job.kind.object(false),
            "created": now(),
            "model": state.model_id,
            "choices": [job.kind.choice(&o.text, Some(o.finish_reason), false, false)],
            "usage": usage(&o),
        }))
        .into_response())
    }
}

/// Turns a piece of text into an SSE chunk.
type MakeChunk<'a> = &'a (dyn Fn(&str) -> SseEvent + Send + Sync);

/// Follows a session to its end, applying the stop strings; when streaming, each piece of text
/// is sent as soon as it is safe to. `Ok(None)`: the client went away.
async fn follow(
    mut stops: StopMatcher,
    mut rx: mpsc::Receiver<GenerateEvent>,
    out: Option<(&mpsc::Sender<Result<SseEvent, Infallible>>, MakeChunk<'_>)>,
) -> Result<Option<Outcome>, ApiError> {
    let mut o = Outcome {
        text: String::new(),
        prompt_tokens: 0,
        completion_tokens: 0,
        finish_reason: "stop",
        drafted: 0,
        accepted: 0,
    };
    let mut finished = false;
    loop {
        // A streaming client that hung up ends the session now, not at the next piece of text
        // (a prefill sends none for as long as it runs): returning drops `rx`, which the
        // driver watches.
        let next = match out {
            Some((tx, _)) => tokio::select! {
                ev = rx.recv() => ev,
                _ = tx.closed() => return Ok(None),
            },
            None => rx.recv().await,
        };
        let Some(ev) = next else {
            return Err(ApiError::Generation(
                "the session ended without a result".into(),
            ));
        };
        let piece = match ev {
            GenerateEvent::Start { prompt_ids, .. } => {
                o.prompt_tokens = prompt_ids.len();
                continue;
            }
            GenerateEvent::Token { id, text } => {
                if id != u32::MAX {
                    o.completion_tokens += 1;
                }
                stops.push(&text)
            }
            GenerateEvent::Done {
                reason,
                drafted,
                accepted,
                ..
            } => {
                o.finish_reason = finish_reason(&reason);
                o.drafted = drafted;
                o.accepted = accepted;
                finished = true;
                stops.finish()
            }
            GenerateEvent::Error { message } => return Err(ApiError::Generation(message)),
            GenerateEvent::Unavailable { message, .. } => {
                return Err(ApiError::NoPipeline(message));
            }
        };
        if !piece.is_empty() {
            o.text.push_str(&piece);
            if let Some((tx, make)) = out
                && tx.send(Ok(make(&piece))).await.is_err()
            {
                return Ok(None);
            }
        }
        if stops.stopped() {
            o.finish_reason = "stop";
            return Ok(Some(o));
        }
        if finished {
            return Ok(Some(o));
        }
    }
}

async fn collect(
    stops: StopMatcher,
    rx: mpsc::Receiver<GenerateEvent>,
) -> Result<Outcome, ApiError> {
    follow(stops, rx, None)
        .await?
        .ok_or_else(|| ApiError::Generation("the session ended early".into()))
}

fn stream(
    state: ApiState,
    kind: Kind,
    include_usage: bool,
    stops: StopMatcher,
    rx: mpsc::Receiver<GenerateEvent>,
) -> Response {
    let (etx, erx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let id = kind.id();
    let created = now();
    let model = state.model_id.clone();
    let chunk = move |choices: Value, usage: Option<Value>| {
        let mut v = json!({"id": id, "object": kind.object(true), "created": created, "model": model, "choices": choices});
        if let Some(u) = usage {
            v["usage"] = u;
        }
        SseEvent::default().data(v.to_string())
    };
    tokio::spawn(async move {
        if kind == Kind::Chat
            && etx
                .send(Ok(chunk(json!([kind.choice("", None, true, true)]), None)))
                .await
                .is_err()
        {
            return;
        }
        let piece_chunk = |piece: &str| chunk(json!([kind.choice(piece, None, true, false)]), None);
        let result = follow(stops, rx, Some((&etx, &piece_chunk))).await;
        // The session's receiver is gone here: a session cut by a stop string ends now.
        match result {
            Ok(Some(o)) => {
                let last = chunk(
                    json!([kind.choice("", Some(o.finish_reason), true, false)]),
                    None,
                );
                let _ = etx.send(Ok(last)).await;
                if include_usage {
                    let u = usage(&o);
                    let _ = etx.send(Ok(chunk(json!([]), Some(u)))).await;
                }
            }
            Ok(None) => return,
            Err(e) => {
                let _ = etx
                    .send(Ok(SseEvent::default().data(e.body().to_string())))
                    .await;
            }
        }
        let _ = etx.send(Ok(SseEvent::default().data("[DONE]"))).await;
    });
    Sse::new(ReceiverStream::new(erx))
        .keep_alive(KeepAlive::default())
        .into_response()
}
