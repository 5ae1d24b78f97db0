//! Cosine-similarity attention with a learned per-head temperature (Swin-V2 style, U-DiT's
//! `attn_type='v2'`): `softmax(s_h * cos(q_i, k_j)) v` with `s_h = exp(min(tau_h, 4.6052))`
//! and `tau_h` initialised to `ln 10`.

use burn::prelude::*;

use crate::layers::attention::sdpa;

/// Initial value of the learned log-scale `tau` (the official `log(10)`).
pub const LOGIT_SCALE_INIT: f64 = std::f64::consts::LN_10;

/// Upper clamp of `tau` before `exp` (the official constant `4.6052`, about `ln 100`).
pub const LOGIT_SCALE_MAX: f64 = 4.6052;

/// Epsilon of the L2 normalisation (PyTorch `F.normalize`'s default).
pub const L2_NORMALIZE_EPS: f64 = 1e-12;

/// `x / max(||x||_2, eps)` over the last dimension (PyTorch `F.normalize(x, dim=-1)`).
///
/// # Shapes
/// - `x`: `[..., d]` -> `[..., d]`
pub fn l2_normalize<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    let norm = x.clone().square().sum_dim(D - 1).sqrt().clamp_min(eps);
    x / norm
}

/// Cosine-similarity attention: queries and keys are L2-normalised per head, the cosine
/// scores are multiplied by `exp(min(logit_scale[h], LOGIT_SCALE_MAX))`, then softmax and `v`.
///
/// Runs on the crate's fused [`sdpa`] (the normalised queries are pre-multiplied by the
/// temperature times `sqrt(Dh)`, which the fused op's `1/sqrt(Dh)` cancels), so backends with
/// flash attention use it; the normalisations are one op each on flex
/// ([`crate::cpu::l2_normalize`]).
///
/// # Shapes
/// - `q`: `[B, H, Nq, Dh]`, `k`: `[B, H, Nk, Dh]`, `v`: `[B, H, Nk, Dv]`
/// - `logit_scale`: `[H]` (the learned log-temperatures)
/// - output: `[B, H, Nq, Dv]`
pub fn cosine_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, logit_scale: Tensor<1>) -> Tensor<4> {
    let dh = q.dims()[3];
    let temperature = logit_scale.clamp_max(LOGIT_SCALE_MAX).exp() * (dh as f64).sqrt();
    let q = crate::cpu::l2_normalize(q, Some(temperature), L2_NORMALIZE_EPS);
    sdpa(q, crate::cpu::l2_normalize(k, None, L2_NORMALIZE_EPS), v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;
    use burn::tensor::activation::softmax;

    fn t4(shape: [usize; 4], seed: usize, device: &Device) -> Tensor<4> {
        let len: usize = shape.iter().product();
        let v: Vec<f32> = (0..len).map(|i| (((i * 37 + seed * 101) % 89) as f32 / 44.0) - 1.0).collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    #[test]
    fn equals_the_reference_formula_with_clamp() {
        let device = Device::flex();
        let (q, k, v) = (t4([2, 2, 5, 4], 1, &device), t4([2, 2, 6, 4], 2, &device), t4([2, 2, 6, 3], 3, &device));
        // head 0 below the clamp, head 1 above it (clamped to 4.6052)
        let tau = Tensor::<1>::from_floats([LOGIT_SCALE_INIT as f32, 7.0], &device);
        let got = cosine_attention(q.clone(), k.clone(), v.clone(), tau);
        let qn = q.clone() / q.square().sum_dim(3).sqrt();
        let kn = k.clone() / k.square().sum_dim(3).sqrt();
        let s = Tensor::<1>::from_floats([10.0, LOGIT_SCALE_MAX.exp() as f32], &device).reshape([1, 2, 1, 1]);
        let naive = softmax(qn.matmul(kn.swap_dims(2, 3)) * s, 3).matmul(v);
        got.into_data().assert_approx_eq::<f32>(&naive.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn normalize_handles_zero_vectors() {
        let device = Device::flex();
        let x = Tensor::<2>::from_floats([[3.0, 4.0], [0.0, 0.0]], &device);
        let n = l2_normalize(x, L2_NORMALIZE_EPS).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(n, vec![0.6, 0.8, 0.0, 0.0]);
    }
}
