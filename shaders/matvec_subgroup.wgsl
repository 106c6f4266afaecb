// An optional decode matvec with subgroup reductions, for adapters that offer subgroups of one
// fixed size. It is not a module of its own: the host compiles matmul.wgsl (whose bindings,
// helpers and epilogue it uses) followed by this file, only on a device with the SUBGROUP
// feature (naga 29 takes the subgroup builtins without WGSL's `enable subgroups;`, which it does
// not parse yet). Everywhere else, the browser included, matmul.wgsl's `matvec` runs, with the
// same results up to summation order.
//
// matvec_sg: one subgroup per output feature. Its invocations stride over the weight row in
// vec4<u32> steps and subgroupAdd sums their partials; each subgroup also sums the norm's
// statistics for itself. No workgroup memory and no workgroup barrier, where matvec has six
// barriers between its first load and its epilogue. Subgroups are taken to be contiguous runs
// of local_invocation_index, `subgroup_size` long, which is how drivers lay out a
// one-dimensional workgroup (the host checks the result against `matvec` in tests).

// (mean, rstd) of the row at `base`, summed by this subgroup alone.
fn sg_stats(lane: u32, sg: u32, base: u32) -> vec2<f32> {
    let kf = f32(p.k);
    if (rms()) {
        var s = 0.0;
        for (var k = lane; k < p.k; k += sg) {
            let v = x[base + k];
            s += v * v;
        }
        return vec2<f32>(0.0, 1.0 / sqrt(subgroupAdd(s) / kf + p.eps));
    }
    var s = 0.0;
    for (var k = lane; k < p.k; k += sg) {
        s += x[base + k];
    }
    let mean = subgroupAdd(s) / kf;
    var v = 0.0;
    for (var k = lane; k < p.k; k += sg) {
        let d = x[base + k] - mean;
        v += d * d;
    }
    return vec2<f32>(mean, 1.0 / sqrt(subgroupAdd(v) / kf + p.eps));
}

@compute @workgroup_size(MATVEC_WG)
fn matvec_sg(
    @builtin(local_invocation_index) li: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) sg: u32,
) {
    let n = linear_group(wg, nwg) * (MATVEC_WG / sg) + li / sg;
    let valid = n < p.n;
    let row = min(n, p.n - 1u) * p.k_vec;
    let first = valid && lane < p.k_vec;
    var w_first = vec4<u32>(0u);
    if (first) {
        w_first = w[row + lane];
    }
    let aligned = (p.k % 8u) == 0u && (p.x_off % 4u) == 0u && (p.x_stride % 4u) == 0u;
    for (var t = 0u; t < p.t; t++) {
        let xb = p.x_off + t * p.x_stride;
        var st = vec2<f32>(0.0, 1.0);
        if (normed()) {
            st = sg_stats(lane, sg, xb);
        }
        var acc = 0.0;
        if (first && aligned) {
            let xb4 = xb / 4u;
            acc = dot8(w_first, x4_at(xb4, 2u * lane, st.x, st.y), x4_at(xb4, 2u * lane + 1u, st.x, st.y));
            for (var c = lane + sg; c < p.k_vec; c += sg) {
                acc += dot8(w[row + c], x4_at(xb4, 2u * c, st.x, st.y), x4_at(xb4, 2u * c + 1u, st.x, st.y));
            }
        } else if (first) {
            for (var c = lane; c < p.k_vec; c += sg) {
                let k0 = c * 8u;
                let a = vec4<f32>(
                    x_at(xb, k0, st.x, st.y),
                    x_at(xb, k0 + 1u, st.x, st.y),
                    x_at(xb, k0 + 2u, st.x, st.y),
                    x_at(xb, k0 + 3u, st.x, st.y),
                );
                let b = vec4<f32>(
                    x_at(xb, k0 + 4u, st.x, st.y),
                    x_at(xb, k0 + 5u, st.x, st.y),
                    x_at(xb, k0 + 6u, st.x, st.y),
                    x_at(xb, k0 + 7u, st.x, st.y),
                );
                acc += dot8(w[row + c], a, b);
            }
        }
        let s = subgroupAdd(acc);
        if (lane == 0u && valid) {
            epilogue(t, n, s);
        }
    }
}
