//! Scaled dot-product attention `softmax(q k^T / sqrt(Dh)) v` with a vectorised fast path on
//! Burn's pure-Rust CPU backend (`flex`), for inference and training.
//!
//! Flex's own attention applies its softmax one scalar `exp` at a time, and under autodiff Burn
//! composes attention from a matmul, a softmax and a second matmul whose intermediates (scores,
//! probabilities) all stay alive for the backward. Here attention is one Burn backend-extension
//! op: blocks of query rows per `(batch, head)`, the matrix products with the `gemm` crate,
//! the softmax with vectorised loops (AVX-512 / AVX2 / baseline, chosen at run time), split
//! across threads; and a hand-written backward that keeps only the output and one log-sum-exp
//! per query row and recomputes the probabilities block by block:
//!
//! ```text
//! P = softmax(scale Q K^T),  O = P V
//! dV = P^T dO,  dP = dO V^T,  dS = P (dP - rowsum(dO O)),  dQ = scale dS K,  dK = scale dS^T Q
//! ```
//!
//! The fast path is taken for `float32` queries, keys and values on the flex device (plain or
//! autodiff) with as many key heads as query heads; any other backend, dtype or shape goes to
//! Burn's own `attention`, so results and gradients there are Burn's.

use burn::prelude::*;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;

/// Scaled dot-product attention `softmax(q k^T / sqrt(Dh)) v` (Burn's `attention` without a
/// mask or bias); one vectorised op with its own backward on flex.
///
/// # Shapes
/// - `q`: `[B, H, Nq, Dh]`, `k`: `[B, H, Nk, Dh]`, `v`: `[B, H, Nk, Dv]` -> `[B, H, Nq, Dv]`
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    match flex::attention(q, k, v) {
        Ok(o) => o,
        Err((q, k, v)) => burn_attention(q, k, v, None, None, AttentionModuleOptions::default()),
    }
}

/// Whether the fast path can take these operands: one dtype (`float32`) and device (flex), one
/// batch and head count, matching widths and nothing empty.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
fn fast_path_applies(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>) -> bool {
    let ([b, h, nq, dk], [bk, hk, nk, dkk], [bv, hv, nv, dv]) = (q.dims(), k.dims(), v.dims());
    use super::f32_on_flex;
    f32_on_flex(q)
        && f32_on_flex(k)
        && f32_on_flex(v)
        && (bk, hk, dkk) == (b, h, dk)
        && (bv, hv, nv) == (b, h, nk)
        && b * h * nq * nk * dk * dv > 0
}

#[cfg(not(feature = "flex"))]
mod flex {
    use burn::prelude::*;

    /// Without the flex backend there is no fast path: the operands are given back.
    #[allow(clippy::type_complexity)]
    pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Result<Tensor<4>, (Tensor<4>, Tensor<4>, Tensor<4>)> {
        Err((q, k, v))
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

    use crate::cpu::attention_kernel::{self as kernel, Dims, Saved, View};
    use crate::cpu::contiguous;

    /// The fast path for operands it applies to ([`super::fast_path_applies`]); others are
    /// given back.
    #[allow(clippy::type_complexity)]
    pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Result<Tensor<4>, (Tensor<4>, Tensor<4>, Tensor<4>)> {
        if !super::fast_path_applies(&q, &k, &v) {
            return Err((q, k, v));
        }
        use burn::backend::Dispatch;
        let o = <Dispatch as AttentionBackend>::fast_attention(q.into_dispatch(), k.into_dispatch(), v.into_dispatch());
        Ok(Tensor::from_dispatch(o))
    }

    /// The attention op, its forward with the row log-sum-exps and its backward as a Burn
    /// backend extension (flex and autodiff over it); `float32` operands of matching shapes.
    #[backend_extension(Flex, Autodiff)]
    pub trait AttentionBackend: Backend {
        /// `softmax(q k^T / sqrt(Dh)) v`: `[B, H, Nq, Dh]`, `[B, H, Nk, Dh]`, `[B, H, Nk, Dv]` ->
        /// `[B, H, Nq, Dv]`.
        fn fast_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self>;
        /// The output and the log-sum-exp of each score row (`[B, H, Nq]`).
        fn fast_attention_lse(
            q: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>);
        /// `(dq, dk, dv)` from the operands, the output `o`, its `lse` and the upstream `d_o`.
        fn fast_attention_backward(
            q: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
            o: FloatTensor<Self>,
            lse: FloatTensor<Self>,
            d_o: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    }

    /// The kernel's view of a 4-D `float32` tensor (read in place through its strides).
    fn view(t: &FlexTensor) -> View<'_> {
        let s = t.layout().strides();
        View { data: t.storage::<f32>(), offset: t.layout().start_offset(), strides: [s[0], s[1], s[2], s[3]] }
    }

    fn dims(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor) -> (Dims, f32) {
        let (q, k, v) = (q.layout().shape(), k.layout().shape(), v.layout().shape());
        let d = Dims { b: q[0], h: q[1], nq: q[2], nk: k[2], dk: q[3], dv: v[3] };
        (d, (1.0 / (d.dk as f64).sqrt()) as f32)
    }

    fn tensor(data: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(data, shape))
    }

