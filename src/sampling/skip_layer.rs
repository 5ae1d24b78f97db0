//! Skip-layer guidance (SLG), as diffusers' `StableDiffusion3Pipeline` implements it for
//! SD3.5 (`skip_guidance_layers`, `skip_layer_guidance_{scale,start,stop}`), as a wrapper
//! around any guided [`Denoiser`].
//!
//! On top of an already guided prediction (usually classifier-free guidance), SLG pushes the
//! sample away from what the model predicts for the **conditional** branch when some of its
//! blocks are left out:
//!
//! ```text
//! out = guided + scale * (cond - cond_skip)
//! guided    = the wrapped guidance's output, e.g. uncond + cfg_scale * (cond - uncond)
//! cond      = model(x, t, cond)                      (the conditional prediction)
//! cond_skip = model(x, t, cond, skip_layers)         (same, the listed blocks passed through)
//! ```
//!
//! only at the steps `i` (0-based, of `N` sampling steps) with `N * start < i < N * stop`
//! (strict, as diffusers); other steps return `guided` unchanged. diffusers' defaults are
//! [`SLG_DEFAULT_SCALE`] 2.8, [`SLG_DEFAULT_START`] 0.01 and [`SLG_DEFAULT_STOP`] 0.2,
//! with layers [`SD35_MEDIUM_SKIP_LAYERS`] `[7, 8, 9]` recommended for SD3.5-medium. diffusers
//! applies SLG only when classifier-free guidance is on (`guidance_scale > 1`).
//!
//! The wrapper sees only the timestep of a call, so the step window is given as the run's
//! timesteps ([`SkipLayerGuidance::with_step_window`]); each call's step is the index of its
//! timestep there. On an active step it costs two model calls at batch `B` on top of the
//! guided one (diffusers reuses the conditional half of its CFG batch and needs one): the
//! result is the same.

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::contracts::{Denoiser, SkipLayerDenoiser};

/// diffusers' default `skip_layer_guidance_scale`.
pub const SLG_DEFAULT_SCALE: f64 = 2.8;
/// diffusers' default `skip_layer_guidance_start` (fraction of the steps).
pub const SLG_DEFAULT_START: f64 = 0.01;
/// diffusers' default `skip_layer_guidance_stop` (fraction of the steps).
pub const SLG_DEFAULT_STOP: f64 = 0.2;
/// The blocks Stability recommends skipping for SD3.5-medium.
pub const SD35_MEDIUM_SKIP_LAYERS: [usize; 3] = [7, 8, 9];

/// The SLG combination `guided + scale * (cond - cond_skip)`.
///
/// # Shapes
/// - `guided`, `cond`, `cond_skip`: `[B, C, H, W]` -> `[B, C, H, W]`
///
/// # Errors
/// Mismatched shapes or a non-finite scale.
pub fn skip_layer_guide(guided: Tensor<4>, cond: Tensor<4>, cond_skip: Tensor<4>, scale: f64) -> Result<Tensor<4>> {
    check_finite("skip-layer guidance scale", scale)?;
    for (name, t) in [("conditional prediction", &cond), ("skip-layer prediction", &cond_skip)] {
        if t.dims() != guided.dims() {
            return Err(Error::Shape {
                name: name.into(),
                expected: format!("{:?} (the guided prediction's shape)", guided.dims()),
                got: format!("{:?}", t.dims()),
            });
        }
    }
    Ok(guided + (cond - cond_skip) * scale)
}

/// Whether step `step` of `num_steps` is in diffusers' SLG window: `N * start < i < N * stop`.
pub fn in_step_window(step: usize, num_steps: usize, start: f64, stop: f64) -> bool {
    let (i, n) = (step as f64, num_steps as f64);
    i > n * start && i < n * stop
}

fn check_finite(name: &str, v: f64) -> Result<()> {
    if v.is_finite() { Ok(()) } else { Err(Error::InvalidArgument(format!("{name} must be finite, got {v}"))) }
}

/// The steps at which guidance applies: the run's timesteps and the `(start, stop)` fractions.
#[derive(Debug, Clone)]
struct StepWindow {
    timesteps: Vec<f32>,
    start: f64,
    stop: f64,
}

