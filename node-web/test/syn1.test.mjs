// SYN1 in JavaScript against the Rust side's golden bytes (tests/fixtures/syn1/): every golden
// frame decodes to the values its manifest lists and re-encodes to the same bytes; every corpus
// frame gives the Rust error code (and message); no prefix of any frame throws anything but a
// Syn1Error. Run: node --test node-web/test/syn1.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as syn1 from '../syn1/index.js';

const dir = fileURLToPath(new URL('../../tests/fixtures/syn1/', import.meta.url));
const read = (f) => new Uint8Array(readFileSync(dir + f));
const manifest = JSON.parse(readFileSync(dir + 'manifest.json', 'utf8'));
const expected = JSON.parse(readFileSync(dir + 'corpus/expected.json', 'utf8'));
const byName = Object.fromEntries(manifest.frames.map((f) => [f.file, f]));

const close = (a, b, what) => {
  assert.equal(a.length, b.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) assert.ok(Object.is(Math.fround(a[i]), Math.fround(b[i])), `${what}[${i}]: ${a[i]} != ${b[i]}`);
};

test('every golden frame decodes to its manifest entry', () => {
  assert.ok(manifest.frames.length >= 11, 'manifest lists the golden frames');
  for (const m of manifest.frames) {
    const f = syn1.decode(read(m.file));
    const h = m.header;
    assert.deepEqual(
      [f.type, f.flags, f.seqPos, f.requestId, f.dim0, f.dim1, f.payload.length],
      [h.type, h.flags, h.seq_pos, h.request_id, h.dim0, h.dim1, h.payload_size],
      m.file,
    );
    assert.equal(f.typeName, m.message_type, m.file);
    const d = m.decoded;
    if (f.activation) {
      const a = f.activation;
      assert.equal(a.encoding, d.encoding, m.file);
      assert.equal(a.compressed, m.flags.compressed, m.file);
      close(a.values, d.values, `${m.file} values`);
      if (d.q) close(a.q, d.q, `${m.file} q`);
      if (d.scales) close(a.scales, d.scales, `${m.file} scales`);
      if (d.scale !== undefined) assert.equal(a.scale, d.scale);
      if (d.steps) close(a.steps, d.steps, `${m.file} steps`);
      if (d.ks) close(a.ks, d.ks, `${m.file} ks`);
    }
    if (d.ids) assert.deepEqual(Array.from(f.ids), d.ids, m.file);
    if (d.entries) assert.deepEqual(f.entries, d.entries, m.file);
    if (d.json) assert.deepEqual(f.json, d.json, m.file);
  }
});

test('the delta frame reconstructs against its reference frame', () => {
  const m = byName['activation_int8_delta.bin'];
  const dec = new syn1.DeltaDecoder();
  assert.throws(() => dec.apply(syn1.decode(read(m.file))), { code: 'DeltaWithoutReference' });
  close(dec.apply(syn1.decode(read(m.decoded.reference_file))), m.decoded.reference, 'reference');
  close(dec.apply(syn1.decode(read(m.file))), m.decoded.reconstruction, 'reconstruction');
});

test('the encoder writes the golden bytes from the golden values', () => {
  const same = (file, bytes) => assert.deepEqual(Array.from(bytes), Array.from(read(file)), file);
  const opts = (m) => ({ seqPos: m.header.seq_pos, requestId: m.header.request_id });
  for (const [file, enc, compress] of [
    ['activation_f32.bin', 'f32', false],
    ['activation_int8_row.bin', 'int8', false],
    ['activation_int8_rows.bin', 'int8', false],
    ['activation_int4.bin', 'int4', false],
    ['activation_int8_compressed.bin', 'int8', true],
  ]) {
    const m = byName[file];
    const data = Float32Array.from(m.decoded.values);
    same(file, syn1.encodeActivation(data, m.shape[0], m.shape[1], enc, { ...opts(m), compress }));
  }
  const rice = byName['activation_rice.bin'];
  const rv = { q: Int32Array.from(rice.decoded.q), steps: Float32Array.from(rice.decoded.steps), ks: Uint8Array.from(rice.decoded.ks) };
  const payload = syn1.writeRice(rv, rice.shape[1]);
  same('activation_rice.bin', syn1.writeFrame({ type: syn1.TYPE_ACTIVATION, flags: syn1.QUANT_RICE, ...opts(rice), dim0: 2, dim1: 8 }, payload));
  same('tokens.bin', syn1.encodeIds(byName['tokens.bin'].decoded.ids, opts(byName['tokens.bin'])));
  same('output.bin', syn1.encodeIds(byName['output.bin'].decoded.ids, { ...opts(byName['output.bin']), type: syn1.TYPE_OUTPUT }));
  same('top_logits.bin', syn1.encodeTopLogits(byName['top_logits.bin'].decoded.entries, opts(byName['top_logits.bin'])));
  const rows = byName['top_logits_rows.bin'];
  same('top_logits_rows.bin', syn1.encodeTopLogits(rows.decoded.entries, { ...opts(rows), rows: rows.decoded.rows }));
  same('control.bin', syn1.encodeControl(byName['control.bin'].decoded.json, opts(byName['control.bin'])));
  // The delta encoder, fed the reference then the reconstruction, sends the golden delta.
  const d = byName['activation_int8_delta.bin'];
  const de = new syn1.DeltaEncoder(32);
  same('activation_int8_row.bin', de.encode(Float32Array.from(d.decoded.reference), 1, 4, { seqPos: 6, requestId: 7 }));
  same('activation_int8_delta.bin', de.encode(Float32Array.from(d.decoded.reconstruction), 1, 4, opts(d)));
});

