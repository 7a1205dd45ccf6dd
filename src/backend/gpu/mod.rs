//! The GPU backend: one runtime over two drivers, CUDA (through `cudarc`'s dynamically loaded
//! driver API, NVRTC and cuBLAS loaded with `libloading`) and HIP (`libamdhip64` + hiprtc loaded
//! with `libloading`).
//!
//! Nothing here is global: a [`GpuDevice`] owns its context, its stream, its compiled modules and
//! (through [`GpuBuffer`]) its allocations. Tests each open their own device and run in parallel.
//! Opening never panics when no driver library exists: the library is looked for first and its
//! absence is reported as an error with the reason.
//!
//! Kernels live in `kernels/*.cu`, embedded with `include_str!` ([`kernels`]), compiled at first
//! use by NVRTC or hiprtc for the device's architecture and cached on disk ([`cache`]).

pub mod backend;
pub mod cache;
pub mod cuda;
pub mod hip;
pub mod kernels;
pub mod ops;
pub mod pool;
mod profile;

use std::collections::HashMap;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::{Error, Result};
use pool::{Pool, PoolBytes, POOL_ALIGN};

/// Which GPU driver a device is opened through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GpuKind {
    /// NVIDIA, through the CUDA driver API (`libcuda.so.1`).
    Cuda,
    /// AMD, through the HIP runtime (`libamdhip64.so`).
    Rocm,
}

impl GpuKind {
    /// The name used on the command line (`cuda`, `rocm`).
    pub fn name(self) -> &'static str {
        match self {
            GpuKind::Cuda => "cuda",
            GpuKind::Rocm => "rocm",
        }
    }
}

/// What a device is, read once when it is opened.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// The driver.
    pub kind: GpuKind,
    /// Device index within its driver.
    pub ordinal: usize,
    /// Marketing name ("NVIDIA H100 80GB HBM3").
    pub name: String,
    /// Compilation target: `sm_90` on CUDA, `gfx90a` on ROCm.
    pub arch: String,
    /// Threads per warp/wavefront the kernels are compiled for (32, or 64 on CDNA).
    pub warp_size: u32,
    /// Device memory in bytes.
    pub total_mem: u64,
    /// Multiprocessors (SMs / CUs).
    pub multiprocessors: u32,
    /// Driver version as the driver reports it (CUDA: 13000 = 13.0).
    pub driver_version: i32,
    /// Theoretical memory bandwidth in bytes/s (0 when the driver does not say).
    pub peak_bandwidth: f64,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{} {} ({}, {:.1} GiB)",
            self.kind.name(),
            self.ordinal,
            self.name,
            self.arch,
            self.total_mem as f64 / (1u64 << 30) as f64
        )
    }
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchConfig {
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block in x, y, z.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory in bytes.
    pub shared_mem: u32,
}

impl LaunchConfig {
    /// A 1-D launch of `blocks` blocks of `threads` threads, no dynamic shared memory.
    pub fn linear(blocks: u32, threads: u32) -> Self {
        Self {
            grid: (blocks, 1, 1),
            block: (threads, 1, 1),
            shared_mem: 0,
        }
    }
}

/// Opaque driver handles (pointers) carried as integers.
pub(crate) type Handle = usize;

