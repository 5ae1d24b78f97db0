//! Per-head L2 normalisation with a per-head scale (the query and key normalisation of cosine
//! attention) as one vectorised op with a fused backward on Burn's pure-Rust CPU backend
//! (`flex`).
//!
//! Composed, `x / max(||x||, eps) * s` is a square, a row sum, a square root, a clamp, a
//! division and a product (four full passes over the heads, each writing a fresh buffer, and
//! under autodiff as many saved intermediates and backward passes). Here it is one Burn
//! backend-extension op over the rows of `[B, H, N, D]` that keeps only its input:
//!
//! ```text
//! n = max(||x||, eps),  xh = x / n,  y = s_h xh
//! dx = (s_h / n) (dy - xh (xh . dy))   (dx = (s_h / n) dy where ||x|| < eps)
//! ds_h = sum over the rows of head h of (xh . dy)
//! ```
//!
//! The fast path is taken for `float32` operands on the flex device (plain or autodiff);
//! anything else runs the composed Burn ops.

use burn::prelude::*;

/// `x / max(||x||_2, eps) * scale[h]` over the last dimension (PyTorch
/// `F.normalize(x, dim=-1, eps=eps) * scale`); no scale where `scale` is `None`. One op with a
/// fused backward on flex.
///
/// # Shapes
/// - `x`: `[B, H, N, D]`; `scale`: `[H]`; output `[B, H, N, D]`
pub fn l2_normalize(x: Tensor<4>, scale: Option<Tensor<1>>, eps: f64) -> Tensor<4> {
    let h = x.dims()[1];
    let scale = scale.unwrap_or_else(|| Tensor::<1>::ones([h], &x.device()).cast(x.dtype()));
    match flex::l2_normalize(x, scale, eps) {
        Ok(y) => y,
        Err((x, scale)) => composed(x, scale, eps),
    }
}

/// The normalisation from Burn ops.
fn composed(x: Tensor<4>, scale: Tensor<1>, eps: f64) -> Tensor<4> {
    let h = scale.dims()[0];
    let norm = x.clone().square().sum_dim(3).sqrt().clamp_min(eps);
    x / norm * scale.reshape([1, h, 1, 1])
}

#[cfg(not(feature = "flex"))]
mod flex {
    use burn::prelude::*;

