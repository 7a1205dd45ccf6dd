//! The HIP driver: `libamdhip64.so` and hiprtc loaded with `libloading` (no ROCm needed at build
//! time). hiprtc comes from `libhiprtc.so.7`/`.6` (ROCm 6+) or from `libamdhip64` itself (ROCm 5).
//!
//! HIP has no per-object contexts: a device is selected with `hipSetDevice` before every call on
//! the calling thread, and each [`HipDriver`] owns its stream.
//!
//! No AMD hardware has run this code yet; CI compiles the kernels with hiprtc through Debian's
//! `libamdhip64.so.5` (`tests/gpu_hiprtc.rs`) and with `hipcc` (`ci/hip_compile.sh`).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

use super::{DeviceInfo, Driver, GpuKind, Handle, LaunchConfig};
use crate::{Error, Result};

type HipErr = c_int;
type Ptr = *mut c_void;

fn hip_candidates() -> Vec<String> {
    let mut v = Vec::new();
    let mut roots = vec!["/opt/rocm".to_string()];
    if let Ok(p) = std::env::var("ROCM_PATH") {
        roots.insert(0, p);
    }
    for so in [
        "libamdhip64.so",
        "libamdhip64.so.7",
        "libamdhip64.so.6",
        "libamdhip64.so.5",
    ] {
        v.push(so.to_string());
        for r in &roots {
            v.push(format!("{r}/lib/{so}"));
        }
    }
    v
}

fn load_first(cands: &[String]) -> Option<(libloading::Library, String)> {
    cands.iter().find_map(|c| {
        // SAFETY: loading the ROCm runtime runs its initializers only.
        unsafe { libloading::Library::new(c) }
            .ok()
            .map(|l| (l, c.clone()))
    })
}

macro_rules! sym {
    ($lib:expr, $n:literal) => {
        *$lib
            .get(concat!($n, "\0").as_bytes())
            .map_err(|e| Error::Gpu(format!("HIP symbol {}: {e}", $n)))?
    };
}