/// The operations each driver provides; [`cuda::CudaDriver`] and [`hip::HipDriver`] implement it.
/// Pointers are device addresses; every call makes the device's context current first.
pub(crate) trait Driver: Send + Sync {
    fn info(&self) -> &DeviceInfo;
    fn alloc(&self, bytes: usize) -> Result<u64>;
    /// # Safety
    /// `ptr` came from `alloc` of this driver and is freed once.
    unsafe fn free(&self, ptr: u64);
    /// # Safety
    /// `src` is valid for `bytes` bytes; `dst` is a device range of at least `bytes` bytes.
    unsafe fn htod(&self, dst: u64, src: *const u8, bytes: usize) -> Result<()>;
    /// # Safety
    /// `dst` is valid for `bytes` bytes; `src` is a device range of at least `bytes` bytes.
    unsafe fn dtoh(&self, dst: *mut u8, src: u64, bytes: usize) -> Result<()>;
    /// # Safety
    /// Both ranges are device ranges of at least `bytes` bytes.
    unsafe fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()>;
    /// # Safety
    /// `dst` is a device range of at least `bytes` bytes.
    unsafe fn memset(&self, dst: u64, value: u8, bytes: usize) -> Result<()>;
    /// Compiles one source to a loadable image (CUBIN / code object).
    fn compile(&self, name: &str, source: &str, options: &[String]) -> Result<Vec<u8>>;
    /// Compiler identification that goes into the cache key.
    fn compiler_version(&self) -> String;
    fn load_module(&self, image: &[u8]) -> Result<Handle>;
    fn get_function(&self, module: Handle, name: &str) -> Result<Handle>;
    /// # Safety
    /// `module` came from `load_module` and is unloaded once.
    unsafe fn unload_module(&self, module: Handle);
    /// # Safety
    /// `args` point at values matching the kernel's parameters.
    unsafe fn launch(
        &self,
        func: Handle,
        cfg: &LaunchConfig,
        args: &mut [*mut c_void],
    ) -> Result<()>;
    fn synchronize(&self) -> Result<()>;
    fn mem_info(&self) -> Result<(u64, u64)>;
    fn begin_capture(&self) -> Result<()>;
    fn end_capture(&self) -> Result<Handle>;
    fn graph_launch(&self, exec: Handle) -> Result<()>;
    /// # Safety
    /// `exec` came from `end_capture` and is destroyed once.
    unsafe fn graph_destroy(&self, exec: Handle);

    /// `C = A^T B` through the vendor BLAS on the device's stream (cuBLAS; see
    /// [`ops::matmul::Gemm`]). `Ok(false)` when the driver has none (HIP; no libcublas): the
    /// caller falls back to its own kernel.
    /// # Safety
    /// The pointers in `g` address device memory valid for the extents it describes.
    unsafe fn gemm(&self, _g: &ops::matmul::Gemm) -> Result<bool> {
        Ok(false)
    }
}

/// Reasons why devices were not opened, one per device or driver, for `--device auto`.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The driver looked at.
    pub kind: GpuKind,
    /// The device index, or `None` when the whole driver is missing.
    pub ordinal: Option<usize>,
    /// Why: "libcuda.so.1 not found", "out of memory", "unsupported architecture gfx803", ...
    pub reason: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ordinal {
            Some(i) => write!(f, "{}:{}: {}", self.kind.name(), i, self.reason),
            None => write!(f, "{}: {}", self.kind.name(), self.reason),
        }
    }
}

/// Number of devices a driver reports, or the reason it cannot be used. Never panics.
pub fn device_count(kind: GpuKind) -> Result<usize> {
    match kind {
        GpuKind::Cuda => cuda::device_count(),
        GpuKind::Rocm => hip::device_count(),
    }
}

