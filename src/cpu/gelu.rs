//! tanh and exact GELU with a vectorised fast path on Burn's pure-Rust CPU backend (`flex`),
//! for inference and training.
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
    let x = match flex::gelu(x, true) {
        Ok(y) => return y,
        Err(x) => x,
    };
    const K2: f64 = 2.0 * 0.797_884_560_802_865_4;
    let u2 = (x.clone() * x.clone() * 0.044715 + 1.0) * x.clone() * K2;
    burn::tensor::activation::sigmoid(u2) * x
}

/// Exact GELU `x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))` (PyTorch `GELU()`); one vectorised op
/// with its own backward on flex, Burn's `gelu` elsewhere.
///
/// # Shapes
/// - `x`: any shape; output the same
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match flex::gelu(x, false) {
        Ok(y) => y,
        Err(x) => burn::tensor::activation::gelu(x),
    }
}

#[cfg(not(feature = "flex"))]
mod flex {
    use burn::prelude::*;

    /// Without the flex backend there is no fast path: `x` is given back.
    pub fn gelu<const D: usize>(x: Tensor<D>, _approximate: bool) -> Result<Tensor<D>, Tensor<D>> {
        Err(x)
    }
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

    use burn::prelude::*;

    use crate::cpu::{contiguous, owned_contiguous, simd};

    /// The fast path for a `float32` tensor on the flex device (plain or autodiff): the tanh
    /// (`approximate`) or exact GELU; any other tensor is given back.
    pub fn gelu<const D: usize>(x: Tensor<D>, approximate: bool) -> Result<Tensor<D>, Tensor<D>> {
        if !crate::cpu::f32_on_flex(&x) {
            return Err(x);
        }
        use burn::backend::Dispatch;
        Ok(Tensor::from_dispatch(<Dispatch as GeluBackend>::fast_gelu(x.into_dispatch(), approximate)))
    }

    /// The GELU op and its backward as a Burn backend extension (flex and autodiff over it).
    #[backend_extension(Flex, Autodiff)]
    pub trait GeluBackend: Backend {
        /// tanh (`approximate`) or exact GELU of `x` (`float32`).
        fn fast_gelu(x: FloatTensor<Self>, approximate: bool) -> FloatTensor<Self>;
        /// `grad * gelu'(x)`; both `float32`, same shape.
        fn fast_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>, approximate: bool) -> FloatTensor<Self>;
    }

    impl GeluBackend for Flex {
        fn fast_gelu(x: FlexTensor, approximate: bool) -> FlexTensor {
            let kernel = if approximate { simd::gelu_tanh_inplace } else { simd::gelu_erf_inplace };
            let mut y = owned_contiguous(x);
            let n = y.layout().num_elements();
            super::for_chunks(&mut y.storage_mut::<f32>()[..n], &[], |dst, _| kernel(dst));
            y
        }

        fn fast_gelu_backward(x: FlexTensor, grad: FlexTensor, approximate: bool) -> FlexTensor {
            let kernel = if approximate { simd::gelu_tanh_grad_inplace } else { simd::gelu_erf_grad_inplace };
            let x = contiguous(x);
            let mut g = owned_contiguous(grad);
            let n = g.layout().num_elements();
            let x_data = x.as_slice::<f32>().expect("contiguous f32 input");
            super::for_chunks(&mut g.storage_mut::<f32>()[..n], x_data, kernel);
            g
        }
    }

    impl<B: Backend + GeluBackend, C: CheckpointStrategy> GeluBackend for Autodiff<B, C> {
        fn fast_gelu(x: FloatTensor<Self>, approximate: bool) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct GeluBackward {
                approximate: bool,
            }

            impl<B: Backend + GeluBackend> Backward<B, 1> for GeluBackward {
                type State = NodeId;

                fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                    let input = checkpointer.retrieve_node_output(ops.state);
                    unary::<B, _>(ops.parents, ops.node, grads, |grad| B::fast_gelu_backward(input, grad, self.approximate));
                }
            }

            match (GeluBackward { approximate }).prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(mut prep) => {
                    let state = prep.checkpoint(&x);
                    prep.finish(state, B::fast_gelu(x.primitive().clone(), approximate))
                }
                OpsKind::UnTracked(prep) => prep.finish(B::fast_gelu(x.into_primitive(), approximate)),
            }
        }

        fn fast_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>, approximate: bool) -> FloatTensor<Self> {
            // Only reached by a second-order derivative, which this op does not track.
            FloatTensor::<Self>::new(B::fast_gelu_backward(x.into_primitive(), grad.into_primitive(), approximate))
        }
    }
}

