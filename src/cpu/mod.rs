//! CPU performance: vectorised GELUs (tanh and exact) and attention, and a depthwise-conv input
//! gradient on flex's depthwise kernel, for the flex backend; an opt-in allocator
//! setting that removes most of the page-fault cost of large activations.

mod allocator;
mod attention;
#[cfg(feature = "flex")]
mod attention_kernel;
mod depthwise;
mod gelu;
#[cfg(feature = "flex")]
mod simd;

pub use allocator::tune_allocator;
pub use attention::attention;
pub use depthwise::depthwise_conv2d;
pub use gelu::{gelu, gelu_tanh};

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
/// this thread, the others on scoped threads (one per piece).
pub(crate) fn for_each_chunk<T: Send>(dst: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    std::thread::scope(|scope| {
        let f = &f;
        let mut pieces = dst.chunks_mut(chunk.max(1)).enumerate();
        let first = pieces.next();
        for (i, piece) in pieces {
            scope.spawn(move || f(i, piece));
        }
        if let Some((i, piece)) = first {
            f(i, piece);
        }
    });
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
