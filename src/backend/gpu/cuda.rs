//! The CUDA driver: `cudarc`'s dynamically loaded driver API for memory, modules, launches and
//! graphs, and NVRTC loaded with `libloading` (any of `libnvrtc.so.13`, `.12`, or unversioned,
//! whichever the machine has; `cudarc`'s own NVRTC loader only knows versions up to 12).
//!
//! `libcuda.so.1` is looked for before `cudarc` is touched: `cudarc` panics when it is missing.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use cudarc::driver::sys;

use super::ops::matmul::{Gemm, GemmType};
use super::{DeviceInfo, Driver, GpuKind, Handle, LaunchConfig};
use crate::{Error, Result};

fn check(r: sys::CUresult, what: &str) -> Result<()> {
    if r == sys::CUresult::CUDA_SUCCESS {
        return Ok(());
    }
    let mut s: *const c_char = std::ptr::null();
    // SAFETY: cuGetErrorString writes a static string pointer or leaves it null.
    let msg = unsafe {
        sys::cuGetErrorString(r, &mut s);
        if s.is_null() {
            format!("{r:?}")
        } else {
            CStr::from_ptr(s).to_string_lossy().into_owned()
        }
    };
    Err(Error::Gpu(format!("{what}: {msg} ({r:?})")))
}

/// Whether the CUDA driver library can be loaded (checked without `cudarc`, which panics).
fn driver_library() -> Result<()> {
    for name in ["libcuda.so.1", "libcuda.so"] {
        // SAFETY: loading the system CUDA driver runs its initializers, which is what we want.
        if unsafe { libloading::Library::new(name) }.is_ok() {
            return Ok(());
        }
    }
    Err(Error::Gpu("no CUDA driver (libcuda.so.1 not found)".into()))
}

fn init() -> Result<()> {
    driver_library()?;
    // SAFETY: the library exists; cuInit is idempotent.
    check(unsafe { sys::cuInit(0) }, "cuInit")
}

/// CUDA devices the driver reports.
pub fn device_count() -> Result<usize> {
    init()?;
    let mut n: c_int = 0;
    // SAFETY: plain out-parameter.
    check(unsafe { sys::cuDeviceGetCount(&mut n) }, "cuDeviceGetCount")?;
    Ok(n.max(0) as usize)
}

/// Whether programmatic dependent launch is wanted: `ROCMFORGE_PDL` unset, `1` or `on` (the
/// default), not `0` or `off`. Devices before sm_90 never use it.
fn pdl_enabled() -> Result<bool> {
    parse_pdl(std::env::var("ROCMFORGE_PDL").ok().as_deref())
}

fn parse_pdl(v: Option<&str>) -> Result<bool> {
    match v {
        None | Some("") | Some("1") | Some("on") => Ok(true),
        Some("0") | Some("off") => Ok(false),
        Some(other) => Err(Error::Gpu(format!(
            "ROCMFORGE_PDL={other:?}: expected 0, off, 1 or on"
        ))),
    }
}

/// One CUDA device with an owned context and a non-blocking stream.
pub struct CudaDriver {
    ctx: sys::CUcontext,
    stream: sys::CUstream,
    info: DeviceInfo,
    /// Programmatic dependent launch: kernels launched with programmatic stream serialization
    /// (sm_90+, unless `ROCMFORGE_PDL=0`).
    pdl: bool,
    nvrtc: Nvrtc,
    /// The cuBLAS handle, created at the first GEMM (`None` inside: no libcublas, warned once).
    blas: std::sync::OnceLock<Option<std::sync::Mutex<BlasHandle>>>,
}

// SAFETY: the context and stream handles are usable from any thread once the context is made
// current (every method does so first); the driver API is thread-safe.
unsafe impl Send for CudaDriver {}
unsafe impl Sync for CudaDriver {}

