//! Device profiles: what a kind of device lends (memory) and how fast the engines run on it
//! (matrix-vector and matrix-matrix throughput, memory bandwidth, fixed costs per layer and per
//! step), and its network to the coordinator (round trip, bandwidth).
//!
//! Built-in profiles describe typical devices as the engines would run on them (effective
//! numbers, not datasheet peaks; the comments say where each comes from). A GPU's
//! matrix-vector compute is about three times what its memory can feed, so an f16 decode is
//! bandwidth-bound there and a 4-bit one reads 3.5x fewer bytes; what its node's probe reports
//! (an f16 matvec) is the bandwidth. Real devices get a
//! profile from what their node reported on joining (`hello`: memory and measured GFLOP/s),
//! the only numbers the coordinator has. "This machine's CPU" is measured on the spot with the
//! CPU engine's own matrix product.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::SimError;
use crate::coordinator::wire::NodeKind;

/// Where a node's engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A browser tab (WebGPU, node-web/).
    Browser,
    /// A `synapse node` process (wgpu or the CPU engine).
    Native,
}

/// Which engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
    Gpu,
}

/// How fast a device is and what it lends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceProfile {
    /// Short name (`chromebook`, `phone`...), as scenario files and `--add` spell it.
    pub name: String,
    /// What it stands for, in words.
    pub label: String,
    pub runtime: Runtime,
    pub backend: Backend,
    /// Memory it lends for weights, caches and scratch.
    pub memory_bytes: u64,
    /// Matrix-vector products (one token), GFLOP/s: what its node's speed probe measures.
    pub matvec_gflops: f64,
    /// Matrix-matrix products (prefill), GFLOP/s per extra token of a step.
    pub matmul_gflops: f64,
    /// Weights streamed from memory per second, GB/s.
    pub bandwidth_gbs: f64,
    /// Fixed cost of one layer in one step (kernel dispatches, thread-pool joins), microseconds.
    pub layer_overhead_us: f64,
    /// Fixed cost of one step on the device (submit, read-back, frame decode and encode), ms.
    pub step_overhead_ms: f64,
    /// Bytes per value of its key/value cache.
    pub kv_bytes_per_value: u64,
    /// Round trip to the coordinator, milliseconds.
    pub rtt_ms: f64,
    /// Bandwidth to the coordinator, megabits per second (each way).
    pub link_mbps: f64,
}

/// The built-in profile names, in the order help texts list them.
pub const BUILT_IN: [&str; 5] = [
    "phone",
    "chromebook",
    "laptop-igpu",
    "desktop-gpu",
    "this-cpu",
];

/// A link as fast as loopback: nodes in the coordinator's own process or machine.
pub const LOOPBACK: (f64, f64) = (0.05, 20_000.0);
/// A wired LAN.
pub const LAN: (f64, f64) = (1.0, 940.0);
/// Home or school Wi-Fi.
pub const WIFI: (f64, f64) = (8.0, 50.0);

impl DeviceProfile {
    /// A built-in profile by name (`this-cpu` measures this machine: a few tenths of a second).
    pub fn built_in(name: &str) -> Result<DeviceProfile, SimError> {
        let p = |name: &str,
                 label: &str,
                 runtime,
                 memory_gb: f64,
                 matvec,
                 matmul,
                 bw,
                 layer_us,
                 step_ms,
                 (rtt, mbps): (f64, f64)| DeviceProfile {
            name: name.into(),
            label: label.into(),
            runtime,
            backend: Backend::Gpu,
            memory_bytes: (memory_gb * 1e9) as u64,
            matvec_gflops: matvec,
            matmul_gflops: matmul,
            bandwidth_gbs: bw,
            layer_overhead_us: layer_us,
            step_overhead_ms: step_ms,
            kv_bytes_per_value: 4,
            rtt_ms: rtt,
            link_mbps: mbps,
        };
        Ok(match name.to_ascii_lowercase().as_str() {
            // A mid-range Android phone in Chrome: LPDDR4X at ~30 GB/s peak of which a WebGPU
            // matvec streams about a third; a tab gets about 1 GB (issue 10); 7 dispatches a
            // layer at ~25 us each; mapAsync read-back and JS framing ~4 ms a step.
            "phone" => p(
                "phone",
                "phone (browser, WebGPU; mid-range Android)",
                Runtime::Browser,
                1.0,
                30.0,
                150.0,
                10.0,
                175.0,
                4.0,
                WIFI,
            ),
            // A classroom Chromebook (Celeron N4500 UHD or Kompanio 520, 4 GB): single-channel
            // LPDDR4, ~6 GB/s through WebGPU; about 1.2 GB for a tab; a school access point
            // shared by 30 devices: ~12 ms round trips, ~20 Mbit/s each.
            "chromebook" => p(
                "chromebook",
                "Chromebook (browser, WebGPU; 4 GB classroom model)",
                Runtime::Browser,
                1.2,
                18.0,
                60.0,
                6.0,
                210.0,
                5.0,
                (12.0, 20.0),
            ),
            // Intel Iris Xe / Radeon 680M laptop, 16 GB shared: ~30 GB/s of weights through
            // wgpu, 6 GB lent; Wi-Fi 6.
            "laptop-igpu" => p(
                "laptop-igpu",
                "laptop with an integrated GPU (native, Iris Xe / Radeon 680M class)",
                Runtime::Native,
                6.0,
                90.0,
                600.0,
                30.0,
                105.0,
                1.5,
                (4.0, 200.0),
            ),
            // An RTX 3060-class card: 360 GB/s peak; our kernels reach about a third of peak
            // on decode-sized products (docs/PERF.md, H100 section); ~8 us a dispatch; wired.
            "desktop-gpu" => p(
                "desktop-gpu",
                "desktop GPU (native, RTX 3060 / RX 6700 class, 12 GB)",
                Runtime::Native,
                10.0,
                400.0,
                5000.0,
                120.0,
                56.0,
                1.0,
                LAN,
            ),
            "this-cpu" => DeviceProfile::this_cpu(),
            _ => {
                return Err(SimError::Invalid(format!(
                    "unknown device profile `{name}`: choose one of {}",
                    BUILT_IN.join(", ")
                )));
            }
        })
    }

