//! Gaussian KL divergence and the discretised Gaussian log-likelihood used by the variational
//! bound (reference `diffusion_utils.py` of facebookresearch/DiT, from OpenAI's
//! improved-diffusion; Ho et al. 2020, Sec. 3.3).

use burn::prelude::*;

/// `KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)))` elementwise, in nats:
/// `0.5 * (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2))`.
///
/// # Shapes
/// - all inputs and the output: the same shape `[B, ...]`
pub fn normal_kl<const D: usize>(mean1: Tensor<D>, logvar1: Tensor<D>, mean2: Tensor<D>, logvar2: Tensor<D>) -> Tensor<D> {
    let diff = mean1 - mean2;
    ((logvar2.clone() - logvar1.clone()) + (logvar1 - logvar2.clone()).exp() + diff.clone() * diff * logvar2.neg().exp()
        - 1.0)
        * 0.5
}

/// The tanh approximation of the standard normal CDF:
/// `0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`.
pub fn approx_standard_normal_cdf<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    ((x.clone() + x.powi_scalar(3) * 0.044715) * k).tanh().add_scalar(1.0) * 0.5
}

/// Log-likelihood (nats) of `x` under a Gaussian discretised to 8-bit bins of width `2/255`
/// on `[-1, 1]`, the outermost bins extending to infinity (Ho et al. 2020, eq. 13).
///
/// # Shapes
/// - `x`, `means`, `log_scales` (log standard deviations) and the output: `[B, ...]`
pub fn discretized_gaussian_log_likelihood<const D: usize>(x: Tensor<D>, means: Tensor<D>, log_scales: Tensor<D>) -> Tensor<D> {
    let centered = x.clone() - means;
    let inv_stdv = log_scales.neg().exp();
    let cdf_plus = approx_standard_normal_cdf(inv_stdv.clone() * (centered.clone() + 1.0 / 255.0));
    let cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0));
    let log_cdf_plus = cdf_plus.clone().clamp_min(1e-12).log();
    let log_one_minus_cdf_min = (cdf_min.clone().neg() + 1.0).clamp_min(1e-12).log();
    let log_cdf_delta = (cdf_plus - cdf_min).clamp_min(1e-12).log();
    let high = x.clone().greater_elem(0.999);
    let low = x.lower_elem(-0.999);
    log_cdf_delta.mask_where(high, log_one_minus_cdf_min).mask_where(low, log_cdf_plus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_equal_gaussians_is_zero_and_matches_closed_form() {
        let device = Device::flex();
        let m = Tensor::<1>::from_floats([0.3, -1.0], &device);
        let lv = Tensor::<1>::from_floats([-0.5, 0.2], &device);
        let kl = normal_kl(m.clone(), lv.clone(), m.clone(), lv.clone()).into_data().try_to_vec::<f32>().unwrap();
        assert!(kl.iter().all(|v| v.abs() < 1e-6));
        // KL(N(1, 1) || N(0, e^2)) = 0.5 * (-1 + 2 + e^-2 + e^-2)
        let kl = normal_kl(
            Tensor::<1>::from_floats([1.0], &device),
            Tensor::<1>::zeros([1], &device),
            Tensor::<1>::zeros([1], &device),
            Tensor::<1>::from_floats([2.0], &device),
        )
        .into_scalar::<f32>();
        let expected = 0.5 * (1.0 + 2.0 * (-2.0f32).exp());
        assert!((kl - expected).abs() < 1e-6);
    }

    #[test]
    fn discretized_likelihood_bins_sum_to_one() {
        // All 256 bins of one pixel value distribution must sum to probability 1.
        let device = Device::flex();
        let xs: Vec<f32> = (0..256).map(|i| i as f32 / 127.5 - 1.0).collect();
        let x = Tensor::<1>::from_floats(xs.as_slice(), &device);
        let means = Tensor::<1>::full([256], 0.1, &device);
        let log_scales = Tensor::<1>::full([256], -1.5, &device);
        let p = discretized_gaussian_log_likelihood(x, means, log_scales).exp().sum().into_scalar::<f32>();
        assert!((p - 1.0).abs() < 2e-3, "{p}");
    }
}