impl CudaDriver {
    /// Opens device `ordinal`.
    pub fn open(ordinal: usize) -> Result<Self> {
        let n = device_count()?;
        if ordinal >= n {
            return Err(Error::Gpu(format!(
                "no CUDA device {ordinal} (the driver reports {n})"
            )));
        }
        let nvrtc = Nvrtc::load()?;
        // SAFETY: out-parameters; the device index is in range.
        unsafe {
            let mut dev: sys::CUdevice = 0;
            check(sys::cuDeviceGet(&mut dev, ordinal as c_int), "cuDeviceGet")?;
            let attr = |a: sys::CUdevice_attribute| -> Result<i32> {
                let mut v: c_int = 0;
                check(
                    sys::cuDeviceGetAttribute(&mut v, a, dev),
                    "cuDeviceGetAttribute",
                )?;
                Ok(v)
            };
            use sys::CUdevice_attribute as A;
            let major = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
            let minor = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
            let sms = attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
            let mem_clock_khz = attr(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)?;
            let bus_bits = attr(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)?;
            let pdl = major >= 9 && pdl_enabled()?;
            if major < 7 {
                return Err(Error::Gpu(format!(
                    "CUDA device {ordinal}: unsupported architecture sm_{major}{minor} (need sm_70 or newer)"
                )));
            }
            let mut name = [0 as c_char; 256];
            check(
                sys::cuDeviceGetName(name.as_mut_ptr(), 256, dev),
                "cuDeviceGetName",
            )?;
            let name = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
            let mut total: usize = 0;
            check(
                sys::cuDeviceTotalMem_v2(&mut total, dev),
                "cuDeviceTotalMem",
            )?;
            let mut driver_version: c_int = 0;
            check(
                sys::cuDriverGetVersion(&mut driver_version),
                "cuDriverGetVersion",
            )?;
            let mut ctx: sys::CUcontext = std::ptr::null_mut();
            check(sys::cuCtxCreate_v2(&mut ctx, 0, dev), "cuCtxCreate")?;
            let mut stream: sys::CUstream = std::ptr::null_mut();
            let r = sys::cuStreamCreate(
                &mut stream,
                sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32,
            );
            if let Err(e) = check(r, "cuStreamCreate") {
                sys::cuCtxDestroy_v2(ctx);
                return Err(e);
            }
            let info = DeviceInfo {
                kind: GpuKind::Cuda,
                ordinal,
                name,
                arch: format!("sm_{major}{minor}"),
                warp_size: 32,
                total_mem: total as u64,
                multiprocessors: sms.max(0) as u32,
                driver_version,
                // DDR: two transfers per clock.
                peak_bandwidth: 2.0 * mem_clock_khz as f64 * 1e3 * bus_bits as f64 / 8.0,
            };
            Ok(CudaDriver {
                ctx,
                stream,
                info,
                pdl,
                nvrtc,
                blas: std::sync::OnceLock::new(),
            })
        }
    }

    fn current(&self) -> Result<()> {
        // SAFETY: the context is alive for the lifetime of self.
        check(unsafe { sys::cuCtxSetCurrent(self.ctx) }, "cuCtxSetCurrent")
    }

    /// Whether kernels are launched with programmatic dependent launch.
    pub fn pdl(&self) -> bool {
        self.pdl
    }

    /// The raw stream, for libraries (cuBLAS) that queue work on it.
    pub fn raw_stream(&self) -> *mut c_void {
        self.stream as *mut c_void
    }
}

impl Drop for CudaDriver {
    fn drop(&mut self) {
        // SAFETY: handles created in open, destroyed once here.
        unsafe {
            sys::cuCtxSetCurrent(self.ctx);
            sys::cuStreamSynchronize(self.stream);
            if let Some(Some(b)) = self.blas.take() {
                if let Ok(b) = b.into_inner() {
                    b.destroy();
                }
            }
            sys::cuStreamDestroy_v2(self.stream);
            sys::cuCtxDestroy_v2(self.ctx);
        }
    }
}

