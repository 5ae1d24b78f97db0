//! LayerNorm over the last dimension with a fused backward on Burn's pure-Rust CPU backend
//! (`flex`), for inference and training.
//!
//! Flex has a fused LayerNorm forward, but under autodiff Burn composes LayerNorm from eight
//! ops (mean, subtract, square, mean, add, sqrt, divide, scale) whose intermediates all stay
//! alive for the backward: in a MicroDiT or DiT training step (seven LayerNorms per MicroDiT
//! block: three pre-norms, the query and key norms of the self- and cross-attention) that is
//! a large share of the time and of the peak memory. Here LayerNorm is one Burn
//! backend-extension op: a vectorised row loop ([`layer_norm_kernel`](super::layer_norm_kernel))
//! split across threads, and a hand-written backward that keeps only the input and recomputes
//! each row's mean and inverse standard deviation:
//!
//! ```text
//! xh = (x - mean(x)) / sqrt(var(x) + eps),  y = xh gamma + beta
//! dx = (g - mean(g) - xh mean(g xh)) / sqrt(var(x) + eps),  g = dy gamma
//! dgamma = sum_rows(dy xh),  dbeta = sum_rows(dy)
//! ```
//!
//! The fast path is taken for `float32` tensors on the flex device (plain or autodiff); every
//! other backend or dtype goes to Burn's `layer_norm`, so results and gradients there are
//! Burn's own.

use burn::prelude::*;

/// LayerNorm over the last dimension, `(x - mean) / sqrt(var + eps) * gamma + beta` (biased
/// variance; no scale or shift where `gamma` / `beta` are `None`), as Burn's
/// `module::layer_norm`; one vectorised op with its own backward on flex.
///
/// # Shapes
/// - `x`: `[..., d]`; `gamma`, `beta`: `[d]`; output the shape of `x`
pub fn layer_norm<const D: usize>(x: Tensor<D>, gamma: Option<Tensor<1>>, beta: Option<Tensor<1>>, eps: f64) -> Tensor<D> {
    let d = x.dims()[D - 1];
    let device = x.device();
    let gamma = gamma.unwrap_or_else(|| Tensor::<1>::ones([d], &device).cast(x.dtype()));
    match flex::layer_norm(x, gamma, beta, eps) {
        Ok(y) => y,
        Err((x, gamma, beta)) => burn::tensor::module::layer_norm(x, gamma, beta, eps),
    }
}

#[cfg(not(feature = "flex"))]
mod flex {
    use burn::prelude::*;

    type Operands<const D: usize> = (Tensor<D>, Tensor<1>, Option<Tensor<1>>);