    /// This machine's CPU, measured now with the CPU engine's matrix product ([`measure_cpu`]:
    /// one token, like a decode step, and eight, like a prefill); it lends the memory
    /// available now, over a wired LAN.
    pub fn this_cpu() -> DeviceProfile {
        let (matvec, matmul) = measure_cpu();
        let threads = rayon::current_num_threads();
        DeviceProfile {
            name: "this-cpu".into(),
            label: format!("this machine's CPU ({threads} threads, measured)"),
            runtime: Runtime::Native,
            backend: Backend::Cpu,
            memory_bytes: crate::node::available_memory(),
            matvec_gflops: matvec,
            matmul_gflops: matmul,
            bandwidth_gbs: matvec,
            layer_overhead_us: CPU_LAYER_OVERHEAD_US,
            step_overhead_ms: CPU_STEP_OVERHEAD_MS,
            kv_bytes_per_value: 4,
            rtt_ms: LAN.0,
            link_mbps: LAN.1,
        }
    }

    /// The profile of a real node, from what it reported on joining. The coordinator knows only
    /// its memory and one measured speed (an f16 matrix-vector product), so bandwidth equals
    /// that speed (an f16 matvec does one flop per byte) and prefill is that speed times the
    /// engine's usual matrix-matrix gain ([`CPU_MATMUL_GAIN`], [`GPU_MATMUL_GAIN`]). The link
    /// is guessed from the kind: loopback for in-process nodes, a LAN for native ones, Wi-Fi
    /// for browsers.
    pub fn from_hello(
        name: &str,
        kind: NodeKind,
        adapter: &str,
        memory_bytes: u64,
        gflops: f64,
    ) -> DeviceProfile {
        // Native CPU nodes report their adapter as "CPU (N threads)".
        let backend = if kind != NodeKind::Browser && adapter.starts_with("CPU") {
            Backend::Cpu
        } else {
            Backend::Gpu
        };
        let (runtime, link) = match kind {
            NodeKind::Browser => (Runtime::Browser, WIFI),
            NodeKind::Native => (Runtime::Native, LAN),
            NodeKind::Local => (Runtime::Native, LOOPBACK),
        };
        let g = if gflops.is_finite() {
            gflops.max(1e-6)
        } else {
            1e-6
        };
        let (gain, layer_us, step_ms) = match (backend, runtime) {
            (Backend::Cpu, _) => (CPU_MATMUL_GAIN, CPU_LAYER_OVERHEAD_US, CPU_STEP_OVERHEAD_MS),
            (Backend::Gpu, Runtime::Native) => (GPU_MATMUL_GAIN, 56.0, 1.0),
            (Backend::Gpu, Runtime::Browser) => (GPU_MATMUL_GAIN, 175.0, 4.0),
        };
        DeviceProfile {
            name: name.into(),
            label: format!("{adapter} (reported {g:.2} GFLOP/s)"),
            runtime,
            backend,
            memory_bytes,
            matvec_gflops: g,
            matmul_gflops: g * gain,
            bandwidth_gbs: g,
            layer_overhead_us: layer_us,
            step_overhead_ms: step_ms,
            kv_bytes_per_value: 4,
            rtt_ms: link.0,
            link_mbps: link.1,
        }
    }

    /// The speed its node's `hello` would report, which is what placement weighs: an f16
    /// matrix-vector product, limited by compute or by memory (one byte per flop).
    pub fn hello_gflops(&self) -> f64 {
        self.matvec_gflops.min(self.bandwidth_gbs).max(1e-6)
    }

