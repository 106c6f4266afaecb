//! The coordinator's HTTP face (axum on tokio): node WebSocket endpoint with join-token check,
//! shard files with range support (nodes only: they need the join token), node-web/ and
//! shaders/, `/api/status` (restricted for strangers when an API key is set), `/api/generate`
//! (NDJSON stream, see `generate_api.rs`), `/api/shards/{index}/move` and `/unpin`, the prompt
//! page at `/` (assets/web/) and the OpenAI-compatible API under `/v1` (see [`super::openai`]). Every response passes the
//! browser policy of [`super::guard`] (CSRF, CORS, security headers).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use super::Coordinator;
use super::auth;
use super::guard::{WebPolicy, guard};
use super::openai::ApiState;
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

/// The coordinator's router, inside the browser policy of [`super::guard`].
pub fn router(coord: Coordinator, dirs: StaticDirs) -> Router {
    let key = coord
        .config()
        .api_key
        .clone()
        .map(std::sync::Arc::<str>::from);
    let policy = std::sync::Arc::new(WebPolicy {
        cors: coord.config().cors_origins.clone(),
    });
    // One admission queue for `/api/generate` and `/v1`.
    let api = ApiState::new(coord.clone());
    // Calls that run generations or move shards need the API key when one is set.
    let guarded = Router::new()
        .route("/api/generate", post(super::generate_api::generate))
        .with_state(api.clone())
        .merge(
            Router::new()
                .route("/api/shards/{index}/move", post(move_shard))
                .route("/api/shards/{index}/unpin", post(unpin_shard))
                .with_state(coord.clone()),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            key,
            super::openai::require_key,
        ));
    Router::new()
        .route("/ws", get(node_socket))
        .route("/api/status", get(status))
        .route("/shards/{file}", get(shard_file))
        .route_service("/", ServeFile::new(dirs.web.join("index.html")))
        .nest_service("/web", ServeDir::new(dirs.web))
        .nest_service("/node", ServeDir::new(dirs.node_web))
        .nest_service("/shaders", ServeDir::new(dirs.shaders))
        .with_state(coord)
        .merge(guarded)
        .merge(super::openai::routes(api))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(axum::middleware::from_fn_with_state(policy, guard))
}

#[derive(Deserialize)]
struct JoinQuery {
    token: Option<String>,
}

async fn node_socket(
    State(coord): State<Coordinator>,
    Query(q): Query<JoinQuery>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<SocketAddr>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let address = peer.map(|axum::Extension(axum::extract::ConnectInfo(a))| a.ip());
    let ok = q
        .token
        .as_deref()
        .is_some_and(|t| auth::secret_eq(t, &coord.config().token));
    if !ok {
        return (StatusCode::UNAUTHORIZED, "wrong or missing join token").into_response();
    }
    let limits = Limits::default();
    ws.max_message_size(limits.max_frame_bytes as usize)
        .max_frame_size(limits.max_frame_bytes as usize)
        .on_upgrade(move |socket| super::link::serve_node(coord, socket, address))
}

/// `/api/status`: everything for a trusted caller (no API key set, or the key or the join
/// token presented), the model and readiness only for a stranger.
async fn status(State(coord): State<Coordinator>, headers: HeaderMap) -> Json<serde_json::Value> {
    let cfg = coord.config();
    if auth::trusted(&headers, cfg.api_key.as_deref(), &cfg.token) {
        Json(status_json(&coord))
    } else {
        Json(public_status_json(&coord))
    }
}

/// What `/api/status` shows a caller without the API key when one is set: the model, whether
/// the pipeline is complete and each shard's state; no nodes, adapters, sessions or pins.
pub fn public_status_json(coord: &Coordinator) -> serde_json::Value {
    let full = status_json(coord);
    let shards: Vec<serde_json::Value> = full["shards"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| json!({"index": s["index"], "state": s["state"]}))
                .collect()
        })
        .unwrap_or_default();
    let m = &full["model"];
    // The source may be a path on the operator's disk: its last part names the model.
    let source = m["source"].as_str().unwrap_or_default();
    let name = source
        .rsplit(['/', '\\'])
        .find(|p| !p.is_empty())
        .unwrap_or(source);
    json!({
        "model": {
            "architecture": m["architecture"],
            "source": name,
            "layers": m["layers"],
            "vocab_size": m["vocab_size"],
            "context_length": m["context_length"],
            "chat": m["chat"],
        },
        "complete": full["complete"],
        "shards": shards,
        "api_key_required": true,
        "restricted": true,
    })
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
    let spec = coord.config().speculate;
    s["speculation"]["enabled"] = json!(spec.enabled);
    s["speculation"]["max_draft"] = json!(spec.max_draft);
    s
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
    if !auth::bearer_is(req.headers(), &coord.config().token) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "shard files are for nodes: send the join token as `Authorization: Bearer TOKEN`",
        )
            .into_response();
    }
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
    // The peer address reaches the node socket (a caught node's ban is on its address).
    let app = router(coord, dirs).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