/// Skip-layer guidance around a guided denoiser `G` (e.g. a
/// [`ClassifierFreeGuidance`](crate::sampling::ClassifierFreeGuidance)) and the model `M`
/// whose layers are skipped; see the module docs for the formula.
///
/// ```
/// use burn::prelude::*;
/// use diffusion_transformers::models::MMDiTConfig;
/// use diffusion_transformers::contracts::{Denoiser, NullEmbedding};
/// use diffusion_transformers::diffusion::process::{Process, RectifiedFlowProcess};
/// use diffusion_transformers::diffusion::timesteps::TimestepSchedule;
/// use diffusion_transformers::sampling::{
///     ClassifierFreeGuidance, SkipLayerGuidance, SLG_DEFAULT_SCALE, SLG_DEFAULT_START, SLG_DEFAULT_STOP,
/// };
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let device = Device::flex();
/// let mmdit = MMDiTConfig::preset(2)?.with_num_layers(3).init(&device)?;
/// let cfg = ClassifierFreeGuidance::new(&mmdit, (NullEmbedding::Zeros, NullEmbedding::Zeros), 4.5)?;
/// let schedule = TimestepSchedule::diffusers("FlowMatchEulerDiscreteScheduler")?;
/// let plan = RectifiedFlowProcess::new(1000, 3.0)?.plan(28, &schedule)?;
/// let timesteps: Vec<f32> = plan.levels.iter().map(|l| l.timestep as f32).collect();
/// // skip block 1 of the conditional branch, on the steps diffusers would
/// let slg = SkipLayerGuidance::new(cfg, &mmdit, vec![1], SLG_DEFAULT_SCALE)?
///     .with_step_window(&timesteps, SLG_DEFAULT_START, SLG_DEFAULT_STOP)?;
/// let x = Tensor::<4>::zeros([1, 4, 16, 16], &device);
/// let t = Tensor::<1>::from_floats([timesteps[3]], &device);
/// let cond = (Tensor::<3>::zeros([1, 5, 64], &device), Tensor::<2>::zeros([1, 64], &device));
/// let v = slg.denoise(x, t, &cond)?; // [1, 4, 16, 16]
/// # Ok(()) }
/// ```
pub struct SkipLayerGuidance<G, M> {
    guided: G,
    model: M,
    skip_layers: Vec<usize>,
    scale: f64,
    window: Option<StepWindow>,
}

impl<G: Denoiser, M: SkipLayerDenoiser<Cond = G::Cond>> SkipLayerGuidance<G, M> {
    /// Skip-layer guidance on every call (see [`with_step_window`](Self::with_step_window))
    /// with `scale`, skipping `skip_layers` of `model`; `guided` gives the prediction it adds
    /// to (pass the model itself for SLG without classifier-free guidance).
    ///
    /// # Errors
    /// A non-finite scale, or a layer index `>= model.num_layers()`.
    pub fn new(guided: G, model: M, skip_layers: Vec<usize>, scale: f64) -> Result<Self> {
        check_finite("skip-layer guidance scale", scale)?;
        if let Some(i) = skip_layers.iter().find(|&&i| i >= model.num_layers()) {
            return Err(Error::InvalidArgument(format!(
                "skip layer {i} does not exist (the model has {} layers)",
                model.num_layers()
            )));
        }
        Ok(Self { guided, model, skip_layers, scale, window: None })
    }

    /// Guides only at the steps `i` with `N * start < i < N * stop`, where `N` is the number of
    /// `timesteps` (those the sampler passes to the model: the `timestep` of every level of the
    /// run's [`Plan`](crate::diffusion::process::Plan)) and
    /// `i` the index of a call's timestep among them.
    ///
    /// # Errors
    /// No timesteps, or a non-finite fraction.
    pub fn with_step_window(mut self, timesteps: &[f32], start: f64, stop: f64) -> Result<Self> {
        check_finite("skip_layer_guidance_start", start)?;
        check_finite("skip_layer_guidance_stop", stop)?;
        if timesteps.is_empty() {
            return Err(Error::InvalidArgument("the skip-layer guidance window needs the run's timesteps".into()));
        }
        self.window = Some(StepWindow { timesteps: timesteps.to_vec(), start, stop });
        Ok(self)
    }

    /// The skipped layers.
    pub fn skip_layers(&self) -> &[usize] {
        &self.skip_layers
    }

    /// The guidance scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Whether a call at timestep `t` guides: always without a window, otherwise when the
    /// step of `t` (its index among the window's timesteps) is inside it.
    ///
    /// # Errors
    /// A timestep that is not one of the window's.
    pub fn is_active(&self, t: f32) -> Result<bool> {
        let Some(w) = &self.window else { return Ok(true) };
        let step = w.timesteps.iter().position(|&s| (s - t).abs() <= 1e-4 * s.abs().max(1.0)).ok_or_else(|| {
            Error::InvalidArgument(format!("timestep {t} is not one of the skip-layer guidance window's timesteps"))
        })?;
        Ok(in_step_window(step, w.timesteps.len(), w.start, w.stop))
    }
}

impl<G: Denoiser, M: SkipLayerDenoiser<Cond = G::Cond>> Denoiser for SkipLayerGuidance<G, M> {
    type Cond = G::Cond;

    /// # Shapes
    /// As the wrapped denoisers; every row of `t` is taken to be at the step of `t[0]`.
    ///
    /// # Errors
    /// The models' errors, an empty `t`, or a timestep outside the step window's list.
    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
        let guided = self.guided.denoise(x.clone(), t.clone(), cond)?;
        let active = match &self.window {
            None => true,
            Some(_) => {
                let values = t.clone().into_data().convert_dtype(burn::tensor::DType::F32).try_into_vec::<f32>();
                let t0 = values.ok().and_then(|v| v.first().copied()).ok_or_else(|| Error::Shape {
                    name: "t".into(),
                    expected: "[B >= 1] float timesteps".into(),
                    got: format!("{:?}", t.dims()),
                })?;
                self.is_active(t0)?
            }
        };
        if !active {
            return Ok(guided);
        }
        let cond_pred = self.model.denoise(x.clone(), t.clone(), cond)?;
        let skipped = self.model.denoise_skipping(x, t, cond, &self.skip_layers)?;
        skip_layer_guide(guided, cond_pred, skipped, self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    /// A toy "transformer": `out = x * prod(w_i over the layers not skipped) + cond`.
    struct Toy {
        weights: Vec<f32>,
    }

    impl Denoiser for Toy {
        type Cond = f32;

        fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &f32) -> Result<Tensor<4>> {
            self.denoise_skipping(x, t, cond, &[])
        }
    }

