//! Placement: which node holds which shard. Shards go to nodes with room for them, choosing the
//! node whose estimated time per token (bytes it would hold over its measured speed) stays
//! smallest, and preferring the node that holds a neighbouring shard so consecutive shards run
//! without a network hop. Pure functions, so the policy is tested without sockets.

/// What placement knows of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeCapacity {
    pub id: u64,
    /// Memory the node offers.
    pub memory_bytes: u64,
    /// Measured speed; higher is faster.
    pub gflops: f64,
}

/// Share of a node's memory kept free for KV caches and scratch buffers.
pub const MEMORY_HEADROOM: f64 = 0.10;
/// A neighbour may be chosen over the fastest candidate when it is at most this much slower.
pub const NEIGHBOUR_SLACK: f64 = 1.5;

/// Bytes `node` may hold in weights.
pub fn usable(node: &NodeCapacity) -> u64 {
    (node.memory_bytes as f64 * (1.0 - MEMORY_HEADROOM)) as u64
}

/// Assigns every unassigned shard (`None` in `current`) to a node; shards no node can hold stay
/// `None`. Assigned shards keep their node. With nothing assigned yet, the shards are cut into
/// contiguous runs, one per node in id order, minimising the slowest node's time per token
/// ([`contiguous`]); otherwise (a node left, a shard was freed) each free shard goes to the
/// node that stays fastest, or a neighbour's node when it is nearly as good.
pub fn place(
    shard_bytes: &[u64],
    current: &[Option<u64>],
    nodes: &[NodeCapacity],
) -> Vec<Option<u64>> {
    if current.iter().all(Option::is_none)
        && let Some(p) = contiguous(shard_bytes, nodes)
    {
        return p;
    }
    let mut out = current.to_vec();
    let load = |out: &[Option<u64>], id: u64| -> u64 {
        out.iter()
            .zip(shard_bytes)
            .filter(|(n, _)| **n == Some(id))
            .map(|(_, b)| *b)
            .sum()
    };
    for i in 0..shard_bytes.len() {
        if out[i].is_some() {
            continue;
        }
        let b = shard_bytes[i];
        let cost = |n: &NodeCapacity, out: &[Option<u64>]| {
            (load(out, n.id) + b) as f64 / n.gflops.max(1e-6)
        };
        let fits: Vec<&NodeCapacity> = nodes
            .iter()
            .filter(|n| load(&out, n.id) + b <= usable(n))
            .collect();
        let Some(best) = fits.iter().min_by(|a, c| {
            cost(a, &out)
                .total_cmp(&cost(c, &out))
                .then(a.id.cmp(&c.id))
        }) else {
            continue;
        };
        let best_cost = cost(best, &out);
        let neighbour = [i.checked_sub(1), Some(i + 1)]
            .into_iter()
            .flatten()
            .filter_map(|j| out.get(j).copied().flatten())
            .filter_map(|id| fits.iter().find(|n| n.id == id))
            .min_by(|a, c| cost(a, &out).total_cmp(&cost(c, &out)));
        out[i] = Some(match neighbour {
            Some(n) if cost(n, &out) <= best_cost * NEIGHBOUR_SLACK => n.id,
            _ => best.id,
        });
    }
    out
}

/// Estimated time per token of the slowest node under `assignment` (bytes held over speed).
pub fn slowest(shard_bytes: &[u64], assignment: &[Option<u64>], nodes: &[NodeCapacity]) -> f64 {
    nodes
        .iter()
        .map(|n| {
            let held: u64 = assignment
                .iter()
                .zip(shard_bytes)
                .filter(|(a, _)| **a == Some(n.id))
                .map(|(_, b)| *b)
                .sum();
            held as f64 / n.gflops.max(1e-6)
        })
        .fold(0.0, f64::max)
}

/// The best contiguous assignment of all shards to `nodes` (in id order, a node may get none):
/// minimises the largest `bytes / gflops` over nodes, within each node's usable memory.
/// `None` when the shards cannot all be placed.
pub fn contiguous(shard_bytes: &[u64], nodes: &[NodeCapacity]) -> Option<Vec<Option<u64>>> {
    contiguous_pinned(shard_bytes, nodes, &[])
}

