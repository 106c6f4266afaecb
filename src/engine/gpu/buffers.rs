//! GPU buffers: f16 weights packed for the kernels (split across bindings when larger than the
//! device allows), plain storage buffers, and the staging buffer results are read back through.

use half::f16;
use wgpu::util::DeviceExt;

use super::super::EngineError;
use super::context::GpuContext;

/// Halves per weight-row unit: the matmul kernels read rows as vec4<u32>.
pub const ROW_ALIGN: usize = 8;

/// Usage of every storage buffer: bindable, writable from the host, copyable out.
pub const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

/// A row range of a matrix held in one buffer.
pub struct MatrixChunk {
    pub buffer: wgpu::Buffer,
    pub row0: usize,
    pub rows: usize,
}

/// A `(rows, cols)` f16 matrix on the GPU: two halves per u32, each row padded with zeros to
/// `stride` halves (a multiple of [`ROW_ALIGN`]), rows split into chunks that each fit one
/// storage binding.
pub struct GpuMatrix {
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
    pub chunks: Vec<MatrixChunk>,
}

impl GpuMatrix {
    /// Uploads row-major `data (rows, cols)`.
    pub fn upload(
        ctx: &GpuContext,
        label: &str,
        data: &[f16],
        rows: usize,
        cols: usize,
    ) -> Result<Self, EngineError> {
        assert_eq!(
            data.len(),
            rows * cols,
            "{label}: data is not ({rows}, {cols})"
        );
        let stride = cols.div_ceil(ROW_ALIGN) * ROW_ALIGN;
        let row_bytes = (stride * 2) as u64;
        let per_chunk = (ctx.max_binding() / row_bytes) as usize;
        if per_chunk == 0 {
            return Err(EngineError::Gpu(format!(
                "{label}: one row of {cols} halves ({row_bytes} bytes) exceeds the largest \
                 storage binding ({} bytes)",
                ctx.max_binding()
            )));
        }
        let mut chunks = Vec::new();
        let mut row0 = 0;
        while row0 < rows {
            let n = per_chunk.min(rows - row0);
            let mut bytes = vec![0u8; n * stride * 2];
            for r in 0..n {
                let src = &data[(row0 + r) * cols..][..cols];
                let dst = &mut bytes[r * stride * 2..][..cols * 2];
                for (d, v) in dst.chunks_exact_mut(2).zip(src) {
                    d.copy_from_slice(&v.to_bits().to_le_bytes());
                }
            }
            let buffer = ctx
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(&format!("{label} rows {row0}..{}", row0 + n)),
                    contents: &bytes,
                    usage: wgpu::BufferUsages::STORAGE,
                });
            chunks.push(MatrixChunk {
                buffer,
                row0,
                rows: n,
            });
            row0 += n;
        }
        Ok(GpuMatrix {
            rows,
            cols,
            stride,
            chunks,
        })
    }

    /// Bytes on the GPU.
    pub fn bytes(&self) -> u64 {
        (self.rows * self.stride * 2) as u64
    }
}

/// A small f16 vector (norm weights, biases), two halves per u32.
pub struct GpuVector {
    pub buffer: wgpu::Buffer,
    pub len: usize,
}

impl GpuVector {
    pub fn upload(ctx: &GpuContext, label: &str, data: &[f16]) -> Self {
        let mut bytes: Vec<u8> = data
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes())
            .collect();
        bytes.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
        let buffer = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &bytes,
                usage: wgpu::BufferUsages::STORAGE,
            });
        GpuVector {
            buffer,
            len: data.len(),
        }
    }
}

/// A zeroed storage buffer of at least `bytes` bytes (16 at least, a multiple of 16).
pub fn storage(ctx: &GpuContext, label: &str, bytes: u64) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.div_ceil(16).max(1) * 16,
        usage: STORAGE,
        mapped_at_creation: false,
    })
}

/// A storage buffer holding `contents` (padded with zeros to a multiple of 16 bytes).
pub fn storage_init(ctx: &GpuContext, label: &str, contents: &[u8]) -> wgpu::Buffer {
    let mut bytes = contents.to_vec();
    bytes.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
    ctx.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &bytes,
            usage: STORAGE,
        })
}

/// A mappable staging buffer that results are copied into and read back from; grown on demand
/// and reused.
#[derive(Default)]
pub struct Readback {
    buffer: Option<wgpu::Buffer>,
}

impl Readback {
    /// Makes room for `bytes`, replacing the buffer when it is too small.
    pub fn reserve(&mut self, ctx: &GpuContext, bytes: u64) -> &wgpu::Buffer {
        let bytes = bytes.div_ceil(16).max(1) * 16;
        if self.buffer.as_ref().is_none_or(|b| b.size() < bytes) {
            self.buffer = Some(ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes.next_power_of_two(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        self.buffer.as_ref().expect("just made")
    }

    /// Waits for the GPU and returns the first `bytes` bytes (a multiple of 4).
    pub fn read(&self, ctx: &GpuContext, bytes: u64) -> Result<Vec<u8>, EngineError> {
        let buffer = self.buffer.as_ref().expect("reserve() before read()");
        let slice = buffer.slice(..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let waited = ctx.wait();
        // Another thread polling the same device may be the one that runs our callback, a
        // moment after our own poll returned: wait for it rather than assume it already ran.
        let mapped = match rx.try_recv() {
            Ok(r) => Ok(r),
            Err(_) => {
                let _ = ctx.wait();
                rx.recv_timeout(std::time::Duration::from_secs(30))
                    .map_err(|_| std::sync::mpsc::TryRecvError::Empty)
            }
        };
        match (waited, mapped) {
            (Ok(()), Ok(Ok(()))) => {
                let out = slice.get_mapped_range().to_vec();
                buffer.unmap();
                Ok(out)
            }
            (waited, mapped) => {
                // Never leave the buffer mapped: the next step copies into it.
                buffer.unmap();
                Err(match (waited, mapped) {
                    (Err(e), _) => e,
                    (_, Ok(Err(e))) => {
                        EngineError::Gpu(format!("mapping the read-back buffer: {e}"))
                    }
                    _ => EngineError::Gpu("the read-back was never mapped".into()),
                })
            }
        }
    }
}

/// Little-endian f32 values of `bytes`.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Little-endian u32 values of `bytes`.
pub fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}
