//! The SwiGLU gate `silu(a) * b` as one vectorised op with a fused backward on Burn's
//! pure-Rust CPU backend (`flex`), for inference and training.
//!
//! Composed, the gate is a sigmoid (one scalar `exp` per element on flex), two products and,
//! under autodiff, three saved `[tokens, hidden]` intermediates and three backward passes. Here
//! it is one Burn backend-extension op that keeps only `a` and `b`:
//!
//! ```text
//! y = a b s,  s = sigmoid(a);   da = dy b s (1 + a (1 - s)),  db = dy a s
//! ```
//!
//! The fast path is taken for `float32` operands of one shape on the flex device (plain or
//! autodiff); anything else goes through Burn's `silu` and product.

use burn::prelude::*;

/// `silu(a) * b` (the SwiGLU gate); one vectorised op with its own backward on flex.
///
/// # Shapes
/// - `a`, `b`: the same shape; output that shape
pub fn silu_mul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
    match flex::silu_mul(a, b) {
        Ok(y) => y,
        Err((a, b)) => burn::tensor::activation::silu(a) * b,
    }
}

#[cfg(not(feature = "flex"))]
mod flex {
    use burn::prelude::*;

    /// Without the flex backend there is no fast path: the operands are given back.
    pub fn silu_mul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Result<Tensor<D>, (Tensor<D>, Tensor<D>)> {
        Err((a, b))
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::NodeId;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, Flex, backend_extension};
    use burn::prelude::*;

    use crate::cpu::{f32_on_flex, piece_len, run_all, simd};

    /// The fast path for `float32` operands of one (non-empty) shape on the flex device;
    /// others are given back.
    pub fn silu_mul<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Result<Tensor<D>, (Tensor<D>, Tensor<D>)> {
        if !(f32_on_flex(&a) && f32_on_flex(&b) && a.dims() == b.dims() && a.shape().num_elements() > 0) {
            return Err((a, b));
        }
        use burn::backend::Dispatch;
        Ok(Tensor::from_dispatch(<Dispatch as SiluMulBackend>::fast_silu_mul(a.into_dispatch(), b.into_dispatch())))
    }

    /// The SwiGLU gate and its backward as a Burn backend extension (flex and autodiff over
    /// it); `float32` operands of one shape.
    #[backend_extension(Flex, Autodiff)]
    pub trait SiluMulBackend: Backend {
        /// `silu(a) * b`.
        fn fast_silu_mul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
        /// `(da, db)` from the operands and the upstream gradient `dy`.
        fn fast_silu_mul_backward(a: FloatTensor<Self>, b: FloatTensor<Self>, dy: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>);
    }

    impl SiluMulBackend for Flex {
        fn fast_silu_mul(a: FlexTensor, b: FlexTensor) -> FlexTensor {
            let shape = a.layout().shape().clone();
            let (a, b) = (a.to_contiguous(), b.to_contiguous());
            let (a, b) = (a.as_slice::<f32>().expect("f32"), b.as_slice::<f32>().expect("f32"));
            let mut y = vec![0.0f32; a.len()];
            let piece = piece_len(a.len(), 16);
            let jobs = y
                .chunks_mut(piece)
                .zip(a.chunks(piece).zip(b.chunks(piece)))
                .map(|(y, (a, b))| move || simd::silu_mul(y, a, b))
                .collect();
            run_all(jobs);
            FlexTensor::from_data(TensorData::new(y, shape))
        }

        fn fast_silu_mul_backward(a: FlexTensor, b: FlexTensor, dy: FlexTensor) -> (FlexTensor, FlexTensor) {
            let shape = a.layout().shape().clone();
            let (a, b) = (a.to_contiguous(), b.to_contiguous());
            let (a, b) = (a.as_slice::<f32>().expect("f32"), b.as_slice::<f32>().expect("f32"));
            let mut da = dy.to_contiguous().as_slice::<f32>().expect("f32").to_vec();
            let mut db = vec![0.0f32; a.len()];
            let piece = piece_len(a.len(), 16);
            let jobs = da
                .chunks_mut(piece)
                .zip(db.chunks_mut(piece))
                .zip(a.chunks(piece).zip(b.chunks(piece)))
                .map(|((da, db), (a, b))| move || simd::silu_mul_grad(da, db, a, b))
                .collect();
            run_all(jobs);
            (FlexTensor::from_data(TensorData::new(da, shape.clone())), FlexTensor::from_data(TensorData::new(db, shape)))
        }
    }