test('every corpus frame gives the expected error, with the Rust message', () => {
  assert.ok(expected.cases.length > 60, 'the corpus is there');
  const limits = { maxFrameBytes: expected.limits.max_frame_bytes, maxRows: expected.limits.max_rows, maxCols: expected.limits.max_cols };
  for (const c of expected.cases) {
    const bytes = read('corpus/' + c.file);
    if (c.error === null) {
      syn1.decode(bytes, limits);
      continue;
    }
    let err;
    try {
      syn1.decode(bytes, limits);
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof syn1.Syn1Error, `${c.file}: expected ${c.error}, got ${err}`);
    assert.equal(err.code, c.error, `${c.file}: ${err.message}`);
    // JSON parser wording differs between serde_json and V8; everything else matches exactly.
    if (c.error !== 'InvalidJson') assert.equal(err.message, c.message, c.file);
  }
});

test('no prefix or bit flip of any frame throws anything but a Syn1Error', () => {
  const files = [...manifest.frames.map((m) => m.file), ...readdirSync(dir + 'corpus').filter((f) => f.endsWith('.bin')).map((f) => 'corpus/' + f)];
  let checked = 0;
  for (const file of files) {
    const bytes = read(file);
    const variants = [];
    for (let n = 0; n <= Math.min(bytes.length, 200); n++) variants.push(bytes.slice(0, n));
    for (let i = 0; i < Math.min(bytes.length, 64) * 8; i += 3) {
      const b = bytes.slice();
      b[i >> 3] ^= 1 << (i & 7);
      variants.push(b);
    }
    for (const v of variants) {
      try {
        syn1.decode(v);
      } catch (e) {
        assert.ok(e instanceof syn1.Syn1Error, `${file} (${v.length} bytes): ${e}`);
      }
      checked++;
    }
  }
  assert.ok(checked > 1000);
});

test('encodings round trip within their step, and RICE stays within half a step', () => {
  const cols = 40;
  const data = Float32Array.from({ length: 3 * cols }, (_, i) => Math.sin(i * 0.37) * 3 + (i === 5 ? 600 : 0));
  for (const [enc, tol] of [['f32', 0], ['int8', 603 / 254], ['int4', 603 / 14]]) {
    for (const compress of [false, true]) {
      const f = syn1.decode(syn1.encodeActivation(data, 3, cols, enc, { compress }));
      const err = Math.max(...data.map((x, i) => Math.abs(x - f.activation.values[i])));
      assert.ok(err <= tol + 1e-6, `${enc}: ${err}`);
    }
  }
  const f = syn1.decode(syn1.encodeActivation(data, 3, cols, 'rice'));
  for (let i = 0; i < data.length; i++) {
    const step = f.activation.steps[Math.floor(i / cols)];
    assert.ok(Math.abs(data[i] - f.activation.values[i]) <= step / 2 + 1e-3, `rice ${i}`);
  }
  assert.throws(() => syn1.encodeActivation(Float32Array.of(NaN), 1, 1, 'int8'), { code: 'NonFiniteValue' });
});

test('a delta stream tracks the receiver and does not drift', () => {
  const enc = new syn1.DeltaEncoder(0);
  const dec = new syn1.DeltaDecoder();
  const x = new Float32Array(64);
  let worst = 0;
  let rand = 1;
  for (let t = 0; t < 300; t++) {
    for (let i = 0; i < 64; i++) {
      rand = (rand * 1103515245 + 12345) % 2147483648;
      x[i] += (rand / 2147483648 - 0.5) * 0.04;
    }
    const frame = syn1.decode(enc.encode(x, 1, 64));
    assert.equal(frame.activation.encoding, t === 0 ? 'int8' : 'int8-delta');
    const r = dec.apply(frame);
    for (let i = 0; i < 64; i++) worst = Math.max(worst, Math.abs(r[i] - x[i]));
  }
  assert.ok(worst < 1e-3, `tracking error ${worst}`);
});