impl Driver for CudaDriver {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        self.current()?;
        let mut p: sys::CUdeviceptr = 0;
        // SAFETY: out-parameter.
        check(unsafe { sys::cuMemAlloc_v2(&mut p, bytes) }, "cuMemAlloc")
            .map_err(|e| Error::Gpu(format!("allocating {bytes} bytes: {e}")))?;
        Ok(p)
    }

    unsafe fn free(&self, ptr: u64) {
        if self.current().is_ok() {
            sys::cuMemFree_v2(ptr);
        }
    }

    unsafe fn htod(&self, dst: u64, src: *const u8, bytes: usize) -> Result<()> {
        self.current()?;
        check(
            sys::cuMemcpyHtoDAsync_v2(dst, src as *const c_void, bytes, self.stream),
            "cuMemcpyHtoDAsync",
        )?;
        check(sys::cuStreamSynchronize(self.stream), "cuStreamSynchronize")
    }

    unsafe fn dtoh(&self, dst: *mut u8, src: u64, bytes: usize) -> Result<()> {
        self.current()?;
        check(
            sys::cuMemcpyDtoHAsync_v2(dst as *mut c_void, src, bytes, self.stream),
            "cuMemcpyDtoHAsync",
        )?;
        check(sys::cuStreamSynchronize(self.stream), "cuStreamSynchronize")
    }

    unsafe fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.current()?;
        check(
            sys::cuMemcpyDtoDAsync_v2(dst, src, bytes, self.stream),
            "cuMemcpyDtoDAsync",
        )
    }

    unsafe fn memset(&self, dst: u64, value: u8, bytes: usize) -> Result<()> {
        self.current()?;
        check(
            sys::cuMemsetD8Async(dst, value, bytes, self.stream),
            "cuMemsetD8Async",
        )
    }

    fn compile(&self, name: &str, source: &str, options: &[String]) -> Result<Vec<u8>> {
        let mut opts = vec![format!("--gpu-architecture={}", self.info.arch)];
        opts.extend(options.iter().cloned());
        self.nvrtc.compile(name, source, &opts)
    }

    fn compiler_version(&self) -> String {
        format!("nvrtc {}", self.nvrtc.version)
    }

    fn load_module(&self, image: &[u8]) -> Result<Handle> {
        self.current()?;
        let mut m: sys::CUmodule = std::ptr::null_mut();
        // SAFETY: the image is a CUBIN produced by NVRTC for this device.
        check(
            unsafe { sys::cuModuleLoadData(&mut m, image.as_ptr() as *const c_void) },
            "cuModuleLoadData",
        )?;
        Ok(m as Handle)
    }

    fn get_function(&self, module: Handle, name: &str) -> Result<Handle> {
        self.current()?;
        let c = CString::new(name).map_err(|_| Error::Gpu(format!("kernel name {name:?}")))?;
        let mut f: sys::CUfunction = std::ptr::null_mut();
        // SAFETY: module handle from load_module.
        check(
            unsafe { sys::cuModuleGetFunction(&mut f, module as sys::CUmodule, c.as_ptr()) },
            &format!("kernel {name}"),
        )?;
        Ok(f as Handle)
    }

    unsafe fn unload_module(&self, module: Handle) {
        if self.current().is_ok() {
            sys::cuModuleUnload(module as sys::CUmodule);
        }
    }

    unsafe fn launch(
        &self,
        func: Handle,
        cfg: &LaunchConfig,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        self.current()?;
        if cfg.shared_mem > 48 * 1024 {
            check(
                sys::cuFuncSetAttribute(
                    func as sys::CUfunction,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    cfg.shared_mem as c_int,
                ),
                "cuFuncSetAttribute(max dynamic shared memory)",
            )?;
        }
        if self.pdl {
            // Programmatic stream serialization: the kernel may be scheduled before the previous
            // one in the stream has finished; every kernel of ours begins with RF_PDL_WAIT().
            // Stream capture turns the attribute into a programmatic edge of the graph.
            let mut attr: sys::CUlaunchAttribute = std::mem::zeroed();
            attr.id =
                sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attr.value.programmaticStreamSerializationAllowed = 1;
            let config = sys::CUlaunchConfig {
                gridDimX: cfg.grid.0,
                gridDimY: cfg.grid.1,
                gridDimZ: cfg.grid.2,
                blockDimX: cfg.block.0,
                blockDimY: cfg.block.1,
                blockDimZ: cfg.block.2,
                sharedMemBytes: cfg.shared_mem,
                hStream: self.stream,
                attrs: &mut attr,
                numAttrs: 1,
            };
            return check(
                sys::cuLaunchKernelEx(
                    &config,
                    func as sys::CUfunction,
                    args.as_mut_ptr(),
                    std::ptr::null_mut(),
                ),
                "cuLaunchKernelEx",
            );
        }
        check(
            sys::cuLaunchKernel(
                func as sys::CUfunction,
                cfg.grid.0,
                cfg.grid.1,
                cfg.grid.2,
                cfg.block.0,
                cfg.block.1,
                cfg.block.2,
                cfg.shared_mem,
                self.stream,
                args.as_mut_ptr(),
                std::ptr::null_mut(),
            ),
            "cuLaunchKernel",
        )
    }

    fn synchronize(&self) -> Result<()> {
        self.current()?;
        // SAFETY: stream alive.
        check(
            unsafe { sys::cuStreamSynchronize(self.stream) },
            "cuStreamSynchronize",
        )
    }

    fn mem_info(&self) -> Result<(u64, u64)> {
        self.current()?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: out-parameters.
        check(
            unsafe { sys::cuMemGetInfo_v2(&mut free, &mut total) },
            "cuMemGetInfo",
        )?;
        Ok((free as u64, total as u64))
    }

    fn begin_capture(&self) -> Result<()> {
        self.current()?;
        // SAFETY: stream alive. Relaxed mode: other threads' (other tests') calls are unaffected
        // by this capture, and allocating scratch (cuMemAlloc) during the capture is allowed.
        check(
            unsafe {
                sys::cuStreamBeginCapture_v2(
                    self.stream,
                    sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
                )
            },
            "cuStreamBeginCapture",
        )
    }

    fn end_capture(&self) -> Result<Handle> {
        self.current()?;
        // SAFETY: out-parameters; the graph is destroyed after instantiation.
        unsafe {
            let mut g: sys::CUgraph = std::ptr::null_mut();
            check(
                sys::cuStreamEndCapture(self.stream, &mut g),
                "cuStreamEndCapture",
            )?;
            let mut exec: sys::CUgraphExec = std::ptr::null_mut();
            let r = sys::cuGraphInstantiateWithFlags(&mut exec, g, 0);
            sys::cuGraphDestroy(g);
            check(r, "cuGraphInstantiate")?;
            Ok(exec as Handle)
        }
    }

    fn graph_launch(&self, exec: Handle) -> Result<()> {
        self.current()?;
        // SAFETY: exec from end_capture.
        check(
            unsafe { sys::cuGraphLaunch(exec as sys::CUgraphExec, self.stream) },
            "cuGraphLaunch",
        )
    }

    unsafe fn graph_destroy(&self, exec: Handle) {
        if self.current().is_ok() {
            sys::cuGraphExecDestroy(exec as sys::CUgraphExec);
        }
    }

    unsafe fn gemm(&self, g: &Gemm) -> Result<bool> {
        self.current()?;
        let Some(blas) = self.blas.get_or_init(|| self.create_blas()) else {
            return Ok(false);
        };
        let b = blas
            .lock()
            .map_err(|_| Error::Gpu("cuBLAS handle poisoned".into()))?;
        b.gemm(g)?;
        Ok(true)
    }
}

