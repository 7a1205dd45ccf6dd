//! The step profile: where the device's time goes inside replayed decode graphs.
//!
//! `ROCMFORGE_STEP_PROFILE=1` (CUDA only) makes [`super::GpuDevice`] launch a one-thread stamp
//! kernel (`kernels/profile.cu`) after every kernel and cuBLAS call, and before every graph
//! replay. Each stamp waits for the work before it, reads the GPU's nanosecond timer and adds
//! the time since the previous stamp to a row named after the work it followed: the kernel, its
//! grid and block sizes (`mmvq1_q8_0 g224x1 b128`). Stamps are captured into graphs like any
//! launch, so a replayed step is measured in place, with no host clock and none of a profiler's
//! serialization. The row `(before graph)` is the time from the last stamp to a replay's start:
//! host work between steps. Each stamp costs about as much as a small kernel (the row
//! `(stamp)`, measured when the profile starts): the rows are each kernel's time plus one stamp,
//! and the run is slower than without the profile. The table goes to stderr when the device
//! closes.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

use super::kernels::PROFILE;
use super::{cache, Driver, GpuKind, Handle, LaunchConfig};
use crate::{Error, Result};

/// Rows the device buffer holds; labels past this share the last row.
const ROWS: usize = 1024;

/// Whether `ROCMFORGE_STEP_PROFILE=1`.
pub(crate) fn wanted() -> bool {
    std::env::var("ROCMFORGE_STEP_PROFILE").as_deref() == Ok("1")
}

/// The stamp kernel, its accumulator and the row labels of one device.
pub(crate) struct StepProfile {
    module: Handle,
    func: Handle,
    /// `2 + 2 * ROWS` u64s: the previous stamp's time, padding, then (ns, calls) per row.
    acc: u64,
    labels: Mutex<Labels>,
}

#[derive(Default)]
struct Labels {
    index: HashMap<String, i32>,
    names: Vec<String>,
}

impl StepProfile {
    /// The profile of a freshly opened device, when wanted and the device is CUDA (HIP has no
    /// nanosecond timer read here). Loads the stamp kernel and calibrates one stamp.
    pub(crate) fn open(driver: &dyn Driver) -> Result<Option<StepProfile>> {
        if !wanted() {
            return Ok(None);
        }
        if driver.info().kind != GpuKind::Cuda {
            eprintln!("ROCMFORGE_STEP_PROFILE: CUDA only; no profile on this device");
            return Ok(None);
        }
        let image = cache::compile_cached(driver, &PROFILE)?;
        let module = driver.load_module(&image)?;
        let func = driver.get_function(module, super::kernels::PROFILE_STAMP)?;
        let bytes = (2 + 2 * ROWS) * 8;
        let acc = driver.alloc(bytes)?;
        let p = StepProfile {
            module,
            func,
            acc,
            labels: Mutex::new(Labels::default()),
        };
        // SAFETY: `acc` is a fresh allocation of `bytes` bytes.
        unsafe { driver.memset(acc, 0, bytes)? };
        p.raw(driver, -1)?;
        for _ in 0..32 {
            p.stamp(driver, "(stamp)")?;
        }
        Ok(Some(p))
    }

    fn raw(&self, driver: &dyn Driver, row: i32) -> Result<()> {
        let mut acc = self.acc;
        let mut row = row;
        let mut args = [
            &mut acc as *mut u64 as *mut c_void,
            &mut row as *mut i32 as *mut c_void,
        ];
        // SAFETY: `profile_stamp(u64*, int)` with the accumulator this profile allocated.
        unsafe { driver.launch(self.func, &LaunchConfig::linear(1, 1), &mut args) }
    }

    /// Adds the time since the previous stamp to the row `label`.
    pub(crate) fn stamp(&self, driver: &dyn Driver, label: &str) -> Result<()> {
        let row = {
            let mut l = self
                .labels
                .lock()
                .map_err(|_| Error::Gpu("profile labels poisoned".into()))?;
            match l.index.get(label) {
                Some(&r) => r,
                None if l.names.len() < ROWS - 1 => {
                    let r = l.names.len() as i32;
                    l.names.push(label.to_string());
                    l.index.insert(label.to_string(), r);
                    r
                }
                None => {
                    if l.names.len() < ROWS {
                        l.names.push("(other)".to_string());
                    }
                    (ROWS - 1) as i32
                }
            }
        };
        self.raw(driver, row)
    }

    /// The table of rows by total time, slowest first; `None` before any stamp was counted.
    pub(crate) fn report(&self, driver: &dyn Driver) -> Result<Option<String>> {
        driver.synchronize()?;
        let mut acc = vec![0u64; 2 + 2 * ROWS];
        // SAFETY: `acc` holds as many bytes as the device accumulator.
        unsafe { driver.dtoh(acc.as_mut_ptr() as *mut u8, self.acc, acc.len() * 8)? };
        let l = self
            .labels
            .lock()
            .map_err(|_| Error::Gpu("profile labels poisoned".into()))?;
        let mut rows: Vec<(&str, u64, u64)> = l
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), acc[2 + 2 * i], acc[3 + 2 * i]))
            .filter(|r| r.2 > 0)
            .collect();
        if rows.is_empty() {
            return Ok(None);
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.1));
        let total: u64 = rows.iter().map(|r| r.1).sum();
        let mut s = format!(
            "step profile (ROCMFORGE_STEP_PROFILE): {:.3} ms in {} stamps; each row is the work's \
             time plus one stamp\n| work | calls | total ms | µs per call | share |\n| --- | ---: | ---: | ---: | ---: |\n",
            total as f64 / 1e6,
            rows.iter().map(|r| r.2).sum::<u64>()
        );
        for (name, ns, calls) in rows {
            s += &format!(
                "| {name} | {calls} | {:.3} | {:.2} | {:.1}% |\n",
                ns as f64 / 1e6,
                ns as f64 / 1e3 / calls as f64,
                100.0 * ns as f64 / total as f64
            );
        }
        Ok(Some(s))
    }

    /// Unloads the kernel and frees the accumulator.
    ///
    /// # Safety
    /// Called once, when no launch can follow.
    pub(crate) unsafe fn close(&self, driver: &dyn Driver) {
        driver.free(self.acc);
        driver.unload_module(self.module);
    }
}