/// Opens the first usable device: CUDA devices first, then ROCm. Returns the device and the reasons
/// every device tried before it (or all of them, when none works) was rejected.
pub fn open_auto() -> (Option<GpuDevice>, Vec<Rejected>) {
    let mut rejected = Vec::new();
    for kind in [GpuKind::Cuda, GpuKind::Rocm] {
        let n = match device_count(kind) {
            Ok(0) => {
                rejected.push(Rejected {
                    kind,
                    ordinal: None,
                    reason: "driver reports no devices".into(),
                });
                continue;
            }
            Ok(n) => n,
            Err(e) => {
                rejected.push(Rejected {
                    kind,
                    ordinal: None,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        for i in 0..n {
            match GpuDevice::open(kind, i) {
                Ok(d) => return (Some(d), rejected),
                Err(e) => rejected.push(Rejected {
                    kind,
                    ordinal: Some(i),
                    reason: e.to_string(),
                }),
            }
        }
    }
    (None, rejected)
}

pub(crate) struct Inner {
    pub(crate) driver: Box<dyn Driver>,
    modules: Mutex<HashMap<&'static str, Arc<Module>>>,
    /// Scratch for eager work, reused by `alloc_pooled` (one stream orders every use, so a
    /// buffer freed while kernels still read it is safe to hand out).
    pool: Arc<Pool>,
    /// Scratch of captured graphs: `alloc_pooled` draws from here while a capture is under way.
    /// The graphs' buffers are shared among them; that is safe because graphs replay one at a
    /// time on the one stream, and each writes its scratch before reading it.
    graph_pool: Arc<Pool>,
    capturing: AtomicBool,
    /// Bytes of live plain allocations (weights, caches, staging).
    own_bytes: AtomicU64,
    /// Bytes allocated for the pools (in use or free), and the most at once.
    pool_bytes: PoolBytes,
    /// The step profile, when `ROCMFORGE_STEP_PROFILE=1` (see `profile.rs`).
    profile: Option<profile::StepProfile>,
    /// Zeroed u32 counters kernels may use and must leave zero: (address, count).
    counters: Mutex<(u64, usize)>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every buffer holds an Arc<Inner>: by now all pooled pointers are back in their pools.
        self.pool.drain(self.driver.as_ref(), &self.pool_bytes);
        self.graph_pool
            .drain(self.driver.as_ref(), &self.pool_bytes);
        if let Ok(mods) = self.modules.get_mut() {
            for (_, m) in mods.drain() {
                // SAFETY: loaded by this driver; `Module::drop` can no longer reach the device
                // (its weak reference fails from here on), so each handle is unloaded once.
                unsafe { self.driver.unload_module(m.handle) };
            }
        }
        if let Ok(&mut (ptr, n)) = self.counters.get_mut() {
            if n > 0 {
                // SAFETY: allocated by `zeroed_counters`, freed once here.
                unsafe { self.driver.free(ptr) };
            }
        }
        if let Some(p) = &self.profile {
            match p.report(self.driver.as_ref()) {
                Ok(Some(table)) => eprint!("{table}"),
                Ok(None) => {}
                Err(e) => eprintln!("step profile: {e}"),
            }
            // SAFETY: the device is closing; nothing launches after this.
            unsafe { p.close(self.driver.as_ref()) };
        }
    }
}

/// Whether `ROCMFORGE_POOL_TRACE=1`: every pooled allocation and release is printed to stderr
/// (`pool alloc PTR BYTES GRAPH` / `pool free PTR`), for studying the scratch pools.
fn pool_trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("ROCMFORGE_POOL_TRACE").as_deref() == Ok("1"))
}

/// Pool block size of a byte size.
fn pool_bucket(bytes: usize) -> usize {
    bytes.div_ceil(POOL_ALIGN) * POOL_ALIGN
}

/// A compiled kernel module loaded on one device. It refers to its device weakly: the device's
/// module table holds the module, so a strong reference would keep every device that loaded a
/// kernel alive for ever (its context, stream and pools were never freed before session 5).
pub struct Module {
    handle: Handle,
    functions: Mutex<HashMap<String, Handle>>,
    dev: Weak<Inner>,
}

impl Drop for Module {
    fn drop(&mut self) {
        // A module outliving its device's table was unloaded when the device closed.
        if let Some(dev) = self.dev.upgrade() {
            // SAFETY: the handle came from load_module and is unloaded only here.
            unsafe { dev.driver.unload_module(self.handle) }
        }
    }
}

/// A kernel of a loaded module.
#[derive(Clone)]
pub struct Kernel {
    handle: Handle,
    name: String,
    _module: Arc<Module>,
}

impl Kernel {
    /// The kernel's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One GPU, opened through one driver, with its own context and stream. Cheap to clone (shared
/// ownership of the same context); buffers keep their device alive.
#[derive(Clone)]
pub struct GpuDevice {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuDevice({})", self.info())
    }
}

/// Element types that can live in a [`GpuBuffer`]: plain data with no padding and no pointers.
///
/// # Safety
/// Every bit pattern of `size_of::<Self>()` bytes is a valid value.
pub unsafe trait GpuElem: Copy + Send + Sync + 'static {}
// SAFETY: plain numeric types; every bit pattern is valid.
unsafe impl GpuElem for f32 {}
unsafe impl GpuElem for f64 {}
unsafe impl GpuElem for u8 {}
unsafe impl GpuElem for i8 {}
unsafe impl GpuElem for u16 {}
unsafe impl GpuElem for i16 {}
unsafe impl GpuElem for u32 {}
unsafe impl GpuElem for i32 {}
unsafe impl GpuElem for u64 {}
unsafe impl GpuElem for i64 {}
unsafe impl GpuElem for half::f16 {}
unsafe impl GpuElem for half::bf16 {}

/// Where a buffer's memory goes when the buffer is dropped.
enum Home {
    /// Freed.
    Own,
    /// Returned to a pool.
    Pool(Arc<Pool>),
    /// Nothing: a view into memory someone else owns.
    View,
}

/// A typed allocation in device memory, freed on drop.
pub struct GpuBuffer<T: GpuElem> {
    ptr: u64,
    len: usize,
    home: Home,
    dev: Arc<Inner>,
    _t: PhantomData<T>,
}

impl<T: GpuElem> GpuBuffer<T> {
    /// Elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Bytes.
    pub fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }
    /// The device address, for kernel parameters.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    /// The device address `offset` elements in (checked against the length).
    pub fn ptr_at(&self, offset: usize) -> Result<u64> {
        if offset > self.len {
            return Err(Error::Gpu(format!(
                "buffer offset {offset} past its length {}",
                self.len
            )));
        }
        Ok(self.ptr + (offset * std::mem::size_of::<T>()) as u64)
    }

    /// A buffer of `len` elements at element `offset` of this one that frees nothing on drop.
    ///
    /// # Safety
    /// The view must not be used after `self` is dropped (or, for a pooled buffer, handed out
    /// again): the caller keeps the owner alive for as long as the view.
    pub(crate) unsafe fn view(&self, offset: usize, len: usize) -> Result<GpuBuffer<T>> {
        if offset.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(Error::Gpu(format!(
                "view of {len} elements at {offset} past buffer length {}",
                self.len
            )));
        }
        Ok(GpuBuffer {
            ptr: self.ptr + (offset * std::mem::size_of::<T>()) as u64,
            len,
            home: Home::View,
            dev: self.dev.clone(),
            _t: PhantomData,
        })
    }
}

