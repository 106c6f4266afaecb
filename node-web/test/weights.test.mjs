// The browser node's refusal of block-type shards (manifest version 2): a shard listing a
// q8_0/q4_0/q4_1 tensor is refused before download with a message naming the tensor and its
// type; an all-f16 shard passes. Run: node --test node-web/test/weights.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkTensorTypes } from '../engine/weights.js';

const shard = (types) => ({
  file: 'shard-00-of-02.safetensors',
  tensors: types.map((dtype, i) => ({ name: `t${i}`, shape: [64, 64], dtype })),
});

test('an all-f16 shard passes', () => {
  checkTensorTypes(shard(['f16', 'f16']));
});

for (const ty of ['q8_0', 'q4_0', 'q4_1', 'f32']) {
  test(`a ${ty} tensor is refused by name and type`, () => {
    assert.throws(() => checkTensorTypes(shard(['f16', ty])), (e) => {
      assert.match(e.message, new RegExp(`shard-00-of-02\\.safetensors: tensor t1 is stored as ${ty}`));
      assert.match(e.message, /--weights f16/);
      return true;
    });
  });
}
