//! Choosing layer ranges: N contiguous ranges that balance bytes across shards, counting the
//! embedding on the first shard and the final norm and head on the last.

use std::ops::Range;

use crate::error::{Result, SplitError};

/// Splits `layer_bytes.len()` layers into `n` contiguous non-empty ranges so that the largest
/// shard (first: `first_extra` + its layers; last: `last_extra` + its layers) is as small as
/// possible. With `n == 1` the one shard carries both extras.
pub fn balance(
    layer_bytes: &[u64],
    first_extra: u64,
    last_extra: u64,
    n: usize,
) -> Result<Vec<Range<usize>>> {
    let l = layer_bytes.len();
    if n == 0 || n > l {
        return Err(SplitError::Invalid(format!(
            "cannot cut {l} layers into {n} shards: choose between 1 and {l}"
        )));
    }
    // prefix[i] = bytes of layers 0..i
    let mut prefix = vec![0u64; l + 1];
    for (i, b) in layer_bytes.iter().enumerate() {
        prefix[i + 1] = prefix[i] + b;
    }
    let cost = |s: usize, a: usize, b: usize| {
        let mut c = prefix[b] - prefix[a];
        if s == 0 {
            c += first_extra;
        }
        if s == n - 1 {
            c += last_extra;
        }
        c
    };
    // best[s][i]: smallest possible largest shard when shards 0..=s cover layers 0..i;
    // cut[s][i]: where shard s starts in that optimum.
    let mut best = vec![vec![u64::MAX; l + 1]; n];
    let mut cut = vec![vec![0usize; l + 1]; n];
    for (i, b) in best[0].iter_mut().enumerate().skip(1) {
        *b = cost(0, 0, i);
    }
    for s in 1..n {
        for i in s + 1..=l {
            for j in s..i {
                if best[s - 1][j] == u64::MAX {
                    continue;
                }
                let c = best[s - 1][j].max(cost(s, j, i));
                if c < best[s][i] {
                    best[s][i] = c;
                    cut[s][i] = j;
                }
            }
        }
    }
    let mut ranges = vec![0..0; n];
    let mut end = l;
    for s in (0..n).rev() {
        let start = if s == 0 { 0 } else { cut[s][end] };
        ranges[s] = start..end;
        end = start;
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_all_layers_in_order_for_every_n() {
        let layers = vec![7u64; 30];
        for n in 1..=30 {
            let r = balance(&layers, 56, 56, n).unwrap();
            assert_eq!(r.len(), n);
            assert_eq!(r[0].start, 0);
            assert_eq!(r[n - 1].end, 30);
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            assert!(r.iter().all(|x| !x.is_empty()));
        }
    }

    #[test]
    fn heavy_ends_get_fewer_layers() {
        // 30 layers of 7 bytes, 56 extra on each end: 3 shards balance at 7+4=11 / 22 / 7+... layers.
        let r = balance(&vec![7u64; 30], 56, 56, 3).unwrap();
        let sizes: Vec<u64> = r
            .iter()
            .enumerate()
            .map(|(i, x)| x.len() as u64 * 7 + if i == 0 || i == 2 { 56 } else { 0 })
            .collect();
        assert!(r[1].len() > r[0].len() && r[1].len() > r[2].len(), "{r:?}");
        let max = *sizes.iter().max().unwrap();
        assert!(max <= (30 * 7 + 112) / 3 + 7, "{sizes:?}");
    }

    #[test]
    fn refuses_impossible_counts() {
        assert!(balance(&[1, 2, 3], 0, 0, 0).is_err());
        assert!(balance(&[1, 2, 3], 0, 0, 4).is_err());
    }
}
