//! Classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance",
//! arXiv:2207.12598) as a composable wrapper around any [`Denoiser`].
//!
//! [`ClassifierFreeGuidance`] is itself a [`Denoiser`] with the wrapped model's conditioning
//! type, so every sampler of the crate (DDPM, DDIM, DPM-Solver++, flow Euler/Heun) takes it
//! unchanged. On each call it doubles the batch (`[x; x]`, `[t; t]`, `[cond; null]`), runs the
//! model once and combines the halves on the guided channels:
//!
//! `out = uncond + scale * (cond - uncond)`
//!
//! Every output channel is guided by default ([`GuidedChannels::All`]); the official DiT's
//! rule, guiding only the first three channels and taking the others (e.g. learned-variance
//! channels) from the conditional half, is the explicit option [`GuidedChannels::First`]`(3)`
//! ([`ClassifierFreeGuidance::dit_official`]). A guidance interval (Kynkaanniemi et al. 2024,
//! arXiv:2404.07724) applies guidance only within a sigma range and runs the plain
//! conditional model elsewhere. [`ClassifierFreeGuidance::for_model`] checks the null
//! conditioning against the model ([`NullConditioned`]).
//!
//! This wrapper is the crate's one classifier-free guidance: DiT's and U-DiT's
//! `forward_with_cfg` remain only as the official code's batch convention, checked against
//! it by the `dit_official` / `udit_official` fixtures. Other guidance rules (skip-layer guidance, APG) implement the
//! [`Guidance`] trait and wrap a model with [`Guided`].
//!
//! Conditionings are batched and nulled through the [`Conditioning`] contract.

use burn::prelude::*;

use crate::contracts::guidance::check_scale;
use crate::contracts::{Conditioning, Denoiser, GuidedChannels, NullConditioned, guide};
use crate::diffusion::process::Plan;
use crate::error::{Error, Result};

/// A guidance rule: how a guided prediction is made from a model (one or more passes).
/// Implement it for skip-layer guidance, APG, ... and wrap the model with [`Guided`].
pub trait Guidance<M: Denoiser + ?Sized> {
    /// The guided prediction of `model` at `x`, `t` for `cond`.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]`, `t`: `[B]` -> `[B, C_out, H, W]`
    ///
    /// # Errors
    /// The model's errors or mismatched shapes.
    fn guide(&self, model: &M, x: Tensor<4>, t: Tensor<1>, cond: &M::Cond) -> Result<Tensor<4>>;
}

/// A model wrapped with a [`Guidance`] rule, itself a [`Denoiser`] every sampler takes.
#[derive(Debug, Clone)]
pub struct Guided<M, G> {
    /// The model.
    pub model: M,
    /// The rule.
    pub guidance: G,
}

impl<M: Denoiser, G: Guidance<M>> Denoiser for Guided<M, G> {
    type Cond = M::Cond;

    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
        self.guidance.guide(&self.model, x, t, cond)
    }
}

/// Classifier-free guidance around any [`Denoiser`] whose conditioning is a [`Conditioning`].
///
/// ```
/// use burn::prelude::*;
/// use diffusion_transformers::models::DiTConfig;
/// use diffusion_transformers::contracts::{Denoiser, GuidedChannels};
/// use diffusion_transformers::sampling::ClassifierFreeGuidance;
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let device = Device::flex();
/// let dit = DiTConfig::new().with_input_size(8).with_hidden_size(32).with_depth(1)
///     .with_num_heads(2).with_num_classes(10).init(&device)?;
/// // Null class = num_classes; guide the first 3 channels like the official DiT.
/// let guided = ClassifierFreeGuidance::new(&dit, 10, 4.0)?.with_channels(GuidedChannels::First(3));
/// let x = Tensor::<4>::zeros([2, 4, 8, 8], &device);
/// let t = Tensor::<1>::from_floats([999.0, 999.0], &device);
/// let out = guided.denoise(x, t, &Some(Tensor::from_ints([1, 2], &device)))?; // [2, 8, 8, 8]
/// # Ok(()) }
/// ```
pub struct ClassifierFreeGuidance<M: Denoiser>
where
    M::Cond: Conditioning,
{
    model: M,
    null: <M::Cond as Conditioning>::Null,
    scale: f64,
    channels: GuidedChannels,
    batch_doubling: bool,
    interval: Option<(f64, f64)>,
}

