//! Channels-last depthwise 2-D convolution (stride 1, "same" padding of an odd kernel, with
//! bias) with its own backward on flex.
//!
//! U-DiT's blocks hold their activations as tokens `[B, H*W, C]`, which is the channels-last
//! map `[B, H, W, C]` as it is. A convolution in Burn's `[B, C, H, W]` layout needs a transposed
//! copy on the way in and on the way out of every depthwise conv (and of the 1x1 convs around
//! it), each with a strided copy again in the backward. Here the depthwise conv runs on the
//! tokens directly, every inner loop over the `C` contiguous channels of a pixel:
//!
//! ```text
//! y[b, y, x, c] = bias[c] + sum_{i, j} w[c, i, j] x[b, y + i - p, x + j - p, c]
//! dx = dwconv(dy, flip(w)),   dw[c, i, j] = sum_{b, y, x} dy[b, y, x, c] x[b, y + i - p, x + j - p, c],
//! db = sum_{b, y, x} dy
//! ```
//!
//! Taken for `float32` on the flex device (plain or autodiff); other backends and dtypes run
//! Burn's convolution between two transposes, with the same result.

use burn::prelude::*;

/// Depthwise convolution of a channels-last map with `weight` and `bias`, stride 1 and "same"
/// padding (`kernel / 2`) of an odd kernel.
///
/// # Shapes
/// - `x`: `[B, H, W, C]`, `weight`: `[C, 1, kh, kw]` (odd `kh`, `kw`), `bias`: `[C]` ->
///   `[B, H, W, C]`
pub fn depthwise_conv2d_nhwc(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    {
        let [c, ci, kh, kw] = weight.dims();
        let on_flex = super::f32_on_flex(&x) && super::f32_on_flex(&weight) && super::f32_on_flex(&bias);
        let shapes = ci == 1 && kh % 2 == 1 && kw % 2 == 1 && x.dims()[3] == c && bias.dims() == [c];
        if on_flex && shapes && x.shape().num_elements() > 0 {
            return flex::depthwise_conv2d_nhwc(x, weight, bias);
        }
    }
    super::same_depthwise_conv2d(x.permute([0, 3, 1, 2]), weight, bias).permute([0, 2, 3, 1])
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

    use crate::cpu::{contiguous, depthwise_nhwc_kernel, simd};

    /// The op on operands that [`super::depthwise_conv2d_nhwc`] checked.
    pub fn depthwise_conv2d_nhwc(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
        use burn::backend::Dispatch;
        let y = <Dispatch as DepthwiseNhwcBackend>::depthwise_nhwc(x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch());
        Tensor::from_dispatch(y)
    }

    /// The channels-last depthwise convolution as a Burn backend extension (flex and autodiff
    /// over it).
    #[backend_extension(Flex, Autodiff)]
    pub trait DepthwiseNhwcBackend: Backend {
        /// `x` `[B, H, W, C]` convolved with `weight` `[C, 1, kh, kw]` plus `bias` `[C]`.
        fn depthwise_nhwc(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
        /// `(dx, dweight, dbias)` from the input, the weight and the upstream gradient `dy`.
        fn depthwise_nhwc_backward(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            dy: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    }

    fn dims4(t: &FlexTensor) -> [usize; 4] {
        let s = t.layout().shape();
        [s[0], s[1], s[2], s[3]]
    }

    /// `[C, 1, kh, kw]` as `[kh, kw, C]` (spatially flipped when `flip`: the input gradient's
    /// kernel).
    fn channels_last_kernel(weight: &FlexTensor, flip: bool) -> (Vec<f32>, [usize; 2]) {
        let weight = contiguous(weight.clone());
        let [c, _, kh, kw] = dims4(&weight);
        let w = weight.as_slice::<f32>().expect("contiguous weight");
        let mut out = vec![0.0f32; kh * kw * c];
        for ch in 0..c {
            for i in 0..kh {
                for j in 0..kw {
                    let (si, sj) = if flip { (kh - 1 - i, kw - 1 - j) } else { (i, j) };
                    out[(i * kw + j) * c + ch] = w[(ch * kh + si) * kw + sj];
                }
            }
        }
        (out, [kh, kw])
    }

    /// The threads for `work` multiply-adds over `rows` rows.
    fn threads(work: usize, rows: usize) -> usize {
        if work < PARALLEL_MIN_MACS { 1 } else { crate::cpu::num_threads().min(rows).max(1) }
    }

    /// The convolution of the contiguous `x` with the `[kh, kw, C]` kernel `w`.
    fn convolve(x: &FlexTensor, w: &[f32], [kh, kw]: [usize; 2], bias: &[f32]) -> FlexTensor {
        let [b, h, width, c] = dims4(x);
        let xs = x.as_slice::<f32>().expect("contiguous x");
        let mut out = vec![0.0f32; b * h * width * c];
        let rows = b * h;
        let per = rows.div_ceil(threads(out.len() * kh * kw, rows));
        crate::cpu::for_each_chunk(&mut out, per * width * c, |t, piece| {
            depthwise_nhwc_kernel::depthwise_nhwc_rows(piece, xs, w, bias, [h, width, c, kh, kw, kh / 2, kw / 2, t * per]);
        });
        FlexTensor::from_data(TensorData::new(out, [b, h, width, c]))
    }

    impl DepthwiseNhwcBackend for Flex {
        fn depthwise_nhwc(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
            let (x, bias) = (contiguous(x), contiguous(bias));
            let (w, kernel) = channels_last_kernel(&weight, false);
            convolve(&x, &w, kernel, bias.as_slice::<f32>().expect("contiguous bias"))
        }

        fn depthwise_nhwc_backward(x: FlexTensor, weight: FlexTensor, dy: FlexTensor) -> (FlexTensor, FlexTensor, FlexTensor) {
            let (x, dy) = (contiguous(x), contiguous(dy));
            let (flipped, kernel @ [kh, kw]) = channels_last_kernel(&weight, true);
            let dx = convolve(&dy, &flipped, kernel, &[]);
            let [b, h, width, c] = dims4(&x);
            let (xs, dys) = (x.as_slice::<f32>().expect("contiguous x"), dy.as_slice::<f32>().expect("contiguous dy"));
            // one partial (dw, db) per thread over its rows, summed after
            let rows = b * h;
            let threads = threads(rows * width * c * kh * kw, rows);
            let per = rows.div_ceil(threads);
            let part = kh * kw * c + c;
            let mut partial = vec![0.0f32; threads * part];
            crate::cpu::for_each_chunk(&mut partial, part, |t, piece| {
                let (dw, db) = piece.split_at_mut(kh * kw * c);
                let (first, last) = ((t * per).min(rows), ((t + 1) * per).min(rows));
                simd::depthwise_nhwc_weight_grad(dw, db, xs, dys, [h, width, c, kh, kw, kh / 2, kw / 2, first, last - first]);
            });
            let (sum, rest) = partial.split_at_mut(part);
            for other in rest.chunks_exact(part) {
                for (s, o) in sum.iter_mut().zip(other) {
                    *s += o;
                }
            }
            // [kh, kw, C] -> [C, 1, kh, kw]
            let mut dw = vec![0.0f32; c * kh * kw];
            for (k, row) in sum[..kh * kw * c].chunks_exact(c).enumerate() {
                for (ch, &g) in row.iter().enumerate() {
                    dw[ch * kh * kw + k] = g;
                }
            }
            let db = sum[kh * kw * c..].to_vec();
            (dx, FlexTensor::from_data(TensorData::new(dw, [c, 1, kh, kw])), FlexTensor::from_data(TensorData::new(db, [c])))
        }
    }

    impl<B: Backend + DepthwiseNhwcBackend, C: CheckpointStrategy> DepthwiseNhwcBackend for Autodiff<B, C> {
        fn depthwise_nhwc(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct DepthwiseNhwcBackward;

            impl<B: Backend + DepthwiseNhwcBackend> Backward<B, 3> for DepthwiseNhwcBackward {
                /// The checkpoints of the input and the weight.
                type State = (NodeId, NodeId);

                fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                    let (x, weight) = ops.state;
                    let (x, weight) = (checkpointer.retrieve_node_output(x), checkpointer.retrieve_node_output(weight));
                    let dy = grads.consume::<B>(&ops.node);
                    let (dx, dw, db) = B::depthwise_nhwc_backward(x, weight, dy);
                    for (parent, grad) in ops.parents.into_iter().zip([dx, dw, db]) {
                        if let Some(node) = parent {
                            grads.register::<B>(node.id, grad);
                        }
                    }
                }
            }

            match DepthwiseNhwcBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
                OpsKind::Tracked(mut prep) => {
                    let state = (prep.checkpoint(&x), prep.checkpoint(&weight));
                    prep.finish(state, B::depthwise_nhwc(x.into_primitive(), weight.into_primitive(), bias.into_primitive()))
                }
                OpsKind::UnTracked(prep) => {
                    prep.finish(B::depthwise_nhwc(x.into_primitive(), weight.into_primitive(), bias.into_primitive()))
                }
            }
        }

        fn depthwise_nhwc_backward(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            dy: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            // Only reached by a second-order derivative, which this op does not track.
            let (dx, dw, db) = B::depthwise_nhwc_backward(x.into_primitive(), weight.into_primitive(), dy.into_primitive());
            (FloatTensor::<Self>::new(dx), FloatTensor::<Self>::new(dw), FloatTensor::<Self>::new(db))
        }
    }

    /// Below this many multiply-adds a kernel runs on one thread.
    const PARALLEL_MIN_MACS: usize = 1 << 18;
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;

    /// `max |a - b|` and `max |b|`.
    fn max_error(a: TensorData, b: TensorData) -> (f32, f32) {
        let (a, b) = (a.try_to_vec::<f32>().unwrap(), b.try_to_vec::<f32>().unwrap());
        assert_eq!(a.len(), b.len());
        a.iter().zip(&b).fold((0.0f32, 0.0f32), |(e, m), (x, y)| (e.max((x - y).abs()), m.max(y.abs())))
    }

    #[test]
    fn values_and_gradients_match_burns_convolution_in_nchw() {
        let device = Device::flex().autodiff();
        // [2, 16, 16, 32] splits the kernels across threads; from 16 channels on, the register
        // tiles (16 channels by 8 pixels) inside the map, the edge pixels (4 tiles of channels
        // at once from 64 channels on, else 1) and the checked path for the channels past the
        // last full tile
        let shapes = [(3, [2, 7, 6, 5]), (5, [1, 9, 9, 8]), (1, [1, 3, 3, 4]), (5, [2, 16, 16, 32]), (3, [1, 5, 4, 3]), (5, [1, 6, 13, 40]), (7, [1, 4, 17, 16]), (3, [1, 3, 12, 80])];
        for (i, (kernel, [b, h, w, c])) in shapes.into_iter().enumerate() {
            let seed = 900 + 10 * i as u64;
            let weight = crate::test_util::randn([c, 1, kernel, kernel], seed, &device).require_grad();
            let bias = crate::test_util::randn([c], seed + 1, &device).require_grad();
            let x = crate::test_util::randn([b, h, w, c], seed + 2, &device).require_grad();
            let upstream = crate::test_util::randn([b, h, w, c], seed + 3, &device);
            let run = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
                let y = f(x.clone());
                let grads = (y.clone() * upstream.clone()).sum().backward();
                [y.inner().into_data(), x.grad(&grads).unwrap().into_data(), weight.grad(&grads).unwrap().into_data(), bias.grad(&grads).unwrap().into_data()]
            };
            let fast = run(&|x| depthwise_conv2d_nhwc(x, weight.clone(), bias.clone()));
            let options = burn::tensor::ops::ConvOptions::new([1, 1], [kernel / 2; 2], [1, 1], c);
            let slow = run(&|x| {
                burn::tensor::module::conv2d(x.permute([0, 3, 1, 2]), weight.clone(), Some(bias.clone()), options.clone()).permute([0, 2, 3, 1])
            });
            for (what, (f, s)) in ["value", "dx", "dw", "db"].iter().zip(fast.into_iter().zip(slow)) {
                let (err, max) = max_error(f, s);
                assert!(err <= 1e-5 * max.max(1.0), "{what} of k {kernel}, {:?}: max error {err} (max {max})", [b, h, w, c]);
            }
        }
    }

    #[test]
    fn strided_inputs_and_the_plain_device() {
        let device = Device::flex();
        let weight = crate::test_util::randn([6, 1, 3, 3], 950, &device);
        let bias = crate::test_util::randn([6], 951, &device);
        // an NCHW map seen channels-last: a strided view
        let nchw = crate::test_util::randn([2, 6, 5, 7], 952, &device);
        let got = depthwise_conv2d_nhwc(nchw.clone().permute([0, 2, 3, 1]), weight.clone(), bias.clone());
        let options = burn::tensor::ops::ConvOptions::new([1, 1], [1, 1], [1, 1], 6);
        let want = burn::tensor::module::conv2d(nchw, weight, Some(bias), options).permute([0, 2, 3, 1]);
        let (err, max) = max_error(got.into_data(), want.into_data());
        assert!(err <= 1e-5 * max.max(1.0), "max error {err}");
    }
}
