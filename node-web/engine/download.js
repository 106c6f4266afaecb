// Downloading one shard file: streamed with progress, verified with SHA-256 (crypto.subtle)
// against the coordinator's `load` message, and kept in the Cache API under its hash, so a
// reload does not download it again (a cached copy is verified again before use). The
// coordinator serves shard files to nodes only: the download presents the join token as a
// bearer token.

const CACHE_NAME = 'synapse-shards-v1';

const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');

export async function sha256Hex(bytes) {
  return hex(await crypto.subtle.digest('SHA-256', bytes));
}

async function openCache() {
  try {
    return globalThis.caches ? await caches.open(CACHE_NAME) : null;
  } catch {
    return null; // private windows and some browsers refuse storage: download every time
  }
}

/**
 * Returns the shard's bytes (Uint8Array). `onProgress(fraction)` reports the download;
 * the result is `{ bytes, fromCache }`. `token` is the join token, sent as
 * `Authorization: Bearer TOKEN`.
 */
export async function fetchShard(url, sha256, size, onProgress, token) {
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error(`bad sha256 in the load message: ${JSON.stringify(sha256).slice(0, 80)}`);
  if (!Number.isSafeInteger(size) || size <= 0) throw new Error(`bad shard size ${size}`);
  const cache = await openCache();
  const key = `/synapse-shard/${sha256}`;
  if (cache) {
    const hit = await cache.match(key);
    if (hit) {
      const bytes = new Uint8Array(await hit.arrayBuffer());
      if (bytes.length === size && (await sha256Hex(bytes)) === sha256) {
        onProgress(1);
        return { bytes, fromCache: true };
      }
      await cache.delete(key);
    }
  }
  const resp = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  if (!resp.ok) throw new Error(`downloading ${url}: HTTP ${resp.status}`);
  const bytes = new Uint8Array(size);
  let got = 0;
  const reader = resp.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (got + value.length > size) throw new Error(`${url} is longer than the ${size} bytes announced`);
    bytes.set(value, got);
    got += value.length;
    onProgress(got / size);
  }
  if (got !== size) throw new Error(`${url}: got ${got} bytes, expected ${size}`);
  const digest = await sha256Hex(bytes);
  if (digest !== sha256) throw new Error(`${url}: sha256 ${digest} does not match ${sha256}`);
  if (cache) {
    try {
      await cache.put(key, new Response(bytes, { headers: { 'content-type': 'application/octet-stream' } }));
    } catch {
      // Out of quota: the shard still runs, it is only downloaded again next time.
    }
  }
  return { bytes, fromCache: false };
}