    /// Checks that every number is usable; the error names the profile and the field.
    pub fn validate(&self) -> Result<(), SimError> {
        for (field, v) in [
            ("matvec_gflops", self.matvec_gflops),
            ("matmul_gflops", self.matmul_gflops),
            ("bandwidth_gbs", self.bandwidth_gbs),
            ("link_mbps", self.link_mbps),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(SimError::Invalid(format!(
                    "profile `{}`: {field} must be a positive number, not {v}",
                    self.name
                )));
            }
        }
        for (field, v) in [
            ("layer_overhead_us", self.layer_overhead_us),
            ("step_overhead_ms", self.step_overhead_ms),
            ("rtt_ms", self.rtt_ms),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SimError::Invalid(format!(
                    "profile `{}`: {field} must be a number >= 0, not {v}",
                    self.name
                )));
            }
        }
        if self.kv_bytes_per_value == 0 || self.kv_bytes_per_value > 8 {
            return Err(SimError::Invalid(format!(
                "profile `{}`: kv_bytes_per_value must be 1 to 8, not {}",
                self.name, self.kv_bytes_per_value
            )));
        }
        Ok(())
    }
}

/// The CPU engine's prefill gain: a step of T tokens converts each f16 weight row once and
/// reuses it for every token, so extra tokens cost only their dot products (measured here:
/// 77 tok/s prefill of 128 tokens vs 22 tok/s decode, docs/PERF.md; the probe measures it).
pub const CPU_MATMUL_GAIN: f64 = 3.5;
/// GPUs' tiled matrix-matrix kernels against their matvec on decode-sized products
/// (docs/PERF.md: H100 prefill 19k tok/s vs decode 400 tok/s is ~50x; integrated and phone GPUs
/// gain less).
pub const GPU_MATMUL_GAIN: f64 = 15.0;
/// Rayon's fork-join for the CPU engine's seven products of a layer.
pub const CPU_LAYER_OVERHEAD_US: f64 = 30.0;
/// A CPU node's step: control message, SYN1 decode and encode, the compute thread hand-off.
pub const CPU_STEP_OVERHEAD_MS: f64 = 0.3;

/// Measures the CPU engine's matrix-vector and per-token matrix-matrix speed, GFLOP/s, on a
/// 2048 x 2048 f16 matrix (8 MB: read from memory like a model's weights, not from cache),
/// each for about 150 ms, taking the median time so that a moment of load elsewhere does not
/// decide the result.
pub fn measure_cpu() -> (f64, f64) {
    let (n, k, t) = (2048usize, 2048usize, 8usize);
    let w: Vec<half::f16> = (0..n * k)
        .map(|i| half::f16::from_f32(((i % 31) as f32 - 15.0) / 64.0))
        .collect();
    let x: Vec<f32> = (0..k * t).map(|i| (i % 7) as f32 / 7.0).collect();
    let mut out = vec![0f32; n * t];
    let mut time = |tokens: usize| {
        let mut run = || {
            crate::engine::cpu::ops::matmul(
                &mut out[..n * tokens],
                &x[..k * tokens],
                &w,
                None,
                tokens,
                k,
            )
        };
        run(); // warm-up
        let mut times = Vec::new();
        let start = Instant::now();
        while times.len() < 5 || (start.elapsed().as_secs_f64() < 0.15 && times.len() < 200) {
            let t0 = Instant::now();
            run();
            times.push(t0.elapsed().as_secs_f64().max(1e-9));
        }
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let one = time(1);
    let many = time(t);
    let flops = 2.0 * (n * k) as f64;
    let matvec = flops / one / 1e9;
    // Extra tokens' cost; a noisy machine can make `many` look cheaper than `one`.
    let extra = (many - one).max(one / CPU_MATMUL_GAIN / 4.0);
    let matmul = flops * (t - 1) as f64 / extra / 1e9;
    (matvec, matmul.max(matvec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_are_valid_and_named() {
        for name in BUILT_IN {
            let p = DeviceProfile::built_in(name).unwrap();
            p.validate().unwrap();
            assert_eq!(p.name, name);
            assert!(p.matmul_gflops >= p.matvec_gflops, "{name}");
        }
        let e = DeviceProfile::built_in("toaster").unwrap_err();
        assert!(e.to_string().contains("chromebook"), "{e}");
    }

    #[test]
    fn a_hello_becomes_a_profile() {
        let p = DeviceProfile::from_hello("n", NodeKind::Local, "CPU (2 threads)", 1 << 30, 6.0);
        assert_eq!(p.backend, Backend::Cpu);
        assert_eq!((p.rtt_ms, p.hello_gflops()), (LOOPBACK.0, 6.0));
        assert_eq!(p.matmul_gflops, 6.0 * CPU_MATMUL_GAIN);
        let b = DeviceProfile::from_hello("b", NodeKind::Browser, "SwiftShader", 1 << 30, 0.01);
        assert_eq!((b.runtime, b.backend), (Runtime::Browser, Backend::Gpu));
        let nan = DeviceProfile::from_hello("x", NodeKind::Native, "gpu", 1, f64::NAN);
        nan.validate().unwrap();
    }

    #[test]
    fn bad_numbers_are_named() {
        let mut p = DeviceProfile::built_in("phone").unwrap();
        p.link_mbps = 0.0;
        assert!(p.validate().unwrap_err().to_string().contains("link_mbps"));
        p.link_mbps = 1.0;
        p.rtt_ms = f64::NAN;
        assert!(p.validate().unwrap_err().to_string().contains("rtt_ms"));
    }
}
