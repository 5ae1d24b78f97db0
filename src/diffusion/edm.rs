//! EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
//! Models", arXiv:2206.00364) as MicroDiT trains with it (SonyResearch/micro_diffusion
//! `model.py`: `model_forward_wrapper`, `edm_loss`).
//!
//! The noisy sample is `x = x0 + sigma * n`, `n ~ N(0, I)`. The network `F` is wrapped by the
//! preconditioning
//!
//! ```text
//! D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))
//! c_skip  = sigma_data^2 / (sigma^2 + sigma_data^2)
//! c_out   = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
//! c_in    = 1 / sqrt(sigma^2 + sigma_data^2)
//! c_noise = ln(sigma) / 4
//! ```
//!
//! and trained with `lambda(sigma) ||D(x, sigma) - x0||^2`, `lambda = (sigma^2 + sigma_data^2) /
//! (sigma sigma_data)^2`, `ln(sigma) ~ N(P_mean, P_std^2)`. With a [`MaskedDenoiser`] the loss
//! is averaged over the kept patches only ([`MaskedEdm`]). Sample with
//! `EdmSampler` of the sampling module.

use burn::prelude::*;
use rand::Rng;

use crate::error::{Error, Result, ensure_config, ensure_dims};
use crate::contracts::{MaskedDenoiser, TokenMask, patch_loss};
use crate::contracts::Denoiser;
use crate::contracts::{normal_vec, randn};
use crate::contracts::{Objective, TrainRng};

/// Configuration of [`Edm`]. Defaults are MicroDiT's (`sigma_data = 0.9`,
/// `P_mean = -0.6`, `P_std = 1.2`); [`EdmConfig::karras`] gives the EDM paper's.
#[derive(Config, Debug)]
pub struct EdmConfig {
    /// Standard deviation of the data. Default: 0.9 (MicroDiT's latents).
    #[config(default = 0.9)]
    pub sigma_data: f64,
    /// Mean of `ln(sigma)` in training. Default: -0.6.
    #[config(default = -0.6)]
    pub p_mean: f64,
    /// Standard deviation of `ln(sigma)` in training. Default: 1.2.
    #[config(default = 1.2)]
    pub p_std: f64,
}

impl EdmConfig {
    /// The EDM paper's training setting: `sigma_data = 0.5`, `P_mean = -1.2`, `P_std = 1.2`.
    pub fn karras() -> Self {
        Self::new().with_sigma_data(0.5).with_p_mean(-1.2).with_p_std(1.2)
    }

    /// Checks the values and builds the objective.
    pub fn init(&self) -> Result<Edm> {
        ensure_config(self.sigma_data.is_finite() && self.sigma_data > 0.0, || {
            format!("sigma_data must be finite and positive, got {}", self.sigma_data)
        })?;
        ensure_config(self.p_mean.is_finite() && self.p_std.is_finite() && self.p_std >= 0.0, || {
            format!("P_mean must be finite and P_std finite and >= 0, got {} and {}", self.p_mean, self.p_std)
        })?;
        Ok(Edm { sigma_data: self.sigma_data, p_mean: self.p_mean, p_std: self.p_std })
    }
}

/// The four preconditioning coefficients for a batch of noise levels, each `[B]`.
#[derive(Debug, Clone)]
pub struct EdmScalings {
    /// Skip-connection weight `c_skip`.
    pub c_skip: Tensor<1>,
    /// Output scale `c_out`.
    pub c_out: Tensor<1>,
    /// Input scale `c_in`.
    pub c_in: Tensor<1>,
    /// Noise conditioning `c_noise = ln(sigma) / 4`, fed to the network as its timestep.
    pub c_noise: Tensor<1>,
}

/// The result of an EDM loss evaluation.
#[derive(Debug, Clone)]
pub struct EdmLoss {
    /// Mean loss over the batch, `[1]`.
    pub loss: Tensor<1>,
    /// Per-sample weighted loss (over kept patches when masked), `[B]`.
    pub per_sample: Tensor<1>,
    /// The noise levels used, `[B]`.
    pub sigma: Tensor<1>,
}

/// EDM preconditioning, noise-level distribution and loss weighting.
#[derive(Debug, Clone, PartialEq)]
pub struct Edm {
    sigma_data: f64,
    p_mean: f64,
    p_std: f64,
}

