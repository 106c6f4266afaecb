//! The OpenAI-compatible HTTP API (`/v1/models`, `/v1/completions`, `/v1/chat/completions`)
//! over the coordinator's sessions, with OpenAI's request, response, streaming (SSE) and error
//! shapes. Invariants: every request is validated before it takes a generation slot; at most
//! `max_sessions` generations run and `max_queued` wait (the rest get 429 + Retry-After); when
//! `api_key` is set every `/v1` call (and the coordinator's mutating `/api` calls) must carry it
//! as a bearer token.

pub mod error;
pub mod queue;
pub mod run;
pub mod stop;
pub mod template;
pub mod types;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

use self::error::ApiError;
use self::queue::Admission;
use self::run::{Job, Kind};
use self::template::ChatTemplate;
use self::types::{ChatRequest, CompletionRequest};
use super::Coordinator;
use super::http::MAX_REQUEST_BYTES;

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub coord: Coordinator,
    pub admission: Admission,
    /// The model's chat template, or why there is none usable.
    pub template: Arc<Result<ChatTemplate, String>>,
    /// The id `/v1/models` lists and responses carry (the model directory's name).
    pub model_id: String,
    pub created: u64,
}

impl ApiState {
    /// Builds the state from the coordinator's model and settings.
    pub fn new(coord: Coordinator) -> Self {
        let m = coord.manifest();
        let tok = coord.tokenizer();
        let token = |id: Option<u32>| {
            id.and_then(|i| tok.inner().id_to_token(i))
                .unwrap_or_default()
        };
        let template = match &m.chat_template {
            None => {
                Err("this model has no chat template (a base model): use /v1/completions".into())
            }
            Some(src) => ChatTemplate::new(
                src,
                &token(m.config.bos_token_id),
                &token(m.config.eos_token_ids.first().copied()),
            )
            .map_err(|e| e.to_string()),
        };
        if let Err(e) = &template {
            tracing::info!("chat completions unavailable: {e}");
        }
        let cfg = coord.config();
        let model_id = cfg
            .model_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| m.source.name.clone());
        ApiState {
            admission: Admission::new(cfg.max_sessions, cfg.max_queued),
            template: Arc::new(template),
            model_id,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            coord,
        }
    }
}

/// Why no generation can run now, or `None` when the pipeline is complete.
pub fn pipeline_problem(coord: &Coordinator) -> Option<String> {
    coord.pipeline_problem()
}

/// The `/v1` routes over `state` (whose admission queue `/api/generate` shares), behind the
/// API key when one is configured.
pub fn routes(state: ApiState) -> Router {
    let key = state.coord.config().api_key.clone().map(Arc::<str>::from);
    let v1 = Router::new()
        .route("/models", get(models))
        .route("/completions", post(completions))
        .route("/chat/completions", post(chat))
        .route_layer(middleware::from_fn_with_state(key, require_key))
        .fallback(not_found)
        .with_state(state);
    Router::new().nest("/v1", v1)
}

/// Middleware: refuses a request without `Authorization: Bearer KEY` when a key is set (the
/// scheme in any case, the key exactly; see [`auth`](crate::coordinator::auth)).
pub async fn require_key(
    State(key): State<Option<Arc<str>>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = key
        && !crate::coordinator::auth::bearer_is(req.headers(), &key)
    {
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
}

async fn not_found(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotFound(uri.path().to_string())
}

async fn models(State(s): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": s.model_id,
            "object": "model",
            "created": s.created,
            "owned_by": "synapse",
        }],
    }))
}

/// Parses a JSON body, mapping every failure to OpenAI's error shape.
pub(crate) fn parse<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge {
                limit: MAX_REQUEST_BYTES,
            }
        } else {
            ApiError::invalid(format!("could not read the request body: {e}"), None)
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            format!("We could not parse the JSON body of your request: {e}"),
            None,
        )
    })
}

async fn completions(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(body)?;
    let (prompt, params) = req.validate()?;
    run::run(
        s,
        Job {
            kind: Kind::Completion,
            prompt,
            params,
        },
    )
    .await
}

async fn chat(
    State(s): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(body)?;
    let (messages, params) = req.validate()?;
    let template = match s.template.as_ref() {
        Ok(t) => t,
        Err(why) => return Err(ApiError::invalid(why.clone(), Some("messages"))),
    };
    let prompt = template
        .render(&messages, true)
        .map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))?;
    run::run(
        s,
        Job {
            kind: Kind::Chat,
            prompt,
            params,
        },
    )
    .await
}