    impl AttentionBackend for Flex {
        fn fast_attention(q: FlexTensor, k: FlexTensor, v: FlexTensor) -> FlexTensor {
            Self::fast_attention_lse(q, k, v).0
        }

        fn fast_attention_lse(q: FlexTensor, k: FlexTensor, v: FlexTensor) -> (FlexTensor, FlexTensor) {
            let (d, scale) = dims(&q, &k, &v);
            let mut o = vec![0.0f32; d.b * d.nq * d.h * d.dv];
            let mut lse = vec![0.0f32; d.b * d.h * d.nq];
            kernel::forward(view(&q), view(&k), view(&v), d, scale, &mut o, &mut lse);
            // written as [B, Nq, H, Dv], so that merging the heads afterwards is a free reshape
            let o = tensor(o, [d.b, d.nq, d.h, d.dv]).permute(&[0, 2, 1, 3]);
            (o, FlexTensor::from_data(TensorData::new(lse, [d.b, d.h, d.nq])))
        }

        fn fast_attention_backward(
            q: FlexTensor,
            k: FlexTensor,
            v: FlexTensor,
            o: FlexTensor,
            lse: FlexTensor,
            d_o: FlexTensor,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let (d, scale) = dims(&q, &k, &v);
            let lse = contiguous(lse);
            let saved = Saved { o: view(&o), lse: lse.as_slice::<f32>().expect("contiguous lse"), d_o: view(&d_o) };
            let mut dq = vec![0.0f32; d.b * d.h * d.nq * d.dk];
            let mut dk = vec![0.0f32; d.b * d.h * d.nk * d.dk];
            let mut dv = vec![0.0f32; d.b * d.h * d.nk * d.dv];
            kernel::backward(view(&q), view(&k), view(&v), saved, d, scale, &mut dq, &mut dk, &mut dv);
            (
                tensor(dq, [d.b, d.h, d.nq, d.dk]),
                tensor(dk, [d.b, d.h, d.nk, d.dk]),
                tensor(dv, [d.b, d.h, d.nk, d.dv]),
            )
        }
    }

    impl<B: Backend + AttentionBackend, C: CheckpointStrategy> AttentionBackend for Autodiff<B, C> {
        fn fast_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct AttentionBackward;

            impl<B: Backend + AttentionBackend> Backward<B, 3> for AttentionBackward {
                /// The operands' checkpoints, the output and the row log-sum-exps.
                type State = (NodeId, NodeId, NodeId, FloatTensor<B>, FloatTensor<B>);

                fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                    let (q, k, v, o, lse) = ops.state;
                    let [q, k, v] = [q, k, v].map(|id| checkpointer.retrieve_node_output(id));
                    let d_o = grads.consume::<B>(&ops.node);
                    let (dq, dk, dv) = B::fast_attention_backward(q, k, v, o, lse, d_o);
                    for (parent, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
                        if let Some(node) = parent {
                            grads.register::<B>(node.id, grad);
                        }
                    }
                }
            }

