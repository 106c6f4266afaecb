//! Device setup: picks an adapter, states what it is and what it offers, requests a device
//! with the adapter's own limits, and caches one compute pipeline per kernel.
//!
//! wgpu reports validation errors through a callback; the context collects them so a step can
//! return them as [`EngineError::Gpu`] instead of the default handler's panic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::super::EngineError;
use super::kernels::{Consts, Kernel, MATMUL, MATVEC_SUBGROUP, ShaderFile};

/// What a [`GpuContext`] may be asked for.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Caps the largest storage binding below the device's own limit; tests use it to force
    /// large matrices to be split across bindings.
    pub max_binding_bytes: Option<u64>,
    /// Prefer a low-power adapter (an integrated GPU) over a discrete one.
    pub low_power: bool,
}

/// A device, its queue, and the pipelines built on it, shared by every shard on that device.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// Sizes read from the WGSL.
    pub consts: Consts,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    features: wgpu::Features,
    max_binding: u64,
    errors: Arc<Mutex<Vec<String>>>,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<Kernel, wgpu::ComputePipeline>>,
    /// The subgroup size when the device has subgroups of one fixed size (matvec_subgroup.wgsl
    /// runs then), and whether that kernel is on.
    subgroup: Option<u32>,
    subgroup_matvec: std::sync::atomic::AtomicBool,
    /// A small storage buffer bound where a kernel's optional input is absent.
    pub dummy: wgpu::Buffer,
}

