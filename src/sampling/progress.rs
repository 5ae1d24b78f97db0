//! Progress reporting for samplers: every sampler of the crate calls a [`ProgressCallback`]
//! once per model evaluation step, so a user can drive a progress bar or log timings.

/// What a sampler reports after each step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Steps completed so far, `1..=total_steps`.
    pub step: usize,
    /// Number of steps of the whole run.
    pub total_steps: usize,
    /// The time of the step just taken, in the model's own scale (DDPM: the original
    /// timestep index the model saw; flow matching: the continuous time / sigma).
    pub timestep: f64,
}

impl Progress {
    /// Fraction of the run completed, in `(0, 1]`.
    pub fn fraction(&self) -> f64 {
        if self.total_steps == 0 { 1.0 } else { self.step as f64 / self.total_steps as f64 }
    }
}

/// Receives a [`Progress`] after every sampler step.
///
/// Implemented for every `FnMut(&Progress)` closure and for [`NoProgress`]:
///
/// ```
/// use diffusion_transformers::sampling::{Progress, ProgressCallback};
/// let mut seen = Vec::new();
/// let mut cb = |p: &Progress| seen.push(p.step);
/// cb.on_step(&Progress { step: 1, total_steps: 2, timestep: 999.0 });
/// assert_eq!(seen, vec![1]);
/// ```
pub trait ProgressCallback {
    /// Called once after each step.
    fn on_step(&mut self, progress: &Progress);

    /// Called once after each step with the sample it produced (in the process's
    /// coordinates); the default forwards to [`ProgressCallback::on_step`]. Implement it to
    /// record trajectories.
    fn on_sample(&mut self, progress: &Progress, sample: &burn::tensor::Tensor<4>) {
        let _ = sample;
        self.on_step(progress);
    }
}

impl<F: FnMut(&Progress)> ProgressCallback for F {
    fn on_step(&mut self, progress: &Progress) {
        self(progress)
    }
}

/// A callback that ignores every report.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl ProgressCallback for NoProgress {
    fn on_step(&mut self, _progress: &Progress) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closures_and_no_progress_are_callbacks() {
        let mut steps = Vec::new();
        {
            let mut cb = |p: &Progress| steps.push((p.step, p.fraction()));
            let cb: &mut dyn ProgressCallback = &mut cb;
            cb.on_step(&Progress { step: 1, total_steps: 4, timestep: 10.0 });
            cb.on_step(&Progress { step: 4, total_steps: 4, timestep: 0.0 });
        }
        assert_eq!(steps, vec![(1, 0.25), (4, 1.0)]);
        NoProgress.on_step(&Progress { step: 1, total_steps: 1, timestep: 0.0 });
    }
}