            match AttentionBackward.prepare::<C>([q.node(), k.node(), v.node()]).compute_bound().stateful() {
                OpsKind::Tracked(mut prep) => {
                    let [qs, ks, vs] = [&q, &k, &v].map(|t| prep.checkpoint(t));
                    let (o, lse) = B::fast_attention_lse(q.into_primitive(), k.into_primitive(), v.into_primitive());
                    prep.finish((qs, ks, vs, o.clone(), lse), o)
                }
                OpsKind::UnTracked(prep) => {
                    prep.finish(B::fast_attention(q.into_primitive(), k.into_primitive(), v.into_primitive()))
                }
            }
        }

        fn fast_attention_lse(
            q: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            // Only reached through `fast_attention`'s backward bookkeeping, which is not tracked.
            let (o, lse) = B::fast_attention_lse(q.into_primitive(), k.into_primitive(), v.into_primitive());
            (FloatTensor::<Self>::new(o), FloatTensor::<Self>::new(lse))
        }

        fn fast_attention_backward(
            q: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
            o: FloatTensor<Self>,
            lse: FloatTensor<Self>,
            d_o: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            // Only reached by a second-order derivative, which this op does not track.
            let [q, k, v, o, lse, d_o] = [q, k, v, o, lse, d_o].map(|t| t.into_primitive());
            let (dq, dk, dv) = B::fast_attention_backward(q, k, v, o, lse, d_o);
            (FloatTensor::<Self>::new(dq), FloatTensor::<Self>::new(dk), FloatTensor::<Self>::new(dv))
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::activation::softmax;

    /// The composed form: Burn's matmul, softmax and matmul.
    fn composed(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
        let scale = 1.0 / (q.dims()[3] as f64).sqrt();
        softmax(q.matmul(k.swap_dims(2, 3)) * scale, 3).matmul(v)
    }

    /// `max |a - b|` and `max |b|`.
    fn max_error(a: TensorData, b: TensorData) -> (f32, f32) {
        let (a, b) = (a.try_to_vec::<f32>().unwrap(), b.try_to_vec::<f32>().unwrap());
        assert_eq!(a.len(), b.len());
        a.iter().zip(&b).fold((0.0f32, 0.0f32), |(e, m), (x, y)| (e.max((x - y).abs()), m.max(y.abs())))
    }

    /// Value and `(dq, dk, dv)` of `sum(upstream * f(q, k, v))` on the autodiff device.
    fn value_and_grads(
        f: impl Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>,
        [q, k, v, upstream]: [&Tensor<4>; 4],
    ) -> [TensorData; 4] {
        let device = Device::flex().autodiff();
        let [q, k, v] = [q, k, v].map(|t| Tensor::<4>::from_data(t.to_data(), &device).require_grad());
        assert!(fast_path_applies(&q, &k, &v), "the fast path takes autodiff flex tensors");
        let out = f(q.clone(), k.clone(), v.clone());
        let value = out.clone().inner().into_data();
        let grads = (out * Tensor::from_data(upstream.to_data(), &device)).sum().backward();
        let grad = |t: &Tensor<4>| t.grad(&grads).expect("gradient").into_data();
        [value, grad(&q), grad(&k), grad(&v)]
    }

    #[test]
    fn values_and_gradients_match_the_composed_form() {
        let device = Device::flex();
        // odd sizes, one token, cross-attention sizes, a threaded call and several query blocks
        let shapes = [
            ([2, 3, 17, 8], 17, 8),
            ([1, 1, 1, 4], 1, 4),
            ([1, 2, 1, 8], 7, 5),
            ([3, 2, 7, 16], 33, 9),
            ([2, 4, 64, 32], 64, 32),
            ([1, 1, 100, 8], 100, 8),
            ([1, 1, 40, 4], 16_385, 3),
        ];
        for (i, ([b, h, nq, dk], nk, dv)) in shapes.into_iter().enumerate() {
            let seed = 200 + 10 * i as u64;
            let q = crate::test_util::randn([b, h, nq, dk], seed, &device);
            let k = crate::test_util::randn([b, h, nk, dk], seed + 1, &device);
            let v = crate::test_util::randn([b, h, nk, dv], seed + 2, &device);
            let upstream = crate::test_util::randn([b, h, nq, dv], seed + 3, &device);
            assert!(fast_path_applies(&q, &k, &v));
            let ops = [&q, &k, &v, &upstream];
            let fast = value_and_grads(attention, ops);
            let slow = value_and_grads(composed, ops);
            for (what, (f, s)) in ["value", "dq", "dk", "dv"].iter().zip(fast.into_iter().zip(slow)) {
                let (err, max) = max_error(f, s);
                eprintln!("{what} of [B, H, Nq, Nk, Dk, Dv] = {:?}: max error {err:.2e} (max |ref| {max:.2})", [b, h, nq, nk, dk, dv]);
                assert!(err <= 1e-5 * max.max(1.0), "{what}: max error {err} (max {max})");
            }
            // and the plain (inference) device gives the same values
            let (err, max) = max_error(attention(q.clone(), k.clone(), v.clone()).into_data(), composed(q, k, v).into_data());
            assert!(err <= 1e-5 * max.max(1.0), "plain value: max error {err}");
        }
    }

    #[test]
    fn strided_head_views_of_a_fused_projection() {
        // q, k, v as the multi-head layers make them: permuted views of one [B, N, 3, H, Dh]
        // buffer; the output merged back to [B, N, H Dh]
        let device = Device::flex().autodiff();
        let [b, n, h, dh] = [2, 9, 3, 8];
        let data = crate::test_util::randn([b, n, 3 * h * dh], 300, &Device::flex()).into_data();
        let upstream = crate::test_util::randn([b, n, h * dh], 301, &device);
        let run = |f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
            let x = Tensor::<3>::from_data(data.clone(), &device).require_grad();
            let qkv = x.clone().reshape([b, n, 3, h, dh]).permute([2, 0, 3, 1, 4]);
            let mut it = qkv.chunk(3, 0).into_iter().map(|t| t.squeeze_dim::<4>(0));
            let (q, k, v) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
            let out = f(q, k, v).swap_dims(1, 2).reshape([b, n, h * dh]);
            let value = out.clone().inner().into_data();
            let grads = (out * upstream.clone()).sum().backward();
            (value, x.grad(&grads).expect("gradient").into_data())
        };
        let (fast, fast_grad) = run(&attention);
        let (slow, slow_grad) = run(&composed);
        for (f, s) in [(fast, slow), (fast_grad, slow_grad)] {
            let (err, max) = max_error(f, s);
            assert!(err <= 1e-5 * max.max(1.0), "max error {err} (max {max})");
        }
    }

    #[test]
    fn other_dtypes_and_head_counts_take_burns_attention() {
        let device = Device::flex();
        let q = crate::test_util::randn([1, 4, 5, 8], 400, &device);
        let kv = crate::test_util::randn([1, 2, 6, 8], 401, &device); // grouped-query: 2 key heads
        assert!(!fast_path_applies(&q, &kv, &kv));
        let expected = burn_attention(q.clone(), kv.clone(), kv.clone(), None, None, AttentionModuleOptions::default());
        attention(q.clone(), kv.clone(), kv).into_data().assert_eq(&expected.into_data(), true);
        let half = q.clone().cast(burn::tensor::DType::F16);
        assert!(!fast_path_applies(&half, &half, &half));
        let (err, _) = max_error(attention(half.clone(), half.clone(), half).cast(burn::tensor::DType::F32).into_data(), composed(q.clone(), q.clone(), q).into_data());
        assert!(err < 1e-2, "f16 error {err}");
    }

    #[test]
    fn gradient_checkpointing_device() {
        let device = Device::flex().autodiff().gradient_checkpointing();
        let q = crate::test_util::randn([1, 2, 6, 4], 500, &Device::flex());
        let upstream = crate::test_util::randn([1, 2, 6, 4], 501, &Device::flex());
        let grad = |f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
            let x = Tensor::<4>::from_data(q.to_data(), &device).require_grad();
            let y = (x.clone() * 2.0).exp(); // recomputed under checkpointing
            let out = f(y.clone(), y.clone(), y);
            let grads = (out * Tensor::from_data(upstream.to_data(), &device)).sum().backward();
            x.grad(&grads).expect("gradient").into_data()
        };
        let (err, max) = max_error(grad(&attention), grad(&composed));
        assert!(err <= 1e-5 * max.max(1.0), "max error {err} (max {max})");
    }
}
