//! Rotary position embedding on adjacent channel pairs with its own backward on flex.
//!
//! Composed from Burn ops, the rotation of pairs `(re, im) = (x[2j], x[2j + 1])`,
//!
//! ```text
//! y[2j] = re cos - im sin,   y[2j + 1] = re sin + im cos,
//! dx[2j] = dy[2j] cos + dy[2j + 1] sin,   dx[2j + 1] = dy[2j + 1] cos - dy[2j] sin,
//! ```
//!
//! takes two narrows of a `[..., Dh / 2, 2]` view, six elementwise ops and a `cat` on the last
//! axis (strided copies of one element each), and as many again in the backward; in U-DiT it
//! runs on the queries and keys of every block. Here it is one op that reads its input in place
//! through its strides (the head-split view of the qkv projection) and writes the rotated rows
//! contiguously, with the backward as the same loop rotating the other way. The tables are
//! constants (no gradient). Taken for `float32` on the flex device (plain or autodiff) when
//! the tables need no gradient; anything else runs the composed Burn ops, with the same
//! arithmetic, so the results agree to the bit.

use burn::prelude::*;

/// Rotates the channel pairs `(x[.., 2j], x[.., 2j + 1])` of every row `n` by the angle whose
/// cosine and sine are `cos[n, j]`, `sin[n, j]`.
///
/// # Shapes
/// - `x`: `[B, H, N, Dh]` (even `Dh`), `cos`, `sin`: `[N, Dh / 2]` -> `[B, H, N, Dh]`
pub fn rope_rotate(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    match flex::rope_rotate(x, cos, sin) {
        Ok(y) => y,
        Err(x) => composed(x, cos.clone(), sin.clone()),
    }
}

/// The rotation from Burn ops.
fn composed(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>) -> Tensor<4> {
    let [b, h, n, dh] = x.dims();
    let pairs = dh / 2;
    let x = x.reshape([b, h, n, pairs, 2]);
    let re = x.clone().narrow(4, 0, 1);
    let im = x.narrow(4, 1, 1);
    let cos = cos.reshape([1, 1, n, pairs, 1]);
    let sin = sin.reshape([1, 1, n, pairs, 1]);
    let out_re = re.clone() * cos.clone() - im.clone() * sin.clone();
    let out_im = re * sin + im * cos;
    Tensor::cat(vec![out_re, out_im], 4).reshape([b, h, n, dh])
}

#[cfg(not(feature = "flex"))]
mod flex {
    use burn::prelude::*;

    /// Without the flex backend there is no fast path: `x` is given back.
    pub fn rope_rotate(x: Tensor<4>, _cos: &Tensor<2>, _sin: &Tensor<2>) -> Result<Tensor<4>, Tensor<4>> {
        Err(x)
    }
}