/// Below this many elements a kernel runs on one thread.
#[cfg(feature = "flex")]
const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;

/// Runs `f(dst_piece, src_piece)` on `dst` and `src` (empty, or as long as `dst`) split into
/// one contiguous piece per thread ([`num_threads`](crate::cpu::num_threads)).
#[cfg(feature = "flex")]
fn for_chunks(dst: &mut [f32], src: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    let threads = crate::cpu::num_threads();
    if threads < 2 || dst.len() < PARALLEL_MIN_ELEMENTS {
        f(dst, src);
        return;
    }
    let chunk = dst.len().div_ceil(threads);
    let src_piece = |i: usize| if src.is_empty() { src } else { &src[i * chunk..((i + 1) * chunk).min(src.len())] };
    crate::cpu::for_each_chunk(dst, chunk, |i, piece| f(piece, src_piece(i)));
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    fn composed<const D: usize>(x: Tensor<D>) -> Tensor<D> {
        burn::tensor::activation::gelu_approximate(x)
    }

    #[test]
    fn flex_gelu_matches_composed_ops_on_every_path() {
        let device = Device::flex();
        let x = crate::test_util::randn([3, 70, 300], 101, &device) * 3.0;
        let reference = composed(x.clone()).into_data();
        let tolerance = Tolerance::rel_abs(1e-5, 2e-6); // a few ulp: different rounding
        // unique contiguous buffer (in place), shared buffer (copy) and a strided view
        gelu_tanh(x.clone() * 1.0).into_data().assert_approx_eq::<f32>(&reference, tolerance);
        gelu_tanh(x.clone()).into_data().assert_approx_eq::<f32>(&reference, tolerance);
        let t = gelu_tanh(x.clone().swap_dims(1, 2)).swap_dims(1, 2);
        t.into_data().assert_approx_eq::<f32>(&reference, tolerance);
    }

    /// Fixed `[64, 600]` inputs and upstream gradients on an autodiff flex device, and for
    /// each of `f` and `reference`: `f(x)` and `d/dx sum(upstream * f(x))`, compared.
    fn assert_same_value_and_gradient(f: impl Fn(Tensor<2>) -> Tensor<2>, reference: impl Fn(Tensor<2>) -> Tensor<2>) {
        let device = Device::flex().autodiff();
        // Deterministic inputs over [-8, 8) and upstream gradients in [-1, 1].
        let data = TensorData::new((0..64 * 600usize).map(|i| ((i * 7919) % 38400) as f32 / 2400.0 - 8.0).collect(), [64, 600]);
        let upstream: Vec<f32> = (0..64 * 600usize).map(|i| ((i * 104_729) % 2001) as f32 / 1000.0 - 1.0).collect();
        let upstream = Tensor::<2>::from_data(TensorData::new(upstream, [64, 600]), &device);
        let run = |f: &dyn Fn(Tensor<2>) -> Tensor<2>| {
            let x = Tensor::<2>::from_data(data.clone(), &device).require_grad();
            let y = f(x.clone());
            let value = y.clone().inner().into_data();
            let grads = (y * upstream.clone()).sum().backward();
            (value, x.grad(&grads).expect("gradient").into_data())
        };
        let (fast, fast_grad) = run(&f);
        let (slow, slow_grad) = run(&reference);
        // Both sides round differently (one fused op vs Burn's composed ops): a few ulp.
        let tolerance = Tolerance::rel_abs(1e-5, 2e-6);
        fast.assert_approx_eq::<f32>(&slow, tolerance);
        fast_grad.assert_approx_eq::<f32>(&slow_grad, tolerance);
        // and the plain (inference) device gives the same values
        let plain = f(Tensor::<2>::from_data(data, &Device::flex()));
        plain.into_data().assert_approx_eq::<f32>(&slow, tolerance);
    }

    #[test]
    fn flex_gelu_and_its_gradient_match_burns_autodiff() {
        assert_same_value_and_gradient(gelu_tanh, composed);
    }

    #[test]
    fn flex_exact_gelu_and_its_gradient_match_burn() {
        assert_same_value_and_gradient(gelu, burn::tensor::activation::gelu);
    }

    #[test]
    fn input_kept_by_the_caller_is_not_overwritten() {
        let device = Device::flex();
        let x = Tensor::<2>::from_floats([[1.0, -1.0, 2.0]], &device);
        let before = x.to_data();
        let _ = gelu_tanh(x.clone());
        let _ = gelu(x.clone());
        x.into_data().assert_eq(&before, true);
    }
}
