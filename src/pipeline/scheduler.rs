//! The noise schedules a [`TextToImagePipeline`](crate::pipeline::TextToImagePipeline) samples
//! over, each producing the sampler's [`Plan`]:
//!
//! - [`FlowMatchScheduler`]: diffusers' `FlowMatchEulerDiscreteScheduler` (SD3 / SD3.5),
//!   `sigma_i` shifted by `s` (or `e^mu` with dynamic shifting), velocity prediction.
//! - [`EdmScheduler`]: EDM as micro_diffusion's `LatentDiffusion.edm_sampler_loop` samples
//!   MicroDiT: Karras sigmas then 0,
//!
//! ```text
//! sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,  i < N;  sigma_N = 0
//! x_N = sigma_0 z,  D(x, sigma) = c_skip x + c_out F(c_in x, ln(sigma) / 4)   (sigma_data)
//! ```
//!
//! with `sigma_min = 0.002`, `sigma_max = 80`, `rho = 7`, `sigma_data = 0.9` (see
//! [`crate::diffusion::edm`] for the coefficients).

use serde_json::Value;

use crate::diffusion::process::{EdmProcess, Plan, Process, RectifiedFlowProcess};
use crate::diffusion::timesteps::{SigmaSpacing, TimestepSchedule};
use crate::error::{Error, Result, ensure_config};

/// The `FlowMatchEulerDiscreteScheduler` options a text-to-image run uses, by diffusers' names.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowMatchScheduler {
    /// `num_train_timesteps`. Default: 1000.
    pub num_train_timesteps: usize,
    /// `shift` (SD3: 3.0). Default: 1.0.
    pub shift: f64,
    /// `use_dynamic_shifting`: `shift = e^mu` with `mu` linear in the image token count between
    /// `(base_image_seq_len, base_shift)` and `(max_image_seq_len, max_shift)`. Default: none.
    pub dynamic_shift: Option<[f64; 4]>,
}

impl Default for FlowMatchScheduler {
    fn default() -> Self {
        Self { num_train_timesteps: 1000, shift: 1.0, dynamic_shift: None }
    }
}

impl FlowMatchScheduler {
    /// Read diffusers' `scheduler_config.json` values (absent options take the class
    /// defaults).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for options of the wrong type and for options that change the
    /// sigmas in ways not supported here (Karras / exponential / beta sigmas, `invert_sigmas`,
    /// `shift_terminal`, stochastic sampling, a linear `time_shift_type`).
    pub fn from_diffusers_config(c: &Value) -> Result<Self> {
        let cfg = crate::text::config::JsonConfig::new(c);
        for flag in ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas", "stochastic_sampling"] {
            if c.get(flag).and_then(Value::as_bool) == Some(true) {
                return Err(Error::InvalidConfig(format!("scheduler option `{flag}` is not supported")));
            }
        }
        if c.get("shift_terminal").is_some_and(|v| !v.is_null()) {
            return Err(Error::InvalidConfig("scheduler option `shift_terminal` is not supported".into()));
        }
        let time_shift = cfg.string("time_shift_type", "exponential")?;
        ensure_config(time_shift == "exponential", || format!("time_shift_type `{time_shift}` is not supported"))?;
        let dynamic = c.get("use_dynamic_shifting").and_then(Value::as_bool) == Some(true);
        let dynamic_shift = if dynamic {
            Some([
                cfg.f64("base_image_seq_len", 256.0)?,
                cfg.f64("max_image_seq_len", 4096.0)?,
                cfg.f64("base_shift", 0.5)?,
                cfg.f64("max_shift", 1.15)?,
            ])
        } else {
            None
        };
        Ok(Self { num_train_timesteps: cfg.usize("num_train_timesteps", 1000)?, shift: cfg.f64("shift", 1.0)?, dynamic_shift })
    }

    /// The sampling plan of `steps` steps for images of `image_seq_len` patch tokens.
    ///
    /// # Errors
    /// Zero steps, an invalid shift.
    pub fn plan(&self, steps: usize, image_seq_len: usize) -> Result<Plan> {
        let mut schedule = TimestepSchedule::diffusers("FlowMatchEulerDiscreteScheduler")?;
        if let Some([base_len, max_len, base_shift, max_shift]) = self.dynamic_shift {
            // diffusers' `calculate_shift`
            let m = (max_shift - base_shift) / (max_len - base_len);
            schedule.mu = Some(image_seq_len as f64 * m + base_shift - m * base_len);
        }
        RectifiedFlowProcess::new(self.num_train_timesteps, self.shift)?.plan(steps, &schedule)
    }
}