/// The HIP runtime entry points.
struct Hip {
    _lib: libloading::Library,
    init: unsafe extern "C" fn(c_uint) -> HipErr,
    get_device_count: unsafe extern "C" fn(*mut c_int) -> HipErr,
    set_device: unsafe extern "C" fn(c_int) -> HipErr,
    device_get_name: unsafe extern "C" fn(*mut c_char, c_int, c_int) -> HipErr,
    device_total_mem: unsafe extern "C" fn(*mut usize, c_int) -> HipErr,
    get_device_properties: unsafe extern "C" fn(*mut c_void, c_int) -> HipErr,
    driver_get_version: unsafe extern "C" fn(*mut c_int) -> HipErr,
    get_error_string: unsafe extern "C" fn(HipErr) -> *const c_char,
    malloc: unsafe extern "C" fn(*mut Ptr, usize) -> HipErr,
    free: unsafe extern "C" fn(Ptr) -> HipErr,
    htod: unsafe extern "C" fn(Ptr, *const c_void, usize, Ptr) -> HipErr,
    dtoh: unsafe extern "C" fn(*mut c_void, Ptr, usize, Ptr) -> HipErr,
    dtod: unsafe extern "C" fn(Ptr, Ptr, usize, Ptr) -> HipErr,
    memset_d8: unsafe extern "C" fn(Ptr, u8, usize, Ptr) -> HipErr,
    mem_get_info: unsafe extern "C" fn(*mut usize, *mut usize) -> HipErr,
    stream_create: unsafe extern "C" fn(*mut Ptr, c_uint) -> HipErr,
    stream_destroy: unsafe extern "C" fn(Ptr) -> HipErr,
    stream_sync: unsafe extern "C" fn(Ptr) -> HipErr,
    module_load_data: unsafe extern "C" fn(*mut Ptr, *const c_void) -> HipErr,
    module_get_function: unsafe extern "C" fn(*mut Ptr, Ptr, *const c_char) -> HipErr,
    module_unload: unsafe extern "C" fn(Ptr) -> HipErr,
    #[allow(clippy::type_complexity)]
    launch: unsafe extern "C" fn(
        Ptr,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        Ptr,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> HipErr,
    begin_capture: unsafe extern "C" fn(Ptr, c_int) -> HipErr,
    end_capture: unsafe extern "C" fn(Ptr, *mut Ptr) -> HipErr,
    graph_instantiate: unsafe extern "C" fn(*mut Ptr, Ptr, *mut Ptr, *mut c_char, usize) -> HipErr,
    graph_launch: unsafe extern "C" fn(Ptr, Ptr) -> HipErr,
    graph_exec_destroy: unsafe extern "C" fn(Ptr) -> HipErr,
    graph_destroy: unsafe extern "C" fn(Ptr) -> HipErr,
}

impl Hip {
    fn load() -> Result<Self> {
        let (lib, _) = load_first(&hip_candidates())
            .ok_or_else(|| Error::Gpu("no HIP runtime (libamdhip64.so not found)".into()))?;
        // SAFETY: the types are HIP's C signatures.
        unsafe {
            Ok(Hip {
                init: sym!(lib, "hipInit"),
                get_device_count: sym!(lib, "hipGetDeviceCount"),
                set_device: sym!(lib, "hipSetDevice"),
                device_get_name: sym!(lib, "hipDeviceGetName"),
                device_total_mem: sym!(lib, "hipDeviceTotalMem"),
                get_device_properties: match lib.get(b"hipGetDevicePropertiesR0600\0") {
                    Ok(s) => *s,
                    Err(_) => sym!(lib, "hipGetDeviceProperties"),
                },
                driver_get_version: sym!(lib, "hipDriverGetVersion"),
                get_error_string: sym!(lib, "hipGetErrorString"),
                malloc: sym!(lib, "hipMalloc"),
                free: sym!(lib, "hipFree"),
                htod: sym!(lib, "hipMemcpyHtoDAsync"),
                dtoh: sym!(lib, "hipMemcpyDtoHAsync"),
                dtod: sym!(lib, "hipMemcpyDtoDAsync"),
                memset_d8: sym!(lib, "hipMemsetD8Async"),
                mem_get_info: sym!(lib, "hipMemGetInfo"),
                stream_create: sym!(lib, "hipStreamCreateWithFlags"),
                stream_destroy: sym!(lib, "hipStreamDestroy"),
                stream_sync: sym!(lib, "hipStreamSynchronize"),
                module_load_data: sym!(lib, "hipModuleLoadData"),
                module_get_function: sym!(lib, "hipModuleGetFunction"),
                module_unload: sym!(lib, "hipModuleUnload"),
                launch: sym!(lib, "hipModuleLaunchKernel"),
                begin_capture: sym!(lib, "hipStreamBeginCapture"),
                end_capture: sym!(lib, "hipStreamEndCapture"),
                graph_instantiate: sym!(lib, "hipGraphInstantiate"),
                graph_launch: sym!(lib, "hipGraphLaunch"),
                graph_exec_destroy: sym!(lib, "hipGraphExecDestroy"),
                graph_destroy: sym!(lib, "hipGraphDestroy"),
                _lib: lib,
            })
        }
    }

    fn check(&self, r: HipErr, what: &str) -> Result<()> {
        if r == 0 {
            return Ok(());
        }
        // SAFETY: hipGetErrorString returns a static string.
        let msg = unsafe {
            let s = (self.get_error_string)(r);
            if s.is_null() {
                String::new()
            } else {
                CStr::from_ptr(s).to_string_lossy().into_owned()
            }
        };
        Err(Error::Gpu(format!("{what}: {msg} (hipError {r})")))
    }

