//! RICE (quantization 3): entropy-coded uniform quantization of hidden states, row by row.
//!
//! Each row gets its own step, chosen by the encoder from the row's typical magnitude
//! (`step = ratio * mean |x|` over the row without its `RICE_TRIM` largest values), so rows
//! with an attention sink or a few huge channels cost a few extra bits for those values
//! instead of a coarse step for everything (what a max-based int8/int4 scale does).
//! `q = round(x / step)` (JavaScript's `Math.round`, in f64), reconstructed as `f32(q) * step`.
//! The q values are zigzag-mapped and Rice-coded with the row's best parameter k; a value
//! whose unary part would reach `RICE_ESCAPE_UNARY` ones is escaped to exp-Golomb.
//!
//! Row layout (rows follow one another; a frame is `rows` of them, nothing else):
//! `[f32 step LE][u8 k][bits: cols codes, MSB first, zero-padded to a byte]`.
//! Code of u = zigzag(q) = (q << 1) ^ (q >> 31):
//! - u >> k < 16: (u >> k) one-bits, a zero-bit, then the k low bits of u;
//! - else: 16 one-bits, then exp-Golomb of order k of v = u - (16 << k): with w = v + 2^k and
//!   n = floor(log2 w), (n - k) zero-bits then the n + 1 bits of w.
//!
//! Decoding never panics: it checks the row header (step finite and > 0, k <= 15), never
//! reads past the payload, bounds the exp-Golomb prefix and |q| <= `RICE_MAX_Q`, requires
//! zero padding and no trailing byte, and refuses a shape whose minimum size (one bit a value)
//! exceeds the payload before allocating anything.

use super::error::ProtocolError;
use super::quant::js_round;

/// Bytes before each row's bits: f32 step, u8 k.
pub const RICE_ROW_HEADER_SIZE: usize = 5;
/// Largest Rice parameter.
pub const RICE_MAX_K: u8 = 15;
/// Unary length at which a code switches to the exp-Golomb escape.
pub const RICE_ESCAPE_UNARY: u32 = 16;
/// Largest |q| the decoder accepts (2^20); the encoder's step is never below
/// max|x| / 2^19, so its |q| stays well inside even after f32 rounding.
pub const RICE_MAX_Q: i32 = 1 << 20;
/// Largest values left out of the mean that sets the step (outlier channels, attention sinks).
pub const RICE_TRIM: usize = 8;
/// Default step ratio (step = ratio * trimmed mean |x|): measured in docs/PERF.md ("Wire
/// encodings") at >= 99% top-1 agreement with an f32 wire on SmolLM2.
pub const RICE_DEFAULT_RATIO: f32 = 0.04;
/// Step ratio of the compact setting (`Activation::to_rice_frame`), > 5.3x smaller than f32
/// on SmolLM2 at a measurable quality cost (docs/PERF.md).
pub const RICE_COMPACT_RATIO: f32 = 0.14;

/// One decoded (or quantized) RICE payload: per-row steps and Rice parameters, and q values.
#[derive(Clone, Debug, PartialEq)]
pub struct RiceValues {
    /// q values, row-major, |q| <= `RICE_MAX_Q`.
    pub q: Vec<i32>,
    /// One step per row.
    pub steps: Vec<f32>,
    /// One Rice parameter per row.
    pub ks: Vec<u8>,
}

impl RiceValues {
    /// The reconstruction `f32(q) * step`.
    pub fn dequantize(&self, cols: u32) -> Vec<f32> {
        self.q
            .chunks(cols.max(1) as usize)
            .zip(&self.steps)
            .flat_map(|(row, &s)| row.iter().map(move |&v| v as f32 * s))
            .collect()
    }
}

/// The step for one row at `ratio` (see the module docs); 1 when the row is all zeros.
pub fn step_for(row: &[f32], ratio: f32) -> f32 {
    let mut mags: Vec<f32> = row.iter().map(|v| v.abs()).collect();
    mags.sort_by(|a, b| b.total_cmp(a));
    let max = mags.first().copied().unwrap_or(0.0);
    let trim = if mags.len() > 2 * RICE_TRIM {
        RICE_TRIM
    } else {
        0
    };
    let rest = &mags[trim..];
    let mean = (rest.iter().map(|&v| f64::from(v)).sum::<f64>() / rest.len().max(1) as f64) as f32;
    let step = (ratio * mean).max(max / (RICE_MAX_Q / 2) as f32);
    if step > 0.0 && step.is_finite() {
        step
    } else {
        1.0
    }
}