type NvrtcProgram = *mut c_void;

/// NVRTC entry points, loaded from whichever `libnvrtc` the machine has.
struct Nvrtc {
    _lib: libloading::Library,
    version: String,
    create: unsafe extern "C" fn(
        *mut NvrtcProgram,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> c_int,
    compile: unsafe extern "C" fn(NvrtcProgram, c_int, *const *const c_char) -> c_int,
    log_size: unsafe extern "C" fn(NvrtcProgram, *mut usize) -> c_int,
    log: unsafe extern "C" fn(NvrtcProgram, *mut c_char) -> c_int,
    cubin_size: unsafe extern "C" fn(NvrtcProgram, *mut usize) -> c_int,
    cubin: unsafe extern "C" fn(NvrtcProgram, *mut c_char) -> c_int,
    destroy: unsafe extern "C" fn(*mut NvrtcProgram) -> c_int,
}

// SAFETY: NVRTC is thread-safe for distinct programs; the struct holds only function pointers.
unsafe impl Send for Nvrtc {}
unsafe impl Sync for Nvrtc {}

fn nvrtc_candidates() -> Vec<String> {
    let mut v: Vec<String> = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut roots = vec!["/usr/local/cuda".to_string()];
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(p) = std::env::var(var) {
            roots.insert(0, p);
        }
    }
    for r in roots {
        for so in ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"] {
            v.push(format!("{r}/lib64/{so}"));
        }
    }
    v
}