impl<T: GpuElem> std::fmt::Debug for GpuBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuBuffer<{}>({} at {:#x})",
            std::any::type_name::<T>(),
            self.len,
            self.ptr
        )
    }
}

impl<T: GpuElem> Drop for GpuBuffer<T> {
    fn drop(&mut self) {
        if self.ptr == 0 {
            return;
        }
        match &self.home {
            Home::View => return,
            Home::Pool(pool) => {
                if pool_trace() {
                    eprintln!("pool free {:#x}", self.ptr);
                }
                let capturing = self.dev.capturing.load(Ordering::Relaxed);
                pool.release(
                    self.dev.driver.as_ref(),
                    self.ptr,
                    &self.dev.pool_bytes,
                    capturing,
                );
                return;
            }
            Home::Own => {}
        }
        self.dev
            .own_bytes
            .fetch_sub(self.bytes() as u64, Ordering::Relaxed);
        // SAFETY: allocated by this driver in `alloc`, freed only here.
        unsafe { self.dev.driver.free(self.ptr) }
    }
}

/// A captured sequence of launches (CUDA graph / HIP graph), replayed with [`GpuGraph::launch`].
pub struct GpuGraph {
    exec: Handle,
    dev: Arc<Inner>,
}

impl GpuGraph {
    /// Replays the captured work on the device's stream.
    pub fn launch(&self) -> Result<()> {
        if let Some(p) = &self.dev.profile {
            p.stamp(self.dev.driver.as_ref(), "(before graph)")?;
        }
        self.dev.driver.graph_launch(self.exec)
    }
}