    fn device_count(&self) -> Result<usize> {
        // SAFETY: plain calls with out-parameters.
        unsafe {
            self.check((self.init)(0), "hipInit")?;
            let mut n = 0;
            self.check((self.get_device_count)(&mut n), "hipGetDeviceCount")?;
            Ok(n.max(0) as usize)
        }
    }
}

/// ROCm devices the runtime reports.
pub fn device_count() -> Result<usize> {
    Hip::load()?.device_count()
}

/// Threads per wavefront for an AMD architecture: 64 on GCN/CDNA (gfx9xx), 32 on RDNA.
pub fn warp_size_for(arch: &str) -> u32 {
    if arch.starts_with("gfx9") {
        64
    } else {
        32
    }
}

/// Architectures whose wave size and instruction set the kernels are written for.
fn supported_arch(arch: &str) -> bool {
    ["gfx90", "gfx94", "gfx95", "gfx103", "gfx11", "gfx12"]
        .iter()
        .any(|p| arch.starts_with(p))
}

/// One AMD device with its own stream.
pub struct HipDriver {
    hip: Hip,
    rtc: Hiprtc,
    device: c_int,
    stream: Ptr,
    info: DeviceInfo,
}

// SAFETY: HIP's API is thread-safe; every method selects the device on the calling thread first.
unsafe impl Send for HipDriver {}
unsafe impl Sync for HipDriver {}

impl HipDriver {
    /// Opens device `ordinal`.
    pub fn open(ordinal: usize) -> Result<Self> {
        let hip = Hip::load()?;
        let n = hip.device_count()?;
        if ordinal >= n {
            return Err(Error::Gpu(format!(
                "no ROCm device {ordinal} (the runtime reports {n})"
            )));
        }
        let rtc = Hiprtc::load()?;
        let device = ordinal as c_int;
        // SAFETY: out-parameters; properties are read into an oversized zeroed buffer and only
        // the architecture string is taken from it (its offset differs between ROCm versions).
        unsafe {
            hip.check((hip.set_device)(device), "hipSetDevice")?;
            let mut name = [0 as c_char; 256];
            hip.check(
                (hip.device_get_name)(name.as_mut_ptr(), 256, device),
                "hipDeviceGetName",
            )?;
            let name = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
            let mut total = 0usize;
            hip.check(
                (hip.device_total_mem)(&mut total, device),
                "hipDeviceTotalMem",
            )?;
            let mut props = vec![0u8; 16384];
            hip.check(
                (hip.get_device_properties)(props.as_mut_ptr() as *mut c_void, device),
                "hipGetDeviceProperties",
            )?;
            let arch = find_gfx(&props).ok_or_else(|| {
                Error::Gpu(format!(
                    "ROCm device {ordinal}: no gfx architecture name found"
                ))
            })?;
            if !supported_arch(&arch) {
                return Err(Error::Gpu(format!(
                    "ROCm device {ordinal}: unsupported architecture {arch}"
                )));
            }
            let mut ver = 0;
            (hip.driver_get_version)(&mut ver);
            let mut stream: Ptr = std::ptr::null_mut();
            hip.check(
                (hip.stream_create)(&mut stream, 1),
                "hipStreamCreateWithFlags",
            )?;
            Ok(HipDriver {
                info: DeviceInfo {
                    kind: GpuKind::Rocm,
                    ordinal,
                    name,
                    warp_size: warp_size_for(&arch),
                    arch,
                    total_mem: total as u64,
                    multiprocessors: 0,
                    driver_version: ver,
                    peak_bandwidth: 0.0,
                },
                hip,
                rtc,
                device,
                stream,
            })
        }
    }

