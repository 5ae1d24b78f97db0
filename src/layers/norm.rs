//! Parameter-free normalisations and the adaLN `modulate` helper.

use burn::prelude::*;

/// LayerNorm over the last dimension without affine parameters
/// (PyTorch `LayerNorm(d, elementwise_affine=False, eps)`; DiT uses `eps = 1e-6`).
///
/// # Shapes
/// - `x`: `[..., d]` -> `[..., d]`
pub fn layer_norm<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    let d = x.dims()[D - 1];
    let gamma = Tensor::<1>::ones([d], &x.device());
    burn::tensor::module::layer_norm(x, gamma, None, eps)
}

/// RMSNorm over the last dimension without weight: `x / sqrt(mean(x^2) + eps)`.
///
/// # Shapes
/// - `x`: `[..., d]` -> `[..., d]`
pub fn rms_norm<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    let rms = (x.clone().square().mean_dim(D - 1) + eps).sqrt();
    x / rms
}

/// adaLN modulation `x * (1 + scale) + shift`, with per-sample vectors broadcast over tokens.
///
/// # Shapes
/// - `x`: `[B, N, C]`
/// - `shift`, `scale`: `[B, C]`
/// - output: `[B, N, C]`
pub fn modulate(x: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<3> {
    x * (scale.unsqueeze_dim::<3>(1) + 1.0) + shift.unsqueeze_dim::<3>(1)
}

/// Gated residual `x + gate * y`, the adaLN-Zero update.
///
/// # Shapes
/// - `x`, `y`: `[B, N, C]`; `gate`: `[B, C]`; output `[B, N, C]`
pub fn gated_residual(x: Tensor<3>, gate: Tensor<2>, y: Tensor<3>) -> Tensor<3> {
    x + gate.unsqueeze_dim::<3>(1) * y
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
}
