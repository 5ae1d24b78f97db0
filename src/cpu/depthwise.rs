//! Depthwise 2-D convolution (`groups == channels`, stride 1, "same" padding, with bias) with
//! its own backward on flex.
//!
//! Flex has a direct depthwise forward, but Burn's autodiff takes the input gradient of every
//! convolution as a transposed convolution, which flex computes as one outer product per
//! channel and a scatter-add (8% of a U-DiT-S training step on its own), and the weight
//! gradient as a grouped convolution through im2col and matrix-vector products (7% more).
//! For stride 1 and "same" padding `p = (k - 1) / 2` the input gradient is again a depthwise
//! convolution, of the upstream gradient with the spatially flipped kernel and the same
//! padding, and the weight gradient is `k^2` shifted dot products per channel:
//!
//! ```text
//! y = dwconv(x, w) + b,   dx = dwconv(dy, flip(w)),
//! dw[c, i, j] = sum_{b, y, x} dy[b, c, y, x] x[b, c, y + i - p, x + j - p],   db = sum_{b, y, x} dy
//! ```
//!
//! The forward and `dx` run flex's depthwise kernel, `dw` a vectorised loop split over the
//! channels. Taken for `float32` on the flex device (plain or autodiff); other convolutions,
//! backends and dtypes run [`Conv2d::forward`].

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

/// `conv.forward(x)`, with the input gradient through the depthwise kernel on flex when `conv`
/// is depthwise with stride 1, dilation 1, a bias and "same" padding of an odd kernel.
///
/// # Shapes
/// - `x`: `[B, C, H, W]` -> `[B, C_out, H_out, W_out]` (as `conv`)
pub fn depthwise_conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match (fast_path_padding(conv, &x), &conv.bias) {
        (Some(_), Some(bias)) => same_depthwise_conv2d(x, conv.weight.val(), bias.val()),
        _ => conv.forward(x),
    }
}

/// The depthwise convolution of `x` with `weight` and `bias` (stride 1, "same" padding of an
/// odd kernel), for weights that are computed rather than held by a [`Conv2d`] (folded
/// branches); the fast path of [`depthwise_conv2d`] on flex, Burn's `conv2d` elsewhere.
///
/// # Shapes
/// - `x`: `[B, C, H, W]`, `weight`: `[C, 1, kh, kw]` (odd `kh`, `kw`), `bias`: `[C]` ->
///   `[B, C, H, W]`
pub fn same_depthwise_conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    let [c, _, kh, kw] = weight.dims();
    #[cfg(feature = "flex")]
    {
        let fast = super::f32_on_flex(&x) && super::f32_on_flex(&weight) && kh % 2 == 1 && kw % 2 == 1;
        if fast && weight.dims()[1] == 1 && x.dims()[1] == c && bias.dims() == [c] && c > 0 {
            return flex::depthwise_conv2d(x, weight, bias, [kh / 2, kw / 2]);
        }
    }
    let options = burn::tensor::ops::ConvOptions::new([1, 1], [kh / 2, kw / 2], [1, 1], c);
    burn::tensor::module::conv2d(x, weight, Some(bias), options)
}

