//! Running a computation on the CPU pool's own threads.
//!
//! flex and this crate's CPU kernels split each tensor operation over rayon's global pool.
//! Called from a thread outside that pool (a program's main thread), every such operation
//! hands its pieces to the pool and puts the calling thread to sleep until they are done: a
//! wake-up and two context switches per operation, for the hundreds of operations of a
//! forward pass, while the caller's own core idles. On a pool thread, an operation keeps one
//! piece for itself and the others are taken by work stealing, and the calling thread sleeps
//! once for the whole computation. [`on_workers`] moves a computation there; the crate's
//! model forwards (every denoiser, the VAE, the CLIP and T5 text encoders), the backward and
//! update of `Trainer` and of the `Learner` steps use it, so callers need not; a hand-written
//! training loop wraps its own `backward` and optimizer step (as `examples/mmdit_flow.rs` does).
//!
//! Measured on 2 cores (AMD EPYC Zen 5, release, quiet, alternating runs, min of 5 per
//! process, 2026-11-29): U-DiT-S b2 forward 149-150 -> 131-134 ms, training step 691-760 ->
//! 611-622 ms, DiT-S/2 b8 training step 1245-1316 -> 1018-1092 ms, MicroDiT 75% masked training
//! 841-876 -> 762-772 ms; DiT-S/2 b8 forward unchanged within the noise
//! (`examples/bench_attention.rs`).

use burn::prelude::Device;

/// Runs `f` on a thread of rayon's global pool (the threads flex computes on) when `device` is
/// a CPU backend that computes on that pool (flex, ndarray) and returns its result; runs it on
/// the calling thread otherwise (GPU backends keep their streams on the thread that uses them)
/// and when called on a pool thread already, so nested calls cost nothing. A panic in `f` is
/// resumed on the caller.
///
/// While it waits for pieces of its own operations, a pool thread may run other work queued on
/// the pool, such as another thread's `on_workers` computation: computations that share an
/// autodiff graph (one model trained from several threads at once) must not run concurrently.
pub fn on_workers<R: Send>(device: &Device, f: impl FnOnce() -> R + Send) -> R {
    if !computes_on_pool(device) || rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| f())
}

/// Whether `device` (plain or autodiff) runs its operations on rayon's global pool.
fn computes_on_pool(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    if *device == Device::flex() {
        return true;
    }
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // Burn deprecates its ndarray backend; the crate still offers it
    if *device == Device::ndarray() {
        return true;
    }
    let _ = device;
    false
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_pool_thread_and_nests() {
        let device = Device::flex();
        assert!(rayon::current_thread_index().is_none(), "the test harness thread is not a pool thread");
        let (outer, inner) = on_workers(&device, || (rayon::current_thread_index(), on_workers(&device, rayon::current_thread_index)));
        assert!(outer.is_some());
        assert_eq!(outer, inner, "a nested call runs on the same thread");
        assert!(on_workers(&device.clone().autodiff(), rayon::current_thread_index).is_some(), "autodiff flex too");
        assert_eq!(on_workers(&device, || 6 * 7), 42);
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| on_workers(&Device::flex(), || panic!("inside")));
        assert!(caught.is_err());
    }
}
