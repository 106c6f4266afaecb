//! `POST /api/generate`, the coordinator's own generation call (NDJSON, one
//! [`GenerateEvent`] a line). It is admitted like the OpenAI-compatible API (the same queue:
//! at most `max_sessions` run, `max_queued` wait, the rest get 429 with Retry-After) and
//! reports what goes wrong before the stream starts with HTTP status codes and OpenAI's error
//! shape: 400 for a bad request or prompt, 429 when busy, 503 when no complete pipeline. The
//! status is sent once the session has started (its `start` event), so a session refused at
//! its start is a status too; a failure after that can only be the stream's last line.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::openai::ApiState;
use super::openai::error::ApiError;
use super::session::{GenerateEvent, GenerateRequest, SessionError};

/// The handler.
pub async fn generate(State(s): State<ApiState>, body: Result<Bytes, BytesRejection>) -> Response {
    match start(s, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The API's error for a session that could not start.
fn api_error(e: SessionError) -> ApiError {
    match e {
        SessionError::Invalid(m) => ApiError::invalid(m, Some("prompt")),
        SessionError::Busy { running } => ApiError::QueueFull {
            running,
            waiting: 0,
        },
        SessionError::Unavailable { detail, .. } => ApiError::NoPipeline(detail),
        SessionError::Failed(m) => ApiError::Generation(m),
    }
}

async fn start(s: ApiState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let req: GenerateRequest = super::openai::parse(body)?;
    req.sampling
        .validate()
        .map_err(|e| ApiError::invalid(e, None))?;
    let coord = s.coord.clone();
    let ids = coord
        .tokenizer()
        .encode(&req.prompt)
        .map_err(|e| ApiError::invalid(e.to_string(), Some("prompt")))?;
    let ctx = coord.manifest().config.context_length;
    if ids.is_empty() {
        return Err(ApiError::invalid(
            "prompt: the prompt is empty",
            Some("prompt"),
        ));
    }
    if ids.len() >= ctx {
        return Err(ApiError::ContextLength {
            context: ctx,
            total: ids.len() + 1,
            prompt: ids.len(),
            completion: 1,
            param: "prompt",
        });
    }
    if let Some(why) = coord.pipeline_problem() {
        return Err(ApiError::NoPipeline(why));
    }
    let permit = s.admission.enter().await?;
    let (tx, mut rx) = mpsc::channel::<GenerateEvent>(64);
    let (err_tx, err_rx) = oneshot::channel::<SessionError>();
    tokio::spawn(async move {
        let _slot = permit;
        if let Err(e) = coord.run_generation(req, &tx).await {
            let _ = err_tx.send(e.clone());
            let _ = tx.send(e.event()).await;
        }
    });
    let first = match rx.recv().await {
        Some(e @ GenerateEvent::Start { .. }) => e,
        // The session failed before it started: its error is a status.
        _ => {
            return Err(match err_rx.await {
                Ok(e) => api_error(e),
                Err(_) => ApiError::Generation("the session ended without a result".into()),
            });
        }
    };
    let events = futures_util::stream::once(async move { first })
        .chain(tokio_stream::wrappers::ReceiverStream::new(rx));
    let lines = events.map(|e| {
        let mut line = serde_json::to_vec(&e).expect("events serialise");
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(line)
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(lines))
        .expect("static headers"))
}
