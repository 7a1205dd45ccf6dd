//! The GPU runtime: probing, buffers, compilation, launches, graphs, parallel use.
//! Prints `skipped: no GPU (reason)` where there is none.

mod gpu_util;

use rocmforge::backend::gpu::ops::glu::{glu, GluKind};
use rocmforge::backend::gpu::{device_count, open_auto, GpuDevice, GpuKind};

#[test]
fn probing_never_panics() {
    for kind in [GpuKind::Cuda, GpuKind::Rocm] {
        match device_count(kind) {
            Ok(n) => println!("{}: {n} devices", kind.name()),
            Err(e) => {
                println!("{}: {e}", kind.name());
                assert!(GpuDevice::open(kind, 0).is_err());
            }
        }
    }
    let (dev, rejected) = open_auto();
    for r in &rejected {
        println!("rejected {r}");
        assert!(!r.reason.is_empty());
    }
    if dev.is_none() {
        assert!(!rejected.is_empty(), "no device and no reason");
    }
    assert!(GpuDevice::open(GpuKind::Cuda, 9999).is_err());
}

#[test]
fn buffers_round_trip() {
    let Some(dev) = gpu_util::device("buffers_round_trip") else {
        return;
    };
    println!("{}", dev.info());
    let mut rng = gpu_util::rng("buffers_round_trip");
    let data = gpu_util::randn(&mut rng, 1000, 1.0);
    let a = dev.upload(&data).unwrap();
    assert_eq!(dev.download(&a).unwrap(), data);
    let b = dev.alloc::<f32>(1000).unwrap();
    dev.memset(&b, 0xff).unwrap();
    assert!(dev.download(&b).unwrap().iter().all(|x| x.is_nan()));
    dev.copy(&a, &b).unwrap();
    assert_eq!(dev.download(&b).unwrap(), data);
    dev.write(&b, 998, &[5.0, 6.0]).unwrap();
    let back = dev.download(&b).unwrap();
    assert_eq!(&back[998..], &[5.0, 6.0]);
    assert!(dev.write(&b, 999, &[1.0, 2.0]).is_err());
    let short = dev.alloc::<f32>(10).unwrap();
    assert!(dev.copy(&a, &short).is_err());
    let other = GpuDevice::open(dev.info().kind, dev.info().ordinal).unwrap();
    assert!(
        other.download(&a).is_err(),
        "buffer of another device accepted"
    );
    let empty = dev.alloc::<u16>(0).unwrap();
    assert!(dev.download(&empty).unwrap().is_empty());
}

fn glu_ref(kind: GluKind, g: &[f32], u: &[f32]) -> Vec<f64> {
    g.iter()
        .zip(u)
        .map(|(&g, &u)| {
            let g = g as f64;
            let a = match kind {
                GluKind::SwiGlu => g / (1.0 + (-g).exp()),
                GluKind::GeGlu => {
                    let k = (2.0 / std::f64::consts::PI).sqrt();
                    0.5 * g * (1.0 + (k * (g + 0.044715 * g * g * g)).tanh())
                }
            };
            a * u as f64
        })
        .collect()
}

/// SwiGLU / GeGLU against f64 at odd sizes; tolerance 1e-5 relative (f32 with expf/tanhf).
#[test]
fn glu_matches_f64() {
    let Some(dev) = gpu_util::device("glu_matches_f64") else {
        return;
    };
    let mut rng = gpu_util::rng("glu_matches_f64");
    for n in [1usize, 31, 4864, 100_003] {
        for kind in [GluKind::SwiGlu, GluKind::GeGlu] {
            let g = gpu_util::randn(&mut rng, n, 6.0);
            let u = gpu_util::randn(&mut rng, n, 2.0);
            let (gb, ub) = (dev.upload(&g).unwrap(), dev.upload(&u).unwrap());
            let out = dev.alloc::<f32>(n).unwrap();
            dev.memset(&out, 0xff).unwrap();
            glu(&dev, kind, &gb, &ub, &out, n).unwrap();
            // Elementwise: absolute error against 1 + the largest magnitude (a lone output
            // near zero makes a relative norm meaningless).
            let want = glu_ref(kind, &g, &u);
            let big = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let e = gpu_util::max_abs_err(&dev.download(&out).unwrap(), &want) / big;
            assert!(e < 1e-5, "{kind:?} n={n}: scaled max abs err {e}");
        }
    }
    let small = dev.alloc::<f32>(3).unwrap();
    assert!(glu(&dev, GluKind::SwiGlu, &small, &small, &small, 4).is_err());
}

/// A captured launch replays with the buffers' current contents.
#[test]
fn graph_capture_replays() {
    let Some(dev) = gpu_util::device("graph_capture_replays") else {
        return;
    };
    let mut rng = gpu_util::rng("graph_capture_replays");
    let n = 4097;
    let (gb, ub, out) = (
        dev.alloc::<f32>(n).unwrap(),
        dev.alloc::<f32>(n).unwrap(),
        dev.alloc::<f32>(n).unwrap(),
    );
    // Compile before capturing (compilation is not capturable work).
    glu(&dev, GluKind::SwiGlu, &gb, &ub, &out, 0).unwrap();
    dev.kernel(&rocmforge::backend::gpu::kernels::GLU, "swiglu_f32")
        .unwrap();
    dev.begin_capture().unwrap();
    glu(&dev, GluKind::SwiGlu, &gb, &ub, &out, n).unwrap();
    let graph = dev.end_capture().unwrap();
    for _ in 0..3 {
        let g = gpu_util::randn(&mut rng, n, 4.0);
        let u = gpu_util::randn(&mut rng, n, 1.0);
        dev.write(&gb, 0, &g).unwrap();
        dev.write(&ub, 0, &u).unwrap();
        dev.memset(&out, 0xff).unwrap();
        graph.launch().unwrap();
        let e = gpu_util::rel_err(
            &dev.download(&out).unwrap(),
            &glu_ref(GluKind::SwiGlu, &g, &u),
        );
        assert!(e < 1e-5, "rel err {e}");
    }
}

/// Eight threads, eight devices of their own, no shared state.
#[test]
fn parallel_devices_do_not_interfere() {
    let Some(_) = gpu_util::device("parallel_devices_do_not_interfere") else {
        return;
    };
    let handles: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let dev = GpuDevice::open_any().unwrap();
                let n = 10_000 + t * 7;
                for round in 0..20 {
                    let g: Vec<f32> = (0..n)
                        .map(|i| ((i * 31 + round + t) % 97) as f32 / 10.0 - 4.0)
                        .collect();
                    let u: Vec<f32> = (0..n).map(|i| ((i * 17 + t) % 13) as f32 - 6.0).collect();
                    let (gb, ub) = (dev.upload(&g).unwrap(), dev.upload(&u).unwrap());
                    let out = dev.alloc::<f32>(n).unwrap();
                    dev.memset(&out, 0xff).unwrap();
                    glu(&dev, GluKind::SwiGlu, &gb, &ub, &out, n).unwrap();
                    let e = gpu_util::rel_err(
                        &dev.download(&out).unwrap(),
                        &glu_ref(GluKind::SwiGlu, &g, &u),
                    );
                    assert!(e < 1e-5, "thread {t} round {round}: {e}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