    /// Without the flex backend there is no fast path: the operands are given back.
    pub fn l2_normalize(x: Tensor<4>, scale: Tensor<1>, _eps: f64) -> Result<Tensor<4>, (Tensor<4>, Tensor<1>)> {
        Err((x, scale))
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
    use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
    use burn::prelude::*;

    use super::kernel;
    use crate::cpu::{contiguous, f32_on_flex, for_each_chunk, owned_contiguous, piece_len};

    /// The fast path for `float32` operands on the flex device, a non-empty `x` and one scale
    /// per head; others are given back.
    pub fn l2_normalize(x: Tensor<4>, scale: Tensor<1>, eps: f64) -> Result<Tensor<4>, (Tensor<4>, Tensor<1>)> {
        if !(f32_on_flex(&x) && f32_on_flex(&scale) && scale.dims() == [x.dims()[1]] && x.shape().num_elements() > 0) {
            return Err((x, scale));
        }
        let y = <Dispatch as L2NormalizeBackend>::fast_l2_normalize(x.into_dispatch(), scale.into_dispatch(), eps as f32);
        Ok(Tensor::from_dispatch(y))
    }

    /// The normalisation and its backward as a Burn backend extension (flex and autodiff over
    /// it); `float32` rows `[B, H, N, D]` and scales `[H]`.
    #[backend_extension(Flex, Autodiff)]
    pub trait L2NormalizeBackend: Backend {
        /// `x / max(||x||, eps) * scale[h]`.
        fn fast_l2_normalize(x: FloatTensor<Self>, scale: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;
        /// `(dx, dscale)` from the operands and the upstream gradient `dy`.
        fn fast_l2_normalize_backward(
            x: FloatTensor<Self>,
            scale: FloatTensor<Self>,
            dy: FloatTensor<Self>,
            eps: f32,
        ) -> (FloatTensor<Self>, FloatTensor<Self>);
    }

    /// Rows (of width `D`) per thread, and the tokens per head `N` and width `D`.
    fn split(x: &FlexTensor) -> (usize, [usize; 3]) {
        let s = x.layout().shape();
        let [h, n, d] = [s[1], s[2], s[3]];
        (piece_len(x.layout().num_elements(), d) / d, [h, n, d])
    }

    impl L2NormalizeBackend for Flex {
        fn fast_l2_normalize(x: FlexTensor, scale: FlexTensor, eps: f32) -> FlexTensor {
            let (rows, [h, n, d]) = split(&x);
            let (mut y, scale) = (owned_contiguous(x), contiguous(scale));
            let s = scale.as_slice::<f32>().expect("f32");
            let len = y.layout().num_elements();
            for_each_chunk(&mut y.storage_mut::<f32>()[..len], rows * d, |i, piece| {
                for (j, y) in piece.chunks_mut(d).enumerate() {
                    let row = i * rows + j;
                    kernel::forward(y, s[(row / n) % h], eps);
                }
            });
            y
        }

        fn fast_l2_normalize_backward(x: FlexTensor, scale: FlexTensor, dy: FlexTensor, eps: f32) -> (FlexTensor, FlexTensor) {
            let (rows, [h, n, d]) = split(&x);
            let (x, scale, mut dx) = (contiguous(x), contiguous(scale), owned_contiguous(dy));
            let [xs, s] = [&x, &scale].map(|t| t.as_slice::<f32>().expect("f32"));
            let len = dx.layout().num_elements();
            let pieces = len.div_ceil(rows * d);
            let mut ds = vec![0.0f32; pieces * h]; // one partial sum per piece and head
            let dx_data = &mut dx.storage_mut::<f32>()[..len];
            let mut work: Vec<(&mut [f32], &mut [f32])> = dx_data.chunks_mut(rows * d).zip(ds.chunks_mut(h)).collect();
            for_each_chunk(&mut work, 1, |i, piece| {
                let (dx, ds) = &mut piece[0];
                for (j, dx) in dx.chunks_mut(d).enumerate() {
                    let row = i * rows + j;
                    let head = (row / n) % h;
                    let mut dot = 0.0;
                    kernel::backward(dx, &xs[row * d..(row + 1) * d], s[head], eps, &mut dot);
                    ds[head] += dot;
                }
            });
            let dscale: Vec<f32> = (0..h).map(|k| ds.iter().skip(k).step_by(h).sum()).collect();
            (dx, FlexTensor::from_data(TensorData::new(dscale, [h])))
        }
    }

    impl<B: Backend + L2NormalizeBackend, C: CheckpointStrategy> L2NormalizeBackend for Autodiff<B, C> {
        fn fast_l2_normalize(x: FloatTensor<Self>, scale: FloatTensor<Self>, eps: f32) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct L2NormalizeBackward;

            impl<B: Backend + L2NormalizeBackend> Backward<B, 2> for L2NormalizeBackward {
                /// The operands' checkpoints and the epsilon.
                type State = (NodeId, NodeId, f32);

                fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                    let (x, scale, eps) = ops.state;
                    let [x, scale] = [x, scale].map(|id| checkpointer.retrieve_node_output(id));
                    let dy = grads.consume::<B>(&ops.node);
                    let (dx, dscale) = B::fast_l2_normalize_backward(x, scale, dy, eps);
                    for (parent, grad) in ops.parents.into_iter().zip([dx, dscale]) {
                        if let Some(node) = parent {
                            grads.register::<B>(node.id, grad);
                        }
                    }
                }
            }

            match L2NormalizeBackward.prepare::<C>([x.node(), scale.node()]).compute_bound().stateful() {
                OpsKind::Tracked(mut prep) => {
                    let state = (prep.checkpoint(&x), prep.checkpoint(&scale), eps);
                    prep.finish(state, B::fast_l2_normalize(x.into_primitive(), scale.into_primitive(), eps))
                }
                OpsKind::UnTracked(prep) => prep.finish(B::fast_l2_normalize(x.into_primitive(), scale.into_primitive(), eps)),
            }
        }

        fn fast_l2_normalize_backward(
            x: FloatTensor<Self>,
            scale: FloatTensor<Self>,
            dy: FloatTensor<Self>,
            eps: f32,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            // Only reached by a second-order derivative, which this op does not track.
            let [x, scale, dy] = [x, scale, dy].map(|t| t.into_primitive());
            let (dx, dscale) = B::fast_l2_normalize_backward(x, scale, dy, eps);
            (FloatTensor::<Self>::new(dx), FloatTensor::<Self>::new(dscale))
        }
    }
}

/// Row loops of the fast path (the reductions are LayerNorm's `lane_sum`: 16 independent
/// accumulators, so that LLVM vectorises them), compiled for AVX-512, AVX2+FMA and the baseline.
#[cfg(feature = "flex")]
mod kernel {
    use crate::cpu::layer_norm_kernel::lane_sum;
    use crate::cpu::simd::multiversion;