impl<M: Denoiser> ClassifierFreeGuidance<M>
where
    M::Cond: Conditioning,
{
    /// Wraps `model` with guidance `scale` (1 = plain conditional model, 0 = unconditional),
    /// the null conditioning built from `null`, guiding every channel with one doubled-batch
    /// model call per step.
    ///
    /// # Errors
    /// A non-finite scale.
    pub fn new(model: M, null: <M::Cond as Conditioning>::Null, scale: f64) -> Result<Self> {
        check_scale(scale)?;
        Ok(Self { model, null, scale, channels: GuidedChannels::default(), batch_doubling: true, interval: None })
    }

    /// As [`new`](Self::new), after checking `null` against the model (a null class must be
    /// the model's `num_classes`, a given null embedding must have its conditioning's width).
    ///
    /// # Errors
    /// A null conditioning the model does not have, a non-finite scale.
    pub fn for_model(model: M, null: <M::Cond as Conditioning>::Null, scale: f64) -> Result<Self>
    where
        M: NullConditioned,
    {
        model.check_null(&null)?;
        Self::new(model, null, scale)
    }

    /// The official DiT's guidance: the first 3 channels (`forward_with_cfg`).
    ///
    /// # Errors
    /// A non-finite scale.
    pub fn dit_official(model: M, null: <M::Cond as Conditioning>::Null, scale: f64) -> Result<Self> {
        Ok(Self::new(model, null, scale)?.with_channels(GuidedChannels::First(3)))
    }

    /// Guides only at noise levels whose sigma lies in `[sigma_lo, sigma_hi]` (a guidance
    /// interval, Kynkaanniemi et al. 2024), converted to model times through `plan`
    /// ([`Plan::model_time_range`]); elsewhere the plain conditional model runs. The sigma is
    /// the plan's frame sigma: `sigma / alpha` for VP and EDM processes (EDM's sigma; the
    /// paper's ImageNet-512 interval is `(0.28, 5.42]`), the flow time `t` for rectified flows.
    ///
    /// # Errors
    /// A NaN or negative bound or `sigma_lo > sigma_hi` (`sigma_hi` may be infinite).
    pub fn with_interval(mut self, sigma_lo: f64, sigma_hi: f64, plan: &Plan) -> Result<Self> {
        if !(sigma_lo.is_finite() && sigma_lo >= 0.0 && sigma_lo <= sigma_hi) {
            return Err(Error::InvalidArgument(format!("guidance interval needs 0 <= sigma_lo <= sigma_hi, got [{sigma_lo}, {sigma_hi}]")));
        }
        self.interval = Some(plan.model_time_range(sigma_lo, sigma_hi));
        Ok(self)
    }

    /// Sets the guided channels.
    pub fn with_channels(mut self, channels: GuidedChannels) -> Self {
        self.channels = channels;
        self
    }

    /// `true` (default): one model call on the doubled batch; `false`: two calls on the
    /// original batch (half the peak memory, same result).
    pub fn with_batch_doubling(mut self, batch_doubling: bool) -> Self {
        self.batch_doubling = batch_doubling;
        self
    }

    /// The guidance scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The guided channels.
    pub fn channels(&self) -> GuidedChannels {
        self.channels
    }

    /// The wrapped model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Unwraps the model.
    pub fn into_inner(self) -> M {
        self.model
    }
}