    impl<B: Backend + SiluMulBackend, C: CheckpointStrategy> SiluMulBackend for Autodiff<B, C> {
        fn fast_silu_mul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct SiluMulBackward;

            impl<B: Backend + SiluMulBackend> Backward<B, 2> for SiluMulBackward {
                /// The operands' checkpoints.
                type State = (NodeId, NodeId);

                fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                    let (a, b) = ops.state;
                    let [a, b] = [a, b].map(|id| checkpointer.retrieve_node_output(id));
                    let dy = grads.consume::<B>(&ops.node);
                    let (da, db) = B::fast_silu_mul_backward(a, b, dy);
                    for (parent, grad) in ops.parents.into_iter().zip([da, db]) {
                        if let Some(node) = parent {
                            grads.register::<B>(node.id, grad);
                        }
                    }
                }
            }

            match SiluMulBackward.prepare::<C>([a.node(), b.node()]).compute_bound().stateful() {
                OpsKind::Tracked(mut prep) => {
                    let state = (prep.checkpoint(&a), prep.checkpoint(&b));
                    prep.finish(state, B::fast_silu_mul(a.into_primitive(), b.into_primitive()))
                }
                OpsKind::UnTracked(prep) => prep.finish(B::fast_silu_mul(a.into_primitive(), b.into_primitive())),
            }
        }

        fn fast_silu_mul_backward(a: FloatTensor<Self>, b: FloatTensor<Self>, dy: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
            // Only reached by a second-order derivative, which this op does not track.
            let [a, b, dy] = [a, b, dy].map(|t| t.into_primitive());
            let (da, db) = B::fast_silu_mul_backward(a, b, dy);
            (FloatTensor::<Self>::new(da), FloatTensor::<Self>::new(db))
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    fn composed<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
        burn::tensor::activation::silu(a) * b
    }

    #[test]
    fn value_and_gradients_match_the_composed_form() {
        let device = Device::flex().autodiff();
        // a threaded size and a small one, and a transposed (strided) operand
        for (i, [r, c]) in [[3, 7], [96, 700]].into_iter().enumerate() {
            let seed = 900 + 10 * i as u64;
            let [a, b, up] = [0, 1, 2].map(|k| crate::test_util::randn([1, r, c], seed + k, &Device::flex()) * 4.0);
            let run = |f: &dyn Fn(Tensor<3>, Tensor<3>) -> Tensor<3>| {
                let a = Tensor::<3>::from_data(a.to_data(), &device).require_grad();
                let b = Tensor::<3>::from_data(b.to_data(), &device).require_grad();
                let y = f(a.clone(), b.clone());
                let grads = (y.clone() * Tensor::from_data(up.to_data(), &device)).sum().backward();
                [y.inner().into_data(), a.grad(&grads).unwrap().into_data(), b.grad(&grads).unwrap().into_data()]
            };
            let fast = run(&|a, b| silu_mul(a, b));
            let slow = run(&|a, b| composed(a, b));
            for (f, s) in fast.into_iter().zip(slow) {
                f.assert_approx_eq::<f32>(&s, Tolerance::rel_abs(1e-5, 1e-5));
            }
            let plain = silu_mul(a.clone().swap_dims(1, 2), b.clone().swap_dims(1, 2));
            plain.into_data().assert_approx_eq::<f32>(&composed(a.swap_dims(1, 2), b.swap_dims(1, 2)).into_data(), Tolerance::rel_abs(1e-5, 1e-6));
        }
    }
}