impl Nvrtc {
    fn load() -> Result<Self> {
        let cands = nvrtc_candidates();
        // SAFETY: loading NVRTC runs no code beyond its initializers.
        let lib = cands
            .iter()
            .find_map(|c| unsafe { libloading::Library::new(c) }.ok())
            .ok_or_else(|| Error::Gpu(format!("no NVRTC library (tried {})", cands.join(", "))))?;
        // SAFETY: the symbol types are NVRTC's C signatures.
        unsafe {
            macro_rules! sym {
                ($n:literal) => {
                    *lib.get($n).map_err(|e| {
                        Error::Gpu(format!(
                            "NVRTC symbol {}: {e}",
                            String::from_utf8_lossy(&$n[..$n.len() - 1])
                        ))
                    })?
                };
            }
            let ver: unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int =
                sym!(b"nvrtcVersion\0");
            let (mut ma, mut mi) = (0, 0);
            ver(&mut ma, &mut mi);
            Ok(Nvrtc {
                version: format!("{ma}.{mi}"),
                create: sym!(b"nvrtcCreateProgram\0"),
                compile: sym!(b"nvrtcCompileProgram\0"),
                log_size: sym!(b"nvrtcGetProgramLogSize\0"),
                log: sym!(b"nvrtcGetProgramLog\0"),
                cubin_size: sym!(b"nvrtcGetCUBINSize\0"),
                cubin: sym!(b"nvrtcGetCUBIN\0"),
                destroy: sym!(b"nvrtcDestroyProgram\0"),
                _lib: lib,
            })
        }
    }

    fn compile(&self, name: &str, source: &str, options: &[String]) -> Result<Vec<u8>> {
        let src = CString::new(source).map_err(|_| Error::Gpu(format!("{name}: NUL in source")))?;
        let cname = CString::new(name).map_err(|_| Error::Gpu(format!("{name}: NUL in name")))?;
        let copts: Vec<CString> = options
            .iter()
            .map(|o| CString::new(o.as_str()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::Gpu(format!("{name}: NUL in compiler option")))?;
        let popts: Vec<*const c_char> = copts.iter().map(|c| c.as_ptr()).collect();
        // SAFETY: NVRTC C API with valid NUL-terminated strings; the program is destroyed below.
        unsafe {
            let mut prog: NvrtcProgram = std::ptr::null_mut();
            let r = (self.create)(
                &mut prog,
                src.as_ptr(),
                cname.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            );
            if r != 0 {
                return Err(Error::Gpu(format!(
                    "{name}: nvrtcCreateProgram failed ({r})"
                )));
            }
            let r = (self.compile)(prog, popts.len() as c_int, popts.as_ptr());
            let result = if r != 0 {
                let mut n = 0usize;
                (self.log_size)(prog, &mut n);
                let mut log = vec![0u8; n.max(1)];
                (self.log)(prog, log.as_mut_ptr() as *mut c_char);
                let log = String::from_utf8_lossy(&log)
                    .trim_end_matches('\0')
                    .to_string();
                Err(Error::Gpu(format!(
                    "NVRTC failed to compile {name} ({}): {log}",
                    options.join(" ")
                )))
            } else {
                let mut n = 0usize;
                (self.cubin_size)(prog, &mut n);
                let mut bin = vec![0u8; n];
                (self.cubin)(prog, bin.as_mut_ptr() as *mut c_char);
                Ok(bin)
            };
            (self.destroy)(&mut prog);
            result
        }
    }
}

// ---------------------------------------------------------------------------------------------
// cuBLAS, for prompt processing and batched decode (`ops::matmul`).
//
// Loaded with `libloading` like NVRTC: `cudarc`'s cuBLAS loader knows `libcublas.so.12` and older
// (and panics when none is found), the H100 machine has `libcublas.so.13`. The handle is created
// lazily, once per driver (context), bound to the driver's stream, with a fixed workspace from
// `cuMemAlloc` (`cublasSetWorkspace`): nothing is allocated inside a GEMM, so GEMMs can be
// captured in a CUDA graph. A missing library is not an error: `gemm` answers `Ok(false)` and the
// caller falls back to the portable kernel, with one warning per process.

/// cuBLAS workspace: NVIDIA's recommendation for Hopper (32 MiB; 4 MiB suffice before it).
const BLAS_WORKSPACE: usize = 32 << 20;

type BlasHandleT = *mut c_void;

/// `cudaDataType` values.
const CUDA_R_32F: c_int = 0;
const CUDA_R_16F: c_int = 2;
const CUDA_R_16BF: c_int = 14;
/// `cublasComputeType_t::CUBLAS_COMPUTE_32F`.
const CUBLAS_COMPUTE_32F: c_int = 68;
const CUBLAS_OP_N: c_int = 0;
const CUBLAS_OP_T: c_int = 1;
/// `cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT` (tensor cores are used for f16/bf16 anyway).
const CUBLAS_GEMM_DEFAULT: c_int = -1;

type GemmExFn = unsafe extern "C" fn(
    BlasHandleT,
    c_int,         // transa
    c_int,         // transb
    c_int,         // m
    c_int,         // n
    c_int,         // k
    *const c_void, // alpha
    *const c_void, // A
    c_int,         // A type
    c_int,         // lda
    *const c_void, // B
    c_int,         // B type
    c_int,         // ldb
    *const c_void, // beta
    *mut c_void,   // C
    c_int,         // C type
    c_int,         // ldc
    c_int,         // compute type
    c_int,         // algo
) -> c_int;

/// The cuBLAS entry points used, from whichever `libcublas` the machine has.
struct BlasLib {
    _lib: libloading::Library,
    create: unsafe extern "C" fn(*mut BlasHandleT) -> c_int,
    destroy: unsafe extern "C" fn(BlasHandleT) -> c_int,
    set_stream: unsafe extern "C" fn(BlasHandleT, *mut c_void) -> c_int,
    set_workspace: unsafe extern "C" fn(BlasHandleT, *mut c_void, usize) -> c_int,
    gemm_ex: GemmExFn,
}

fn blas_candidates() -> Vec<String> {
    let sos = ["libcublas.so.13", "libcublas.so.12", "libcublas.so"];
    let mut v: Vec<String> = Vec::new();
    if let Ok(p) = std::env::var("ROCMFORGE_CUBLAS") {
        v.push(p);
    }
    v.extend(sos.iter().map(|s| s.to_string()));
    let mut roots = vec!["/usr/local/cuda".to_string()];
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(p) = std::env::var(var) {
            roots.insert(0, p);
        }
    }
    for r in roots {
        for so in sos {
            v.push(format!("{r}/lib64/{so}"));
        }
    }
    v
}

