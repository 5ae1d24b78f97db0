//! One AdamW update of a parameter tensor in one pass over its memory, on flex.
//!
//! Burn's `AdamW` runs about a dozen element-wise ops per parameter tensor per step, each
//! writing a fresh tensor (moments, their bias corrections, the square root, the quotient,
//! the update), so a training step of a model with many parameters and few tokens (MicroDiT
//! with 75% of its tokens masked) spends much of its time and memory traffic in the
//! optimiser. With gradient `g`, moments `m`, `v`, step `t`, learning rate `lr` and decoupled
//! weight decay `wd`:
//!
//! ```text
//! m <- beta_1 m + (1 - beta_1) g
//! v <- beta_2 v + (1 - beta_2) g^2
//! p <- p (1 - lr wd) - lr (m / (1 - beta_1^t)) / (sqrt(v / (1 - beta_2^t)) + eps)
//! ```
//!
//! Here it is one backend-extension op on flex that updates `p`, `m` and `v` in place (a
//! buffer another tensor shares is copied first) with a vectorised loop split over the
//! threads, each operation rounded as Burn's composed form rounds it. Other backends, dtypes
//! and autodiff tensors take the composed form, which is Burn's `AdamW` (without AMSGrad or
//! cautious weight decay) op for op.

use burn::prelude::*;

/// The scalars of one AdamW update ([`adamw_update`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWScalars {
    /// Learning rate of this step.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta_1: f32,
    /// Decay of the second moment.
    pub beta_2: f32,
    /// Added to the square root of the corrected second moment.
    pub epsilon: f32,
    /// Decoupled weight decay (0: none).
    pub weight_decay: f32,
    /// The step number `t`, counted from 1, of the bias corrections.
    pub time: i32,
}

/// One AdamW update, `(param, moment_1, moment_2)` after it: `m <- beta_1 m + (1 - beta_1) g`,
/// `v <- beta_2 v + (1 - beta_2) g^2`, `p <- p (1 - lr wd) - lr (m / (1 - beta_1^t)) /
/// (sqrt(v / (1 - beta_2^t)) + eps)`, as Burn's `AdamW` rounds it.
/// One in-place pass on flex for `float32` tensors of one shape; Burn's composed ops elsewhere.
///
/// # Shapes
/// - `param`, `grad`, `moment_1`, `moment_2`: one shape, returned for all three outputs
pub fn adamw_update<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moment_1: Tensor<D>,
    moment_2: Tensor<D>,
    s: AdamWScalars,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    match flex::adamw(param, grad, moment_1, moment_2, s) {
        Ok(updated) => updated,
        Err((param, grad, m, v)) => composed(param, grad, m, v, s),
    }
}

/// Burn's `AdamW` update, op for op.
fn composed<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    m: Tensor<D>,
    v: Tensor<D>,
    s: AdamWScalars,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    let m = m.mul_scalar(s.beta_1).add(grad.clone().mul_scalar(1.0 - s.beta_1));
    let v = v.mul_scalar(s.beta_2).add(grad.square().mul_scalar(1.0 - s.beta_2));
    let m_hat = m.clone().div_scalar(1f32 - s.beta_1.powi(s.time));
    let v_hat = v.clone().div_scalar(1f32 - s.beta_2.powi(s.time));
    let delta = m_hat.div(v_hat.sqrt().add_scalar(s.epsilon));
    let decay = s.lr * s.weight_decay as f64;
    let kept = if decay == 0.0 { param } else { param.mul_scalar(1.0 - decay) };
    (kept - delta.mul_scalar(s.lr), m, v)
}

type Operands<const D: usize> = (Tensor<D>, Tensor<D>, Tensor<D>, Tensor<D>);

#[cfg(not(feature = "flex"))]
mod flex {
    use super::{AdamWScalars, Operands};
    use burn::prelude::*;

    /// Without the flex backend there is no fast path: the operands are given back.
    pub fn adamw<const D: usize>(
        p: Tensor<D>,
        g: Tensor<D>,
        m: Tensor<D>,
        v: Tensor<D>,
        _s: AdamWScalars,
    ) -> Result<(Tensor<D>, Tensor<D>, Tensor<D>), Operands<D>> {
        Err((p, g, m, v))
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Backend, Flex, backend_extension};
    use burn::prelude::*;

    use super::{AdamWScalars, Operands};
    use crate::cpu::{f32_on_flex, owned_contiguous, piece_len, run_all, simd};

    /// The fast path for `float32` tensors of one shape on the plain flex device; others are
    /// given back.
    pub fn adamw<const D: usize>(
        p: Tensor<D>,
        g: Tensor<D>,
        m: Tensor<D>,
        v: Tensor<D>,
        s: AdamWScalars,
    ) -> Result<(Tensor<D>, Tensor<D>, Tensor<D>), Operands<D>> {
        let shape = p.dims();
        let applies = [&p, &g, &m, &v].iter().all(|t| f32_on_flex(*t) && !t.is_autodiff() && t.dims() == shape);
        if !applies {
            return Err((p, g, m, v));
        }
        use burn::backend::Dispatch;
        let (p, m, v) = <Dispatch as AdamWBackend>::fast_adamw(
            p.into_dispatch(),
            g.into_dispatch(),
            m.into_dispatch(),
            v.into_dispatch(),
            s.lr,
            [s.beta_1 as f64, s.beta_2 as f64, s.epsilon as f64, s.weight_decay as f64],
            s.time,
        );
        Ok((Tensor::from_dispatch(p), Tensor::from_dispatch(m), Tensor::from_dispatch(v)))
    }