/// `[B]` -> `[B, 1, 1, 1]`.
fn per_sample(v: Tensor<1>) -> Tensor<4> {
    let b = v.dims()[0];
    v.reshape([b, 1, 1, 1])
}

fn check_sigma(x: &Tensor<4>, sigma: &Tensor<1>) -> Result<()> {
    ensure_dims("sigma", sigma.dims(), [Some(x.dims()[0])])
}

fn check_same(name: &str, a: &Tensor<4>, b: &Tensor<4>) -> Result<()> {
    if a.dims() == b.dims() {
        return Ok(());
    }
    Err(Error::Shape { name: name.into(), expected: format!("{:?}", a.dims()), got: format!("{:?}", b.dims()) })
}

impl Edm {
    /// `sigma_data`.
    pub fn sigma_data(&self) -> f64 {
        self.sigma_data
    }

    /// `(P_mean, P_std)` of the log-normal training noise levels.
    pub fn log_normal(&self) -> (f64, f64) {
        (self.p_mean, self.p_std)
    }

    /// The preconditioning coefficients at noise levels `sigma` (`[B]`, positive).
    pub fn scalings(&self, sigma: Tensor<1>) -> EdmScalings {
        let sd2 = self.sigma_data * self.sigma_data;
        let s2 = sigma.clone().square();
        let root = (s2.clone() + sd2).sqrt();
        EdmScalings {
            c_skip: (s2 + sd2).recip() * sd2,
            c_out: sigma.clone() * self.sigma_data / root.clone(),
            c_in: root.recip(),
            c_noise: sigma.log() / 4.0,
        }
    }

    /// Loss weight `lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2`, `[B]`.
    pub fn loss_weight(&self, sigma: Tensor<1>) -> Tensor<1> {
        let sd = self.sigma_data;
        (sigma.clone().square() + sd * sd) / (sigma * sd).square()
    }

    /// `n` training noise levels `exp(P_mean + P_std * z)`, `z ~ N(0, 1)` drawn from `rng`.
    pub fn sample_sigma<R: Rng + ?Sized>(&self, n: usize, rng: &mut R, device: &Device) -> Tensor<1> {
        let z = normal_vec(n, rng);
        let s: Vec<f32> = z.iter().map(|z| (self.p_mean + self.p_std * *z as f64).exp() as f32).collect();
        Tensor::from_data(TensorData::new(s, [n]), device)
    }

    fn combine(&self, x: Tensor<4>, f: Tensor<4>, s: &EdmScalings) -> Result<Tensor<4>> {
        check_same("model output", &x, &f)?;
        Ok(x * per_sample(s.c_skip.clone()) + f * per_sample(s.c_out.clone()))
    }

    /// The preconditioned denoiser `D(x, sigma)`: an estimate of the clean sample.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]` noisy sample, `sigma`: `[B]` -> `[B, C, H, W]`
    pub fn denoise<M: Denoiser + ?Sized>(&self, model: &M, x: Tensor<4>, sigma: Tensor<1>, cond: &M::Cond) -> Result<Tensor<4>> {
        check_sigma(&x, &sigma)?;
        let s = self.scalings(sigma);
        let f = model.denoise(x.clone() * per_sample(s.c_in.clone()), s.c_noise.clone(), cond)?;
        self.combine(x, f, &s)
    }

    /// [`denoise`](Self::denoise) with only the kept tokens of `mask` (removed patches hold
    /// `c_skip x + c_out * (the model's fill)`).
    pub fn denoise_masked<M: MaskedDenoiser + ?Sized>(
        &self,
        model: &M,
        x: Tensor<4>,
        sigma: Tensor<1>,
        cond: &M::Cond,
        mask: &TokenMask,
    ) -> Result<Tensor<4>> {
        check_sigma(&x, &sigma)?;
        let s = self.scalings(sigma);
        let f = model.denoise_masked(x.clone() * per_sample(s.c_in.clone()), s.c_noise.clone(), cond, mask)?;
        self.combine(x, f, &s)
    }

    fn reduce(&self, denoised: Tensor<4>, x0: Tensor<4>, sigma: Tensor<1>, mask: Option<(&TokenMask, usize)>) -> Result<EdmLoss> {
        let b = x0.dims()[0];
        let err = (denoised - x0).square() * per_sample(self.loss_weight(sigma.clone()));
        let per_sample = match mask {
            None => err.reshape([b as i64, -1]).mean_dim(1).reshape([b]),
            Some((m, p)) => m.kept_mean(patch_loss(err, p)?)?,
        };
        Ok(EdmLoss { loss: per_sample.clone().mean(), per_sample, sigma })
    }