impl BlasLib {
    fn load() -> Result<Self> {
        if std::env::var("ROCMFORGE_CUBLAS").is_ok_and(|v| v == "off") {
            return Err(Error::Gpu("cuBLAS disabled by ROCMFORGE_CUBLAS=off".into()));
        }
        let cands = blas_candidates();
        // SAFETY: loading cuBLAS runs no code beyond its initializers.
        let lib = cands
            .iter()
            .find_map(|c| unsafe { libloading::Library::new(c) }.ok())
            .ok_or_else(|| Error::Gpu(format!("no cuBLAS library (tried {})", cands.join(", "))))?;
        // SAFETY: the symbol types are cuBLAS's C signatures.
        unsafe {
            macro_rules! sym {
                ($n:literal) => {
                    *lib.get($n).map_err(|e| {
                        Error::Gpu(format!(
                            "cuBLAS symbol {}: {e}",
                            String::from_utf8_lossy(&$n[..$n.len() - 1])
                        ))
                    })?
                };
            }
            Ok(BlasLib {
                create: sym!(b"cublasCreate_v2\0"),
                destroy: sym!(b"cublasDestroy_v2\0"),
                set_stream: sym!(b"cublasSetStream_v2\0"),
                set_workspace: sym!(b"cublasSetWorkspace_v2\0"),
                gemm_ex: sym!(b"cublasGemmEx\0"),
                _lib: lib,
            })
        }
    }
}

fn blas_check(r: c_int, what: &str) -> Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(Error::Gpu(format!("{what} failed (cublasStatus {r})")))
    }
}

/// One cuBLAS handle bound to a driver's stream, with its workspace.
pub(crate) struct BlasHandle {
    lib: BlasLib,
    handle: BlasHandleT,
    workspace: sys::CUdeviceptr,
}

// SAFETY: the handle is used under the driver's mutex, with the driver's context current.
unsafe impl Send for BlasHandle {}

impl BlasHandle {
    /// Destroys the handle and frees the workspace (the context must be current).
    unsafe fn destroy(self) {
        (self.lib.destroy)(self.handle);
        sys::cuMemFree_v2(self.workspace);
    }

    unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        let ty = |t: GemmType| match t {
            GemmType::F16 => CUDA_R_16F,
            GemmType::Bf16 => CUDA_R_16BF,
            GemmType::F32 => CUDA_R_32F,
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        blas_check(
            (self.lib.gemm_ex)(
                self.handle,
                CUBLAS_OP_T,
                CUBLAS_OP_N,
                g.m,
                g.n,
                g.k,
                &alpha as *const f32 as *const c_void,
                g.a as *const c_void,
                ty(g.ab_type),
                g.lda,
                g.b as *const c_void,
                ty(g.ab_type),
                g.ldb,
                &beta as *const f32 as *const c_void,
                g.c as *mut c_void,
                CUDA_R_32F,
                g.ldc,
                CUBLAS_COMPUTE_32F,
                CUBLAS_GEMM_DEFAULT,
            ),
            "cublasGemmEx",
        )
    }
}

