// CONTROL payload checks: strict UTF-8 (reporting the first bad byte like Rust's valid_up_to),
// nesting at most CONTROL_MAX_DEPTH (serde_json's recursion limit; JSON.parse has none), valid
// JSON, and a top-level object.
import { CONTROL_MAX_DEPTH } from './constants.js';
import { fail } from './errors.js';

/** Index of the first byte that is not part of valid UTF-8, or -1. */
export function utf8ValidUpTo(b) {
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    let n = 0;
    let min = 0;
    if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) [n, min] = [1, 0x80];
    else if (c >= 0xe0 && c <= 0xef) [n, min] = [2, 0x800];
    else if (c >= 0xf0 && c <= 0xf4) [n, min] = [3, 0x10000];
    else return i;
    let cp = c & (0x3f >> n);
    for (let j = 1; j <= n; j++) {
      const d = b[i + j];
      if (d === undefined || (d & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += n + 1;
  }
  return -1;
}

function maxDepth(text) {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === '\\') i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === '{' || ch === '[') {
      if (++depth > CONTROL_MAX_DEPTH) return i + 1;
    } else if (ch === '}' || ch === ']') depth--;
  }
  return 0;
}

/** Parses a CONTROL payload (bytes) into its JSON object, or throws a Syn1Error. */
export function checkControlText(bytes) {
  const bad = utf8ValidUpTo(bytes);
  if (bad >= 0) fail('InvalidUtf8', `CONTROL payload is not UTF-8 (at byte ${bad})`);
  const text = new TextDecoder().decode(bytes);
  const deep = maxDepth(text);
  if (deep) fail('InvalidJson', `CONTROL payload is not valid JSON: recursion limit exceeded at column ${deep}`);
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    fail('InvalidJson', `CONTROL payload is not valid JSON: ${e.message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
    fail('JsonNotObject', `CONTROL payload must be a JSON object, got ${kind}`);
  }
  return value;
}