    /// The update as a Burn backend extension (plain flex: optimisers step on tensors
    /// without autodiff).
    #[backend_extension(Flex)]
    pub trait AdamWBackend: Backend {
        /// `(p, m, v)` after one update with gradient `g`; `betas_eps_wd` holds `beta_1`,
        /// `beta_2`, `eps` and the weight decay; `time` is the step `t`.
        fn fast_adamw(
            p: FloatTensor<Self>,
            g: FloatTensor<Self>,
            m: FloatTensor<Self>,
            v: FloatTensor<Self>,
            lr: f64,
            betas_eps_wd: [f64; 4],
            time: i32,
        ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
    }

    impl AdamWBackend for Flex {
        fn fast_adamw(
            p: FlexTensor,
            g: FlexTensor,
            m: FlexTensor,
            v: FlexTensor,
            lr: f64,
            betas_eps_wd: [f64; 4],
            time: i32,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let [b1, b2, eps, wd] = betas_eps_wd.map(|x| x as f32);
            let decay = lr * wd as f64;
            let k = [b1, 1.0 - b1, b2, 1.0 - b2, 1.0 - b1.powi(time), 1.0 - b2.powi(time), eps, lr as f32, (1.0 - decay) as f32];
            let (mut p, mut m, mut v) = (owned_contiguous(p), owned_contiguous(m), owned_contiguous(v));
            let g = g.to_contiguous();
            let n = p.layout().num_elements();
            let gs = &g.as_slice::<f32>().expect("contiguous f32 gradient")[..n];
            let piece = piece_len(n, 16);
            let (ps, ms, vs) = (&mut p.storage_mut::<f32>()[..n], &mut m.storage_mut::<f32>()[..n], &mut v.storage_mut::<f32>()[..n]);
            let jobs = ps
                .chunks_mut(piece)
                .zip(ms.chunks_mut(piece))
                .zip(vs.chunks_mut(piece))
                .zip(gs.chunks(piece))
                .map(|(((p, m), v), g)| move || simd::adamw_inplace(p, m, v, g, &k, decay != 0.0))
                .collect();
            run_all(jobs);
            (p, m, v)
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    /// Parameter, gradient, first and (non-negative) second moment.
    fn operands(shape: [usize; 2], device: &Device) -> [Tensor<2>; 4] {
        let normal = || Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), device);
        [normal(), normal(), normal(), Tensor::<2>::random(shape, Distribution::Uniform(0.0, 0.01), device)]
    }

    fn scalars(weight_decay: f32, time: i32) -> AdamWScalars {
        AdamWScalars { lr: 3e-3, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-8, weight_decay, time }
    }

    #[test]
    fn one_pass_equals_the_composed_update() {
        let device = Device::flex();
        device.seed(7);
        // a small tensor (one piece) and one split over the threads, with and without decay
        for (shape, wd, t) in [([3, 5], 0.0, 1), ([300, 257], 0.01, 7)] {
            let [p, g, m, v] = operands(shape, &device);
            let s = scalars(wd, t);
            let Ok((p1, m1, v1)) = flex::adamw(p.clone(), g.clone(), m.clone(), v.clone(), s) else {
                panic!("the fast path applies to f32 tensors on flex")
            };
            let (p2, m2, v2) = composed(p.clone(), g, m.clone(), v.clone(), s);
            for (a, b) in [(p1, p2), (m1, m2), (v1, v2)] {
                a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::rel_abs(1e-6, 1e-7));
            }
        }
    }

    #[test]
    fn shared_buffers_are_not_overwritten() {
        let device = Device::flex();
        device.seed(8);
        let [p, g, m, v] = operands([64, 64], &device);
        let (before_p, before_m) = (p.clone().into_data(), m.clone().into_data());
        // `p` and `m` stay alive here, so the op must copy them before writing
        let _ = adamw_update(p.clone(), g, m.clone(), v, scalars(0.0, 1));
        assert_eq!(p.into_data(), before_p);
        assert_eq!(m.into_data(), before_m);
    }

    #[test]
    fn other_devices_and_dtypes_take_the_composed_form() {
        let device = Device::flex();
        device.seed(9);
        let [p, g, m, v] = operands([4, 6], &device);
        let s = scalars(0.1, 3);
        let (expected, _, _) = composed(p.clone(), g.clone(), m.clone(), v.clone(), s);
        let ad = device.autodiff();
        let moved = [p, g, m, v].map(|t| Tensor::<2>::from_data(t.into_data(), &ad));
        let [p, g, m, v] = moved;
        let Err((p, g, m, v)) = flex::adamw(p, g, m, v, s) else { panic!("autodiff tensors take the composed form") };
        let (got, _, _) = adamw_update(p, g, m, v, s);
        got.into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::rel_abs(1e-6, 1e-7));
    }
}