#[cfg(feature = "flex")]
mod flex {
    use crate::cpu::contiguous;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, Flex, backend_extension};
    use burn::prelude::*;

    /// The fast path for `float32` operands on flex with constant tables; others give `x` back.
    pub fn rope_rotate(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Result<Tensor<4>, Tensor<4>> {
        let [_, _, n, dh] = x.dims();
        let tables_fit = cos.dims() == [n, dh / 2] && sin.dims() == [n, dh / 2] && dh % 2 == 0;
        let constant = !cos.is_require_grad() && !sin.is_require_grad();
        let on_flex = [cos, sin].iter().all(|t| crate::cpu::f32_on_flex(*t)) && crate::cpu::f32_on_flex(&x);
        if !(tables_fit && constant && on_flex && x.shape().num_elements() > 0) {
            return Err(x);
        }
        use burn::backend::Dispatch;
        let (cos, sin) = (cos.clone().into_dispatch(), sin.clone().into_dispatch());
        Ok(Tensor::from_dispatch(<Dispatch as RopeBackend>::rope_rotate(x.into_dispatch(), cos, sin, false)))
    }

    /// The rotation as a Burn backend extension (flex and autodiff over it).
    #[backend_extension(Flex, Autodiff)]
    pub trait RopeBackend: Backend {
        /// `x` `[B, H, N, Dh]` rotated by the tables `[N, Dh / 2]` (by the opposite angles when
        /// `inverse`: the backward), contiguous.
        fn rope_rotate(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, inverse: bool) -> FloatTensor<Self>;
    }

    impl RopeBackend for Flex {
        fn rope_rotate(x: FlexTensor, cos: FlexTensor, sin: FlexTensor, inverse: bool) -> FlexTensor {
            let x = if x.layout().strides()[3] == 1 { x } else { x.to_contiguous() };
            let (cos, sin) = (contiguous(cos), contiguous(sin));
            let s = x.layout().shape();
            let [b, h, n, dh] = [s[0], s[1], s[2], s[3]];
            let st = x.layout().strides();
            let (strides, offset) = ([st[0], st[1], st[2]], x.layout().start_offset() as isize);
            let (data, cos, sin) = (x.storage::<f32>(), cos.as_slice::<f32>().expect("cos"), sin.as_slice::<f32>().expect("sin"));
            let mut out = vec![0.0f32; b * h * n * dh];
            let rows = |first: usize, dst: &mut [f32]| {
                for (i, y) in dst.chunks_exact_mut(dh).enumerate() {
                    let r = first + i;
                    let (bi, hi, ni) = (r / (h * n), (r / n) % h, r % n);
                    let at = offset + bi as isize * strides[0] + hi as isize * strides[1] + ni as isize * strides[2];
                    let src = &data[at as usize..at as usize + dh];
                    let (c, s) = (&cos[ni * dh / 2..(ni + 1) * dh / 2], &sin[ni * dh / 2..(ni + 1) * dh / 2]);
                    rotate_row(y, src, c, s, inverse);
                }
            };
            let total = b * h * n;
            let threads = if total * dh < PARALLEL_MIN_ELEMENTS { 1 } else { crate::cpu::num_threads().min(total) };
            let per = total.div_ceil(threads.max(1));
            crate::cpu::for_each_chunk(&mut out, per * dh, |t, piece| rows(t * per, piece));
            FlexTensor::from_data(TensorData::new(out, [b, h, n, dh]))
        }
    }

    /// One row: `y = R x` (or `R^T x` when `inverse`), with the composed form's arithmetic.
    fn rotate_row(y: &mut [f32], x: &[f32], cos: &[f32], sin: &[f32], inverse: bool) {
        let pairs = y.chunks_exact_mut(2).zip(x.chunks_exact(2)).zip(cos.iter().zip(sin));
        if inverse {
            for ((y, x), (&c, &s)) in pairs {
                (y[0], y[1]) = (x[0] * c + x[1] * s, x[1] * c - x[0] * s);
            }
        } else {
            for ((y, x), (&c, &s)) in pairs {
                (y[0], y[1]) = (x[0] * c - x[1] * s, x[0] * s + x[1] * c);
            }
        }
    }

    impl<B: Backend + RopeBackend, C: CheckpointStrategy> RopeBackend for Autodiff<B, C> {
        fn rope_rotate(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, inverse: bool) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct RopeBackward {
                inverse: bool,
            }

            impl<B: Backend + RopeBackend> Backward<B, 1> for RopeBackward {
                /// The tables.
                type State = (FloatTensor<B>, FloatTensor<B>);

                fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
                    let (cos, sin) = ops.state;
                    unary::<B, _>(ops.parents, ops.node, grads, |grad| B::rope_rotate(grad, cos, sin, !self.inverse));
                }
            }

            let (cos, sin) = (cos.into_primitive(), sin.into_primitive());
            match (RopeBackward { inverse }).prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let y = B::rope_rotate(x.into_primitive(), cos.clone(), sin.clone(), inverse);
                    prep.finish((cos, sin), y)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::rope_rotate(x.into_primitive(), cos, sin, inverse)),
            }
        }
    }

    /// Below this many elements the rotation runs on one thread.
    const PARALLEL_MIN_ELEMENTS: usize = 1 << 15;
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;

    /// Value and `dx` of `sum(upstream * f(x))` on the autodiff device, for a head-split view.
    fn value_and_grad(f: &dyn Fn(Tensor<4>) -> Tensor<4>, seed: u64) -> (TensorData, TensorData) {
        let device = Device::flex().autodiff();
        let ([b, h, n, dh], seed) = ([2, 3, 40, 8], seed);
        // x as the head-split view of a [B, N, H*Dh] projection, as attention reads it
        let x = crate::test_util::randn([b, n, h * dh], seed, &device).require_grad();
        let upstream = crate::test_util::randn([b, h, n, dh], seed + 1, &device);
        let y = f(x.clone().reshape([b, n, h, dh]).swap_dims(1, 2));
        let grads = (y.clone() * upstream).sum().backward();
        (y.inner().into_data(), x.grad(&grads).unwrap().into_data())
    }

    #[test]
    fn rotation_and_its_gradient_equal_the_composed_form_to_the_bit() {
        let device = Device::flex().autodiff();
        let (n, pairs) = (40, 4);
        let cos = crate::test_util::uniform([n, pairs], 800, &device);
        let sin = crate::test_util::uniform([n, pairs], 801, &device);
        let fast = value_and_grad(&|x| rope_rotate(x, &cos, &sin), 802);
        let slow = value_and_grad(&|x| composed(x, cos.clone(), sin.clone()), 802);
        fast.0.assert_eq(&slow.0, true);
        fast.1.assert_eq(&slow.1, true);
        // the plain device takes the fast path too
        let x = crate::test_util::randn([1, 2, n, 2 * pairs], 803, &Device::flex());
        let (c, s) = (cos.inner(), sin.inner());
        rope_rotate(x.clone(), &c, &s).into_data().assert_eq(&composed(x, c, s).into_data(), true);
    }

    #[test]
    fn tables_with_gradients_take_the_composed_path() {
        let device = Device::flex().autodiff();
        let cos = crate::test_util::uniform([5, 2], 810, &device).require_grad();
        let sin = crate::test_util::uniform([5, 2], 811, &device);
        let x = crate::test_util::randn([1, 1, 5, 4], 812, &device);
        let grads = rope_rotate(x, &cos, &sin).sum().backward();
        assert!(cos.grad(&grads).is_some());
    }
}
