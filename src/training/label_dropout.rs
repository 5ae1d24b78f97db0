//! Label dropout for classifier-free guidance: a training [`Objective`] wrapper that replaces
//! each class label by the null class with probability `p` before the wrapped objective sees
//! the batch.
//!
//! Classifier-free guidance samples with `uncond + s (cond - uncond)`, where `uncond` is the
//! model's prediction for the null class (DiT: label `num_classes`, the label table's extra
//! row). The crate's objectives (DDPM, rectified flow, EDM) call the model through
//! [`Denoiser::denoise`], which never drops a label; without this wrapper the null row keeps
//! its random initialisation and guidance mixes in a prediction the model never learned.
//! DiT trains with `p = 0.1` (`class_dropout_prob`).
//!
//! ```
//! use diffusion_transformers::diffusion::RectifiedFlowConfig;
//! use diffusion_transformers::training::LabelDropout;
//!
//! # fn main() -> Result<(), diffusion_transformers::Error> {
//! // 10 classes: the null class is 10.
//! let objective = LabelDropout::new(RectifiedFlowConfig::new().init()?, 10, 0.1)?;
//! # let _ = objective;
//! # Ok(()) }
//! ```

use burn::prelude::*;

use crate::contracts::{Denoiser, Objective, TrainRng};
use crate::error::{Result, ensure_config};
use crate::layers::label_embed::random_drop_mask;

/// An objective whose class labels are dropped to the null class with probability `prob`
/// (one independent draw per sample from the training RNG, before the wrapped objective
/// draws its timesteps and noise).
#[derive(Debug, Clone)]
pub struct LabelDropout<O> {
    objective: O,
    null: usize,
    prob: f64,
}

impl<O> LabelDropout<O> {
    /// Wraps `objective`; `null` is the model's null class (DiT: `num_classes`), `prob` in
    /// `[0, 1)` (0 drops nothing and draws nothing).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for `prob` outside `[0, 1)` or a
    /// null class that the integer tensors cannot hold.
    pub fn new(objective: O, null: usize, prob: f64) -> Result<Self> {
        ensure_config((0.0..1.0).contains(&prob), || format!("label dropout must lie in [0, 1), got {prob}"))?;
        ensure_config(i32::try_from(null).is_ok(), || format!("null class {null} does not fit the integer tensors"))?;
        Ok(Self { objective, null, prob })
    }

    /// The wrapped objective.
    pub fn objective(&self) -> &O {
        &self.objective
    }

    /// The null class.
    pub fn null(&self) -> usize {
        self.null
    }

    /// The dropout probability.
    pub fn prob(&self) -> f64 {
        self.prob
    }
}

/// Class-labelled models (`Option<Tensor<1, Int>>` conditioning; `None`, an unconditional
/// model, passes through without draws).
impl<M, O> Objective<M> for LabelDropout<O>
where
    M: Denoiser<Cond = Option<Tensor<1, Int>>>,
    O: Objective<M>,
{
    /// # Errors
    /// The wrapped objective's; a null class the model's label table lacks is reported by the
    /// model's label check.
    fn loss(&self, model: &M, x0: Tensor<4>, cond: &M::Cond, rng: &mut TrainRng) -> Result<Tensor<1>> {
        let cond = match cond {
            Some(y) if self.prob > 0.0 => {
                let mask = random_drop_mask(y.dims()[0], self.prob, rng, &y.device());
                Some(y.clone().mask_fill(mask, self.null as i64))
            }
            other => other.clone(),
        };
        self.objective.loss(model, x0, &cond, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A model with class labels (its prediction is unused).
    struct Labels;

    impl Denoiser for Labels {
        type Cond = Option<Tensor<1, Int>>;

        fn denoise(&self, x: Tensor<4>, _t: Tensor<1>, _c: &Self::Cond) -> Result<Tensor<4>> {
            Ok(x)
        }
    }

    /// An objective whose loss is the sum of the labels it sees.
    struct Sum;

    impl Objective<Labels> for Sum {
        fn loss(&self, _m: &Labels, _x0: Tensor<4>, cond: &Option<Tensor<1, Int>>, _r: &mut TrainRng) -> Result<Tensor<1>> {
            Ok(cond.clone().expect("labels").float().sum())
        }
    }

    /// How many of 1000 labels (all 0) reach the objective as the null class 10.
    fn dropped(prob: f64, seed: u64) -> i64 {
        let device = Device::flex();
        let wrapped = LabelDropout::new(Sum, 10, prob).unwrap();
        let n = 1000;
        let y = Tensor::<1, Int>::zeros([n], &device);
        let x0 = Tensor::<4>::zeros([n, 1, 1, 1], &device);
        let total = wrapped.loss(&Labels, x0, &Some(y), &mut TrainRng::seed_from_u64(seed)).unwrap().into_scalar::<f32>();
        (total / 10.0).round() as i64
    }

    #[test]
    fn drops_about_prob_of_the_labels_reproducibly() {
        let n = dropped(0.1, 3);
        assert!((60..=140).contains(&n), "{n} of 1000 dropped at p = 0.1");
        assert_eq!(n, dropped(0.1, 3), "same seed, same drops");
        assert_eq!(dropped(0.0, 3), 0, "p = 0 drops nothing");
    }

    #[test]
    fn rejects_bad_probabilities() {
        assert!(LabelDropout::new(Sum, 10, 1.0).is_err());
        assert!(LabelDropout::new(Sum, 10, -0.1).is_err());
        assert!(LabelDropout::new(Sum, usize::MAX, 0.1).is_err());
    }
}
