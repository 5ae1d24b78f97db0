//! A batched matrix product `[E, M, K] @ [E, K, N]` (one matrix pair per batch entry, as the
//! experts of a mixture-of-experts layer) with its backward, on Burn's pure-Rust CPU backend
//! (`flex`).
//!
//! `y[e] = a[e] b[e]`, `da[e] = dy[e] b[e]^T`, `db[e] = a[e]^T dy[e]`.
//!
//! Flex's matmul allocates every output zero-filled (`vec![0u8; n]`) and then copies it into a
//! buffer of its runtime alignment, so each product costs a `memset`, a `memcpy` and, for the
//! largest outputs, the page faults of two fresh mappings. With few tokens per expert the
//! weight gradients `db` (`E x K x N`, as large as the expert weights) are written once by a
//! thin product (`M` = tokens per expert), and those extra passes were a large part of a
//! masked MicroDiT training step. Here every output is written once, by the `gemm` crate
//! (flex's own kernels) into a fresh uninitialised buffer, transposed operands are read through
//! their strides (no copies), and the batch entries are split over the threads. The fast path
//! is taken only for `float32` tensors on the flex device (plain or autodiff); everything else
//! goes through Burn's `matmul`, so results and gradients there are Burn's own.

use burn::prelude::*;

/// `x @ weight + bias` of a Burn [`Linear`](burn::nn::Linear): on flex (`float32`, plain or
/// autodiff) as [`batched_matmul`] of one matrix (every row of every batch entry in one
/// product, written once, and one weight gradient `x^T dy` over all rows: flex's broadcast
/// matmul computes one per batch entry and sums them), elsewhere `Linear::forward` itself.
/// The same product and gradients as `Linear::forward`.
///
/// # Shapes
/// - `x`: `[..., d_input]` -> `[..., d_output]`
pub fn linear<const D: usize>(layer: &burn::nn::Linear, x: Tensor<D>) -> Tensor<D> {
    let weight = layer.weight.val();
    if !(crate::cpu::f32_on_flex(&x) && crate::cpu::f32_on_flex(&weight)) {
        return layer.forward(x);
    }
    let dims = x.dims();
    let (d_in, d_out) = (dims[D - 1], weight.dims()[1]);
    let rows = dims[..D - 1].iter().product();
    let y = batched_matmul(x.reshape([1, rows, d_in]), weight.unsqueeze_dim::<3>(0));
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    let y = y.reshape(out_dims);
    match &layer.bias {
        Some(bias) => y + bias.val().reshape({
            let mut b = [1; D];
            b[D - 1] = d_out;
            b
        }),
        None => y,
    }
}

/// `a @ b` for `a: [E, M, K]`, `b: [E, K, N]` (equal batch sizes, no broadcasting); one op
/// with its own backward on flex, Burn's `matmul` elsewhere.
///
/// # Shapes
/// - `a`: `[E, M, K]`, `b`: `[E, K, N]` -> `[E, M, N]`
pub fn batched_matmul(a: Tensor<3>, b: Tensor<3>) -> Tensor<3> {
    match flex::batched_matmul(a, b) {
        Ok(y) => y,
        Err((a, b)) => a.matmul(b),
    }
}

#[cfg(not(feature = "flex"))]
mod flex {
    use burn::prelude::*;

    /// Without the flex backend there is no fast path: the operands are given back.
    pub fn batched_matmul(a: Tensor<3>, b: Tensor<3>) -> Result<Tensor<3>, (Tensor<3>, Tensor<3>)> {
        Err((a, b))
    }
}

#[cfg(feature = "flex")]
mod flex {
    use std::mem::MaybeUninit;

