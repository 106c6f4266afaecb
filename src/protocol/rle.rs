//! The lossless run-length stage behind the COMPRESSED flag.
//!
//! Layout: `[u32 original length][u16 runs]` then `runs` runs of `{u8 kind, u16 length}`,
//! a literal run (kind 1) followed by its `length` bytes, a zero run (kind 0) by nothing; all
//! integers little-endian. The decoder trusts nothing: the original length is bounded before
//! anything is allocated, every run must be non-empty and fit, the byte count must come out
//! exact and no byte may follow the last run. The encoder is deterministic (golden bytes pin
//! it) and is used only when its output is smaller than its input.

use super::error::ProtocolError;

/// `[u32 original length][u16 runs]`.
pub const RLE_HEADER_SIZE: usize = 6;
/// `{u8 kind, u16 length}` in front of every run.
pub const RLE_RUN_HEADER_SIZE: usize = 3;
/// Run kind: `length` zero bytes, nothing follows the run header.
pub const RLE_KIND_ZERO: u8 = 0;
/// Run kind: `length` literal bytes follow the run header.
pub const RLE_KIND_LITERAL: u8 = 1;
/// Longest run (u16 length).
pub const RLE_MAX_RUN: usize = u16::MAX as usize;
/// Most runs in one payload (u16 count).
pub const RLE_MAX_RUNS: usize = u16::MAX as usize;
/// Shortest zero run the encoder cuts out of the middle of a literal: doing so costs two run
/// headers (6 bytes), so shorter zero runs stay inside the literal.
pub const RLE_MIN_ZERO_RUN_INNER: usize = 7;
/// Shortest zero run the encoder emits at the start or end of the data (one run header).
pub const RLE_MIN_ZERO_RUN_EDGE: usize = 4;