/// Quantizes `rows` rows of `cols` values at `ratio`. Non-finite input is an error.
pub fn quantize(data: &[f32], cols: usize, ratio: f32) -> Result<RiceValues, ProtocolError> {
    if let Some(index) = data.iter().position(|v| !v.is_finite()) {
        let value = data[index];
        return Err(ProtocolError::NonFiniteValue { index, value });
    }
    let mut v = RiceValues {
        q: Vec::with_capacity(data.len()),
        steps: Vec::new(),
        ks: Vec::new(),
    };
    for row in data.chunks(cols.max(1)) {
        let step = step_for(row, ratio);
        let s = f64::from(step);
        let m = f64::from(RICE_MAX_Q);
        let start = v.q.len();
        v.q.extend(
            row.iter()
                .map(|&x| js_round(f64::from(x) / s).clamp(-m, m) as i32),
        );
        v.ks.push(best_k(&v.q[start..]));
        v.steps.push(step);
    }
    Ok(v)
}

fn zigzag(q: i32) -> u32 {
    ((q << 1) ^ (q >> 31)) as u32
}

fn unzigzag(u: u32) -> i32 {
    (u >> 1) as i32 ^ -((u & 1) as i32)
}

/// Bits of u's code at parameter k.
fn code_bits(u: u32, k: u32) -> u64 {
    if (u >> k) < RICE_ESCAPE_UNARY {
        u64::from((u >> k) + 1 + k)
    } else {
        let w = u64::from(u - (RICE_ESCAPE_UNARY << k)) + (1 << k);
        let n = 63 - u64::from(w.leading_zeros());
        u64::from(RICE_ESCAPE_UNARY) + 2 * n - u64::from(k) + 1
    }
}

/// The k with the fewest bits for a row (the smallest on ties).
pub fn best_k(q: &[i32]) -> u8 {
    (0..=RICE_MAX_K)
        .min_by_key(|&k| {
            let bits: u64 = q.iter().map(|&v| code_bits(zigzag(v), u32::from(k))).sum();
            (bits, k)
        })
        .unwrap_or(0)
}

struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, value: u64, bits: u32) {
        for i in (0..bits).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.out.push(self.acc as u8);
                (self.acc, self.n) = (0, 0);
            }
        }
    }

    fn flush(&mut self) {
        if self.n > 0 {
            self.out.push((self.acc << (8 - self.n)) as u8);
            (self.acc, self.n) = (0, 0);
        }
    }
}

/// Writes the payload (every row: header then bits).
pub fn write(v: &RiceValues, cols: u32) -> Vec<u8> {
    let mut w = BitWriter {
        out: Vec::new(),
        acc: 0,
        n: 0,
    };
    for ((row, &step), &k) in v.q.chunks(cols.max(1) as usize).zip(&v.steps).zip(&v.ks) {
        w.out.extend_from_slice(&step.to_le_bytes());
        w.out.push(k);
        let k = u32::from(k);
        for &q in row {
            let u = zigzag(q);
            if (u >> k) < RICE_ESCAPE_UNARY {
                w.put((1u64 << (u >> k)) - 1, u >> k);
                w.put(0, 1);
                w.put(u64::from(u), k);
            } else {
                w.put((1u64 << RICE_ESCAPE_UNARY) - 1, RICE_ESCAPE_UNARY);
                let wv = u64::from(u - (RICE_ESCAPE_UNARY << k)) + (1 << k);
                let n = 63 - wv.leading_zeros();
                w.put(0, n - k);
                w.put(wv, n + 1);
            }
        }
        w.flush();
    }
    w.out
}

struct BitReader<'a> {
    bytes: &'a [u8],
    /// Bit position from the start of `bytes`.
    pos: usize,
    row: u32,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Result<u32, ProtocolError> {
        let byte = self
            .bytes
            .get(self.pos / 8)
            .ok_or(ProtocolError::RiceTruncated {
                row: self.row,
                at: self.bytes.len(),
            })?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(b))
    }

    fn bits(&mut self, n: u32) -> Result<u64, ProtocolError> {
        (0..n).try_fold(0u64, |acc, _| Ok((acc << 1) | u64::from(self.bit()?)))
    }
}

