//! The adaLN modulation `x (1 + scale) + shift` and the gated residual `x + gate y` as one
//! vectorised op each, with fused backwards, on Burn's pure-Rust CPU backend (`flex`).
//!
//! Composed, the modulation is a product and a sum over the whole activation (two passes, two
//! fresh `[B, N, C]` buffers), and its backward three more passes (`dy (1 + scale)`, `dy x`,
//! and two token sums); likewise the gated residual. Every adaLN block (DiT, U-DiT, MicroDiT,
//! MM-DiT) runs two of each per block. Here each is one Burn backend-extension op over tokens
//! `[B, N, C]` with per-sample vectors `[B, C]`:
//!
//! ```text
//! modulate:  y = x (1 + scale) + shift;  dx = dy (1 + scale),  dscale = sum_n dy x,  dshift = sum_n dy
//! residual:  y = x + gate r;             dx = dy,  dr = dy gate,  dgate = sum_n dy r
//! ```
//!
//! The forwards round as the composed ops do (`1 + scale` first, no fused multiply-add), so
//! the values agree to the bit. The fast path is taken for `float32` operands on the flex
//! device (plain or autodiff); anything else runs the composed Burn ops.

use burn::prelude::*;

/// adaLN modulation `x * (1 + scale) + shift` on tokens; one op with a fused backward on flex.
///
/// # Shapes
/// - `x`: `[B, N, C]`; `shift`, `scale`: `[B, C]`; output `[B, N, C]`
pub fn modulate(x: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<3> {
    match flex::modulate(x, shift, scale) {
        Ok(y) => y,
        Err((x, shift, scale)) => x * (scale.unsqueeze_dim::<3>(1) + 1.0) + shift.unsqueeze_dim(1),
    }
}

/// Gated residual `x + gate * r` on tokens (the adaLN-Zero update); one op with a fused
/// backward on flex.
///
/// # Shapes
/// - `x`, `r`: `[B, N, C]`; `gate`: `[B, C]`; output `[B, N, C]`
pub fn gated_residual(x: Tensor<3>, gate: Tensor<2>, r: Tensor<3>) -> Tensor<3> {
    match flex::gated_residual(x, gate, r) {
        Ok(y) => y,
        Err((x, gate, r)) => x + gate.unsqueeze_dim::<3>(1) * r,
    }
}

/// Whether the fast path takes these operands: `float32` on flex, `x` and `y` `[B, N, C]`
/// (non-empty), the vectors `[B, C]`.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
fn fast_path_applies(x: &Tensor<3>, y: &Tensor<3>, a: &Tensor<2>, b: &Tensor<2>) -> bool {
    use super::f32_on_flex;
    let [bs, _, c] = x.dims();
    [x, y].iter().all(|t| f32_on_flex(*t))
        && [a, b].iter().all(|t| f32_on_flex(*t) && t.dims() == [bs, c])
        && y.dims() == x.dims()
        && x.shape().num_elements() > 0
}

#[cfg(not(feature = "flex"))]
mod flex {
    use burn::prelude::*;

    /// Without the flex backend there is no fast path: the operands are given back.
    pub fn modulate(x: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Result<Tensor<3>, (Tensor<3>, Tensor<2>, Tensor<2>)> {
        Err((x, shift, scale))
    }

    /// Without the flex backend there is no fast path: the operands are given back.
    pub fn gated_residual(x: Tensor<3>, gate: Tensor<2>, r: Tensor<3>) -> Result<Tensor<3>, (Tensor<3>, Tensor<2>, Tensor<3>)> {
        Err((x, gate, r))
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
    use crate::cpu::{contiguous, for_each_chunk, owned_contiguous, piece_len};

    /// The fast path for operands it applies to ([`super::fast_path_applies`]); others are
    /// given back.
    pub fn modulate(x: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Result<Tensor<3>, (Tensor<3>, Tensor<2>, Tensor<2>)> {
        if !super::fast_path_applies(&x, &x, &shift, &scale) {
            return Err((x, shift, scale));
        }
        let y = <Dispatch as ModulateBackend>::fast_modulate(x.into_dispatch(), shift.into_dispatch(), scale.into_dispatch());
        Ok(Tensor::from_dispatch(y))
    }

    /// The fast path for operands it applies to ([`super::fast_path_applies`]); others are
    /// given back.
    pub fn gated_residual(x: Tensor<3>, gate: Tensor<2>, r: Tensor<3>) -> Result<Tensor<3>, (Tensor<3>, Tensor<2>, Tensor<3>)> {
        if !super::fast_path_applies(&x, &r, &gate, &gate) {
            return Err((x, gate, r));
        }
        let y = <Dispatch as ModulateBackend>::fast_gated_residual(x.into_dispatch(), gate.into_dispatch(), r.into_dispatch());
        Ok(Tensor::from_dispatch(y))
    }

    /// The modulation and the gated residual with their backwards as a Burn backend extension
    /// (flex and autodiff over it); `float32` tokens `[B, N, C]` and vectors `[B, C]`.
    #[backend_extension(Flex, Autodiff)]
    pub trait ModulateBackend: Backend {
        /// `x (1 + scale) + shift`.
        fn fast_modulate(x: FloatTensor<Self>, shift: FloatTensor<Self>, scale: FloatTensor<Self>) -> FloatTensor<Self>;
        /// `(dx, dshift, dscale)` from `x`, `scale` and the upstream gradient `dy`.
        fn fast_modulate_backward(
            x: FloatTensor<Self>,
            scale: FloatTensor<Self>,
            dy: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
        /// `x + gate r`.
        fn fast_gated_residual(x: FloatTensor<Self>, gate: FloatTensor<Self>, r: FloatTensor<Self>) -> FloatTensor<Self>;
        /// `(dr, dgate)` from `gate`, `r` and the upstream gradient `dy` (`dx` is `dy`).
        fn fast_gated_residual_backward(
            gate: FloatTensor<Self>,
            r: FloatTensor<Self>,
            dy: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>);
    }

    /// `[B, N, C]` of a token tensor.
    fn dims3(t: &FlexTensor) -> [usize; 3] {
        let s = t.layout().shape();
        [s[0], s[1], s[2]]
    }

    fn tensor(data: Vec<f32>, shape: &[usize]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(data, shape.to_vec()))
    }

    /// Calls `f(row, sample, out_row)` on every `C`-wide token row of `out` (`[B, N, C]`, the
    /// vectors of the row's sample at `sample..sample + C`), one piece of rows per thread.
    fn for_rows(out: &mut [f32], [_, n, c]: [usize; 3], f: impl Fn(std::ops::Range<usize>, usize, &mut [f32]) + Sync) {
        let piece_rows = piece_len(out.len(), c) / c;
        for_each_chunk(out, piece_rows * c, |i, piece| {
            for (j, o) in piece.chunks_mut(c).enumerate() {
                let row = i * piece_rows + j;
                f(row * c..(row + 1) * c, (row / n) * c, o);
            }
        });
    }

    /// `t` (`[B, N, C]`) with [`for_rows`]'s `f` applied in place (copied first only when it is
    /// strided or shared).
    fn rows_in_place(t: FlexTensor, d: [usize; 3], f: impl Fn(std::ops::Range<usize>, usize, &mut [f32]) + Sync) -> FlexTensor {
        let mut t = owned_contiguous(t);
        let len = t.layout().num_elements();
        for_rows(&mut t.storage_mut::<f32>()[..len], d, f);
        t
    }

    /// Per-sample sums over the tokens into `[B, W]`: `f(row, sums_row)` accumulates token row
    /// `row` of sample `b` into `sums[b, :]`; samples are split between threads, tokens are
    /// not.
    fn sample_sums([bs, n, c]: [usize; 3], w: usize, f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync) -> Vec<f32> {
        let mut sums = vec![0.0f32; bs * w];
        let per = bs.div_ceil(crate::cpu::num_threads().clamp(1, bs));
        for_each_chunk(&mut sums, per * w, |i, piece| {
            for (j, acc) in piece.chunks_mut(w).enumerate() {
                let sample = i * per + j;
                for row in sample * n..(sample + 1) * n {
                    f(row * c..(row + 1) * c, acc);
                }
            }
        });
        sums
    }

    impl ModulateBackend for Flex {
        fn fast_modulate(x: FlexTensor, shift: FlexTensor, scale: FlexTensor) -> FlexTensor {
            let d @ [_, _, c] = dims3(&x);
            let (shift, scale) = (contiguous(shift), contiguous(scale));
            let [sh, sc] = [&shift, &scale].map(|t| t.as_slice::<f32>().expect("f32"));
            rows_in_place(x, d, |_, s, x| kernel::modulate(x, &sh[s..s + c], &sc[s..s + c]))
        }

        fn fast_modulate_backward(x: FlexTensor, scale: FlexTensor, dy: FlexTensor) -> (FlexTensor, FlexTensor, FlexTensor) {
            let d @ [bs, _, c] = dims3(&x);
            let (x, scale, dy) = (contiguous(x), contiguous(scale), contiguous(dy));
            let [xs, sc] = [&x, &scale].map(|t| t.as_slice::<f32>().expect("f32"));
            // [dscale | dshift] per sample, before dy is overwritten by dx
            let sums = {
                let g = dy.as_slice::<f32>().expect("f32");
                sample_sums(d, 2 * c, |row, acc| {
                    let (ds, db) = acc.split_at_mut(c);
                    kernel::add_product(ds, &g[row.clone()], &xs[row.clone()]);
                    kernel::add(db, &g[row]);
                })
            };
            let dx = rows_in_place(dy, d, |_, s, g| kernel::scale_by_one_plus(g, &sc[s..s + c]));
            let half = |k: usize| sums.chunks(2 * c).flat_map(|s| s[k * c..(k + 1) * c].iter().copied()).collect::<Vec<f32>>();
            let (dscale, dshift) = (half(0), half(1));
            (dx, tensor(dshift, &[bs, c]), tensor(dscale, &[bs, c]))
        }

        fn fast_gated_residual(x: FlexTensor, gate: FlexTensor, r: FlexTensor) -> FlexTensor {
            let d @ [_, _, c] = dims3(&x);
            let (gate, r) = (contiguous(gate), contiguous(r));
            let [gs, rs] = [&gate, &r].map(|t| t.as_slice::<f32>().expect("f32"));
            rows_in_place(x, d, |row, s, x| kernel::gated_residual(x, &gs[s..s + c], &rs[row]))
        }

        fn fast_gated_residual_backward(gate: FlexTensor, r: FlexTensor, dy: FlexTensor) -> (FlexTensor, FlexTensor) {
            let d @ [bs, _, c] = dims3(&r);
            let (gate, r, dy) = (contiguous(gate), contiguous(r), contiguous(dy));
            let [gs, rs, g] = [&gate, &r, &dy].map(|t| t.as_slice::<f32>().expect("f32"));
            let mut dr = vec![0.0f32; g.len()];
            for_rows(&mut dr, d, |row, s, o| kernel::mul(o, &g[row], &gs[s..s + c]));
            let dgate = sample_sums(d, c, |row, acc| kernel::add_product(acc, &g[row.clone()], &rs[row]));
            (tensor(dr, &d), tensor(dgate, &[bs, c]))
        }
    }

    impl<B: Backend + ModulateBackend, C: CheckpointStrategy> ModulateBackend for Autodiff<B, C> {
        fn fast_modulate(x: FloatTensor<Self>, shift: FloatTensor<Self>, scale: FloatTensor<Self>) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct ModulateBackward;

            impl<B: Backend + ModulateBackend> Backward<B, 3> for ModulateBackward {
                /// The checkpoints of `x` and `scale`.
                type State = (NodeId, NodeId);

                fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                    let (x, scale) = ops.state;
                    let [x, scale] = [x, scale].map(|id| checkpointer.retrieve_node_output(id));
                    let dy = grads.consume::<B>(&ops.node);
                    let (dx, dshift, dscale) = B::fast_modulate_backward(x, scale, dy);
                    for (parent, grad) in ops.parents.into_iter().zip([dx, dshift, dscale]) {
                        if let Some(node) = parent {
                            grads.register::<B>(node.id, grad);
                        }
                    }
                }
            }

            match ModulateBackward.prepare::<C>([x.node(), shift.node(), scale.node()]).compute_bound().stateful() {
                OpsKind::Tracked(mut prep) => {
                    let state = (prep.checkpoint(&x), prep.checkpoint(&scale));
                    prep.finish(state, B::fast_modulate(x.into_primitive(), shift.into_primitive(), scale.into_primitive()))
                }
                OpsKind::UnTracked(prep) => prep.finish(B::fast_modulate(x.into_primitive(), shift.into_primitive(), scale.into_primitive())),
            }
        }

        fn fast_modulate_backward(
            x: FloatTensor<Self>,
            scale: FloatTensor<Self>,
            dy: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
            // Only reached by a second-order derivative, which this op does not track.
            let [x, scale, dy] = [x, scale, dy].map(|t| t.into_primitive());
            let (dx, dshift, dscale) = B::fast_modulate_backward(x, scale, dy);
            (FloatTensor::<Self>::new(dx), FloatTensor::<Self>::new(dshift), FloatTensor::<Self>::new(dscale))
        }

        fn fast_gated_residual(x: FloatTensor<Self>, gate: FloatTensor<Self>, r: FloatTensor<Self>) -> FloatTensor<Self> {
            #[derive(Debug)]
            struct GatedResidualBackward;

            impl<B: Backend + ModulateBackend> Backward<B, 3> for GatedResidualBackward {
                /// The checkpoints of `gate` and `r`.
                type State = (NodeId, NodeId);

                fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                    let (gate, r) = ops.state;
                    let [gate, r] = [gate, r].map(|id| checkpointer.retrieve_node_output(id));
                    let dy = grads.consume::<B>(&ops.node);
                    let [px, pg, pr] = ops.parents;
                    let (dr, dgate) = B::fast_gated_residual_backward(gate, r, dy.clone());
                    for (parent, grad) in [(px, dy), (pg, dgate), (pr, dr)] {
                        if let Some(node) = parent {
                            grads.register::<B>(node.id, grad);
                        }
                    }
                }
            }

            match GatedResidualBackward.prepare::<C>([x.node(), gate.node(), r.node()]).compute_bound().stateful() {
                OpsKind::Tracked(mut prep) => {
                    let state = (prep.checkpoint(&gate), prep.checkpoint(&r));
                    prep.finish(state, B::fast_gated_residual(x.into_primitive(), gate.into_primitive(), r.into_primitive()))
                }
                OpsKind::UnTracked(prep) => prep.finish(B::fast_gated_residual(x.into_primitive(), gate.into_primitive(), r.into_primitive())),
            }
        }

        fn fast_gated_residual_backward(
            gate: FloatTensor<Self>,
            r: FloatTensor<Self>,
            dy: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            // Only reached by a second-order derivative, which this op does not track.
            let [gate, r, dy] = [gate, r, dy].map(|t| t.into_primitive());
            let (dr, dgate) = B::fast_gated_residual_backward(gate, r, dy);
            (FloatTensor::<Self>::new(dr), FloatTensor::<Self>::new(dgate))
        }
    }
}

/// Row loops of the fast paths, written so that LLVM vectorises them and compiled for AVX-512,
/// AVX2+FMA and the baseline (each element rounded as the composed ops round it).
#[cfg(feature = "flex")]
mod kernel {
    use crate::cpu::simd::multiversion;

    #[inline(always)]
    fn modulate_loop(x: &mut [f32], shift: &[f32], scale: &[f32]) {
        for ((x, &b), &s) in x.iter_mut().zip(shift).zip(scale) {
            *x = *x * (s + 1.0) + b;
        }
    }

    #[inline(always)]
    fn scale_by_one_plus_loop(g: &mut [f32], scale: &[f32]) {
        for (g, &s) in g.iter_mut().zip(scale) {
            *g *= s + 1.0;
        }
    }

    #[inline(always)]
    fn gated_residual_loop(x: &mut [f32], gate: &[f32], r: &[f32]) {
        for ((x, &g), &r) in x.iter_mut().zip(gate).zip(r) {
            *x += g * r;
        }
    }

    #[inline(always)]
    fn mul_loop(out: &mut [f32], a: &[f32], b: &[f32]) {
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = a * b;
        }
    }

    #[inline(always)]
    fn add_product_loop(acc: &mut [f32], a: &[f32], b: &[f32]) {
        for ((s, &a), &b) in acc.iter_mut().zip(a).zip(b) {
            *s += a * b;
        }
    }

    #[inline(always)]
    fn add_loop(acc: &mut [f32], a: &[f32]) {
        for (s, &a) in acc.iter_mut().zip(a) {
            *s += a;
        }
    }

    multiversion!(
        /// `x = x (1 + scale) + shift` in place.
        modulate(x: &mut [f32], shift: &[f32], scale: &[f32]) => modulate_loop
    );
    multiversion!(
        /// `g = g (1 + scale)` in place.
        scale_by_one_plus(g: &mut [f32], scale: &[f32]) => scale_by_one_plus_loop
    );
    multiversion!(
        /// `x = x + gate r` in place.
        gated_residual(x: &mut [f32], gate: &[f32], r: &[f32]) => gated_residual_loop
    );
    multiversion!(
        /// `out = a b`.
        mul(out: &mut [f32], a: &[f32], b: &[f32]) => mul_loop
    );
    multiversion!(
        /// `acc += a b`.
        add_product(acc: &mut [f32], a: &[f32], b: &[f32]) => add_product_loop
    );
    multiversion!(
        /// `acc += a`.
        add(acc: &mut [f32], a: &[f32]) => add_loop
    );
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    /// Value and the gradients of `x`, `r`, `a` and `b` of `sum(up * f(x, r, a, b))`.
    fn run(
        f: &dyn Fn(Tensor<3>, Tensor<3>, Tensor<2>, Tensor<2>) -> Tensor<3>,
        [x, r, up]: [&Tensor<3>; 3],
        [a, b]: [&Tensor<2>; 2],
    ) -> [TensorData; 5] {
        let device = Device::flex().autodiff();
        let [x, r] = [x, r].map(|t| Tensor::<3>::from_data(t.to_data(), &device).require_grad());
        let [a, b] = [a, b].map(|t| Tensor::<2>::from_data(t.to_data(), &device).require_grad());
        let y = f(x.clone(), r.clone(), a.clone(), b.clone());
        let grads = (y.clone() * Tensor::from_data(up.to_data(), &device)).sum().backward();
        // an operand the function does not use has no gradient: an empty placeholder
        let none = || TensorData::new(Vec::<f32>::new(), [0]);
        let g3 = |t: &Tensor<3>| t.grad(&grads).map_or_else(none, |g| g.into_data());
        let g2 = |t: &Tensor<2>| t.grad(&grads).map_or_else(none, |g| g.into_data());
        [y.inner().into_data(), g3(&x), g3(&r), g2(&a), g2(&b)]
    }

    #[test]
    fn values_and_gradients_match_the_composed_forms() {
        let flex = Device::flex();
        // a small shape, a threaded one (odd widths, several samples), one sample
        for (i, [b, n, c]) in [[2, 3, 5], [3, 67, 257], [1, 200, 192]].into_iter().enumerate() {
            let seed = 1200 + 10 * i as u64;
            let [x, r, up] = [0, 1, 2].map(|k| crate::test_util::randn([b, n, c], seed + k, &flex));
            let [v1, v2] = [3, 4].map(|k| crate::test_util::randn([b, c], seed + k, &flex));
            let tensors = [&x, &r, &up];
            let fast = run(&|x, _, sh, sc| modulate(x, sh, sc), tensors, [&v1, &v2]);
            let slow = run(&|x, _, sh, sc| x * (sc.unsqueeze_dim::<3>(1) + 1.0) + sh.unsqueeze_dim(1), tensors, [&v1, &v2]);
            // the value to the bit, the gradients to rounding (sums in another order)
            fast[0].assert_eq(&slow[0], true);
            for (f, s) in fast.into_iter().zip(slow).skip(1) {
                f.assert_approx_eq::<f32>(&s, Tolerance::rel_abs(1e-5, 1e-5));
            }
            let fast = run(&|x, r, g, _| gated_residual(x, g, r), tensors, [&v1, &v2]);
            let slow = run(&|x, r, g, _| x + g.unsqueeze_dim::<3>(1) * r, tensors, [&v1, &v2]);
            fast[0].assert_eq(&slow[0], true);
            for (f, s) in fast.into_iter().zip(slow).skip(1) {
                f.assert_approx_eq::<f32>(&s, Tolerance::rel_abs(1e-5, 1e-5));
            }
            // plain device, strided (transposed) tokens
            let xt = Tensor::<3>::from_data(x.clone().swap_dims(1, 2).into_data(), &flex).swap_dims(1, 2);
            assert!(super::fast_path_applies(&xt, &xt, &v1, &v2));
            let expect = x.clone() * (v2.clone().unsqueeze_dim::<3>(1) + 1.0) + v1.clone().unsqueeze_dim(1);
            modulate(xt.clone(), v1.clone(), v2).into_data().assert_eq(&expect.into_data(), true);
            let expect = x.clone() + v1.clone().unsqueeze_dim::<3>(1) * r.clone();
            gated_residual(xt, v1, r).into_data().assert_eq(&expect.into_data(), true);
        }
    }

    #[test]
    fn other_dtypes_take_the_composed_ops() {
        let flex = Device::flex();
        let x = crate::test_util::randn([2, 4, 8], 1300, &flex).cast(burn::tensor::DType::F16);
        let v = crate::test_util::randn([2, 8], 1301, &flex).cast(burn::tensor::DType::F16);
        assert!(!super::fast_path_applies(&x, &x, &v, &v));
        let expect = x.clone() * (v.clone().unsqueeze_dim::<3>(1) + 1.0) + v.clone().unsqueeze_dim(1);
        modulate(x.clone(), v.clone(), v.clone()).into_data().assert_eq(&expect.into_data(), true);
        let expect = x.clone() + v.clone().unsqueeze_dim::<3>(1) * x.clone();
        gated_residual(x.clone(), v, x).into_data().assert_eq(&expect.into_data(), true);
    }
}
