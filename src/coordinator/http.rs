//! The coordinator's HTTP face (axum on tokio): node WebSocket endpoint with join-token check,
//! shard files with range support, node-web/ and shaders/, `/api/status`, `/api/generate`
//! (NDJSON stream), `/api/shards/{index}/move` and `/unpin`, the prompt page at `/` (assets/web/) and the
//! OpenAI-compatible API under `/v1` (see [`super::openai`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use super::Coordinator;
use super::session::{GenerateEvent, GenerateRequest};
use crate::protocol::Limits;

/// Largest request body accepted by the API.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Where the static trees served to browsers live.
#[derive(Debug, Clone)]
pub struct StaticDirs {
    pub node_web: PathBuf,
    pub shaders: PathBuf,
    /// The prompt page (index.html, app.js, style.css).
    pub web: PathBuf,
}

impl Default for StaticDirs {
    /// The trees of this source checkout.
    fn default() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        StaticDirs {
            node_web: root.join("node-web"),
            shaders: root.join("shaders"),
            web: root.join("assets").join("web"),
        }
    }
}

/// The coordinator's router.
pub fn router(coord: Coordinator, dirs: StaticDirs) -> Router {
    let key = coord
        .config()
        .api_key
        .clone()
        .map(std::sync::Arc::<str>::from);
    // Calls that run generations or move shards need the API key when one is set.
    let guarded = Router::new()
        .route("/api/generate", post(generate))
        .route("/api/shards/{index}/move", post(move_shard))
        .route("/api/shards/{index}/unpin", post(unpin_shard))
        .route_layer(axum::middleware::from_fn_with_state(
            key,
            super::openai::require_key,
        ));
    Router::new()
        .route("/ws", get(node_socket))
        .route("/api/status", get(status))
        .merge(guarded)
        .route("/shards/{file}", get(shard_file))
        .route_service("/", ServeFile::new(dirs.web.join("index.html")))
        .nest_service("/web", ServeDir::new(dirs.web))
        .nest_service("/node", ServeDir::new(dirs.node_web))
        .nest_service("/shaders", ServeDir::new(dirs.shaders))
        .with_state(coord.clone())
        .merge(super::openai::routes(coord))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
}

#[derive(Deserialize)]
struct JoinQuery {
    token: Option<String>,
}

async fn node_socket(
    State(coord): State<Coordinator>,
    Query(q): Query<JoinQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let ok = q
        .token
        .as_deref()
        .is_some_and(|t| constant_time_eq(t.as_bytes(), coord.config().token.as_bytes()));
    if !ok {
        return (StatusCode::UNAUTHORIZED, "wrong or missing join token").into_response();
    }
    let limits = Limits::default();
    ws.max_message_size(limits.max_frame_bytes as usize)
        .max_frame_size(limits.max_frame_bytes as usize)
        .on_upgrade(move |socket| super::link::serve_node(coord, socket))
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn status(State(coord): State<Coordinator>) -> Json<serde_json::Value> {
    Json(status_json(&coord))
}

/// The `/api/status` document: the core's nodes, shards and sessions, and the model.
pub fn status_json(coord: &Coordinator) -> serde_json::Value {
    let m = coord.manifest();
    let mut s = coord.status();
    if let Some(shards) = s["shards"].as_array_mut() {
        for (sh, info) in shards.iter_mut().zip(&m.shards) {
            sh["layers"] = json!(info.layers);
        }
    }
    s["model"] = json!({
        "architecture": m.architecture,
        "source": m.source.name,
        "layers": m.config.n_layers,
        "vocab_size": m.config.vocab_size,
        "context_length": m.config.context_length,
        "chat": m.chat_template.is_some(),
    });
    s["api_key_required"] = json!(coord.config().api_key.is_some());
    s
}

async fn generate(State(coord): State<Coordinator>, body: axum::body::Bytes) -> Response {
    let req: GenerateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("bad request: {e}")})),
            )
                .into_response();
        }
    };
    if let Err(e) = req.sampling.validate() {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<GenerateEvent>(64);
    tokio::spawn(async move { coord.generate(req, tx).await });
    let lines = tokio_stream::wrappers::ReceiverStream::new(rx).map(|e| {
        let mut line = serde_json::to_vec(&e).expect("events serialise");
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(line)
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(lines))
        .expect("static headers")
}

#[derive(Deserialize)]
struct MoveBody {
    node: u64,
}

async fn move_shard(
    State(coord): State<Coordinator>,
    Path(index): Path<usize>,
    body: axum::body::Bytes,
) -> Response {
    let req: MoveBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("expected {{\"node\": ID}}: {e}")})),
            )
                .into_response();
        }
    };
    match coord.move_shard(index, req.node) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({"shard": index, "node": req.node})),
        )
            .into_response(),
        Err(e) => (StatusCode::CONFLICT, Json(json!({"error": e}))).into_response(),
    }
}

async fn unpin_shard(State(coord): State<Coordinator>, Path(index): Path<usize>) -> Response {
    match coord.unpin_shard(index) {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"shard": index, "pinned": null})),
        )
            .into_response(),
        Err(e) => (StatusCode::NOT_FOUND, Json(json!({"error": e}))).into_response(),
    }
}

async fn shard_file(
    State(coord): State<Coordinator>,
    Path(file): Path<String>,
    req: Request,
) -> Response {
    let Some(info) = coord.manifest().shards.iter().find(|s| s.file == file) else {
        return (StatusCode::NOT_FOUND, "no such shard file").into_response();
    };
    let path = coord.config().model_dir.join(&info.file);
    let sha = info.sha256.clone();
    match ServeFile::new(path).oneshot(req).await {
        Ok(mut resp) => {
            if let Ok(v) = header::HeaderValue::from_str(&sha) {
                resp.headers_mut().insert("x-sha256", v);
            }
            resp.into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Binds `addr` (port 0 picks a free one) and serves until `shutdown` completes; returns the
/// bound address through `bound` as soon as it is known.
pub async fn serve(
    coord: Coordinator,
    dirs: StaticDirs,
    addr: SocketAddr,
    bound: tokio::sync::oneshot::Sender<SocketAddr>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let _ = bound.send(listener.local_addr()?);
    // Steps are small frames in both directions: Nagle's algorithm would hold each one back
    // until the previous is acknowledged (tens of milliseconds per hop).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, router(coord, dirs))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