/// EDM sampling options by micro_diffusion's `edm_config` names (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct EdmScheduler {
    /// `sigma_min`. Default: 0.002.
    pub sigma_min: f64,
    /// `sigma_max`. Default: 80.
    pub sigma_max: f64,
    /// `rho`, the Karras curvature. Default: 7.
    pub rho: f64,
    /// `sigma_data`, the preconditioning's data standard deviation. Default: 0.9 (MicroDiT).
    pub sigma_data: f64,
}

impl Default for EdmScheduler {
    fn default() -> Self {
        Self { sigma_min: 0.002, sigma_max: 80.0, rho: 7.0, sigma_data: 0.9 }
    }
}

impl EdmScheduler {
    /// The plan of `steps` Karras levels ending at `sigma = 0`.
    ///
    /// # Errors
    /// Zero steps, invalid sigmas, `rho` or `sigma_data`.
    pub fn plan(&self, steps: usize) -> Result<Plan> {
        EdmProcess::new(self.sigma_min, self.sigma_max, self.rho, self.sigma_data)?
            .plan(steps, &TimestepSchedule::new().with_sigmas(SigmaSpacing::Karras))
    }
}

/// The schedule of a text-to-image pipeline (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq)]
pub enum TextToImageScheduler {
    /// Flow matching (SD3 / SD3.5).
    Flow(FlowMatchScheduler),
    /// EDM with preconditioning (MicroDiT).
    Edm(EdmScheduler),
}

impl TextToImageScheduler {
    /// The sampling plan of `steps` steps for images of `image_seq_len` patch tokens (only
    /// flow matching with dynamic shifting depends on it).
    ///
    /// # Errors
    /// As [`FlowMatchScheduler::plan`] and [`EdmScheduler::plan`].
    pub fn plan(&self, steps: usize, image_seq_len: usize) -> Result<Plan> {
        match self {
            Self::Flow(s) => s.plan(steps, image_seq_len),
            Self::Edm(s) => s.plan(steps),
        }
    }
}

impl From<FlowMatchScheduler> for TextToImageScheduler {
    fn from(s: FlowMatchScheduler) -> Self {
        Self::Flow(s)
    }
}

impl From<EdmScheduler> for TextToImageScheduler {
    fn from(s: EdmScheduler) -> Self {
        Self::Edm(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scheduler_options_by_diffusers_names() {
        let s = FlowMatchScheduler::from_diffusers_config(&json!({"shift": 3.0, "num_train_timesteps": 1000})).unwrap();
        assert_eq!(s, FlowMatchScheduler { num_train_timesteps: 1000, shift: 3.0, dynamic_shift: None });
        assert_eq!(FlowMatchScheduler::from_diffusers_config(&json!({})).unwrap(), FlowMatchScheduler::default());
        for bad in [json!({"use_karras_sigmas": true}), json!({"shift_terminal": 0.1}), json!({"time_shift_type": "linear"}), json!({"shift": "3"})] {
            assert!(FlowMatchScheduler::from_diffusers_config(&bad).is_err(), "{bad}");
        }
        // dynamic shifting: mu linear in the token count, shift = e^mu (diffusers' calculate_shift)
        let d = FlowMatchScheduler::from_diffusers_config(&json!({"use_dynamic_shifting": true, "base_shift": 0.5,
            "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096})).unwrap();
        let mu: f64 = 1024.0 * (0.65 / 3840.0) + 0.5 - (0.65 / 3840.0) * 256.0;
        let fixed = FlowMatchScheduler { shift: mu.exp(), ..FlowMatchScheduler::default() };
        let (a, b) = (d.plan(4, 1024).unwrap(), fixed.plan(4, 1024).unwrap());
        for (x, y) in a.levels.iter().zip(&b.levels) {
            assert!((x.sigma - y.sigma).abs() < 1e-6, "{} {}", x.sigma, y.sigma);
        }
    }

    #[test]
    fn edm_plan_is_micro_diffusions_karras_schedule() {
        let s = TextToImageScheduler::from(EdmScheduler::default());
        let plan = s.plan(30, 0).unwrap();
        assert_eq!(plan.levels.len(), 30);
        assert_eq!(plan.init_noise_scale, 80.0);
        let (a, b) = (80f64.powf(1.0 / 7.0), 0.002f64.powf(1.0 / 7.0));
        for (i, l) in plan.levels.iter().enumerate() {
            let want = (a + i as f64 / 29.0 * (b - a)).powf(7.0);
            assert!((l.sigma - want).abs() <= 1e-12 * want, "{i}: {} {want}", l.sigma);
            assert!((l.timestep - want.ln() / 4.0).abs() < 1e-12);
            assert!((l.input_scale - 1.0 / (want * want + 0.81).sqrt()).abs() < 1e-12);
        }
        assert_eq!(plan.targets.last().unwrap().sigma, 0.0);
        assert!(EdmScheduler { rho: 0.0, ..EdmScheduler::default() }.plan(4).is_err());
        assert!(s.plan(0, 0).is_err());
    }
}