/// A limit by name, how to read it, and the least the kernels need.
type Need = (&'static str, fn(&wgpu::Limits) -> u64, u64);

/// The least the kernels need from a device, checked before anything runs.
const NEEDS: [Need; 4] = [
    (
        "max_compute_invocations_per_workgroup",
        |l| l.max_compute_invocations_per_workgroup as u64,
        256,
    ),
    (
        "max_compute_workgroup_size_x",
        |l| l.max_compute_workgroup_size_x as u64,
        256,
    ),
    (
        "max_compute_workgroup_storage_size",
        |l| l.max_compute_workgroup_storage_size as u64,
        16384,
    ),
    (
        "max_storage_buffers_per_shader_stage",
        |l| l.max_storage_buffers_per_shader_stage as u64,
        6,
    ),
];

impl GpuContext {
    /// Opens the preferred adapter (wgpu's `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` environment
    /// variables apply) and a device on it.
    pub fn new(opts: &GpuOptions) -> Result<Arc<Self>, EngineError> {
        pollster::block_on(Self::new_async(opts))
    }

    async fn new_async(opts: &GpuOptions) -> Result<Arc<Self>, EngineError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let power_preference = if opts.low_power {
            wgpu::PowerPreference::LowPower
        } else {
            wgpu::PowerPreference::HighPerformance
        };
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference,
                force_fallback_adapter: false,
                compatible_surface: None,
            })
            .await
            .map_err(|e| {
                EngineError::Gpu(format!(
                    "no GPU adapter ({e}); on Linux without a GPU install Mesa's lavapipe: \
                     apt-get install mesa-vulkan-drivers libvulkan1"
                ))
            })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let mut missing = Vec::new();
        for (name, get, need) in NEEDS {
            if get(&limits) < need {
                missing.push(format!("{name} {} < {need}", get(&limits)));
            }
        }
        if !missing.is_empty() {
            return Err(EngineError::Gpu(format!(
                "adapter {} ({:?}) lacks what the kernels need: {}",
                info.name,
                info.backend,
                missing.join(", ")
            )));
        }
        let available = adapter.features();
        let features = available & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP);
        // The subgroup matvec maps one output feature to one subgroup, so it needs the size
        // fixed and dividing the workgroup. SYNAPSE_GPU_SUBGROUPS=0 turns it off (to measure).
        let subgroup = (available.contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size == info.subgroup_max_size
            && info.subgroup_min_size.is_power_of_two()
            && (4..=64).contains(&info.subgroup_min_size)
            && std::env::var("SYNAPSE_GPU_SUBGROUPS").map_or(true, |v| v != "0"))
        .then_some(info.subgroup_min_size);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("synapse"),
                required_features: features,
                required_limits: limits.clone(),
                memory_hints: wgpu::MemoryHints::Performance,
                ..Default::default()
            })
            .await
            .map_err(|e| EngineError::Gpu(format!("requesting a device on {}: {e}", info.name)))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            // wgpu's message is the top line only; the cause chain names the object and rule.
            let mut msg = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                msg.push_str(": ");
                msg.push_str(&c.to_string());
                cause = c.source();
            }
            if let Ok(mut v) = sink.lock() {
                v.push(msg);
            }
        }));
        let lost = errors.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut v) = lost.lock() {
                v.push(format!("device lost ({reason:?}): {msg}"));
            }
        });
        let max_binding = opts
            .max_binding_bytes
            .unwrap_or(u64::MAX)
            .min(limits.max_storage_buffer_binding_size as u64)
            .min(limits.max_buffer_size);
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        Ok(Arc::new(GpuContext {
            device,
            queue,
            consts: Consts::from_shaders()?,
            info,
            limits,
            features: available,
            max_binding,
            errors,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            subgroup,
            subgroup_matvec: std::sync::atomic::AtomicBool::new(subgroup.is_some()),
            dummy,
        }))
    }

    /// The adapter's name, type, backend and driver, the limits the engine relies on, and the
    /// optional features it would use: what `synapse` prints before running on a GPU.
    pub fn describe(&self) -> String {
        let i = &self.info;
        let l = &self.limits;
        let yes = |f: wgpu::Features| {
            if self.features.contains(f) {
                "yes"
            } else {
                "no"
            }
        };
        format!(
            "adapter: {} ({:?}, {:?}, driver {} {})\n\
             limits: max_storage_buffer_binding_size {} MiB, max_buffer_size {} MiB, \
             workgroup storage {} KiB, {} invocations per workgroup, \
             {} workgroups per dimension, min uniform offset alignment {}\n\
             features: timestamp queries {}, shader-f16 {} (not used: the kernels read \
             packed f16), subgroups {} (size {}-{}; matvec with subgroup sums: {}){}",
            i.name,
            i.device_type,
            i.backend,
            i.driver,
            i.driver_info,
            l.max_storage_buffer_binding_size / (1 << 20),
            l.max_buffer_size / (1 << 20),
            l.max_compute_workgroup_storage_size / 1024,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroups_per_dimension,
            l.min_uniform_buffer_offset_alignment,
            yes(wgpu::Features::TIMESTAMP_QUERY),
            yes(wgpu::Features::SHADER_F16),
            yes(wgpu::Features::SUBGROUP),
            i.subgroup_min_size,
            i.subgroup_max_size,
            if self.subgroup_matvec_size().is_some() {
                "yes"
            } else {
                "no"
            },
            if self.max_binding < l.max_storage_buffer_binding_size {
                format!("\nbindings capped at {} bytes", self.max_binding)
            } else {
                String::new()
            }
        )
    }

    /// The adapter's name.
    pub fn adapter_name(&self) -> &str {
        &self.info.name
    }

    /// The adapter's description, as wgpu reports it.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The device's limits.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Lanes the matrix-vector kernel gives each output feature: many on a GPU (they hide
    /// memory latency), few on a CPU adapter (each lane is a SIMD slot there).
    pub fn matvec_lanes(&self) -> u32 {
        // SYNAPSE_GPU_MATVEC_LANES overrides it, to measure (a power of two in range).
        static LANES: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
        let forced = *LANES.get_or_init(|| {
            std::env::var("SYNAPSE_GPU_MATVEC_LANES")
                .ok()
                .and_then(|v| v.parse::<u32>().ok())
        });
        if let Some(l) = forced.filter(|l| {
            l.is_power_of_two()
                && (self.consts.matvec_min_lanes..=self.consts.matvec_max_lanes).contains(l)
        }) {
            return l;
        }
        if self.info.device_type == wgpu::DeviceType::Cpu {
            self.consts.matvec_min_lanes
        } else {
            self.consts.matvec_max_lanes
        }
    }

    /// Whether GPU timestamps can time each dispatch.
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// The largest storage binding the engine makes, in bytes.
    pub fn max_binding(&self) -> u64 {
        self.max_binding
    }

    /// Returns (and clears) the errors wgpu reported since the last call.
    pub fn take_errors(&self) -> Result<(), EngineError> {
        let mut errors = self.errors.lock().expect("error list poisoned");
        if errors.is_empty() {
            return Ok(());
        }
        let all = errors.join("; ");
        errors.clear();
        Err(EngineError::Gpu(all))
    }

    /// The pipeline of `kernel`, built on first use and cached.
    ///
    /// The lock is held while building: bind groups are made from a pipeline's own (derived)
    /// layout, so two threads must never end up with two pipelines for one kernel.
    pub fn pipeline(&self, kernel: Kernel) -> Result<wgpu::ComputePipeline, EngineError> {
        let mut pipelines = self.pipelines.lock().expect("poisoned");
        if let Some(p) = pipelines.get(&kernel) {
            return Ok(p.clone());
        }
        let module = self.module(kernel.file());
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry()),
                layout: None,
                module: &module,
                entry_point: Some(kernel.entry()),
                compilation_options: Default::default(),
                cache: None,
            });
        self.take_errors().map_err(|e| {
            EngineError::Gpu(format!(
                "building shaders/{} entry `{}`: {e}",
                kernel.file().name,
                kernel.entry()
            ))
        })?;
        pipelines.insert(kernel, pipeline.clone());
        Ok(pipeline)
    }

    /// The subgroup size the decode matvec sums with, when it does (matvec_subgroup.wgsl).
    pub fn subgroup_matvec_size(&self) -> Option<u32> {
        self.subgroup.filter(|_| {
            self.subgroup_matvec
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Turns the subgroup matvec off (the workgroup-reduction matvec runs instead) or back on
    /// where the device allows it; tests run both on one device.
    pub fn set_subgroup_matvec(&self, on: bool) {
        self.subgroup_matvec
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Builds every pipeline now, so the first step does not pay for it.
    pub fn warm_up(&self) -> Result<(), EngineError> {
        for k in Kernel::ALL {
            if k == Kernel::MatvecSubgroup && self.subgroup.is_none() {
                continue;
            }
            self.pipeline(k)?;
        }
        Ok(())
    }

    fn module(&self, file: ShaderFile) -> wgpu::ShaderModule {
        let mut modules = self.modules.lock().expect("poisoned");
        modules
            .entry(file.name)
            .or_insert_with(|| {
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(file.name),
                        source: wgpu::ShaderSource::Wgsl(if file.name == MATVEC_SUBGROUP.name {
                            format!("{}\n{}", MATMUL.source, file.source).into()
                        } else {
                            file.source.into()
                        }),
                    })
            })
            .clone()
    }

    /// Blocks until the GPU has finished everything submitted, then reports wgpu's errors.
    pub fn wait(&self) -> Result<(), EngineError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| EngineError::Gpu(format!("waiting for the GPU: {e}")))?;
        self.take_errors()
    }
}