    use burn::backend::autodiff::NodeId;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::{FlexTensor, Layout};
    use burn::tensor::{Bytes, DType};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, Flex, backend_extension};
    use burn::prelude::*;

    use crate::cpu::{f32_on_flex, for_each_chunk, num_threads};

    /// The fast path for `float32` operands `[E, M, K]` and `[E, K, N]` (non-empty) on the flex
    /// device; others are given back.
    pub fn batched_matmul(a: Tensor<3>, b: Tensor<3>) -> Result<Tensor<3>, (Tensor<3>, Tensor<3>)> {
        let ([e, m, k], [eb, kb, n]) = (a.dims(), b.dims());
        if !(f32_on_flex(&a) && f32_on_flex(&b) && e == eb && k == kb && e * m * k * n > 0) {
            return Err((a, b));
        }
        use burn::backend::Dispatch;
        Ok(Tensor::from_dispatch(<Dispatch as BatchedMatmulBackend>::fast_batched_matmul(a.into_dispatch(), b.into_dispatch())))
    }

    /// The batched product and its backward as a Burn backend extension (flex and autodiff
    /// over it); `float32` operands `[E, M, K]` and `[E, K, N]`.
    #[backend_extension(Flex, Autodiff)]
    pub trait BatchedMatmulBackend: Backend {
        /// `a @ b`.
        fn fast_batched_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self>;
        /// `(da, db)` from the operands and the upstream gradient `dy`, each only where asked
        /// for (`need`).
        fn fast_batched_matmul_backward(
            a: FloatTensor<Self>,
            b: FloatTensor<Self>,
            dy: FloatTensor<Self>,
            need: [bool; 2],
        ) -> (Option<FloatTensor<Self>>, Option<FloatTensor<Self>>);
    }

    /// One operand as gemm reads it: buffer, start, and strides of the batch, row and column.
    #[derive(Clone, Copy)]
    struct Operand<'a> {
        data: &'a [f32],
        start: usize,
        batch: isize,
        row: isize,
        col: isize,
    }

    impl<'a> Operand<'a> {
        fn of(t: &'a FlexTensor) -> Self {
            let s = t.layout().strides();
            Self { data: t.storage::<f32>(), start: t.layout().start_offset(), batch: s[0], row: s[1], col: s[2] }
        }

        /// The transposed view of every matrix (rows and columns swapped).
        fn t(self) -> Self {
            Self { row: self.col, col: self.row, ..self }
        }

        /// Pointer to matrix `e`.
        fn at(&self, e: usize) -> *const f32 {
            // SAFETY (of the callers' reads): the layout keeps every element of the tensor
            // inside its buffer, so matrix `e` of the tensor's own shape is in bounds.
            unsafe { self.data.as_ptr().add(self.start).offset(e as isize * self.batch) }
        }
    }

    /// `[E, M, N]` with `out[e] = lhs[e] @ rhs[e]` (`lhs[e]`: `M x K`), written once into a
    /// fresh buffer; the batch entries split over the threads, one single-threaded gemm each.
    /// With `column_major` every `out[e]` is stored column by column (strides `[M N, 1, M]`).
    fn products(lhs: Operand<'_>, rhs: Operand<'_>, [e, m, k, n]: [usize; 4], column_major: bool) -> FlexTensor {
        let (size, len) = (m * n, e * m * n);
        let (dst_rs, dst_cs) = if column_major { (1, m as isize) } else { (n as isize, 1) };
        let mut out = Vec::<f32>::with_capacity(len);
        let threads = num_threads();
        let per_thread = e.div_ceil(threads.clamp(1, e)) * size;
        // fewer matrices than threads: gemm splits each product over the threads itself
        let parallelism = if e < threads { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        for_each_chunk(&mut out.spare_capacity_mut()[..len], per_thread, |i, piece: &mut [MaybeUninit<f32>]| {
            let first = i * per_thread / size;
            for (j, dst) in piece.chunks_mut(size).enumerate() {
                // SAFETY: `dst` holds the `m * n` elements of one `M x N` matrix (strides
                // `dst_rs`, `dst_cs`), gemm writes every one of them without reading
                // (`read_dst = false`); the operands are matrices of the tensors' own shapes
                // (see `Operand::at`).
                unsafe {
                    gemm::gemm(
                        m, n, k, dst.as_mut_ptr().cast::<f32>(), dst_cs, dst_rs, false,
                        lhs.at(first + j), lhs.col, lhs.row,
                        rhs.at(first + j), rhs.col, rhs.row,
                        0.0, 1.0, false, false, false, parallelism,
                    );
                }
            }
        });
        // SAFETY: every one of the `len` elements was written above.
        unsafe { out.set_len(len) };
        let strides = vec![size as isize, dst_rs, dst_cs];
        FlexTensor::new(Bytes::from_elems(out), Layout::new(Shape::new([e, m, n]), strides, 0), DType::F32)
    }

    impl BatchedMatmulBackend for Flex {
        fn fast_batched_matmul(a: FlexTensor, b: FlexTensor) -> FlexTensor {
            let ([e, m, k], n) = (a.layout().shape().dims::<3>(), b.layout().shape()[2]);
            products(Operand::of(&a), Operand::of(&b), [e, m, k, n], false)
        }

        fn fast_batched_matmul_backward(a: FlexTensor, b: FlexTensor, dy: FlexTensor, need: [bool; 2]) -> (Option<FlexTensor>, Option<FlexTensor>) {
            let ([e, m, k], n) = (a.layout().shape().dims::<3>(), b.layout().shape()[2]);
            let (a, b, dy) = (Operand::of(&a), Operand::of(&b), Operand::of(&dy));
            // `da` column-major when it has fewer rows than columns: gemm then repacks `dy`
            // (`M x N`, one thread) instead of all of `b` (`K x N`, as large as the weights).
            let da = need[0].then(|| products(dy, b.t(), [e, m, n, k], m < k));
            let db = need[1].then(|| products(a.t(), dy, [e, k, m, n], false));
            (da, db)
        }
    }

    impl<B: Backend + BatchedMatmulBackend, C: CheckpointStrategy> BatchedMatmulBackend for Autodiff<B, C> {
        fn fast_batched_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct BatchedMatmulBackward;

            impl<B: Backend + BatchedMatmulBackend> Backward<B, 2> for BatchedMatmulBackward {
                /// The operands' checkpoints.
                type State = (NodeId, NodeId);

                fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                    let (a, b) = ops.state;
                    let [a, b] = [a, b].map(|id| checkpointer.retrieve_node_output(id));
                    let dy = grads.consume::<B>(&ops.node);
                    let need = [ops.parents[0].is_some(), ops.parents[1].is_some()];
                    let (da, db) = B::fast_batched_matmul_backward(a, b, dy, need);
                    for (parent, grad) in ops.parents.into_iter().zip([da, db]) {
                        if let (Some(node), Some(grad)) = (parent, grad) {
                            grads.register::<B>(node.id, grad);
                        }
                    }
                }
            }

            match BatchedMatmulBackward.prepare::<C>([a.node(), b.node()]).compute_bound().stateful() {
                OpsKind::Tracked(mut prep) => {
                    let state = (prep.checkpoint(&a), prep.checkpoint(&b));
                    prep.finish(state, B::fast_batched_matmul(a.into_primitive(), b.into_primitive()))
                }
                OpsKind::UnTracked(prep) => prep.finish(B::fast_batched_matmul(a.into_primitive(), b.into_primitive())),
            }
        }

        fn fast_batched_matmul_backward(
            a: FloatTensor<Self>,
            b: FloatTensor<Self>,
            dy: FloatTensor<Self>,
            need: [bool; 2],
        ) -> (Option<FloatTensor<Self>>, Option<FloatTensor<Self>>) {
            // Only reached by a second-order derivative, which this op does not track.
            let [a, b, dy] = [a, b, dy].map(|t| t.into_primitive());
            let (da, db) = B::fast_batched_matmul_backward(a, b, dy, need);
            (da.map(FloatTensor::<Self>::new), db.map(FloatTensor::<Self>::new))
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    #[test]
    fn value_and_gradients_match_burns_matmul() {
        let device = Device::flex().autodiff();
        // one expert, an expert-choice shape (several experts, few rows) split over threads,
        // and transposed (strided) operands
        for (i, ([e, m, k, n], transposed)) in [([1, 3, 5, 4], false), ([6, 9, 33, 70], false), ([5, 8, 17, 12], true)].into_iter().enumerate() {
            let seed = 1300 + 10 * i as u64;
            let flex = Device::flex();
            let a = crate::test_util::randn([e, m, k], seed, &flex);
            let b = crate::test_util::randn([e, k, n], seed + 1, &flex);
            let up = crate::test_util::randn([e, m, n], seed + 2, &flex);
            let run = |f: &dyn Fn(Tensor<3>, Tensor<3>) -> Tensor<3>| {
                let (a, b) = if transposed {
                    (Tensor::<3>::from_data(a.clone().swap_dims(1, 2).into_data(), &device).require_grad(),
                     Tensor::<3>::from_data(b.clone().swap_dims(1, 2).into_data(), &device).require_grad())
                } else {
                    (Tensor::<3>::from_data(a.to_data(), &device).require_grad(), Tensor::<3>::from_data(b.to_data(), &device).require_grad())
                };
                let (x, w) = if transposed { (a.clone().swap_dims(1, 2), b.clone().swap_dims(1, 2)) } else { (a.clone(), b.clone()) };
                let y = f(x, w);
                let grads = (y.clone() * Tensor::from_data(up.to_data(), &device)).sum().backward();
                [y.inner().into_data(), a.grad(&grads).unwrap().into_data(), b.grad(&grads).unwrap().into_data()]
            };
            let fast = run(&|a, b| batched_matmul(a, b));
            let slow = run(&|a, b| a.matmul(b));
            for (f, s) in fast.into_iter().zip(slow) {
                f.assert_approx_eq::<f32>(&s, Tolerance::rel_abs(1e-5, 1e-5));
            }
            // the plain (inference) device gives the same values
            let plain = batched_matmul(a.clone(), b.clone()).into_data();
            plain.assert_approx_eq::<f32>(&a.matmul(b).into_data(), Tolerance::rel_abs(1e-5, 1e-5));
        }
    }

    #[test]
    fn linear_matches_burns_linear_with_and_without_bias() {
        let device = Device::flex().autodiff();
        for (i, (bias, rows)) in [(true, 3), (false, 70), (true, 300)].into_iter().enumerate() {
            let seed = 1500 + 10 * i as u64;
            let layer = burn::nn::LinearConfig::new(40, 90).with_bias(bias).init(&device);
            let x0 = crate::test_util::randn([2, rows, 40], seed, &Device::flex());
            let up = Tensor::<3>::from_data(crate::test_util::randn([2, rows, 90], seed + 1, &Device::flex()).into_data(), &device);
            let run = |f: &dyn Fn(&burn::nn::Linear, Tensor<3>) -> Tensor<3>| {
                let x = Tensor::<3>::from_data(x0.to_data(), &device).require_grad();
                let y = f(&layer, x.clone());
                let grads = (y.clone() * up.clone()).sum().backward();
                let mut out = vec![y.inner().into_data(), x.grad(&grads).unwrap().into_data(), layer.weight.grad(&grads).unwrap().into_data()];
                if let Some(b) = &layer.bias {
                    out.push(b.grad(&grads).unwrap().into_data());
                }
                out
            };
            let fast = run(&|l, x| linear(l, x));
            let slow = run(&|l, x| l.forward(x));
            for (f, s) in fast.into_iter().zip(slow) {
                f.assert_approx_eq::<f32>(&s, Tolerance::rel_abs(1e-5, 1e-5));
            }
        }
    }

    #[test]
    fn linear_on_a_matrix_and_on_a_transposed_view_matches_burns_linear() {
        // a 2-D input (as the adaLN modulation's `[B, D]` condition) and a strided one
        let device = Device::flex().autodiff();
        let layer = burn::nn::LinearConfig::new(24, 36).init(&device);
        for (i, transposed) in [false, true].into_iter().enumerate() {
            let seed = 1600 + 10 * i as u64;
            let x0 = crate::test_util::randn([5, 24], seed, &Device::flex());
            let up = Tensor::<2>::from_data(crate::test_util::randn([5, 36], seed + 1, &Device::flex()).into_data(), &device);
            let run = |f: &dyn Fn(&burn::nn::Linear, Tensor<2>) -> Tensor<2>| {
                let x = if transposed {
                    Tensor::<2>::from_data(x0.clone().transpose().into_data(), &device).require_grad()
                } else {
                    Tensor::<2>::from_data(x0.to_data(), &device).require_grad()
                };
                let input = if transposed { x.clone().transpose() } else { x.clone() };
                let y = f(&layer, input);
                let grads = (y.clone() * up.clone()).sum().backward();
                [y.inner().into_data(), x.grad(&grads).unwrap().into_data(), layer.weight.grad(&grads).unwrap().into_data()]
            };
            let fast = run(&|l, x| linear(l, x));
            let slow = run(&|l, x| l.forward(x));
            for (f, s) in fast.into_iter().zip(slow) {
                f.assert_approx_eq::<f32>(&s, Tolerance::rel_abs(1e-5, 1e-5));
            }
        }
    }

    #[test]
    fn a_constant_operand_gets_no_gradient_and_the_other_its_own() {
        let device = Device::flex().autodiff();
        let a = crate::test_util::randn([2, 3, 4], 1400, &device).require_grad();
        let b = crate::test_util::randn([2, 4, 5], 1401, &device);
        let grads = batched_matmul(a.clone(), b.clone()).sum().backward();
        let expected = Tensor::<3>::ones([2, 3, 5], &device).matmul(b.swap_dims(1, 2));
        a.grad(&grads).unwrap().into_data().assert_approx_eq::<f32>(&expected.inner().into_data(), Tolerance::rel_abs(1e-5, 1e-6));
    }
}