/// Compresses `data`; `None` when the result would not be smaller or cannot be expressed
/// (more than 65535 runs, or more than u32::MAX bytes).
pub fn compress(data: &[u8]) -> Option<Vec<u8>> {
    let original = u32::try_from(data.len()).ok()?;
    let mut runs: Vec<(u8, usize, usize)> = Vec::new(); // (kind, start, len)
    let push = |runs: &mut Vec<_>, kind: u8, start: usize, len: usize| {
        let mut at = start;
        while at < start + len {
            let n = RLE_MAX_RUN.min(start + len - at);
            runs.push((kind, at, n));
            at += n;
        }
    };
    let (mut lit_start, mut i) = (0, 0);
    while i < data.len() {
        if data[i] != 0 {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < data.len() && data[j] == 0 {
            j += 1;
        }
        let edge = i == 0 || j == data.len();
        let min = if edge {
            RLE_MIN_ZERO_RUN_EDGE
        } else {
            RLE_MIN_ZERO_RUN_INNER
        };
        if j - i >= min {
            push(&mut runs, RLE_KIND_LITERAL, lit_start, i - lit_start);
            push(&mut runs, RLE_KIND_ZERO, i, j - i);
            lit_start = j;
        }
        i = j;
    }
    push(
        &mut runs,
        RLE_KIND_LITERAL,
        lit_start,
        data.len() - lit_start,
    );
    let count = u16::try_from(runs.len()).ok()?;
    let size: usize = RLE_HEADER_SIZE
        + runs
            .iter()
            .map(|&(k, _, n)| RLE_RUN_HEADER_SIZE + if k == RLE_KIND_LITERAL { n } else { 0 })
            .sum::<usize>();
    if size >= data.len() {
        return None;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&original.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for (kind, start, len) in runs {
        out.push(kind);
        out.extend_from_slice(&(len as u16).to_le_bytes());
        if kind == RLE_KIND_LITERAL {
            out.extend_from_slice(&data[start..start + len]);
        }
    }
    Some(out)
}

/// Decompresses a COMPRESSED payload whose original length may be at most `max_len` bytes.
pub fn decompress(data: &[u8], max_len: u64) -> Result<Vec<u8>, ProtocolError> {
    let header = data
        .get(..RLE_HEADER_SIZE)
        .ok_or(ProtocolError::RleTruncated { at: data.len() })?;
    let original = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let runs = u16::from_le_bytes([header[4], header[5]]);
    if u64::from(original) > max_len {
        return Err(ProtocolError::RleTooLarge {
            len: original,
            max: max_len,
        });
    }
    let original_len = original as usize;
    let mut out = Vec::with_capacity(original_len);
    let mut pos = RLE_HEADER_SIZE;
    for run in 0..usize::from(runs) {
        let h = data
            .get(pos..pos + RLE_RUN_HEADER_SIZE)
            .ok_or(ProtocolError::RleTruncated { at: pos })?;
        let (kind, len) = (h[0], usize::from(u16::from_le_bytes([h[1], h[2]])));
        pos += RLE_RUN_HEADER_SIZE;
        if len == 0 {
            return Err(ProtocolError::RleEmptyRun { run });
        }
        if out.len() + len > original_len {
            let produced = (out.len() + len) as u64;
            return Err(ProtocolError::RleLengthMismatch { produced, original });
        }
        match kind {
            RLE_KIND_ZERO => out.resize(out.len() + len, 0),
            RLE_KIND_LITERAL => {
                let bytes = data
                    .get(pos..pos + len)
                    .ok_or(ProtocolError::RleTruncated { at: pos })?;
                out.extend_from_slice(bytes);
                pos += len;
            }
            _ => return Err(ProtocolError::RleBadKind { run, kind }),
        }
    }
    if pos != data.len() {
        return Err(ProtocolError::RleTrailingBytes {
            count: data.len() - pos,
        });
    }
    if out.len() != original_len {
        let produced = out.len() as u64;
        return Err(ProtocolError::RleLengthMismatch { produced, original });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_only_when_smaller() {
        let mut data = vec![0x7F];
        data.extend([0u8; 22]);
        data.extend([0xFE, 0, 0, 0, 0x3F]);
        let c = compress(&data).expect("mostly zeros compress");
        assert_eq!(c.len(), 21);
        assert_eq!(decompress(&c, 1 << 20).unwrap(), data);
        assert_eq!(compress(&[1, 2, 3, 4]), None);
        assert_eq!(compress(&[]), None);
    }

    #[test]
    fn long_runs_are_split_at_u16() {
        let mut data = vec![0u8; 200_000];
        data.push(9);
        let c = compress(&data).unwrap();
        assert_eq!(decompress(&c, 1 << 20).unwrap(), data);
    }

    #[test]
    fn decoder_rejects_every_inconsistency() {
        let ok = [4, 0, 0, 0, 1, 0, 0, 4, 0];
        assert_eq!(decompress(&ok, 16).unwrap(), vec![0; 4]);
        type Check = fn(&ProtocolError) -> bool;
        let cases: [(&[u8], Check); 7] = [
            (&[4, 0, 0], |e| {
                matches!(e, ProtocolError::RleTruncated { .. })
            }),
            (&[4, 0, 0, 0, 1, 0, 0, 4], |e| {
                matches!(e, ProtocolError::RleTruncated { .. })
            }),
            (&[0, 0, 0, 1, 0, 0], |e| {
                matches!(e, ProtocolError::RleTooLarge { .. })
            }),
            (&[4, 0, 0, 0, 1, 0, 2, 4, 0], |e| {
                matches!(e, ProtocolError::RleBadKind { .. })
            }),
            (&[4, 0, 0, 0, 1, 0, 0, 0, 0], |e| {
                matches!(e, ProtocolError::RleEmptyRun { .. })
            }),
            (&[4, 0, 0, 0, 1, 0, 0, 5, 0], |e| {
                matches!(e, ProtocolError::RleLengthMismatch { .. })
            }),
            (&[4, 0, 0, 0, 1, 0, 0, 4, 0, 9], |e| {
                matches!(e, ProtocolError::RleTrailingBytes { count: 1 })
            }),
        ];
        for (bytes, check) in cases {
            let err = decompress(bytes, 16).unwrap_err();
            assert!(check(&err), "{bytes:?}: {err}");
        }
        let short = [5, 0, 0, 0, 1, 0, 0, 4, 0];
        assert!(matches!(
            decompress(&short, 16),
            Err(ProtocolError::RleLengthMismatch { produced: 4, .. })
        ));
    }
}
