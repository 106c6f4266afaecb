//! Shard downloads: stream a shard file from the coordinator over HTTP into the node's cache,
//! hashing as it goes, and keep it only when its sha256 matches the manifest. A file already in
//! the cache with the right hash is not downloaded again. The coordinator serves shard files to
//! nodes only: downloads present the join token as a bearer token ([`client`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// The join token of a node URL (`ws://HOST/ws?token=T`, percent-decoded), if it has one.
pub fn join_token(ws_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(ws_url).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// The HTTP client of a node's downloads: every request carries the join token of `ws_url` as
/// `Authorization: Bearer TOKEN`, which the coordinator's `/shards/` requires.
pub fn client(ws_url: &str) -> reqwest::Client {
    use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
    let mut headers = HeaderMap::new();
    if let Some(mut v) =
        join_token(ws_url).and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
    {
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Makes `dir/file` hold the shard with `sha256` and `bytes`, downloading it from `url` if
/// needed; `progress` gets the fraction done now and then.
pub async fn fetch_shard(
    client: &reqwest::Client,
    url: &str,
    dir: &Path,
    file: &str,
    sha256: &str,
    bytes: u64,
    mut progress: impl FnMut(f32),
) -> Result<PathBuf> {
    let path = dir.join(file);
    if tokio::fs::metadata(&path)
        .await
        .map(|m| m.len() == bytes)
        .unwrap_or(false)
    {
        let p = path.clone();
        let have = tokio::task::spawn_blocking(move || crate::fetch::sha256_file(&p)).await??;
        if have == sha256 {
            return Ok(path);
        }
    }
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url}: HTTP {}", resp.status());
    }
    let tmp = dir.join(format!(".{file}.part"));
    let mut out = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("creating {}", tmp.display()))?;
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    let mut last_report = 0.0f32;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("reading {url}"))?;
        got += chunk.len() as u64;
        if got > bytes {
            bail!("{url} is longer than the manifest's {bytes} bytes");
        }
        hasher.update(&chunk);
        out.write_all(&chunk).await?;
        let f = got as f32 / bytes.max(1) as f32;
        if f - last_report >= 0.05 {
            last_report = f;
            progress(f);
        }
    }
    out.flush().await?;
    drop(out);
    let hex = splitter::write::hex(&hasher.finalize());
    if got != bytes || hex != sha256 {
        let _ = tokio::fs::remove_file(&tmp).await;
        bail!(
            "{url}: got {got} bytes with sha256 {hex}, expected {bytes} bytes with sha256 {sha256}"
        );
    }
    tokio::fs::rename(&tmp, &path).await?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_token_comes_from_the_node_url() {
        assert_eq!(
            join_token("ws://127.0.0.1:8080/ws?token=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            join_token("wss://h/ws?x=1&token=a%20b%2Bc").as_deref(),
            Some("a b+c")
        );
        assert_eq!(join_token("ws://h/ws"), None);
        assert_eq!(join_token("not a url"), None);
    }
}