    /// `y = y / max(||y||, eps) * s` for one row, in place.
    #[inline(always)]
    fn forward_loop(y: &mut [f32], s: f32, eps: f32) {
        let norm = lane_sum(y.len(), |i| y[i] * y[i]).sqrt().max(eps);
        for y in y.iter_mut() {
            *y = *y / norm * s;
        }
    }

    /// `dx` of one row in place of the upstream gradient `g`; `dot` receives `xh . g` (the
    /// row's share of `ds`).
    #[inline(always)]
    fn backward_loop(g: &mut [f32], x: &[f32], s: f32, eps: f32, dot: &mut f32) {
        let len = lane_sum(x.len(), |i| x[i] * x[i]).sqrt();
        let norm = len.max(eps);
        *dot = lane_sum(x.len(), |i| x[i] * g[i]) / norm;
        let k = s / norm;
        // below eps the norm is the constant eps: no projection
        let proj = if len >= eps { *dot / norm } else { 0.0 };
        for (g, &x) in g.iter_mut().zip(x) {
            *g = k * (*g - x * proj);
        }
    }

    multiversion!(
        /// One normalised, scaled row.
        forward(y: &mut [f32], s: f32, eps: f32) => forward_loop
    );

    multiversion!(
        /// The input gradient of one row in place of the upstream gradient `g`, its share of
        /// the scale's gradient into `dot`.
        backward(g: &mut [f32], x: &[f32], s: f32, eps: f32, dot: &mut f32) => backward_loop
    );
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    /// Value and the gradients of `x` and `scale` of `sum(up * f(x, scale))`.
    fn run(f: &dyn Fn(Tensor<4>, Tensor<1>) -> Tensor<4>, x: &Tensor<4>, scale: &Tensor<1>, up: &Tensor<4>) -> [TensorData; 3] {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::from_data(x.to_data(), &device).require_grad();
        let scale = Tensor::<1>::from_data(scale.to_data(), &device).require_grad();
        let y = f(x.clone(), scale.clone());
        let grads = (y.clone() * Tensor::from_data(up.to_data(), &device)).sum().backward();
        [y.inner().into_data(), x.grad(&grads).unwrap().into_data(), scale.grad(&grads).unwrap().into_data()]
    }

    #[test]
    fn values_and_gradients_match_the_composed_form() {
        let flex = Device::flex();
        // small odd rows, and a threaded size of U-DiT's head layout; one row below eps (clamped)
        for (i, shape) in [[2, 3, 5, 7], [2, 4, 257, 32]].into_iter().enumerate() {
            let seed = 1400 + 10 * i as u64;
            let x = crate::test_util::randn(shape, seed, &flex);
            let tiny = x.clone().slice([0..1, 0..1, 0..1, 0..shape[3]]) * 1e-14;
            let x = x.slice_assign([0..1, 0..1, 0..1, 0..shape[3]], tiny);
            let up = crate::test_util::randn(shape, seed + 1, &flex);
            let scale = crate::test_util::randn([shape[1]], seed + 2, &flex).exp();
            let fast = run(&|x, s| l2_normalize(x, Some(s), 1e-12), &x, &scale, &up);
            let slow = run(&|x, s| composed(x, s, 1e-12), &x, &scale, &up);
            for (f, s) in fast.into_iter().zip(slow) {
                f.assert_approx_eq::<f32>(&s, Tolerance::rel_abs(1e-5, 1e-5));
            }
            // plain device, a strided (head-split) input, no scale
            let xt = Tensor::<4>::from_data(x.clone().swap_dims(1, 2).into_data(), &flex).swap_dims(1, 2);
            let ones = Tensor::ones([shape[1]], &flex);
            let expect = composed(x, ones, 1e-12).into_data();
            l2_normalize(xt, None, 1e-12).into_data().assert_approx_eq::<f32>(&expect, Tolerance::rel_abs(1e-6, 1e-6));
        }
    }

    #[test]
    fn other_dtypes_take_the_composed_ops() {
        let flex = Device::flex();
        let x = crate::test_util::randn([1, 2, 3, 4], 1500, &flex).cast(burn::tensor::DType::F16);
        let s = Tensor::<1>::from_floats([2.0, 3.0], &flex).cast(burn::tensor::DType::F16);
        let expect = composed(x.clone(), s.clone(), 1e-6).into_data();
        l2_normalize(x, Some(s), 1e-6).into_data().assert_eq(&expect, true);
    }
}