    /// Without the flex backend there is no fast path: the operands are given back.
    pub fn layer_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, beta: Option<Tensor<1>>, _eps: f64) -> Result<Tensor<D>, Operands<D>> {
        Err((x, gamma, beta))
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

    use crate::cpu::{f32_on_flex, piece_len, run_all};
    use crate::cpu::layer_norm_kernel as kernel;

    type Operands<const D: usize> = (Tensor<D>, Tensor<1>, Option<Tensor<1>>);

    /// The fast path for `float32` operands on the flex device (a non-empty `x` whose last
    /// dimension matches `gamma` and `beta`); others are given back.
    pub fn layer_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, beta: Option<Tensor<1>>, eps: f64) -> Result<Tensor<D>, Operands<D>> {
        let d = x.dims()[D - 1];
        let applies = f32_on_flex(&x)
            && f32_on_flex(&gamma)
            && beta.as_ref().is_none_or(f32_on_flex)
            && gamma.dims() == [d]
            && beta.as_ref().is_none_or(|b| b.dims() == [d])
            && x.shape().num_elements() > 0;
        if !applies {
            return Err((x, gamma, beta));
        }
        let beta = beta.unwrap_or_else(|| Tensor::zeros([d], &x.device()));
        use burn::backend::Dispatch;
        let y = <Dispatch as LayerNormBackend>::fast_layer_norm(x.into_dispatch(), gamma.into_dispatch(), beta.into_dispatch(), eps);
        Ok(Tensor::from_dispatch(y))
    }

    /// The LayerNorm op and its backward as a Burn backend extension (flex and autodiff over
    /// it); `float32` operands, `gamma` and `beta` as wide as the last dimension of `x`.
    #[backend_extension(Flex, Autodiff)]
    pub trait LayerNormBackend: Backend {
        /// `(x - mean) / sqrt(var + eps) * gamma + beta` over the last dimension.
        fn fast_layer_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64) -> FloatTensor<Self>;
        /// `(dx, dgamma, dbeta)` from the input, `gamma` and the upstream gradient `dy`.
        fn fast_layer_norm_backward(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            dy: FloatTensor<Self>,
            eps: f64,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    }

    fn f32_vec(t: &FlexTensor) -> FlexTensor {
        let t = t.to_contiguous();
        debug_assert!(t.as_slice::<f32>().is_some());
        t
    }

    impl LayerNormBackend for Flex {
        fn fast_layer_norm(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, eps: f64) -> FlexTensor {
            let shape = x.layout().shape().clone();
            let (x, gamma, beta) = (f32_vec(&x), f32_vec(&gamma), f32_vec(&beta));
            let (xs, gs, bs) = (x.as_slice::<f32>().unwrap(), gamma.as_slice::<f32>().unwrap(), beta.as_slice::<f32>().unwrap());
            let d = gs.len();
            let mut y = vec![0.0f32; xs.len()];
            let piece = piece_len(xs.len(), d);
            let jobs = y
                .chunks_mut(piece)
                .zip(xs.chunks(piece))
                .map(|(yp, xp)| move || kernel::forward(xp, yp, gs, bs, eps as f32))
                .collect();
            run_all(jobs);
            FlexTensor::from_data(TensorData::new(y, shape))
        }

        fn fast_layer_norm_backward(x: FlexTensor, gamma: FlexTensor, dy: FlexTensor, eps: f64) -> (FlexTensor, FlexTensor, FlexTensor) {
            let shape = x.layout().shape().clone();
            let (x, gamma) = (f32_vec(&x), f32_vec(&gamma));
            let (xs, gs) = (x.as_slice::<f32>().unwrap(), gamma.as_slice::<f32>().unwrap());
            let d = gs.len();
            let mut dx = f32_vec(&dy).as_slice::<f32>().unwrap().to_vec();
            let piece = piece_len(xs.len(), d);
            let pieces = xs.len().div_ceil(piece);
            let mut partial = vec![0.0f32; pieces * 2 * d];
            let jobs = dx
                .chunks_mut(piece)
                .zip(xs.chunks(piece))
                .zip(partial.chunks_mut(2 * d))
                .map(|((dxp, xp), pp)| {
                    move || {
                        let (pg, pb) = pp.split_at_mut(d);
                        kernel::backward(xp, dxp, gs, pg, pb, eps as f32);
                    }
                })
                .collect();
            run_all(jobs);
            let (mut dgamma, mut dbeta) = (vec![0.0f32; d], vec![0.0f32; d]);
            for pp in partial.chunks(2 * d) {
                for i in 0..d {
                    dgamma[i] += pp[i];
                    dbeta[i] += pp[d + i];
                }
            }
            (
                FlexTensor::from_data(TensorData::new(dx, shape)),
                FlexTensor::from_data(TensorData::new(dgamma, [d])),
                FlexTensor::from_data(TensorData::new(dbeta, [d])),
            )
        }
    }

    impl<B: Backend + LayerNormBackend, C: CheckpointStrategy> LayerNormBackend for Autodiff<B, C> {
        fn fast_layer_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct LayerNormBackward {
                eps: f64,
            }

            impl<B: Backend + LayerNormBackend> Backward<B, 3> for LayerNormBackward {
                /// The input's checkpoint and `gamma`.
                type State = (NodeId, FloatTensor<B>);

                fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                    let (x, gamma) = ops.state;
                    let x = checkpointer.retrieve_node_output(x);
                    let dy = grads.consume::<B>(&ops.node);
                    let (dx, dgamma, dbeta) = B::fast_layer_norm_backward(x, gamma, dy, self.eps);
                    for (parent, grad) in ops.parents.into_iter().zip([dx, dgamma, dbeta]) {
                        if let Some(node) = parent {
                            grads.register::<B>(node.id, grad);
                        }
                    }
                }
            }

            match (LayerNormBackward { eps }).prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
                OpsKind::Tracked(mut prep) => {
                    let xs = prep.checkpoint(&x);
                    let g = gamma.primitive().clone();
                    let y = B::fast_layer_norm(x.into_primitive(), gamma.into_primitive(), beta.into_primitive(), eps);
                    prep.finish((xs, g), y)
                }
                OpsKind::UnTracked(prep) => {
                    prep.finish(B::fast_layer_norm(x.into_primitive(), gamma.into_primitive(), beta.into_primitive(), eps))
                }
            }
        }

        fn fast_layer_norm_backward(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            dy: FloatTensor<Self>,
            eps: f64,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            // Only reached by a second-order derivative, which this op does not track.
            let [x, gamma, dy] = [x, gamma, dy].map(|t| t.into_primitive());
            let (dx, dgamma, dbeta) = B::fast_layer_norm_backward(x, gamma, dy, eps);
            (FloatTensor::<Self>::new(dx), FloatTensor::<Self>::new(dgamma), FloatTensor::<Self>::new(dbeta))
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;

    /// Value and the gradients of `x`, `gamma`, `beta` of `sum(upstream * f(x, gamma, beta))`.
    fn value_and_grads(
        f: impl Fn(Tensor<3>, Tensor<1>, Tensor<1>) -> Tensor<3>,
        x: &Tensor<3>,
        gamma: &Tensor<1>,
        beta: &Tensor<1>,
        upstream: &Tensor<3>,
    ) -> [TensorData; 4] {
        let device = Device::flex().autodiff();
        let x = Tensor::<3>::from_data(x.to_data(), &device).require_grad();
        let [gamma, beta] = [gamma, beta].map(|t| Tensor::<1>::from_data(t.to_data(), &device).require_grad());
        let out = f(x.clone(), gamma.clone(), beta.clone());
        let value = out.clone().inner().into_data();
        let grads = (out * Tensor::from_data(upstream.to_data(), &device)).sum().backward();
        [value, x.grad(&grads).unwrap().into_data(), gamma.grad(&grads).unwrap().into_data(), beta.grad(&grads).unwrap().into_data()]
    }

    #[test]
    fn values_and_gradients_match_burns_layer_norm() {
        let device = Device::flex();
        // one row, odd widths, a threaded call, rows wider than the lane count
        for (i, [b, n, d]) in [[1, 1, 5], [2, 7, 33], [2, 256, 512], [3, 5, 16], [1, 3, 1000]].into_iter().enumerate() {
            let seed = 600 + 10 * i as u64;
            let x = crate::test_util::randn([b, n, d], seed, &device) * 3.0 + 1.5;
            let gamma = crate::test_util::randn([1, 1, d], seed + 1, &device).reshape([d]);
            let beta = crate::test_util::randn([1, 1, d], seed + 2, &device).reshape([d]);
            let upstream = crate::test_util::randn([b, n, d], seed + 3, &device);
            let fast = value_and_grads(|x, g, b| layer_norm(x, Some(g), Some(b), 1e-6), &x, &gamma, &beta, &upstream);
            let slow = value_and_grads(|x, g, b| burn::tensor::module::layer_norm(x, g, Some(b), 1e-6), &x, &gamma, &beta, &upstream);
            for (what, (f, s)) in ["value", "dx", "dgamma", "dbeta"].iter().zip(fast.into_iter().zip(slow)) {
                let scale = s.iter::<f32>().fold(1.0f32, |m, v| m.max(v.abs()));
                let tolerance = burn::tensor::Tolerance::absolute(2e-5 * scale);
                eprintln!("{what} [{b}, {n}, {d}]");
                f.assert_approx_eq::<f32>(&s, tolerance);
            }
            // the plain device and the forms without gamma / beta
            let plain = layer_norm(x.clone(), Some(gamma.clone()), Some(beta.clone()), 1e-6);
            let reference = burn::tensor::module::layer_norm(x.clone(), gamma, Some(beta), 1e-6);
            plain.into_data().assert_approx_eq::<f32>(&reference.into_data(), burn::tensor::Tolerance::absolute(1e-5));
            let ones = Tensor::<1>::ones([d], &device);
            let reference = burn::tensor::module::layer_norm(x.clone(), ones, None, 1e-5);
            layer_norm(x, None, None, 1e-5).into_data().assert_approx_eq::<f32>(&reference.into_data(), burn::tensor::Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn strided_input_and_untracked_parameters() {
        let device = Device::flex().autodiff();
        let data = crate::test_util::randn([2, 6, 24], 700, &Device::flex()).into_data();
        let upstream = crate::test_util::randn([2, 6, 8], 701, &device);
        let run = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
            let x = Tensor::<3>::from_data(data.clone(), &device).require_grad();
            let out = f(x.clone().slice([0..2, 0..6, 8..16])); // a strided view of a wider tensor
            let grads = (out.clone() * upstream.clone()).sum().backward();
            (out.inner().into_data(), x.grad(&grads).unwrap().into_data())
        };
        let (fast, fast_grad) = run(&|x| layer_norm(x, None, None, 1e-6));
        let (slow, slow_grad) = run(&|x| burn::tensor::module::layer_norm(x, Tensor::ones([8], &device), None, 1e-6));
        fast.assert_approx_eq::<f32>(&slow, burn::tensor::Tolerance::absolute(1e-5));
        fast_grad.assert_approx_eq::<f32>(&slow_grad, burn::tensor::Tolerance::absolute(1e-5));
    }

    #[test]
    fn gradient_checkpointing_device_and_other_dtypes() {
        let device = Device::flex().autodiff().gradient_checkpointing();
        let data = crate::test_util::randn([3, 40], 800, &Device::flex()).into_data();
        let upstream = Tensor::<2>::from_data(crate::test_util::randn([3, 40], 801, &Device::flex()).into_data(), &device);
        let grad = |f: &dyn Fn(Tensor<2>) -> Tensor<2>| {
            let x = Tensor::<2>::from_data(data.clone(), &device).require_grad();
            let y = f((x.clone() * 0.5).exp()); // recomputed under checkpointing
            let grads = (y * upstream.clone()).sum().backward();
            x.grad(&grads).unwrap().into_data()
        };
        let slow = grad(&|x| burn::tensor::module::layer_norm(x, Tensor::ones([40], &device), None, 1e-6));
        grad(&|x| layer_norm(x, None, None, 1e-6)).assert_approx_eq::<f32>(&slow, burn::tensor::Tolerance::absolute(1e-5));
        // f16 goes to Burn's op
        let half = Tensor::<2>::from_data(data.clone(), &Device::flex()).cast(burn::tensor::DType::F16);
        let out = layer_norm(half, None, None, 1e-6).cast(burn::tensor::DType::F32);
        let reference = layer_norm(Tensor::<2>::from_data(data, &Device::flex()), None, None, 1e-6);
        out.into_data().assert_approx_eq::<f32>(&reference.into_data(), burn::tensor::Tolerance::absolute(1e-2));
    }
}
