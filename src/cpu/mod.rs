//! CPU performance for the flex backend: vectorised GELUs (tanh and exact), attention,
//! LayerNorm and the SwiGLU gate (with fused backwards), a one-pass AdamW update, a batched
//! (per-expert) matmul and `Linear` on it, a depthwise-conv input gradient on
//! flex's depthwise kernel, a channels-last depthwise conv and a one-pass rotary embedding,
//! the adaLN modulation and gated residual, and cosine attention's per-head L2 normalisation;
//! an opt-in allocator setting that removes most of the page-fault cost of large activations;
//! [`on_workers`], which runs a computation on the CPU pool's own threads.

mod adamw;
mod allocator;
mod attention;
mod batched_matmul;
#[cfg(feature = "flex")]
mod attention_kernel;
mod depthwise;
mod depthwise_nhwc;
#[cfg(feature = "flex")]
mod depthwise_nhwc_kernel;
mod gelu;
mod l2_normalize;
mod layer_norm;
#[cfg(feature = "flex")]
mod layer_norm_kernel;
mod modulate;
mod rope;
mod silu_mul;
#[cfg(feature = "flex")]
mod simd;
mod workers;

pub use adamw::{AdamWScalars, adamw_update};
pub use allocator::tune_allocator;
pub use attention::attention;
pub use batched_matmul::{batched_matmul, linear};
pub use depthwise::{depthwise_conv2d, same_depthwise_conv2d};
pub use depthwise_nhwc::depthwise_conv2d_nhwc;
pub use gelu::{gelu, gelu_tanh};
pub use l2_normalize::l2_normalize;
pub use layer_norm::layer_norm;
pub use modulate::{gated_residual, modulate};
pub use rope::rope_rotate;
pub use silu_mul::silu_mul;
pub use workers::on_workers;

/// Whether `t` is a `float32` tensor on the flex device (plain or autodiff): the condition of
/// every fast path here. Always false without the `flex` feature.
pub(crate) fn f32_on_flex<const D: usize>(t: &burn::prelude::Tensor<D>) -> bool {
    #[cfg(feature = "flex")]
    {
        t.dtype() == burn::tensor::DType::F32 && t.device() == burn::prelude::Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = t;
        false
    }
}

/// Runs `f(i, piece)` on every `chunk`-long piece `i` of `dst` in parallel: the first piece on
/// this thread, the others on rayon's global pool (the threads flex runs on; no thread is
/// spawned per call).
pub(crate) fn for_each_chunk<T: Send>(dst: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let mut pieces = dst.chunks_mut(chunk.max(1)).enumerate();
    let Some((first, piece)) = pieces.next() else { return };
    if pieces.len() == 0 {
        return f(first, piece);
    }
    let f = &f;
    rayon::in_place_scope(|scope| {
        for (i, piece) in pieces {
            scope.spawn(move |_| f(i, piece));
        }
        f(first, piece);
    });
}

/// `t` as a contiguous tensor (copied only when it is not), for kernels that read it through
/// `as_slice` (which honours a view's start offset).
#[cfg(feature = "flex")]
pub(crate) fn contiguous(t: burn::backend::flex::FlexTensor) -> burn::backend::flex::FlexTensor {
    if t.is_contiguous() { t } else { t.to_contiguous() }
}

/// `t` as a contiguous tensor that owns its buffer alone (copied only when it does not), so a
/// kernel may write it in place.
#[cfg(feature = "flex")]
pub(crate) fn owned_contiguous(t: burn::backend::flex::FlexTensor) -> burn::backend::flex::FlexTensor {
    let mut t = if t.is_contiguous() && t.layout().start_offset() == 0 { t } else { t.to_contiguous() };
    if !t.is_unique() {
        t.storage_mut::<f32>(); // copy-on-write: never overwrite a buffer another tensor shares
    }
    t
}

/// Runs every job, the first on this thread and the others on rayon's global pool.
#[cfg(feature = "flex")]
pub(crate) fn run_all<F: FnOnce() + Send>(jobs: Vec<F>) {
    let mut jobs = jobs.into_iter();
    let Some(first) = jobs.next() else { return };
    if jobs.len() == 0 {
        return first();
    }
    rayon::in_place_scope(|scope| {
        for job in jobs {
            scope.spawn(move |_| job());
        }
        first();
    });
}

/// Elements per piece when `n` elements are split into one piece per thread (all of them in
/// one piece below 32768 elements, where threads cost more than they save); a multiple of
/// `align`.
#[cfg(feature = "flex")]
pub(crate) fn piece_len(n: usize, align: usize) -> usize {
    let align = align.max(1);
    let units = n.div_ceil(align);
    let threads = if n < 1 << 15 { 1 } else { num_threads().clamp(1, units.max(1)) };
    units.div_ceil(threads).max(1) * align
}

/// The threads the CPU kernels split their work over: `RAYON_NUM_THREADS` where it is set (the
/// setting flex's own thread pool follows), otherwise the cores available. Read once, like
/// rayon's pool size.
pub fn num_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::prelude::*;

    #[test]
    fn fast_paths_see_f32_on_flex_and_nothing_else() {
        let flex = Device::flex();
        assert!(super::f32_on_flex(&Tensor::<2>::zeros([2, 2], &flex)));
        assert!(super::f32_on_flex(&Tensor::<2>::zeros([2, 2], &flex.clone().autodiff())));
        let half = Tensor::<2>::zeros([2, 2], &flex).cast(burn::tensor::DType::F16);
        assert!(!super::f32_on_flex(&half));
    }
}