impl Drop for GpuGraph {
    fn drop(&mut self) {
        // SAFETY: from end_capture, destroyed only here.
        unsafe { self.dev.driver.graph_destroy(self.exec) }
    }
}

impl GpuDevice {
    /// Opens device `ordinal` of `kind` with a fresh context and stream. Fails with the reason
    /// (library not found, no such device, unsupported architecture) and never panics.
    pub fn open(kind: GpuKind, ordinal: usize) -> Result<GpuDevice> {
        let driver: Box<dyn Driver> = match kind {
            GpuKind::Cuda => Box::new(cuda::CudaDriver::open(ordinal)?),
            GpuKind::Rocm => Box::new(hip::HipDriver::open(ordinal)?),
        };
        let profile = profile::StepProfile::open(driver.as_ref())?;
        Ok(GpuDevice {
            inner: Arc::new(Inner {
                driver,
                modules: Mutex::new(HashMap::new()),
                pool: Arc::new(Pool::new(true)),
                graph_pool: Arc::new(Pool::new(false)),
                capturing: AtomicBool::new(false),
                own_bytes: AtomicU64::new(0),
                pool_bytes: PoolBytes::default(),
                profile,
                counters: Mutex::new((0, 0)),
            }),
        })
    }

    /// Opens the first device of any driver, for tests: `Err(reason)` when there is none.
    pub fn open_any() -> std::result::Result<GpuDevice, String> {
        if let Ok(s) = std::env::var("ROCMFORGE_TEST_DEVICE") {
            let (kind, i) = match parse_device(&s) {
                Ok(v) => v,
                Err(e) => return Err(e.to_string()),
            };
            return GpuDevice::open(kind, i).map_err(|e| e.to_string());
        }
        match open_auto() {
            (Some(d), _) => Ok(d),
            (None, rejected) => Err(rejected
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }

    /// What the device is.
    pub fn info(&self) -> &DeviceInfo {
        self.inner.driver.info()
    }

    /// Free and total device memory in bytes.
    pub fn mem_info(&self) -> Result<(u64, u64)> {
        self.inner.driver.mem_info()
    }

    /// Allocates `len` elements (contents undefined).
    pub fn alloc<T: GpuElem>(&self, len: usize) -> Result<GpuBuffer<T>> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::Gpu(format!("allocation of {len} elements overflows")))?;
        let ptr = if bytes == 0 {
            0
        } else {
            let p = self.inner.driver.alloc(bytes)?;
            self.inner
                .own_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
            p
        };
        Ok(GpuBuffer {
            ptr,
            len,
            home: Home::Own,
            dev: self.inner.clone(),
            _t: PhantomData,
        })
    }