    fn current(&self) -> Result<()> {
        // SAFETY: valid device index.
        self.hip.check(
            unsafe { (self.hip.set_device)(self.device) },
            "hipSetDevice",
        )
    }
}

/// The `gfxNNN` name in a properties buffer, without feature suffixes (`gfx90a:sramecc+:xnack-`).
fn find_gfx(buf: &[u8]) -> Option<String> {
    let pos = buf.windows(3).position(|w| w == b"gfx")?;
    let s: String = buf[pos..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric())
        .map(|&b| b as char)
        .collect();
    (s.len() > 3).then_some(s)
}

impl Drop for HipDriver {
    fn drop(&mut self) {
        // SAFETY: the stream was created in open and is destroyed once.
        unsafe {
            (self.hip.set_device)(self.device);
            (self.hip.stream_sync)(self.stream);
            (self.hip.stream_destroy)(self.stream);
        }
    }
}

impl Driver for HipDriver {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        self.current()?;
        let mut p: Ptr = std::ptr::null_mut();
        // SAFETY: out-parameter.
        self.hip
            .check(unsafe { (self.hip.malloc)(&mut p, bytes) }, "hipMalloc")
            .map_err(|e| Error::Gpu(format!("allocating {bytes} bytes: {e}")))?;
        Ok(p as u64)
    }

    unsafe fn free(&self, ptr: u64) {
        if self.current().is_ok() {
            (self.hip.free)(ptr as Ptr);
        }
    }

    unsafe fn htod(&self, dst: u64, src: *const u8, bytes: usize) -> Result<()> {
        self.current()?;
        let h = &self.hip;
        h.check(
            (h.htod)(dst as Ptr, src as *const c_void, bytes, self.stream),
            "hipMemcpyHtoDAsync",
        )?;
        h.check((h.stream_sync)(self.stream), "hipStreamSynchronize")
    }

    unsafe fn dtoh(&self, dst: *mut u8, src: u64, bytes: usize) -> Result<()> {
        self.current()?;
        let h = &self.hip;
        h.check(
            (h.dtoh)(dst as *mut c_void, src as Ptr, bytes, self.stream),
            "hipMemcpyDtoHAsync",
        )?;
        h.check((h.stream_sync)(self.stream), "hipStreamSynchronize")
    }

    unsafe fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.current()?;
        let h = &self.hip;
        h.check(
            (h.dtod)(dst as Ptr, src as Ptr, bytes, self.stream),
            "hipMemcpyDtoDAsync",
        )
    }

    unsafe fn memset(&self, dst: u64, value: u8, bytes: usize) -> Result<()> {
        self.current()?;
        let h = &self.hip;
        h.check(
            (h.memset_d8)(dst as Ptr, value, bytes, self.stream),
            "hipMemsetD8Async",
        )
    }

    fn compile(&self, name: &str, source: &str, options: &[String]) -> Result<Vec<u8>> {
        let mut opts = vec![format!("--offload-arch={}", self.info.arch)];
        opts.extend(options.iter().cloned());
        self.rtc.compile(name, source, &opts)
    }

    fn compiler_version(&self) -> String {
        format!("hiprtc {}", self.rtc.version)
    }

    fn load_module(&self, image: &[u8]) -> Result<Handle> {
        self.current()?;
        let mut m: Ptr = std::ptr::null_mut();
        // SAFETY: a code object from hiprtc for this device.
        self.hip.check(
            unsafe { (self.hip.module_load_data)(&mut m, image.as_ptr() as *const c_void) },
            "hipModuleLoadData",
        )?;
        Ok(m as Handle)
    }

    fn get_function(&self, module: Handle, name: &str) -> Result<Handle> {
        self.current()?;
        let c = CString::new(name).map_err(|_| Error::Gpu(format!("kernel name {name:?}")))?;
        let mut f: Ptr = std::ptr::null_mut();
        // SAFETY: module from load_module.
        self.hip.check(
            unsafe { (self.hip.module_get_function)(&mut f, module as Ptr, c.as_ptr()) },
            &format!("kernel {name}"),
        )?;
        Ok(f as Handle)
    }

    unsafe fn unload_module(&self, module: Handle) {
        if self.current().is_ok() {
            (self.hip.module_unload)(module as Ptr);
        }
    }

    unsafe fn launch(
        &self,
        func: Handle,
        cfg: &LaunchConfig,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        self.current()?;
        self.hip.check(
            (self.hip.launch)(
                func as Ptr,
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
            "hipModuleLaunchKernel",
        )
    }

    fn synchronize(&self) -> Result<()> {
        self.current()?;
        // SAFETY: stream alive.
        self.hip.check(
            unsafe { (self.hip.stream_sync)(self.stream) },
            "hipStreamSynchronize",
        )
    }

    fn mem_info(&self) -> Result<(u64, u64)> {
        self.current()?;
        let (mut f, mut t) = (0usize, 0usize);
        // SAFETY: out-parameters.
        self.hip.check(
            unsafe { (self.hip.mem_get_info)(&mut f, &mut t) },
            "hipMemGetInfo",
        )?;
        Ok((f as u64, t as u64))
    }

    fn begin_capture(&self) -> Result<()> {
        self.current()?;
        // SAFETY: stream alive; mode 2 = hipStreamCaptureModeRelaxed (allocations allowed).
        self.hip.check(
            unsafe { (self.hip.begin_capture)(self.stream, 2) },
            "hipStreamBeginCapture",
        )
    }

    fn end_capture(&self) -> Result<Handle> {
        self.current()?;
        let h = &self.hip;
        // SAFETY: out-parameters; the graph is destroyed after instantiation.
        unsafe {
            let mut g: Ptr = std::ptr::null_mut();
            h.check((h.end_capture)(self.stream, &mut g), "hipStreamEndCapture")?;
            let mut exec: Ptr = std::ptr::null_mut();
            let r =
                (h.graph_instantiate)(&mut exec, g, std::ptr::null_mut(), std::ptr::null_mut(), 0);
            (h.graph_destroy)(g);
            h.check(r, "hipGraphInstantiate")?;
            Ok(exec as Handle)
        }
    }

    fn graph_launch(&self, exec: Handle) -> Result<()> {
        self.current()?;
        // SAFETY: exec from end_capture.
        self.hip.check(
            unsafe { (self.hip.graph_launch)(exec as Ptr, self.stream) },
            "hipGraphLaunch",
        )
    }

    unsafe fn graph_destroy(&self, exec: Handle) {
        if self.current().is_ok() {
            (self.hip.graph_exec_destroy)(exec as Ptr);
        }
    }
}

