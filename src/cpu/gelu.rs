//! tanh-GELU with a vectorised fast path on Burn's pure-Rust CPU backend (`flex`), for
//! inference and training.
//!
//! Flex evaluates `exp`/`tanh` one scalar libm call at a time, and the composed formula takes
//! seven elementwise ops (each with its own backward under autodiff), which made the GELU of
//! the MLP about 15% of a DiT forward and more of a training step on CPU. Here it is one
//! Burn backend-extension op: a vectorised loop (AVX-512 / AVX2 / baseline, chosen at run
//! time) over the tensor's own buffer, split across threads, with a hand-written backward
//! (also one vectorised loop) for autodiff. The fast path is taken only for `float32` tensors
//! on the flex device (plain or autodiff); every other backend or dtype goes through the
//! composed Burn ops, so results and gradients there are Burn's own.

use burn::prelude::*;

/// tanh-approximated GELU, `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` (PyTorch
/// `GELU(approximate="tanh")`), computed as `x * sigmoid(2u)`; one vectorised op with its own
/// backward on flex.
///
/// # Shapes
/// - `x`: any shape; output the same
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if x.dtype() == burn::tensor::DType::F32 && x.device() == Device::flex() {
        use burn::backend::Dispatch;
        return Tensor::from_dispatch(<Dispatch as flex::GeluTanhBackend>::gelu_tanh(x.into_dispatch()));
    }
    const K2: f64 = 2.0 * 0.797_884_560_802_865_4;
    let u2 = (x.clone() * x.clone() * 0.044715 + 1.0) * x.clone() * K2;
    burn::tensor::activation::sigmoid(u2) * x
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::NodeId;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, Flex, backend_extension};

    use crate::cpu::simd;

    /// The GELU op and its backward as a Burn backend extension (flex and autodiff over it).
    #[backend_extension(Flex, Autodiff)]
    pub trait GeluTanhBackend: Backend {
        /// `gelu_tanh(x)`; `x` is `float32`.
        fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self>;
        /// `grad * gelu_tanh'(x)`; both `float32`, same shape.
        fn gelu_tanh_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    /// `t` as a contiguous tensor that owns its buffer alone (copied only when it does not).
    fn owned_contiguous(t: FlexTensor) -> FlexTensor {
        let mut t = if t.is_contiguous() && t.layout().start_offset() == 0 { t } else { t.to_contiguous() };
        if !t.is_unique() {
            t.storage_mut::<f32>(); // copy-on-write: never overwrite a buffer another tensor shares
        }
        t
    }

    impl GeluTanhBackend for Flex {
        fn gelu_tanh(x: FlexTensor) -> FlexTensor {
            let mut y = owned_contiguous(x);
            let n = y.layout().num_elements();
            super::for_chunks(&mut y.storage_mut::<f32>()[..n], &[], |dst, _| simd::gelu_tanh_inplace(dst));
            y
        }

        fn gelu_tanh_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
            let x = if x.is_contiguous() { x } else { x.to_contiguous() };
            let mut g = owned_contiguous(grad);
            let n = g.layout().num_elements();
            let x_data = x.as_slice::<f32>().expect("contiguous f32 input");
            super::for_chunks(&mut g.storage_mut::<f32>()[..n], x_data, simd::gelu_tanh_grad_inplace);
            g
        }
    }

    impl<B: Backend + GeluTanhBackend, C: CheckpointStrategy> GeluTanhBackend for Autodiff<B, C> {
        fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct GeluTanhBackward;

            impl<B: Backend + GeluTanhBackend> Backward<B, 1> for GeluTanhBackward {
                type State = NodeId;

                fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                    let input = checkpointer.retrieve_node_output(ops.state);
                    unary::<B, _>(ops.parents, ops.node, grads, |grad| B::gelu_tanh_backward(input, grad));
                }
            }

            match GeluTanhBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(mut prep) => {
                    let state = prep.checkpoint(&x);
                    prep.finish(state, B::gelu_tanh(x.primitive().clone()))
                }
                OpsKind::UnTracked(prep) => prep.finish(B::gelu_tanh(x.into_primitive())),
            }
        }

        fn gelu_tanh_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            // Only reached by a second-order derivative, which this op does not track.
            FloatTensor::<Self>::new(B::gelu_tanh_backward(x.into_primitive(), grad.into_primitive()))
        }
    }
}