    /// The weighted loss at given noise levels and noise, over the whole image.
    ///
    /// # Shapes
    /// - `x0`, `noise`: `[B, C, H, W]` (standard normal; scaled by `sigma` here), `sigma`: `[B]`
    pub fn loss_at<M: Denoiser + ?Sized>(
        &self,
        model: &M,
        x0: Tensor<4>,
        cond: &M::Cond,
        sigma: Tensor<1>,
        noise: Tensor<4>,
    ) -> Result<EdmLoss> {
        check_same("noise", &x0, &noise)?;
        let x = x0.clone() + noise * per_sample(sigma.clone());
        let d = self.denoise(model, x, sigma.clone(), cond)?;
        self.reduce(d, x0, sigma, None)
    }

    /// The weighted loss of a masked prediction, averaged over the kept patches of each
    /// sample (the reference: channel mean, `p x p` patch mean, mean over kept tokens), then
    /// over the batch; `None` is the whole image.
    pub fn masked_loss_at<M: MaskedDenoiser + ?Sized>(
        &self,
        model: &M,
        x0: Tensor<4>,
        cond: &M::Cond,
        sigma: Tensor<1>,
        noise: Tensor<4>,
        mask: Option<&TokenMask>,
    ) -> Result<EdmLoss> {
        let Some(mask) = mask else { return self.loss_at(model, x0, cond, sigma, noise) };
        check_same("noise", &x0, &noise)?;
        let x = x0.clone() + noise * per_sample(sigma.clone());
        let d = self.denoise_masked(model, x, sigma.clone(), cond, mask)?;
        self.reduce(d, x0, sigma, Some((mask, model.patch_size())))
    }

    /// Training loss with noise levels and noise drawn from `rng` (in that order).
    pub fn training_loss<M: Denoiser + ?Sized, R: Rng + ?Sized>(
        &self,
        model: &M,
        x0: Tensor<4>,
        cond: &M::Cond,
        rng: &mut R,
    ) -> Result<EdmLoss> {
        let device = x0.device();
        let sigma = self.sample_sigma(x0.dims()[0], rng, &device);
        let noise = randn(x0.dims(), rng, &device);
        self.loss_at(model, x0, cond, sigma, noise)
    }

    /// Masked training loss: noise levels, noise and then a mask at the model's
    /// [`train_mask_ratio`](MaskedDenoiser::train_mask_ratio) drawn from `rng` (ratio 0:
    /// unmasked, the final fine-tuning phase).
    pub fn masked_training_loss<M: MaskedDenoiser + ?Sized, R: Rng + ?Sized>(
        &self,
        model: &M,
        x0: Tensor<4>,
        cond: &M::Cond,
        rng: &mut R,
    ) -> Result<EdmLoss> {
        let device = x0.device();
        let b = x0.dims()[0];
        let sigma = self.sample_sigma(b, rng, &device);
        let noise = randn(x0.dims(), rng, &device);
        let mask = model.draw_train_mask(b, rng, &device)?;
        self.masked_loss_at(model, x0, cond, sigma, noise, mask.as_ref())
    }
}

/// EDM over the whole image, for any [`Denoiser`].
impl<M: Denoiser> Objective<M> for Edm {
    fn loss(&self, model: &M, x0: Tensor<4>, cond: &M::Cond, rng: &mut TrainRng) -> Result<Tensor<1>> {
        Ok(self.training_loss(model, x0, cond, rng)?.loss)
    }
}

/// EDM with masked training: each step masks at the model's own
/// [`train_mask_ratio`](MaskedDenoiser::train_mask_ratio) and averages the loss over the
/// kept patches (set the model's ratio to 0 for the unmasked fine-tuning phase).
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedEdm(pub Edm);