impl CudaDriver {
    /// The cuBLAS handle of this driver, or `None` (warned once per process) when cuBLAS cannot
    /// be loaded or set up.
    fn create_blas(&self) -> Option<std::sync::Mutex<BlasHandle>> {
        match self.try_create_blas() {
            Ok(b) => Some(std::sync::Mutex::new(b)),
            Err(e) => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!("warning: {e}; matrix products use the portable GPU kernel")
                });
                None
            }
        }
    }

    fn try_create_blas(&self) -> Result<BlasHandle> {
        let lib = BlasLib::load()?;
        self.current()?;
        // SAFETY: cuBLAS C API; the context is current; every object is released on failure.
        unsafe {
            let mut h: BlasHandleT = std::ptr::null_mut();
            blas_check((lib.create)(&mut h), "cublasCreate")?;
            let mut ws: sys::CUdeviceptr = 0;
            let r = check(
                sys::cuMemAlloc_v2(&mut ws, BLAS_WORKSPACE),
                "cuMemAlloc(cuBLAS workspace)",
            )
            .and_then(|_| blas_check((lib.set_stream)(h, self.raw_stream()), "cublasSetStream"))
            // After the stream: cublasSetStream resets the workspace to the default pool.
            .and_then(|_| {
                blas_check(
                    (lib.set_workspace)(h, ws as *mut c_void, BLAS_WORKSPACE),
                    "cublasSetWorkspace",
                )
            });
            if let Err(e) = r {
                (lib.destroy)(h);
                if ws != 0 {
                    sys::cuMemFree_v2(ws);
                }
                return Err(e);
            }
            Ok(BlasHandle {
                lib,
                handle: h,
                workspace: ws,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::kernels::{ALL, COMPAT_H};

    /// The first statement of the function body that opens at `open` (the index of its `{`).
    fn first_statement(src: &str, open: usize) -> &str {
        let body = &src[open + 1..];
        body[..body.find(';').unwrap_or(body.len())].trim()
    }

    /// Whether the device function `name` (a template every kernel of a family calls) begins
    /// with the wait.
    fn device_fn_waits(src: &str, name: &str) -> bool {
        src.match_indices(&format!("RF_DEVICE void {name}("))
            .filter_map(|(i, _)| src[i..].find('{').map(|j| i + j))
            .any(|open| first_statement(src, open) == "RF_PDL_WAIT()")
    }

    /// With PDL a kernel may start while its predecessor runs: every kernel must wait before it
    /// touches global memory (or returns), directly or as the first statement of the template it
    /// calls.
    #[test]
    fn every_kernel_begins_with_the_pdl_wait() {
        assert!(COMPAT_H.contains("#define RF_PDL_WAIT()"));
        let mut kernels = 0;
        for f in ALL {
            let src = f.source;
            for (i, _) in src.match_indices("RF_KERNEL void ") {
                let Some(open) = src[i..].find('{').map(|j| i + j) else {
                    panic!("{}: kernel without a body at {i}", f.name)
                };
                let first = first_statement(src, open);
                let callee = first.split('<').next().unwrap_or("").trim();
                let ok = first == "RF_PDL_WAIT()"
                    || (first.contains('<')
                        && first.ends_with("(p)")
                        && device_fn_waits(src, callee));
                let head = &src[i..open];
                assert!(ok, "{}: `{head}` starts with `{first}`", f.name);
                kernels += 1;
            }
        }
        assert!(kernels >= 25, "{kernels} kernel definitions found");
    }

    #[test]
    fn pdl_setting_parses() {
        assert!(parse_pdl(None).unwrap());
        assert!(parse_pdl(Some("1")).unwrap());
        assert!(parse_pdl(Some("on")).unwrap());
        assert!(!parse_pdl(Some("0")).unwrap());
        assert!(!parse_pdl(Some("off")).unwrap());
        let e = parse_pdl(Some("yes")).unwrap_err().to_string();
        assert!(e.contains("ROCMFORGE_PDL") && e.contains("yes"), "{e}");
    }
}
