//! Who may do what over HTTP: the bearer credential of a request (RFC 7235: the scheme is
//! case-insensitive, the token is taken exactly as sent, so `Bearer KEY ` with a trailing space
//! is not `KEY`), compared in constant time, and the two secrets it may match: the API key
//! (`--api-key`, for the API's callers) and the join token (for nodes: the WebSocket and the
//! shard files).

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

/// The token of an `Authorization: Bearer TOKEN` header, exactly as sent, or `None` when the
/// header is missing, not text, or of another scheme.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// Whether `given` equals `secret`, in time independent of where they differ and of their
/// lengths (both are hashed first, so an attacker timing replies learns neither).
pub fn secret_eq(given: &str, secret: &str) -> bool {
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(secret.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Whether the request's bearer token is `secret`.
pub fn bearer_is(headers: &HeaderMap, secret: &str) -> bool {
    bearer(headers).is_some_and(|t| secret_eq(t, secret))
}

/// Whether the request may see everything the coordinator shows: no API key is set, or it
/// carries the key or the join token.
pub fn trusted(headers: &HeaderMap, api_key: Option<&str>, join_token: &str) -> bool {
    match api_key {
        None => true,
        Some(key) => bearer_is(headers, key) || bearer_is(headers, join_token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_exact() {
        assert_eq!(bearer(&with("Bearer k1")), Some("k1"));
        assert_eq!(bearer(&with("bearer k1")), Some("k1"));
        assert_eq!(bearer(&with("BEARER k1")), Some("k1"));
        assert_eq!(bearer(&with("Bearer k1 ")), Some("k1 "));
        assert_eq!(bearer(&with("Basic k1")), None);
        assert_eq!(bearer(&with("Bearerk1")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
        assert!(bearer_is(&with("bearer k1"), "k1"));
        assert!(!bearer_is(&with("Bearer k1 "), "k1"));
        assert!(!bearer_is(&with("Bearer  k1"), "k1"));
        assert!(!bearer_is(&with("Bearer k"), "k1"));
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(secret_eq("abc", "abc"));
        assert!(!secret_eq("abc", "abd"));
        assert!(!secret_eq("abc", "abcd"));
        assert!(!secret_eq("", "a"));
        assert!(secret_eq("", ""));
    }

    #[test]
    fn trust_needs_the_key_or_the_join_token_when_a_key_is_set() {
        assert!(trusted(&HeaderMap::new(), None, "join"));
        assert!(!trusted(&HeaderMap::new(), Some("key"), "join"));
        assert!(trusted(&with("Bearer key"), Some("key"), "join"));
        assert!(trusted(&with("Bearer join"), Some("key"), "join"));
        assert!(!trusted(&with("Bearer other"), Some("key"), "join"));
    }
}