impl<M: MaskedDenoiser> Objective<M> for MaskedEdm {
    fn loss(&self, model: &M, x0: Tensor<4>, cond: &M::Cond, rng: &mut TrainRng) -> Result<Tensor<1>> {
        Ok(self.0.masked_training_loss(model, x0, cond, rng)?.loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::TokenMask;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn scalars(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// `F(x, t) = a * x + t` per pixel, recording its inputs; patch size 2.
    struct Affine {
        a: f32,
        seen: std::cell::RefCell<Vec<f32>>,
        ratio: f64,
    }

    impl Denoiser for Affine {
        type Cond = ();
        fn denoise(&self, x: Tensor<4>, t: Tensor<1>, _: &()) -> Result<Tensor<4>> {
            *self.seen.borrow_mut() = scalars(t.clone());
            let b = t.dims()[0];
            Ok(x * self.a + t.reshape([b, 1, 1, 1]))
        }
    }

    impl MaskedDenoiser for Affine {
        fn patch_size(&self) -> usize {
            2
        }
        fn num_tokens(&self) -> usize {
            4
        }
        fn train_mask_ratio(&self) -> f64 {
            self.ratio
        }
        fn denoise_masked(&self, x: Tensor<4>, t: Tensor<1>, c: &(), mask: &TokenMask) -> Result<Tensor<4>> {
            // removed patches get a huge value: they must not reach the loss
            let out = self.denoise(x, t, c)?;
            let [b, ch, h, w] = out.dims();
            let m = mask.mask.clone().reshape([b, 1, 2, 1, 2, 1]).expand([b, ch, 2, h / 2, 2, w / 2]);
            let m = m.reshape([b, ch, h, w]).bool();
            Ok(out.mask_fill(m, 1e6))
        }
    }

    #[test]
    fn scalings_match_the_formulas() {
        let d = Device::flex();
        let edm = EdmConfig::new().init().unwrap();
        let sigmas = [0.002f64, 0.5, 0.9, 3.0, 80.0];
        let s = edm.scalings(Tensor::from_floats(sigmas.map(|v| v as f32), &d));
        let (skip, out, cin, noise) = (scalars(s.c_skip), scalars(s.c_out), scalars(s.c_in), scalars(s.c_noise));
        let w = scalars(edm.loss_weight(Tensor::from_floats(sigmas.map(|v| v as f32), &d)));
        for (i, sg) in sigmas.iter().enumerate() {
            let (sd, r) = (0.9f64, (sg * sg + 0.81f64).sqrt());
            let close = |a: f32, b: f64| ((a as f64 - b) / b.abs().max(1e-3)).abs() < 1e-5;
            assert!(close(skip[i], sd * sd / (sg * sg + sd * sd)));
            assert!(close(out[i], sg * sd / r));
            assert!(close(cin[i], 1.0 / r));
            assert!(close(noise[i], sg.ln() / 4.0));
            assert!(close(w[i], (sg * sg + sd * sd) / (sg * sd).powi(2)));
            // the EDM identity: lambda * c_out^2 = 1 (unit effective loss weight)
            assert!(close(w[i] * out[i] * out[i], 1.0));
        }
        assert!(EdmConfig::new().with_sigma_data(0.0).init().is_err());
        assert!(EdmConfig::new().with_p_std(-1.0).init().is_err());
        assert_eq!(EdmConfig::karras().init().unwrap().sigma_data(), 0.5);
    }

    #[test]
    fn log_normal_sigmas_are_seeded_with_the_right_moments() {
        let d = Device::flex();
        let edm = EdmConfig::new().init().unwrap();
        let a = scalars(edm.sample_sigma(20000, &mut StdRng::seed_from_u64(1), &d));
        let b = scalars(edm.sample_sigma(20000, &mut StdRng::seed_from_u64(1), &d));
        assert_eq!(a, b);
        let logs: Vec<f64> = a.iter().map(|s| (*s as f64).ln()).collect();
        let mean = logs.iter().sum::<f64>() / logs.len() as f64;
        let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / logs.len() as f64;
        assert!((mean + 0.6).abs() < 0.03 && (var.sqrt() - 1.2).abs() < 0.03, "{mean} {var}");
    }

    #[test]
    fn preconditioned_denoiser_and_loss() {
        let d = Device::flex();
        let edm = EdmConfig::new().init().unwrap();
        let model = Affine { a: 0.5, seen: Default::default(), ratio: 0.0 };
        let mut rng = StdRng::seed_from_u64(3);
        let x0 = randn([2, 1, 4, 4], &mut rng, &d);
        let noise = randn([2, 1, 4, 4], &mut rng, &d);
        let sigma = Tensor::<1>::from_floats([0.3, 2.0], &d);
        let l = edm.loss_at(&model, x0.clone(), &(), sigma.clone(), noise.clone()).unwrap();
        // the network saw c_noise = ln(sigma) / 4
        let seen = model.seen.borrow().clone();
        assert!((seen[0] - 0.3f32.ln() / 4.0).abs() < 1e-6 && (seen[1] - 2f32.ln() / 4.0).abs() < 1e-6);
        // by hand
        let (xs, ns) = (x0.into_data().try_to_vec::<f32>().unwrap(), noise.into_data().try_to_vec::<f32>().unwrap());
        let mut want = [0f64; 2];
        for (i, s) in [0.3f64, 2.0].iter().enumerate() {
            let sd = 0.9f64;
            let r = (s * s + sd * sd).sqrt();
            for j in 0..16 {
                let (x0, n) = (xs[i * 16 + j] as f64, ns[i * 16 + j] as f64);
                let x = x0 + s * n;
                let f = 0.5 * x / r + s.ln() / 4.0;
                let dx = sd * sd / (s * s + sd * sd) * x + s * sd / r * f;
                want[i] += (s * s + sd * sd) / (s * sd).powi(2) * (dx - x0).powi(2) / 16.0;
            }
        }
        let got = scalars(l.per_sample);
        for i in 0..2 {
            assert!(((got[i] as f64 - want[i]) / want[i]).abs() < 1e-4, "{got:?} {want:?}");
        }
        let mean = l.loss.into_scalar::<f32>() as f64;
        assert!((mean - (want[0] + want[1]) / 2.0).abs() < 1e-4 * mean);
        // bad shapes
        assert!(edm.loss_at(&model, Tensor::zeros([2, 1, 4, 4], &d), &(), sigma.clone(), Tensor::zeros([2, 1, 4, 2], &d)).is_err());
        assert!(edm.denoise(&model, Tensor::zeros([2, 1, 4, 4], &d), Tensor::ones([3], &d), &()).is_err());
    }

    #[test]
    fn masked_loss_ignores_removed_patches() {
        let d = Device::flex();
        let edm = EdmConfig::new().init().unwrap();
        let model = Affine { a: 0.5, seen: Default::default(), ratio: 0.5 };
        let mut rng = StdRng::seed_from_u64(4);
        let x0 = randn([1, 2, 4, 4], &mut rng, &d);
        let noise = randn([1, 2, 4, 4], &mut rng, &d);
        let sigma = Tensor::<1>::from_floats([0.7], &d);
        let mask = TokenMask::from_binary(Tensor::from_floats([[1.0, 0.0, 0.0, 1.0]], &d)).unwrap();
        let masked = edm.masked_loss_at(&model, x0.clone(), &(), sigma.clone(), noise.clone(), Some(&mask)).unwrap();
        let v = masked.loss.into_scalar::<f32>();
        assert!(v.is_finite() && v < 1e3, "removed patches leaked into the loss: {v}");
        // equal to the unmasked per-pixel error averaged over the kept patches 1 and 2
        let x = x0.clone() + noise.clone() * 0.7;
        let full = edm.denoise(&model, x, sigma.clone(), &()).unwrap();
        let err = (full - x0.clone()).square() * edm.loss_weight(sigma.clone()).reshape([1, 1, 1, 1]);
        let per_token = patch_loss(err, 2).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert!((v - (per_token[1] + per_token[2]) / 2.0).abs() < 1e-5 * v.abs().max(1.0));
        // training draws a mask at the model's ratio; ratio 0 is the unmasked loss
        let l = edm.masked_training_loss(&model, x0.clone(), &(), &mut StdRng::seed_from_u64(5)).unwrap();
        assert!(l.loss.into_scalar::<f32>() < 1e3);
        let unmasked = Affine { a: 0.5, seen: Default::default(), ratio: 0.0 };
        let a = edm.masked_training_loss(&unmasked, x0.clone(), &(), &mut StdRng::seed_from_u64(5)).unwrap();
        let b = edm.training_loss(&unmasked, x0, &(), &mut StdRng::seed_from_u64(5)).unwrap();
        assert_eq!(a.loss.into_scalar::<f32>(), b.loss.into_scalar::<f32>());
    }
}
