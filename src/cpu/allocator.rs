//! An opt-in glibc malloc setting for CPU inference and training.
//!
//! Burn allocates a fresh buffer for almost every op's output. Buffers above glibc's mmap
//! threshold are `mmap`ed and `munmap`ed each time, and freed heap tops are trimmed, so every
//! large activation costs page faults and, with several threads, TLB-shootdown interrupts:
//! on a 2-core machine that was ~40% of a DiT-S/2 forward (docs/benchmarks.md). Raising the
//! mmap threshold to its maximum (32 MiB) and the trim threshold to 1 GiB keeps freed
//! buffers in the heap for reuse, the same as `MALLOC_MMAP_THRESHOLD_=33554432
//! MALLOC_TRIM_THRESHOLD_=1073741824` in the environment (which also works for PyTorch; add
//! `MALLOC_ARENA_MAX=1` for the arena setting below).
//! The cost is up to 1 GiB of freed memory kept by the process between steps (the peak is
//! unchanged: the memory was in use at the peak). The trim threshold was 128 MiB until the
//! weight gradients of a training step showed that it was too low: DiT-B/2's 0.5 GiB of
//! gradients, freed after every optimizer step, were trimmed off the heap top and faulted in
//! again by the next backward; with 1 GiB its batch-1 training step went from 630-640 to
//! 492-515 ms (MicroDiT 75% masked 687-695 -> 617-633 ms; the others within the noise; peak
//! resident memory the same; alternating runs, 2026-11-30).
//!
//! It also keeps every thread on one malloc arena (`MALLOC_ARENA_MAX=1`). The model code runs
//! on rayon's pool threads ([`crate::cpu::on_workers`]); with glibc's default of an arena per
//! thread, buffers freed in one thread's arena were kept there while the next step allocated
//! in the other's, so each arena held its own copy of the freed activations: the peak resident
//! memory of a U-DiT-S b2 training step was 1.76 GiB with the default arenas and 1.25 GiB with
//! one, MicroDiT_Tiny_2 75% masked 3.65-3.94 against 3.27 GiB, at the same speed (alternating
//! runs, 2026-11-30). Tensor buffers are large, so the one arena's lock is rarely contended.

/// Keeps freed buffers of up to 32 MiB in the heap and every thread on one arena (glibc
/// `mallopt`: mmap threshold 32 MiB, trim threshold 1 GiB, arena maximum 1). Process-wide, so
/// it is opt-in: call it once at start-up of a program that runs models on the CPU, before
/// other threads allocate. Returns whether the setting was applied (`false` on platforms
/// without glibc, where it does nothing).
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        const M_ARENA_MAX: i32 = -8;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: `mallopt` only changes malloc's tuning parameters; the values are in range.
        unsafe { mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 && mallopt(M_ARENA_MAX, 1) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn applies_on_glibc() {
        assert!(super::tune_allocator());
    }
}