impl<M: Denoiser> Denoiser for ClassifierFreeGuidance<M>
where
    M::Cond: Conditioning,
{
    type Cond = M::Cond;

    /// # Shapes
    /// - `x`: `[B, C, H, W]`, `t`: `[B]`, `cond` with batch `B` (the conditional half only)
    /// - output: `[B, C_out, H, W]`, guided on the configured channels
    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
        let b = x.dims()[0];
        crate::error::ensure_dims("t", t.dims(), [Some(b)])?;
        if let Some(cb) = cond.batch_size()
            && cb != b
        {
            return Err(Error::Shape { name: "conditioning".into(), expected: format!("batch {b}"), got: format!("batch {cb}") });
        }
        let outside = match self.interval {
            Some((lo, hi)) => {
                let tv = t.clone().into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default();
                tv.iter().all(|&v| (v as f64) < lo || (v as f64) > hi)
            }
            None => false,
        };
        if self.scale == 1.0 || outside {
            // uncond + 1 * (cond - uncond) == cond: skip the unconditional pass.
            return self.model.denoise(x, t, cond);
        }
        let null = cond.null_like(&self.null)?;
        let (c_out, u_out) = if self.batch_doubling {
            let both = M::Cond::concat_batch(cond, &null)?;
            let out = self.model.denoise(Tensor::cat(vec![x.clone(), x], 0), Tensor::cat(vec![t.clone(), t], 0), &both)?;
            let ob = out.dims()[0];
            if ob != 2 * b {
                return Err(Error::Shape { name: "model output".into(), expected: format!("batch {}", 2 * b), got: format!("batch {ob}") });
            }
            (out.clone().narrow(0, 0, b), out.narrow(0, b, b))
        } else {
            (self.model.denoise(x.clone(), t.clone(), cond)?, self.model.denoise(x, t, &null)?)
        };
        guide(c_out, u_out, self.scale, self.channels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::NullEmbedding;
    use crate::diffusion::process::{Process, RectifiedFlowProcess};
    use crate::diffusion::timesteps::TimestepSchedule;
    use crate::test_util::randn;
    use burn::tensor::Tolerance;

    /// A toy conditional model: output channel k = x_k * (1 + mean(cond)) + k.
    struct Toy;
    impl Denoiser for Toy {
        type Cond = Tensor<2>;
        fn denoise(&self, x: Tensor<4>, _t: Tensor<1>, cond: &Tensor<2>) -> Result<Tensor<4>> {
            let [b, c, h, w] = x.dims();
            let m = cond.clone().mean_dim(1).reshape([b, 1, 1, 1]);
            let k = Tensor::<1, Int>::arange(0..c as i64, &x.device()).float().reshape([1, c, 1, 1]);
            Ok(x.clone() * (m + 1.0) + k.expand([b, c, h, w]))
        }
    }

    /// A label model: output = x + label (as float), one channel per input channel.
    struct Labels;
    impl Denoiser for Labels {
        type Cond = Option<Tensor<1, Int>>;
        fn denoise(&self, x: Tensor<4>, _t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
            let b = x.dims()[0];
            let y = cond.clone().unwrap().float().reshape([b, 1, 1, 1]);
            Ok(x + y)
        }
    }

    #[test]
    fn guidance_matches_formula_on_guided_channels_only() {
        let device = Device::flex();
        let x = Tensor::<4>::ones([2, 4, 2, 2], &device);
        let t = Tensor::<1>::zeros([2], &device);
        let y = Some(Tensor::<1, Int>::from_ints([1, 3], &device));
        let g = ClassifierFreeGuidance::dit_official(Labels, 10, 2.0).unwrap();
        let out = g.denoise(x.clone(), t.clone(), &y).unwrap();
        // cond = 1 + y, uncond = 1 + 10; guided = 11 + 2 * (y - 10) on channels 0..3.
        let expected = TensorData::from([
            [[[-7.0f32; 2]; 2], [[-7.0; 2]; 2], [[-7.0; 2]; 2], [[2.0; 2]; 2]],
            [[[-3.0; 2]; 2], [[-3.0; 2]; 2], [[-3.0; 2]; 2], [[4.0; 2]; 2]],
        ]);
        out.into_data().assert_approx_eq::<f32>(&expected, Tolerance::default());
        let all = g.with_channels(GuidedChannels::All).denoise(x, t, &y).unwrap();
        let v = all.into_data().try_to_vec::<f32>().unwrap();
        assert!(v[..16].iter().all(|&a| a == -7.0) && v[16..].iter().all(|&a| a == -3.0));
    }

    #[test]
    fn doubling_and_two_passes_agree_with_manual_guidance() {
        let device = Device::flex();
        let x = randn([3, 4, 2, 2], 1, &device);
        let t = Tensor::<1>::zeros([3], &device);
        let cond = randn([3, 5], 2, &device);
        let manual = guide(
            Toy.denoise(x.clone(), t.clone(), &cond).unwrap(),
            Toy.denoise(x.clone(), t.clone(), &cond.zeros_like()).unwrap(),
            4.0,
            GuidedChannels::First(3),
        )
        .unwrap();
        for doubling in [true, false] {
            let g = ClassifierFreeGuidance::new(&Toy, NullEmbedding::Zeros, 4.0)
                .unwrap()
                .with_channels(GuidedChannels::First(3))
                .with_batch_doubling(doubling);
            let out = g.denoise(x.clone(), t.clone(), &cond).unwrap();
            out.into_data().assert_approx_eq::<f32>(&manual.clone().into_data(), Tolerance::default());
        }
        // Scale 1 is the conditional model, scale 0 the unconditional one.
        let one = ClassifierFreeGuidance::new(&Toy, NullEmbedding::Zeros, 1.0).unwrap().denoise(x.clone(), t.clone(), &cond).unwrap();
        one.into_data().assert_approx_eq::<f32>(&Toy.denoise(x.clone(), t.clone(), &cond).unwrap().into_data(), Tolerance::default());
        let zero = ClassifierFreeGuidance::new(&Toy, NullEmbedding::Zeros, 0.0).unwrap().with_channels(GuidedChannels::All);
        zero.denoise(x.clone(), t.clone(), &cond)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&Toy.denoise(x, t, &cond.zeros_like()).unwrap().into_data(), Tolerance::default());
    }

    #[test]
    fn interval_turns_guidance_off_outside_and_guided_wraps_rules() {
        let device = Device::flex();
        let x = Tensor::<4>::ones([2, 2, 2, 2], &device);
        let y = Some(Tensor::<1, Int>::from_ints([1, 3], &device));
        // A flow plan: levels at sigma 1, 0.8, ..., 0.2, model time 1000 sigma.
        let plan = RectifiedFlowProcess::new(1000, 1.0).unwrap().plan(5, &TimestepSchedule::new()).unwrap();
        let g = ClassifierFreeGuidance::new(Labels, 10, 2.0).unwrap().with_interval(0.3, 0.7, &plan).unwrap();
        let at = |t: f64| g.denoise(x.clone(), Tensor::full([2], t as f32, &device), &y).unwrap().into_data().try_to_vec::<f32>().unwrap()[0];
        for l in &plan.levels {
            let guided = (0.3..=0.7).contains(&l.sigma);
            assert_eq!(at(l.timestep), if guided { -7.0 } else { 2.0 }, "{l:?}"); // 11 + 2 (2 - 11) or x + y
        }
        // The interval empty of plan levels: never guided.
        let none = ClassifierFreeGuidance::new(Labels, 10, 2.0).unwrap().with_interval(0.41, 0.42, &plan).unwrap();
        assert!(plan.levels.iter().all(|l| none.denoise(x.clone(), Tensor::full([2], l.timestep as f32, &device), &y).unwrap().into_data().try_to_vec::<f32>().unwrap()[0] == 2.0));
        assert!(ClassifierFreeGuidance::new(Labels, 10, 2.0).unwrap().with_interval(5.0, 1.0, &plan).is_err());
        assert!(ClassifierFreeGuidance::new(Labels, 10, 2.0).unwrap().with_interval(f64::NAN, 1.0, &plan).is_err());
        struct Double;
        impl<M: Denoiser> Guidance<M> for Double {
            fn guide(&self, model: &M, x: Tensor<4>, t: Tensor<1>, cond: &M::Cond) -> Result<Tensor<4>> {
                Ok(model.denoise(x, t, cond)? * 2.0)
            }
        }
        let d = Guided { model: Labels, guidance: Double };
        assert_eq!(d.denoise(x, Tensor::zeros([2], &device), &y).unwrap().into_data().try_to_vec::<f32>().unwrap()[0], 4.0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let device = Device::flex();
        let x = Tensor::<4>::ones([2, 4, 2, 2], &device);
        let t = Tensor::<1>::zeros([2], &device);
        assert!(ClassifierFreeGuidance::new(Labels, 10, f64::NAN).is_err());
        let g = ClassifierFreeGuidance::new(Labels, 10, 3.0).unwrap();
        assert!(g.denoise(x.clone(), t.clone(), &Some(Tensor::from_ints([1, 2, 3], &device))).is_err());
        assert!(g.denoise(x.clone(), Tensor::zeros([3], &device), &Some(Tensor::from_ints([1, 2], &device))).is_err());
        let g = g.with_channels(GuidedChannels::First(5));
        assert!(g.denoise(x.clone(), t.clone(), &Some(Tensor::from_ints([1, 2], &device))).is_err());
        assert!(guide(x.clone(), Tensor::ones([2, 3, 2, 2], &device), 2.0, GuidedChannels::All).is_err());
        assert!(guide(x.clone(), x, 2.0, GuidedChannels::First(0)).is_err());
    }
}
