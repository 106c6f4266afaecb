//! The API's errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the
//! status code OpenAI's server uses for the same fault, so clients' retry and error handling
//! (the `openai` package raises `BadRequestError`, `AuthenticationError`, `RateLimitError`...)
//! work unchanged.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Seconds a client is told to wait when the queue is full.
pub const RETRY_AFTER_SECS: u64 = 2;

/// Everything the OpenAI-compatible API can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request that is malformed or asks for something unsupported (400).
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
        code: Option<&'static str>,
    },
    /// The prompt (plus `max_tokens`) does not fit the model's context (400).
    #[error(
        "This model's maximum context length is {context} tokens. However, you requested {total} tokens ({prompt} in the prompt, {completion} for the completion). Please reduce the prompt or max_tokens."
    )]
    ContextLength {
        context: usize,
        total: usize,
        prompt: usize,
        completion: usize,
        /// `prompt` or `messages`.
        param: &'static str,
    },
    /// Missing or wrong bearer token (401).
    #[error(
        "Incorrect or missing API key. Send `Authorization: Bearer KEY` with the key given to `synapse serve --api-key`."
    )]
    Unauthorized,
    /// A state-changing request whose body is not declared JSON (415): what a cross-site form or
    /// `text/plain` fetch sends, which browsers send without asking the server first.
    #[error(
        "This request changes state and must send `Content-Type: application/json` (got: {got})."
    )]
    UnsupportedMediaType { got: String },
    /// A state-changing request from a page of another origin that `--cors` does not allow (403).
    #[error(
        "Requests from pages of origin `{origin}` are refused: the `Origin` header is not this coordinator's own. Start the coordinator with `--cors {origin}` to allow it."
    )]
    ForeignOrigin { origin: String },
    /// Unknown path under /v1 (404).
    #[error(
        "Unknown request URL: {0}. Supported: GET /v1/models, POST /v1/completions, POST /v1/chat/completions."
    )]
    NotFound(String),
    /// The body is larger than the server accepts (413).
    #[error("The request body is larger than {limit} bytes.")]
    TooLarge { limit: usize },
    /// All generation slots are busy and the waiting queue is full (429 with Retry-After).
    #[error(
        "The server is busy: {running} generations are running and {waiting} requests are waiting. Retry after {RETRY_AFTER_SECS} s."
    )]
    QueueFull { running: usize, waiting: usize },
    /// No complete pipeline of nodes holds the model (503).
    #[error("No complete pipeline: {0}. Start more nodes (or wait for them to finish loading).")]
    NoPipeline(String),
    /// The generation failed inside the cluster (500).
    #[error("The generation failed: {0}")]
    Generation(String),
}

impl ApiError {
    /// A 400 naming the offending parameter.
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param,
            code: None,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } | ApiError::ContextLength { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::ForeignOrigin { .. } => StatusCode::FORBIDDEN,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NoPipeline(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Generation(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error` object (also sent as an SSE event when a stream fails midway).
    pub fn body(&self) -> serde_json::Value {
        let (kind, param, code) = match self {
            ApiError::InvalidRequest { param, code, .. } => {
                ("invalid_request_error", *param, *code)
            }
            ApiError::ContextLength { param, .. } => (
                "invalid_request_error",
                Some(*param),
                Some("context_length_exceeded"),
            ),
            ApiError::Unauthorized => ("invalid_request_error", None, Some("invalid_api_key")),
            ApiError::NotFound(_) => ("invalid_request_error", None, Some("unknown_url")),
            ApiError::UnsupportedMediaType { .. } => (
                "invalid_request_error",
                None,
                Some("unsupported_media_type"),
            ),
            ApiError::ForeignOrigin { .. } => {
                ("invalid_request_error", None, Some("origin_not_allowed"))
            }
            ApiError::TooLarge { .. } => ("invalid_request_error", None, Some("request_too_large")),
            ApiError::QueueFull { .. } => {
                ("rate_limit_exceeded", None, Some("rate_limit_exceeded"))
            }
            ApiError::NoPipeline(_) => ("server_error", None, Some("no_complete_pipeline")),
            ApiError::Generation(_) => ("server_error", None, None),
        };
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), Json(self.body())).into_response();
        if matches!(self, ApiError::QueueFull { .. }) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if matches!(self, ApiError::Unauthorized) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