/// The `"same"` padding `[p_h, p_w]` of `conv` on `x` when it is a depthwise convolution that
/// the fast path takes (see [`depthwise_conv2d`]), else `None`.
fn fast_path_padding(conv: &Conv2d, x: &Tensor<4>) -> Option<[usize; 2]> {
    let [_, c, _, _] = x.dims();
    let [co, ci, kh, kw] = conv.weight.dims();
    // with stride 1 and an odd kernel, `Same` is this symmetric padding too
    let [top, left, bottom, right] = match conv.padding {
        PaddingConfig2d::Same => [kh / 2, kw / 2, kh / 2, kw / 2],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [top, left, bottom, right],
        PaddingConfig2d::Valid => [0; 4],
    };
    let f32_on_flex = super::f32_on_flex(x) && super::f32_on_flex(&conv.weight.val());
    let depthwise = conv.groups == c && co == c && ci == 1 && conv.stride == [1, 1] && conv.dilation == [1, 1];
    let same = kh % 2 == 1 && kw % 2 == 1 && [top, bottom] == [kh / 2; 2] && [left, right] == [kw / 2; 2];
    (f32_on_flex && depthwise && same && conv.bias.is_some() && c > 0).then_some([top, left])
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::NodeId;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::ops::{ConvOptions, ModuleOps};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, Flex, backend_extension};
    use burn::prelude::*;

    use crate::cpu::{contiguous, simd};

    /// The op on `float32` flex operands that [`super::same_depthwise_conv2d`] checked.
    pub fn depthwise_conv2d(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>, [ph, pw]: [usize; 2]) -> Tensor<4> {
        use burn::backend::Dispatch;
        let channels = weight.dims()[0];
        let (w, b) = (weight.into_dispatch(), bias.into_dispatch());
        let y = <Dispatch as DepthwiseBackend>::depthwise_conv2d(x.into_dispatch(), w, b, channels, ph, pw);
        Tensor::from_dispatch(y)
    }

    /// The depthwise convolution as a Burn backend extension (flex and autodiff over it).
    #[backend_extension(Flex, Autodiff)]
    pub trait DepthwiseBackend: Backend {
        /// Depthwise conv of `x` `[B, C, H, W]` with `weight` `[C, 1, kh, kw]` and `bias` `[C]`
        /// (`C = channels`), stride 1, padding `(ph, pw)` on both sides.
        fn depthwise_conv2d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            channels: usize,
            ph: usize,
            pw: usize,
        ) -> FloatTensor<Self>;
        /// The weight gradient `[C, 1, kh, kw]` of that convolution from its input `x` and the
        /// upstream gradient `dy` `[B, C, H, W]`.
        fn depthwise_conv2d_weight_backward(
            x: FloatTensor<Self>,
            dy: FloatTensor<Self>,
            kernel: [usize; 2],
            ph: usize,
            pw: usize,
        ) -> FloatTensor<Self>;
    }

    fn options(channels: usize, ph: usize, pw: usize) -> ConvOptions<2> {
        ConvOptions::new([1, 1], [ph, pw], [1, 1], channels)
    }

    impl DepthwiseBackend for Flex {
        fn depthwise_conv2d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            channels: usize,
            ph: usize,
            pw: usize,
        ) -> FloatTensor<Self> {
            Flex::conv2d(x, weight, Some(bias), options(channels, ph, pw))
        }

        fn depthwise_conv2d_weight_backward(x: FlexTensor, dy: FlexTensor, kernel: [usize; 2], ph: usize, pw: usize) -> FlexTensor {
            let (x, dy) = (contiguous(x), contiguous(dy));
            let s = x.layout().shape();
            let ([b, c, h, w], [kh, kw]) = ([s[0], s[1], s[2], s[3]], kernel);
            let (xs, dys) = (x.as_slice::<f32>().expect("contiguous x"), dy.as_slice::<f32>().expect("contiguous dy"));
            let mut dw = vec![0.0f32; c * kh * kw];
            let channel = |first: usize, out: &mut [f32]| {
                for (i, dw_c) in out.chunks_mut(kh * kw).enumerate() {
                    simd::depthwise_weight_grad(dw_c, xs, dys, [b, c, h, w, kh, kw, ph, pw, first + i]);
                }
            };
            let threads = if b * c * h * w * kh * kw < PARALLEL_MIN_MACS { 1 } else { crate::cpu::num_threads().min(c) };
            let per = c.div_ceil(threads.max(1));
            crate::cpu::for_each_chunk(&mut dw, per * kh * kw, |t, piece| channel(t * per, piece));
            FlexTensor::from_data(TensorData::new(dw, [c, 1, kh, kw]))
        }
    }

    impl<B: Backend + DepthwiseBackend, C: CheckpointStrategy> DepthwiseBackend for Autodiff<B, C> {
        fn depthwise_conv2d(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            channels: usize,
            ph: usize,
            pw: usize,
        ) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct DepthwiseBackward {
                channels: usize,
                kernel: [usize; 2],
                ph: usize,
                pw: usize,
            }

            impl<B: Backend + DepthwiseBackend> Backward<B, 3> for DepthwiseBackward {
                /// The checkpoints of the input and the weight.
                type State = (NodeId, NodeId);

                fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                    let (x, weight) = ops.state;
                    let (x, weight): (FloatTensor<B>, FloatTensor<B>) =
                        (checkpointer.retrieve_node_output(x), checkpointer.retrieve_node_output(weight));
                    let dy = grads.consume::<B>(&ops.node);
                    let options = options(self.channels, self.ph, self.pw);
                    let [x_node, w_node, b_node] = ops.parents;
                    if let Some(node) = b_node {
                        let db = [0, 2, 3].into_iter().fold(dy.clone(), |g, dim| B::float_sum_dim(g, dim));
                        grads.register::<B>(node.id, B::float_reshape(db, Shape::new([self.channels])));
                    }
                    if let Some(node) = w_node {
                        let dw = B::depthwise_conv2d_weight_backward(x, dy.clone(), self.kernel, self.ph, self.pw);
                        grads.register::<B>(node.id, dw);
                    }
                    if let Some(node) = x_node {
                        let flipped = B::float_flip(weight, &[2, 3]);
                        grads.register::<B>(node.id, B::conv2d(dy, flipped, None, options));
                    }
                }
            }

            let kernel = [2 * ph + 1, 2 * pw + 1]; // odd kernels with "same" padding
            let op = DepthwiseBackward { channels, kernel, ph, pw };
            match op.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
                OpsKind::Tracked(mut prep) => {
                    let state = (prep.checkpoint(&x), prep.checkpoint(&weight));
                    let y = B::depthwise_conv2d(x.into_primitive(), weight.into_primitive(), bias.into_primitive(), channels, ph, pw);
                    prep.finish(state, y)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::depthwise_conv2d(
                    x.into_primitive(),
                    weight.into_primitive(),
                    bias.into_primitive(),
                    channels,
                    ph,
                    pw,
                )),
            }
        }

        fn depthwise_conv2d_weight_backward(
            x: FloatTensor<Self>,
            dy: FloatTensor<Self>,
            kernel: [usize; 2],
            ph: usize,
            pw: usize,
        ) -> FloatTensor<Self> {
            // Only reached by a second-order derivative, which this op does not track.
            let dw = B::depthwise_conv2d_weight_backward(x.into_primitive(), dy.into_primitive(), kernel, ph, pw);
            FloatTensor::<Self>::new(dw)
        }
    }

    /// Below this many multiply-adds the weight gradient runs on one thread.
    const PARALLEL_MIN_MACS: usize = 1 << 18;
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;

    /// A "same"-padded convolution (Burn's default initialisation).
    fn same_conv2d(channels: [usize; 2], kernel: usize, groups: usize, bias: bool, device: &Device) -> Conv2d {
        let p = kernel / 2;
        Conv2dConfig::new(channels, [kernel, kernel])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_groups(groups)
            .with_bias(bias)
            .init(device)
    }

    /// `max |a - b|` and `max |b|`.
    fn max_error(a: TensorData, b: TensorData) -> (f32, f32) {
        let (a, b) = (a.try_to_vec::<f32>().unwrap(), b.try_to_vec::<f32>().unwrap());
        a.iter().zip(&b).fold((0.0f32, 0.0f32), |(e, m), (x, y)| (e.max((x - y).abs()), m.max(y.abs())))
    }

    #[test]
    fn values_and_gradients_match_burns_convolution() {
        let device = Device::flex().autodiff();
        // the last shape splits the weight gradient across threads
        for (i, (kernel, [b, c, h, w])) in [(3, [2, 5, 7, 6]), (5, [1, 8, 9, 9]), (7, [2, 3, 1, 4]), (1, [1, 4, 3, 3]), (5, [2, 32, 16, 16])].into_iter().enumerate() {
            let seed = 600 + 10 * i as u64;
            let mut conv = same_conv2d([c, c], kernel, c, true, &device);
            conv.bias = Some(burn::module::Param::from_tensor(crate::test_util::randn([c], seed, &device)));
            let x = crate::test_util::randn([b, c, h, w], seed + 1, &Device::flex());
            let upstream = crate::test_util::randn([b, c, h, w], seed + 2, &device);
            let run = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
                let x = Tensor::<4>::from_data(x.to_data(), &device).require_grad();
                assert!(fast_path_padding(&conv, &x).is_some());
                let y = f(x.clone());
                let grads = (y.clone() * upstream.clone()).sum().backward();
                let bias = conv.bias.as_ref().unwrap().val();
                [y.inner().into_data(), x.grad(&grads).unwrap().into_data(), conv.weight.val().grad(&grads).unwrap().into_data(), bias.grad(&grads).unwrap().into_data()]
            };
            let fast = run(&|x| depthwise_conv2d(&conv, x));
            let slow = run(&|x| conv.forward(x));
            for (what, (f, s)) in ["value", "dx", "dw", "db"].iter().zip(fast.into_iter().zip(slow)) {
                let (err, max) = max_error(f, s);
                eprintln!("{what} of k {kernel}, {:?}: max error {err:.2e} (max |ref| {max:.2})", [b, c, h, w]);
                assert!(err <= 1e-5 * max.max(1.0), "{what}: max error {err} (max {max})");
            }
        }
    }

    #[test]
    fn other_convolutions_take_burns_path() {
        let device = Device::flex();
        let x = crate::test_util::randn([1, 4, 6, 6], 700, &device);
        let dense = same_conv2d([4, 4], 3, 1, true, &device);
        let no_bias = same_conv2d([4, 4], 3, 4, false, &device);
        assert!(fast_path_padding(&dense, &x).is_none() && fast_path_padding(&no_bias, &x).is_none());
        depthwise_conv2d(&dense, x.clone()).into_data().assert_eq(&dense.forward(x).into_data(), true);
    }
}
