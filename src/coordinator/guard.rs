//! The browser-facing policy of every HTTP response, one middleware around the whole router:
//!
//! - Cross-site request forgery: a request that changes state (any method but GET, HEAD and
//!   OPTIONS) must say `Content-Type: application/json` (415 otherwise; a page on another site
//!   can only send such a request after a CORS preflight) and, when it carries an `Origin`, that
//!   origin must be the coordinator's own (the `Host` the request was sent to) or one allowed
//!   with `--cors` (403 otherwise).
//! - CORS: none by default. For an origin allowed with `--cors`, preflights (`OPTIONS` with
//!   `Access-Control-Request-Method`) are answered and responses carry
//!   `Access-Control-Allow-Origin` for that origin only.
//! - Every response carries a Content-Security-Policy (scripts, styles and connections from
//!   this origin only, plus WebSockets), `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY`.
//!
//! Limitation: the same-origin test compares `Origin` with `Host`, which a DNS-rebinding page
//! controls both of; the API key is the defence against that.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::openai::error::ApiError;

/// The pages' Content-Security-Policy: everything from this origin, WebSockets to the
/// coordinator (`ws:`/`wss:`, for browsers that do not count them as 'self'), the node page's
/// empty `data:` favicon, and no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// Origins other than the coordinator's own that may call it (`--cors`), normalised by
/// [`parse_origin`].
#[derive(Debug, Clone, Default)]
pub struct WebPolicy {
    pub cors: Vec<String>,
}

/// Checks and normalises an origin given to `--cors`: `http(s)://host[:port]`, no path, lower
/// case (as browsers send it).
pub fn parse_origin(s: &str) -> Result<String, String> {
    let t = s.trim().trim_end_matches('/');
    let rest = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
        .ok_or_else(|| format!("`{s}` is not an origin: it must start with http:// or https://"))?;
    if rest.is_empty()
        || rest.chars().any(|c| {
            matches!(c, '/' | '?' | '#' | '@' | '*') || c.is_whitespace() || c.is_control()
        })
    {
        return Err(format!(
            "`{s}` is not an origin: expected scheme://host[:port] with no path, such as https://example.com"
        ));
    }
    Ok(t.to_ascii_lowercase())
}

impl WebPolicy {
    fn allows(&self, origin: &str) -> bool {
        self.cors.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was sent to.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// Whether the body is declared JSON (`application/json`, parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> Result<(), String> {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return Err("none".into());
    };
    let text = v.to_str().map_err(|_| "not text".to_string())?;
    let mime = text.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(text.chars().take(80).collect())
    }
}

fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware (see the module docs).
pub async fn guard(State(policy): State<Arc<WebPolicy>>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("(not text)").to_string());
    let cors = origin.clone().filter(|o| policy.allows(o));
    let mut resp = if let Some(o) = cors
        .as_deref()
        .filter(|_| req.method() == Method::OPTIONS)
        .filter(|_| {
            req.headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        }) {
        preflight(o)
    } else if let Some(refused) = refuse(&req, origin.as_deref(), cors.is_some()) {
        refused.into_response()
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Some(v) = cors.and_then(|o| HeaderValue::from_str(&o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// Why a state-changing request is refused, if it is.
fn refuse(req: &Request, origin: Option<&str>, allowed: bool) -> Option<ApiError> {
    if !changes_state(req.method()) {
        return None;
    }
    if let Some(o) = origin
        && !allowed
        && !same_origin(o, req.headers())
    {
        return Some(ApiError::ForeignOrigin {
            origin: o.chars().take(120).collect(),
        });
    }
    is_json(req.headers())
        .err()
        .map(|got| ApiError::UnsupportedMediaType { got })
}

/// The answer to an allowed origin's preflight.
fn preflight(origin: &str) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_and_normalised() {
        assert_eq!(
            parse_origin("https://Example.com/").unwrap(),
            "https://example.com"
        );
        assert_eq!(
            parse_origin("http://10.0.0.2:3000").unwrap(),
            "http://10.0.0.2:3000"
        );
        for bad in [
            "example.com",
            "ftp://x",
            "https://",
            "https://x/path",
            "*",
            "https://*",
            "https://a b",
        ] {
            let e = parse_origin(bad).unwrap_err();
            assert!(e.contains(bad), "{e} should name {bad}");
        }
    }

    #[test]
    fn same_origin_compares_with_the_host_header() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin("http://127.0.0.1:8080", &h));
        assert!(same_origin("https://127.0.0.1:8080", &h));
        assert!(!same_origin("http://127.0.0.1:8081", &h));
        assert!(!same_origin("http://evil.example", &h));
        assert!(!same_origin("null", &h));
        assert!(!same_origin("http://127.0.0.1:8080", &HeaderMap::new()));
    }

    #[test]
    fn only_json_bodies_pass() {
        let ct = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            is_json(&h)
        };
        assert!(ct("application/json").is_ok());
        assert!(ct("Application/JSON; charset=utf-8").is_ok());
        assert_eq!(ct("text/plain").unwrap_err(), "text/plain");
        assert!(ct("application/x-www-form-urlencoded").is_err());
        assert!(ct("multipart/form-data; boundary=x").is_err());
        assert!(ct("application/jsonp").is_err());
        assert_eq!(is_json(&HeaderMap::new()).unwrap_err(), "none");
    }
}