type RtcProg = *mut c_void;

/// hiprtc entry points.
pub(crate) struct Hiprtc {
    _lib: libloading::Library,
    /// Where it was loaded from.
    pub(crate) path: String,
    pub(crate) version: String,
    create: unsafe extern "C" fn(
        *mut RtcProg,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> c_int,
    compile: unsafe extern "C" fn(RtcProg, c_int, *const *const c_char) -> c_int,
    log_size: unsafe extern "C" fn(RtcProg, *mut usize) -> c_int,
    log: unsafe extern "C" fn(RtcProg, *mut c_char) -> c_int,
    code_size: unsafe extern "C" fn(RtcProg, *mut usize) -> c_int,
    code: unsafe extern "C" fn(RtcProg, *mut c_char) -> c_int,
    destroy: unsafe extern "C" fn(*mut RtcProg) -> c_int,
}

// SAFETY: function pointers only; hiprtc is thread-safe for distinct programs.
unsafe impl Send for Hiprtc {}
unsafe impl Sync for Hiprtc {}

impl Hiprtc {
    /// Loads hiprtc: `libhiprtc.so.7`/`.6`, else from `libamdhip64` (ROCm 5 ships it there).
    pub(crate) fn load() -> Result<Self> {
        let mut cands = Vec::new();
        let mut roots = vec!["/opt/rocm".to_string()];
        if let Ok(p) = std::env::var("ROCM_PATH") {
            roots.insert(0, p);
        }
        for so in ["libhiprtc.so.7", "libhiprtc.so.6", "libhiprtc.so"] {
            cands.push(so.to_string());
            for r in &roots {
                cands.push(format!("{r}/lib/{so}"));
            }
        }
        cands.extend(hip_candidates());
        for c in &cands {
            // SAFETY: loading a ROCm library runs its initializers only.
            let Ok(lib) = (unsafe { libloading::Library::new(c) }) else {
                continue;
            };
            // SAFETY: hiprtc's C signatures.
            let rtc = unsafe {
                (|| -> Result<Hiprtc> {
                    let ver: unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int =
                        sym!(lib, "hiprtcVersion");
                    let (mut ma, mut mi) = (0, 0);
                    ver(&mut ma, &mut mi);
                    Ok(Hiprtc {
                        path: c.clone(),
                        version: format!("{ma}.{mi}"),
                        create: sym!(lib, "hiprtcCreateProgram"),
                        compile: sym!(lib, "hiprtcCompileProgram"),
                        log_size: sym!(lib, "hiprtcGetProgramLogSize"),
                        log: sym!(lib, "hiprtcGetProgramLog"),
                        code_size: sym!(lib, "hiprtcGetCodeSize"),
                        code: sym!(lib, "hiprtcGetCode"),
                        destroy: sym!(lib, "hiprtcDestroyProgram"),
                        _lib: lib,
                    })
                })()
            };
            if let Ok(r) = rtc {
                return Ok(r);
            }
        }
        Err(Error::Gpu(
            "no hiprtc (libhiprtc.so.7/.6 or libamdhip64 with hiprtc symbols not found)".into(),
        ))
    }

