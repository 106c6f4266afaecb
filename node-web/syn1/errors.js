// SYN1 decode errors: one `Syn1Error` class whose `code` is the name of the matching Rust
// `ProtocolError` variant (src/protocol/error.rs) and whose message reads the same, so the
// golden corpus (tests/fixtures/syn1/corpus/expected.json) checks both implementations alike.

/** A frame broke a SYN1 rule; `code` names the rule (the Rust variant name). */
export class Syn1Error extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'Syn1Error';
    this.code = code;
  }
}

/** Formats a number the way Rust's `{}` prints an f32 (NaN, inf, -inf, 0.5). */
export function rustFloat(v) {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return 'inf';
  if (v === -Infinity) return '-inf';
  return String(v);
}

/** Two uppercase hex digits, as Rust's `{:02X}`. */
export const hex2 = (v) => v.toString(16).toUpperCase().padStart(2, '0');

/** Throws a Syn1Error. */
export function fail(code, message) {
  throw new Syn1Error(code, message);
}