/// [`contiguous`] where `pins[i] = Some(node)` keeps shard `i` on `node` (a user's move);
/// `pins` may be shorter than the shards (the rest are free). `None` when no contiguous
/// assignment in id order keeps every pin and fits.
pub fn contiguous_pinned(
    shard_bytes: &[u64],
    nodes: &[NodeCapacity],
    pins: &[Option<u64>],
) -> Option<Vec<Option<u64>>> {
    let pin = |i: usize| pins.get(i).copied().flatten();
    let mut nodes: Vec<&NodeCapacity> = nodes.iter().collect();
    nodes.sort_by_key(|n| n.id);
    let (s, n) = (shard_bytes.len(), nodes.len());
    if n == 0 {
        return None;
    }
    let mut prefix = vec![0u64; s + 1];
    for (i, b) in shard_bytes.iter().enumerate() {
        prefix[i + 1] = prefix[i] + b;
    }
    let cost = |node: &NodeCapacity, a: usize, b: usize| {
        let bytes = prefix[b] - prefix[a];
        if bytes > usable(node) || (a..b).any(|i| pin(i).is_some_and(|p| p != node.id)) {
            f64::INFINITY
        } else {
            bytes as f64 / node.gflops.max(1e-6)
        }
    };
    // best[j][i]: smallest slowest-node cost when nodes 0..=j hold shards 0..i; from[j][i]: where
    // node j's run starts.
    let mut best = vec![vec![f64::INFINITY; s + 1]; n];
    let mut from = vec![vec![0usize; s + 1]; n];
    for (i, b) in best[0].iter_mut().enumerate() {
        *b = cost(nodes[0], 0, i);
    }
    for j in 1..n {
        for i in 0..=s {
            for k in 0..=i {
                let c = best[j - 1][k].max(cost(nodes[j], k, i));
                if c < best[j][i] {
                    best[j][i] = c;
                    from[j][i] = k;
                }
            }
        }
    }
    if !best[n - 1][s].is_finite() {
        return None;
    }
    let mut out = vec![None; s];
    let mut end = s;
    for j in (0..n).rev() {
        let start = if j == 0 { 0 } else { from[j][end] };
        for slot in &mut out[start..end] {
            *slot = Some(nodes[j].id);
        }
        end = start;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, mb: u64, gflops: f64) -> NodeCapacity {
        NodeCapacity {
            id,
            memory_bytes: mb << 20,
            gflops,
        }
    }

    #[test]
    fn one_node_takes_everything_that_fits() {
        let p = place(&[100 << 20; 3], &[None; 3], &[node(1, 1000, 1.0)]);
        assert_eq!(p, vec![Some(1); 3]);
    }

    #[test]
    fn shards_spread_by_speed_and_skip_nodes_without_room() {
        // Node 2 is twice as fast as node 1; node 3 has no room.
        let p = place(
            &[100 << 20; 3],
            &[None; 3],
            &[node(1, 1000, 1.0), node(2, 1000, 2.0), node(3, 50, 100.0)],
        );
        assert!(p.iter().all(|n| *n == Some(1) || *n == Some(2)), "{p:?}");
        let on2 = p.iter().filter(|n| **n == Some(2)).count();
        assert!(on2 >= 2, "the faster node holds more: {p:?}");
    }

    #[test]
    fn equal_nodes_split_and_neighbours_stay_together() {
        let p = place(
            &[100 << 20; 4],
            &[None; 4],
            &[node(1, 1000, 1.0), node(2, 1000, 1.0)],
        );
        assert_eq!(
            p,
            vec![Some(1), Some(1), Some(2), Some(2)],
            "two consecutive shards each"
        );
    }

    #[test]
    fn freed_shard_goes_to_its_neighbour_when_nearly_as_fast() {
        // Shard 1's node left; node 1 holds shard 0 and node 2 holds shard 2, equally loaded.
        let p = place(
            &[100 << 20; 3],
            &[Some(1), None, Some(2)],
            &[node(1, 1000, 1.0), node(2, 1000, 1.0)],
        );
        assert!(p[1] == Some(1) || p[1] == Some(2), "{p:?}");
    }

    #[test]
    fn pinned_shards_stay_on_their_node_and_the_rest_balance_around_them() {
        let nodes = [node(1, 1000, 1.0), node(2, 1000, 1.0)];
        let bytes = [100 << 20; 4];
        // Free: two each. Shard 1 pinned to node 2: node 2's run must include it.
        let p = contiguous_pinned(&bytes, &nodes, &[None, Some(2)]).unwrap();
        assert_eq!(p[1], Some(2), "{p:?}");
        assert_eq!(p, vec![Some(1), Some(2), Some(2), Some(2)]);
        // A pin to the slower of two nodes is kept even though it costs time.
        let slow_fast = [node(1, 1000, 1.0), node(2, 1000, 10.0)];
        let free = contiguous(&bytes, &slow_fast).unwrap();
        assert!(free.iter().all(|n| *n == Some(2)), "{free:?}");
        let p = contiguous_pinned(&bytes, &slow_fast, &[Some(1)]).unwrap();
        assert_eq!(p, vec![Some(1), Some(2), Some(2), Some(2)]);
        // Pins that id order cannot honour (shard 0 on node 2, shard 3 on node 1): none.
        assert_eq!(
            contiguous_pinned(&bytes, &nodes, &[Some(2), None, None, Some(1)]),
            None
        );
        // A pin to a node that is not there: none.
        assert_eq!(contiguous_pinned(&bytes, &nodes, &[Some(9)]), None);
    }

    #[test]
    fn kept_assignments_stay_and_unplaceable_shards_stay_none() {
        let p = place(
            &[100 << 20, 900 << 20],
            &[Some(7), None],
            &[node(7, 500, 1.0)],
        );
        assert_eq!(p, vec![Some(7), None]);
    }
}