/// Below this many elements a kernel runs on one thread.
#[cfg(feature = "flex")]
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// Runs `f(dst_piece, src_piece)` on `dst` and `src` (empty, or as long as `dst`) split into
/// one contiguous piece per thread: the cores available, or `RAYON_NUM_THREADS` (the setting
/// flex's own thread pool follows) where that is set.
#[cfg(feature = "flex")]
fn for_chunks(dst: &mut [f32], src: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads < 2 || dst.len() < PARALLEL_MIN_ELEMENTS {
        f(dst, src);
        return;
    }
    let chunk = dst.len().div_ceil(threads);
    let src_piece = |i: usize| if src.is_empty() { src } else { &src[i * chunk..((i + 1) * chunk).min(src.len())] };
    std::thread::scope(|scope| {
        let f = &f;
        let mut pieces = dst.chunks_mut(chunk).enumerate();
        let first = pieces.next();
        for (i, piece) in pieces {
            let s = src_piece(i);
            scope.spawn(move || f(piece, s));
        }
        if let Some((i, piece)) = first {
            f(piece, src_piece(i));
        }
    });
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    fn composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
        burn::tensor::activation::gelu_approximate(x)
    }

    #[test]
    fn flex_gelu_matches_composed_ops_on_every_path() {
        let device = Device::flex();
        let x = Tensor::<3>::random([3, 70, 300], Distribution::Normal(0.0, 3.0), &device);
        let reference = composed(x.clone()).into_data();
        // unique contiguous buffer (in place), shared buffer (copy) and a strided view
        gelu_tanh(x.clone() * 1.0).into_data().assert_approx_eq::<f32>(&reference, Tolerance::absolute(2e-6));
        gelu_tanh(x.clone()).into_data().assert_approx_eq::<f32>(&reference, Tolerance::absolute(2e-6));
        let t = gelu_tanh(x.clone().swap_dims(1, 2)).swap_dims(1, 2);
        t.into_data().assert_approx_eq::<f32>(&reference, Tolerance::absolute(2e-6));
    }

    #[test]
    fn flex_gelu_gradient_matches_burns_autodiff() {
        let device = Device::flex().autodiff();
        let data = Tensor::<2>::random([64, 600], Distribution::Normal(0.0, 2.5), &Device::flex()).into_data();
        let upstream = Tensor::<2>::random([64, 600], Distribution::Normal(0.0, 1.0), &device);
        let grad_of = |f: &dyn Fn(Tensor<2>) -> Tensor<2>| {
            let x = Tensor::<2>::from_data(data.clone(), &device).require_grad();
            let y = f(x.clone());
            let value = y.clone().inner().into_data();
            let grads = (y * upstream.clone()).sum().backward();
            (value, x.grad(&grads).expect("gradient").into_data())
        };
        let (fast, fast_grad) = grad_of(&|x| gelu_tanh(x));
        let (slow, slow_grad) = grad_of(&|x| composed(x));
        fast.assert_approx_eq::<f32>(&slow, Tolerance::absolute(2e-6));
        fast_grad.assert_approx_eq::<f32>(&slow_grad, Tolerance::absolute(5e-6));
    }

    #[test]
    fn input_kept_by_the_caller_is_not_overwritten() {
        let device = Device::flex();
        let x = Tensor::<2>::from_floats([[1.0, -1.0, 2.0]], &device);
        let before = x.to_data();
        let _ = gelu_tanh(x.clone());
        x.into_data().assert_eq(&before, true);
    }
}