    /// Compiles `source` with `options` (which must name `--offload-arch`) to a code object.
    pub(crate) fn compile(&self, name: &str, source: &str, options: &[String]) -> Result<Vec<u8>> {
        let src = CString::new(source).map_err(|_| Error::Gpu(format!("{name}: NUL in source")))?;
        let cname = CString::new(name).map_err(|_| Error::Gpu(format!("{name}: NUL in name")))?;
        let copts: Vec<CString> = options
            .iter()
            .map(|o| CString::new(o.as_str()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::Gpu(format!("{name}: NUL in compiler option")))?;
        let popts: Vec<*const c_char> = copts.iter().map(|c| c.as_ptr()).collect();
        // SAFETY: hiprtc C API with NUL-terminated strings; the program is destroyed below.
        unsafe {
            let mut prog: RtcProg = std::ptr::null_mut();
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
                    "{name}: hiprtcCreateProgram failed ({r})"
                )));
            }
            let r = (self.compile)(prog, popts.len() as c_int, popts.as_ptr());
            let mut n = 0usize;
            (self.log_size)(prog, &mut n);
            let mut log = vec![0u8; n.max(1)];
            (self.log)(prog, log.as_mut_ptr() as *mut c_char);
            let log = String::from_utf8_lossy(&log)
                .trim_end_matches('\0')
                .to_string();
            let result = if r != 0 {
                Err(Error::Gpu(format!(
                    "hiprtc failed to compile {name} ({}): {log}",
                    options.join(" ")
                )))
            } else {
                let mut n = 0usize;
                (self.code_size)(prog, &mut n);
                let mut bin = vec![0u8; n];
                (self.code)(prog, bin.as_mut_ptr() as *mut c_char);
                if bin.is_empty() {
                    Err(Error::Gpu(format!(
                        "hiprtc produced no code for {name}: {log}"
                    )))
                } else {
                    Ok(bin)
                }
            };
            (self.destroy)(&mut prog);
            result
        }
    }
}

/// Compiles an embedded kernel source for an AMD architecture with hiprtc, without any device
/// (hiprtc needs no GPU). Used by CI to prove the AMD path compiles.
pub fn compile_for_arch(src: &super::kernels::KernelSource, arch: &str) -> Result<Vec<u8>> {
    let rtc = Hiprtc::load()?;
    let mut opts = vec![format!("--offload-arch={arch}")];
    opts.extend(super::kernels::compile_options(warp_size_for(arch)));
    rtc.compile(src.name, &src.full_source(), &opts)
}

/// Where hiprtc was found and its version, or why it was not.
pub fn hiprtc_available() -> Result<String> {
    Hiprtc::load().map(|r| format!("{} (hiprtc {})", r.path, r.version))
}