/// Parses a RICE payload of `rows` x `cols` (both nonzero), with every check of the module docs.
pub fn parse(bytes: &[u8], rows: u32, cols: u32) -> Result<RiceValues, ProtocolError> {
    // Each row needs its header and at least one bit a value: refuse before allocating.
    let min_row = RICE_ROW_HEADER_SIZE as u64 + u64::from(cols).div_ceil(8);
    let min = u64::from(rows) * min_row;
    if min > bytes.len() as u64 {
        return Err(ProtocolError::RiceTooShort {
            rows,
            cols,
            min,
            actual: bytes.len(),
        });
    }
    let n = rows as usize * cols as usize;
    let mut v = RiceValues {
        q: Vec::with_capacity(n),
        steps: Vec::with_capacity(rows as usize),
        ks: Vec::with_capacity(rows as usize),
    };
    let mut at = 0usize;
    for row in 0..rows {
        let truncated = ProtocolError::RiceTruncated {
            row,
            at: bytes.len(),
        };
        let head = bytes
            .get(at..at + RICE_ROW_HEADER_SIZE)
            .ok_or(truncated.clone())?;
        let step = f32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if !(step.is_finite() && step > 0.0) {
            let index = row as usize;
            return Err(ProtocolError::BadScale { index, scale: step });
        }
        let k = head[4];
        if k > RICE_MAX_K {
            return Err(ProtocolError::RiceBadK { row, k });
        }
        at += RICE_ROW_HEADER_SIZE;
        let mut r = BitReader {
            bytes: &bytes[at..],
            pos: 0,
            row,
        };
        let k = u32::from(k);
        for col in 0..cols {
            let too_large = ProtocolError::RiceValueTooLarge { row, col };
            let mut unary = 0;
            while unary < RICE_ESCAPE_UNARY && r.bit()? == 1 {
                unary += 1;
            }
            let u = if unary < RICE_ESCAPE_UNARY {
                u64::from(unary << k) | r.bits(k)?
            } else {
                let mut zeros = 0;
                while r.bit()? == 0 {
                    zeros += 1;
                    if zeros > 22 {
                        return Err(too_large);
                    }
                }
                let n = zeros + k;
                let w = (1u64 << n) | r.bits(n)?;
                w - (1 << k) + (u64::from(RICE_ESCAPE_UNARY) << k)
            };
            let q = u32::try_from(u)
                .ok()
                .map(unzigzag)
                .filter(|q| q.abs() <= RICE_MAX_Q)
                .ok_or(too_large)?;
            let x = q as f32 * step;
            if !x.is_finite() {
                let index = row as usize * cols as usize + col as usize;
                return Err(ProtocolError::NonFiniteValue { index, value: x });
            }
            v.q.push(q);
        }
        let used = r.pos.div_ceil(8);
        if !r.pos.is_multiple_of(8) && r.bits((8 - r.pos % 8) as u32)? != 0 {
            return Err(ProtocolError::RicePadding { row });
        }
        at += used;
        v.steps.push(step);
        v.ks.push(k as u8);
    }
    if at != bytes.len() {
        return Err(ProtocolError::RiceTrailingBytes {
            count: bytes.len() - at,
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_including_escapes_and_extremes() {
        let q = vec![0, 1, -1, 7, -8, 40, -300, RICE_MAX_Q, -RICE_MAX_Q, 3];
        for k in [0u8, 2, 15] {
            let v = RiceValues {
                q: q.clone(),
                steps: vec![0.5, 0.25],
                ks: vec![k, k],
            };
            let bytes = write(&v, 5);
            assert_eq!(parse(&bytes, 2, 5).unwrap(), v, "k {k}");
        }
    }

    #[test]
    fn step_ignores_the_largest_values_and_bounds_q() {
        let mut row = vec![1.0f32; 40];
        row[3] = 600.0;
        assert_eq!(step_for(&row, 0.5), 0.5);
        assert_eq!(step_for(&[0.0; 4], 0.5), 1.0);
        let v = quantize(&[1e30, 1e-30, -1e30], 3, 0.05).unwrap();
        assert!(v.q.iter().all(|q| q.abs() <= RICE_MAX_Q));
    }

    #[test]
    fn hostile_rows_are_errors() {
        let v = RiceValues {
            q: vec![1, 2, 3],
            steps: vec![1.0],
            ks: vec![1],
        };
        let good = write(&v, 3);
        assert!(parse(&good, 1, 3).is_ok());
        assert!(matches!(
            parse(&good[..good.len() - 1], 1, 3),
            Err(ProtocolError::RiceTooShort { .. } | ProtocolError::RiceTruncated { .. })
        ));
        let mut bad_k = good.clone();
        bad_k[4] = 16;
        assert_eq!(
            parse(&bad_k, 1, 3),
            Err(ProtocolError::RiceBadK { row: 0, k: 16 })
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            parse(&long, 1, 3),
            Err(ProtocolError::RiceTrailingBytes { count: 1 })
        );
        // 16 ones then zeros forever: the exp-Golomb prefix is bounded.
        let bomb = [&1.0f32.to_le_bytes()[..], &[0, 0xFF, 0xFF], &[0; 8]].concat();
        assert!(matches!(
            parse(&bomb, 1, 1),
            Err(ProtocolError::RiceValueTooLarge { row: 0, col: 0 })
        ));
        assert!(matches!(
            parse(&good, 1_000, 3),
            Err(ProtocolError::RiceTooShort { .. })
        ));
    }
}