    /// Allocates `len` elements of scratch (contents undefined) from the device's pool of freed
    /// scratch buffers, falling back to a fresh allocation; on drop it goes back to the pool.
    /// For activations, which a forward pass allocates and frees in the same sizes every step.
    pub fn alloc_pooled<T: GpuElem>(&self, len: usize) -> Result<GpuBuffer<T>> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::Gpu(format!("allocation of {len} elements overflows")))?;
        if bytes == 0 {
            return self.alloc(0);
        }
        let b = pool_bucket(bytes);
        let pool = if self.inner.capturing.load(Ordering::Relaxed) {
            &self.inner.graph_pool
        } else {
            &self.inner.pool
        };
        let ptr = pool.alloc(self.inner.driver.as_ref(), b, &self.inner.pool_bytes)?;
        if pool_trace() {
            eprintln!(
                "pool alloc {ptr:#x} {b} {}",
                Arc::ptr_eq(pool, &self.inner.graph_pool) as u8
            );
        }
        Ok(GpuBuffer {
            ptr,
            len,
            home: Home::Pool(pool.clone()),
            dev: self.inner.clone(),
            _t: PhantomData,
        })
    }

    /// A buffer over `len` elements at device address `ptr` that frees nothing on drop.
    ///
    /// # Safety
    /// `ptr` addresses at least `len` elements of this device's memory for as long as the buffer
    /// is used.
    pub(crate) unsafe fn borrow_raw<T: GpuElem>(&self, ptr: u64, len: usize) -> GpuBuffer<T> {
        GpuBuffer {
            ptr,
            len,
            home: Home::View,
            dev: self.inner.clone(),
            _t: PhantomData,
        }
    }

    /// Frees every scratch segment with nothing in use (the graphs' scratch stays).
    pub fn trim_pool(&self) {
        self.inner
            .pool
            .drain(self.inner.driver.as_ref(), &self.inner.pool_bytes);
    }

    /// Device memory this device's allocations hold: `(plain, scratch)` bytes, plain being
    /// weights, KV caches and staging, scratch the pools' segments (in use or free).
    pub fn memory_use(&self) -> (u64, u64) {
        (
            self.inner.own_bytes.load(Ordering::Relaxed),
            self.inner.pool_bytes.held.load(Ordering::Relaxed),
        )
    }

    /// The most scratch bytes the pools have held at once (the first pass of a shape grows the
    /// eager pool before it settles; see [`pool`]).
    pub fn scratch_peak(&self) -> u64 {
        self.inner.pool_bytes.peak.load(Ordering::Relaxed)
    }

    /// Allocates and fills with `data`.
    pub fn upload<T: GpuElem>(&self, data: &[T]) -> Result<GpuBuffer<T>> {
        let buf = self.alloc::<T>(data.len())?;
        self.write(&buf, 0, data)?;
        Ok(buf)
    }

    /// Copies `data` into `buf` starting at element `offset`.
    pub fn write<T: GpuElem>(&self, buf: &GpuBuffer<T>, offset: usize, data: &[T]) -> Result<()> {
        self.check_owner(buf)?;
        if offset + data.len() > buf.len {
            return Err(Error::Gpu(format!(
                "write of {} elements at {offset} past buffer length {}",
                data.len(),
                buf.len
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        // SAFETY: ranges checked above; T is plain data.
        unsafe {
            self.inner.driver.htod(
                buf.ptr_at(offset)?,
                data.as_ptr() as *const u8,
                std::mem::size_of_val(data),
            )
        }
    }

    /// Copies the whole buffer back (waits for the stream).
    pub fn download<T: GpuElem>(&self, buf: &GpuBuffer<T>) -> Result<Vec<T>> {
        self.check_owner(buf)?;
        let mut out = Vec::<T>::with_capacity(buf.len);
        if buf.len > 0 {
            // SAFETY: the vector has capacity for len elements; T accepts any bit pattern.
            unsafe {
                self.inner
                    .driver
                    .dtoh(out.as_mut_ptr() as *mut u8, buf.ptr, buf.bytes())?;
                out.set_len(buf.len);
            }
        }
        Ok(out)
    }

    /// Copies `src` into `dst` on the device (same length required).
    pub fn copy<T: GpuElem>(&self, src: &GpuBuffer<T>, dst: &GpuBuffer<T>) -> Result<()> {
        self.check_owner(src)?;
        self.check_owner(dst)?;
        if src.len != dst.len {
            return Err(Error::Gpu(format!(
                "copy between buffers of {} and {} elements",
                src.len, dst.len
            )));
        }
        if src.len == 0 {
            return Ok(());
        }
        // SAFETY: both owned by this device, same size.
        unsafe { self.inner.driver.dtod(dst.ptr, src.ptr, src.bytes()) }
    }

    /// Sets every byte of `buf` to `value` (0xFF makes every f32/f16 element a NaN: the poison).
    pub fn memset<T: GpuElem>(&self, buf: &GpuBuffer<T>, value: u8) -> Result<()> {
        self.check_owner(buf)?;
        if buf.len == 0 {
            return Ok(());
        }
        // SAFETY: the whole buffer.
        unsafe { self.inner.driver.memset(buf.ptr, value, buf.bytes()) }
    }

    /// Waits for all work queued on the device's stream.
    pub fn synchronize(&self) -> Result<()> {
        self.inner.driver.synchronize()
    }

    /// The kernel `name` of the embedded source `src`, compiling (or loading from the disk cache)
    /// and loading the module on first use.
    pub fn kernel(&self, src: &kernels::KernelSource, name: &str) -> Result<Kernel> {
        let module = self.module(src)?;
        let mut fns = module
            .functions
            .lock()
            .map_err(|_| Error::Gpu("module function table poisoned".into()))?;
        let handle = match fns.get(name) {
            Some(h) => *h,
            None => {
                let h = self.inner.driver.get_function(module.handle, name)?;
                fns.insert(name.to_string(), h);
                h
            }
        };
        drop(fns);
        Ok(Kernel {
            handle,
            name: name.to_string(),
            _module: module,
        })
    }

    fn module(&self, src: &kernels::KernelSource) -> Result<Arc<Module>> {
        let mut mods = self
            .inner
            .modules
            .lock()
            .map_err(|_| Error::Gpu("module table poisoned".into()))?;
        if let Some(m) = mods.get(src.name) {
            return Ok(m.clone());
        }
        let image = cache::compile_cached(self.inner.driver.as_ref(), src)?;
        let handle = self.inner.driver.load_module(&image)?;
        let m = Arc::new(Module {
            handle,
            functions: Mutex::new(HashMap::new()),
            dev: Arc::downgrade(&self.inner),
        });
        mods.insert(src.name, m.clone());
        Ok(m)
    }

    /// Launches `kernel` with an argument list: each entry points at one parameter's value.
    ///
    /// # Safety
    /// The arguments must match the kernel's parameters in number, order and type, and every
    /// device pointer among them must address memory valid for what the kernel reads and writes.
    pub unsafe fn launch(
        &self,
        kernel: &Kernel,
        cfg: LaunchConfig,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        self.inner.driver.launch(kernel.handle, &cfg, args)?;
        self.profile_kernel(kernel, &cfg)
    }

    /// Launches a kernel whose single parameter is the `#[repr(C)]` struct `params` (by value).
    ///
    /// # Safety
    /// `P` must match the kernel's parameter struct, and its device pointers must address memory
    /// valid for what the kernel reads and writes.
    pub unsafe fn launch_params<P: Copy>(
        &self,
        kernel: &Kernel,
        cfg: LaunchConfig,
        params: &P,
    ) -> Result<()> {
        let mut p = *params;
        let mut args = [&mut p as *mut P as *mut c_void];
        self.inner.driver.launch(kernel.handle, &cfg, &mut args)?;
        self.profile_kernel(kernel, &cfg)
    }

    /// With the step profile on, stamps the time of the launch just made.
    fn profile_kernel(&self, kernel: &Kernel, cfg: &LaunchConfig) -> Result<()> {
        match &self.inner.profile {
            Some(_) => self.profile_mark(&format!(
                "{} g{}x{} b{}",
                kernel.name, cfg.grid.0, cfg.grid.1, cfg.block.0
            )),
            None => Ok(()),
        }
    }

    /// With the step profile on (`ROCMFORGE_STEP_PROFILE=1`), adds the device time since the
    /// previous stamp to the row `label`: called after work not launched through
    /// [`GpuDevice::launch`] (cuBLAS). Nothing otherwise.
    pub fn profile_mark(&self, label: &str) -> Result<()> {
        match &self.inner.profile {
            Some(p) => p.stamp(self.inner.driver.as_ref(), label),
            None => Ok(()),
        }
    }

    /// The address of at least `n` u32 counters that are zero whenever no kernel is running;
    /// kernels that count in them must set them back to zero. Shared by every user (the
    /// stream orders them). Grows outside captures (a plain allocation, zeroed on the stream);
    /// `None` while a capture is under way and `n` exceeds what is there, so the caller takes a
    /// path without counters.
    pub fn zeroed_counters(&self, n: usize) -> Result<Option<u64>> {
        let mut c = self
            .inner
            .counters
            .lock()
            .map_err(|_| Error::Gpu("counter table poisoned".into()))?;
        if n <= c.1 {
            return Ok(Some(c.0));
        }
        if self.inner.capturing.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let len = n.max(c.1 * 2).max(1 << 16);
        let ptr = self.inner.driver.alloc(len * 4)?;
        // SAFETY: a fresh allocation of len u32.
        if let Err(e) = unsafe { self.inner.driver.memset(ptr, 0, len * 4) } {
            // SAFETY: allocated just above, not handed out.
            unsafe { self.inner.driver.free(ptr) };
            return Err(e);
        }
        if c.1 > 0 {
            // Launches queued before may still count in the old array: free after them.
            self.inner.driver.synchronize()?;
            // SAFETY: allocated here earlier; no queued work uses it after the synchronize.
            unsafe { self.inner.driver.free(c.0) };
        }
        *c = (ptr, len);
        Ok(Some(ptr))
    }

    /// Starts capturing the stream's launches into a graph (CUDA graph / HIP graph). Until
    /// [`GpuDevice::end_capture`], `alloc_pooled` hands out the graphs' own scratch, which no
    /// eager work uses.
    pub fn begin_capture(&self) -> Result<()> {
        self.inner.driver.begin_capture()?;
        self.inner.capturing.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Ends the capture begun by [`GpuDevice::begin_capture`] and instantiates the graph.
    pub fn end_capture(&self) -> Result<GpuGraph> {
        self.inner.capturing.store(false, Ordering::Relaxed);
        let exec = self.inner.driver.end_capture()?;
        Ok(GpuGraph {
            exec,
            dev: self.inner.clone(),
        })
    }

    fn check_owner<T: GpuElem>(&self, buf: &GpuBuffer<T>) -> Result<()> {
        if Arc::ptr_eq(&self.inner, &buf.dev) {
            Ok(())
        } else {
            Err(Error::Gpu("buffer belongs to another device".into()))
        }
    }
}

/// Parses `cuda`, `cuda:N`, `rocm`, `rocm:N` (also `hip`).
pub fn parse_device(s: &str) -> Result<(GpuKind, usize)> {
    let (k, n) = match s.split_once(':') {
        Some((k, n)) => (k, Some(n)),
        None => (s, None),
    };
    let kind = match k {
        "cuda" => GpuKind::Cuda,
        "rocm" | "hip" => GpuKind::Rocm,
        _ => {
            return Err(Error::InvalidInput(format!(
                "device {s:?}: expected cuda[:N] or rocm[:N]"
            )))
        }
    };
    let ordinal = match n {
        None => 0,
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| Error::InvalidInput(format!("device {s:?}: bad index {n:?}")))?,
    };
    Ok((kind, ordinal))
}

/// Rounds `n` up to a multiple of `m`, divided: the block count covering `n` items.
pub fn div_ceil_u32(n: usize, m: usize) -> Result<u32> {
    u32::try_from(n.div_ceil(m)).map_err(|_| Error::Gpu(format!("grid of {n}/{m} too large")))
}
