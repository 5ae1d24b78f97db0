//! Parameter-free normalisations and the adaLN `modulate` helper.

use burn::prelude::*;

/// LayerNorm over the last dimension without affine parameters
/// (PyTorch `LayerNorm(d, elementwise_affine=False, eps)`; DiT uses `eps = 1e-6`); one op with
/// a fused backward on flex ([`crate::cpu::layer_norm`]).
///
/// # Shapes
/// - `x`: `[..., d]` -> `[..., d]`
pub fn layer_norm<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    crate::cpu::layer_norm(x, None, None, eps)
}

/// A Burn [`LayerNorm`](burn::nn::LayerNorm) module applied with epsilon `eps` through
/// [`crate::cpu::layer_norm`] (one op with a fused backward on flex). Burn keeps the module's
/// epsilon private, so the caller passes the one it built the module with.
///
/// # Shapes
/// - `x`: `[..., d]` -> `[..., d]`
pub fn apply_layer_norm<const D: usize>(norm: &burn::nn::LayerNorm, x: Tensor<D>, eps: f64) -> Tensor<D> {
    crate::cpu::layer_norm(x, Some(norm.gamma.val()), norm.beta.as_ref().map(|b| b.val()), eps)
}

/// RMSNorm over the last dimension without weight: `x / sqrt(mean(x^2) + eps)`.
///
/// # Shapes
/// - `x`: `[..., d]` -> `[..., d]`
pub fn rms_norm<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    let rms = (x.clone().square().mean_dim(D - 1) + eps).sqrt();
    x / rms
}

/// A per-sample, per-channel vector `[B, C]` shaped to broadcast over tokens `[B, 1, C]`
/// (rank 3, channels last) or over a feature map `[B, C, 1, 1]` (rank 4, channels first).
fn per_sample<const D: usize>(v: Tensor<2>) -> Tensor<D> {
    let [b, c] = v.dims();
    let mut shape = [1; D];
    shape[0] = b;
    shape[if D == 4 { 1 } else { D - 1 }] = c;
    v.reshape(shape)
}

/// adaLN modulation `x * (1 + scale) + shift`, with per-sample vectors broadcast over tokens
/// (rank 3; one op with a fused backward on flex, [`crate::cpu::modulate`]) or over the pixels
/// of a feature map (rank 4).
///
/// # Shapes
/// - `x`: `[B, N, C]` tokens or `[B, C, H, W]` maps
/// - `shift`, `scale`: `[B, C]`
/// - output: the shape of `x`
pub fn modulate<const D: usize>(x: Tensor<D>, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<D> {
    if D == 3 {
        let dims = x.dims();
        return crate::cpu::modulate(x.reshape(tokens_shape(&shift, &dims)), shift, scale).reshape(dims);
    }
    x * (per_sample::<D>(scale) + 1.0) + per_sample::<D>(shift)
}

/// Gated residual `x + gate * y`, the adaLN-Zero update, on tokens (rank 3; one op with a fused
/// backward on flex, [`crate::cpu::gated_residual`]) or feature maps (rank 4).
///
/// # Shapes
/// - `x`, `y`: `[B, N, C]` or `[B, C, H, W]`; `gate`: `[B, C]`; output the shape of `x`
pub fn gated_residual<const D: usize>(x: Tensor<D>, gate: Tensor<2>, y: Tensor<D>) -> Tensor<D> {
    if D == 3 {
        let (dims, tokens) = (x.dims(), tokens_shape(&gate, &x.dims()));
        return crate::cpu::gated_residual(x.reshape(tokens), gate, y.reshape(tokens)).reshape(dims);
    }
    x + per_sample::<D>(gate) * y
}

/// `[B, N, C]` of tokens `dims` (rank 3) modulated by a per-sample vector `v` `[B, C]`: the
/// shape the fused ops of [`crate::cpu`] take.
fn tokens_shape<const D: usize>(v: &Tensor<2>, dims: &[usize; D]) -> [usize; 3] {
    let [b, c] = v.dims();
    [b, dims.iter().product::<usize>() / (b * c).max(1), c]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    #[test]
    fn layer_norm_matches_definition() {
        let device = Device::flex();
        let x = Tensor::<2>::from_floats([[1.0, 2.0, 3.0, 6.0], [-1.0, 0.0, 1.0, 0.0]], &device);
        // mean 3, biased var 3.5 for row 0
        let r0 = [-2.0f32, -1.0, 0.0, 3.0].map(|v| v / (3.5f32 + 1e-6).sqrt());
        let out = layer_norm(x, 1e-6);
        out.slice([0..1, 0..4])
            .into_data()
            .assert_approx_eq::<f32>(&TensorData::from([r0]), Tolerance::absolute(1e-5));
    }

    #[test]
    fn rms_norm_unit_rms() {
        let device = Device::flex();
        let x = Tensor::<2>::from_floats([[3.0, 4.0]], &device);
        let s = (12.5f32 + 1e-6).sqrt();
        rms_norm(x, 1e-6)
            .into_data()
            .assert_approx_eq::<f32>(&TensorData::from([[3.0 / s, 4.0 / s]]), Tolerance::absolute(1e-6));
    }

    #[test]
    fn modulate_and_gate() {
        let device = Device::flex();
        let x = Tensor::<3>::ones([2, 3, 4], &device);
        let shift = Tensor::<2>::full([2, 4], 0.5, &device);
        let scale = Tensor::<2>::full([2, 4], 1.0, &device);
        let m = modulate(x.clone(), shift, scale);
        assert_eq!(m.dims(), [2, 3, 4]);
        assert!(m.clone().equal_elem(2.5).all().into_scalar::<bool>());
        let g = gated_residual(x, Tensor::<2>::zeros([2, 4], &device), m);
        assert!(g.equal_elem(1.0).all().into_scalar::<bool>());
    }

    #[test]
    fn map_modulation_equals_token_modulation() {
        let device = Device::flex();
        let n = crate::test_util::randn([2, 6, 3, 4], 1, &device);
        let shift = crate::test_util::randn([2, 6], 2, &device);
        let scale = crate::test_util::randn([2, 6], 3, &device);
        // a map modulated per channel equals its tokens modulated per channel
        let tokens = n.clone().flatten::<3>(2, 3).swap_dims(1, 2);
        let expected = modulate(tokens, shift.clone(), scale.clone()).swap_dims(1, 2).reshape([2, 6, 3, 4]);
        modulate(n, shift, scale).into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-6));
    }
}