    impl SkipLayerDenoiser for Toy {
        fn num_layers(&self) -> usize {
            self.weights.len()
        }

        fn denoise_skipping(&self, x: Tensor<4>, _t: Tensor<1>, cond: &f32, skip: &[usize]) -> Result<Tensor<4>> {
            let kept = self.weights.iter().enumerate().filter(|(i, _)| !skip.contains(i));
            let gain: f32 = kept.map(|(_, w)| w).product();
            Ok(x * gain + *cond)
        }
    }

    /// A stand-in for a guided prediction: `3 x`.
    struct Tripled;

    impl Denoiser for Tripled {
        type Cond = f32;

        fn denoise(&self, x: Tensor<4>, _t: Tensor<1>, _cond: &f32) -> Result<Tensor<4>> {
            Ok(x * 3.0)
        }
    }

    #[test]
    fn matches_the_hand_computation_inside_the_window_only() {
        let device = Device::flex();
        let toy = Toy { weights: vec![2.0, 0.5, 4.0] };
        let timesteps = [1000.0, 750.0, 500.0, 250.0];
        // N = 4, start 0.01, stop 0.5: active for 0.04 < i < 2, i.e. step 1 only
        let slg = SkipLayerGuidance::new(Tripled, &toy, vec![0, 2], 2.0)
            .unwrap()
            .with_step_window(&timesteps, 0.01, 0.5)
            .unwrap();
        let x = Tensor::<4>::from_floats([[[[1.0, -2.0]]]], &device);
        let run = |t: f32| slg.denoise(x.clone(), Tensor::from_floats([t], &device), &0.25).unwrap();
        // x = 1: guided 3, cond 1 * 2 * 0.5 * 4 + 0.25 = 4.25, skipped 1 * 0.5 + 0.25 = 0.75
        // out = 3 + 2 * (4.25 - 0.75) = 10; x = -2: -6 + 2 * (-7.75 - (-0.75)) = -20
        let tol = Tolerance::absolute(1e-6);
        run(750.0).into_data().assert_approx_eq::<f32>(&TensorData::from([[[[10.0f32, -20.0]]]]), tol);
        for t in [1000.0, 500.0, 250.0] {
            run(t).into_data().assert_approx_eq::<f32>(&TensorData::from([[[[3.0f32, -6.0]]]]), tol);
        }
        assert_eq!(
            [0, 1, 2, 3].map(|i| in_step_window(i, 4, 0.01, 0.5)),
            [false, true, false, false]
        );
        // diffusers' defaults over 28 steps: steps 1..=5
        let active: Vec<usize> =
            (0..28).filter(|&i| in_step_window(i, 28, SLG_DEFAULT_START, SLG_DEFAULT_STOP)).collect();
        assert_eq!(active, vec![1, 2, 3, 4, 5]);
        // without a window every call guides
        let always = SkipLayerGuidance::new(Tripled, &toy, vec![0, 2], 2.0).unwrap();
        let out = always.denoise(x.clone(), Tensor::from_floats([1.0], &device), &0.25).unwrap();
        out.into_data().assert_approx_eq::<f32>(&TensorData::from([[[[10.0f32, -20.0]]]]), tol);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let device = Device::flex();
        let toy = Toy { weights: vec![2.0, 0.5] };
        assert!(SkipLayerGuidance::new(Tripled, &toy, vec![2], 2.0).is_err());
        assert!(SkipLayerGuidance::new(Tripled, &toy, vec![1], f64::NAN).is_err());
        let slg = SkipLayerGuidance::new(Tripled, &toy, vec![1], 2.0).unwrap();
        assert!(slg.with_step_window(&[], 0.0, 1.0).is_err());
        let slg = SkipLayerGuidance::new(Tripled, &toy, vec![1], 2.0).unwrap().with_step_window(&[10.0, 5.0], 0.0, 1.0);
        let x = Tensor::<4>::zeros([1, 1, 1, 2], &device);
        let r = slg.unwrap().denoise(x.clone(), Tensor::from_floats([7.0], &device), &0.0);
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
        let small = Tensor::<4>::zeros([1, 1, 1, 1], &device);
        assert!(matches!(skip_layer_guide(x.clone(), x.clone(), small, 1.0), Err(Error::Shape { .. })));
        assert!(skip_layer_guide(x.clone(), x.clone(), x, f64::INFINITY).is_err());
    }
}
