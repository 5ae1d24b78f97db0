//! DPM-Solver++ (Lu et al. 2022, arXiv:2211.01095): multistep solvers of the diffusion ODE
//! (or SDE) in data prediction, as diffusers' `DPMSolverMultistepScheduler`
//! (`algorithm_type` `dpmsolver++` / `sde-dpmsolver++`, `solver_order` 1-3, `solver_type`
//! `midpoint` / `heun`, `lower_order_final`, `euler_at_final`), on every process: with
//! `lambda = ln(alpha / sigma)`, `h = lambda_t - lambda_s`, the first-order step is
//!
//! ```text
//! ODE: x_t = (sigma_t / sigma_s) x_s - alpha_t (e^-h - 1) D
//! SDE: x_t = (sigma_t / sigma_s) e^-h x_s + alpha_t (1 - e^-2h) D + sigma_t sqrt(1 - e^-2h) z
//! ```
//!
//! with `D` the `x_0` prediction, extrapolated from the previous one or two at higher orders
//! (`D1 = (m0 - m1) / r0`, `r0 = h_0 / h`, ...). On a rectified flow (`alpha = 1 - sigma`)
//! this is diffusers' `use_flow_sigmas`.

use burn::prelude::*;

use crate::diffusion::process::Plan;
use crate::error::{Result, ensure_config};
use crate::sampling::run::{At, Run};
use crate::contracts::Denoiser;
use crate::sampling::Sampler;

/// DPM-Solver++'s second-order update rule (diffusers' `solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverType {
    /// `midpoint` (default).
    Midpoint,
    /// `heun`.
    Heun,
}

/// DPM-Solver++ (see the [module docs](self)); one model call per step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpmSolverPp {
    /// Order 1, 2 (2M) or 3 (3M).
    pub order: usize,
    /// The SDE variant (`sde-dpmsolver++`), drawing noise at every step.
    pub sde: bool,
    /// The second-order rule.
    pub solver_type: SolverType,
    /// Lower the order over the last steps of short runs. Default: true.
    pub lower_order_final: bool,
    /// The last `first_order_final` steps are first order (0 in diffusers; 2 suits respaced
    /// DDPM plans, whose large last log-SNR jump makes a higher-order step into the smallest
    /// timestep overshoot). Default: 0.
    pub first_order_final: usize,
    /// First order at the last step. Default: false.
    pub euler_at_final: bool,
}

impl DpmSolverPp {
    /// DPM-Solver++ of `order` (1-3) with diffusers' defaults.
    ///
    /// # Errors
    /// An order outside 1-3.
    pub fn new(order: usize) -> Result<Self> {
        ensure_config((1..=3).contains(&order), || format!("DPM-Solver++ order must be 1, 2 or 3, got {order}"))?;
        Ok(Self { order, sde: false, solver_type: SolverType::Midpoint, lower_order_final: true, first_order_final: 0, euler_at_final: false })
    }

    /// The SDE variant (order 1-3).
    pub fn sde(mut self) -> Self {
        self.sde = true;
        self
    }

    fn step_order(&self, plan: &Plan, i: usize, warm: usize) -> usize {
        let n = plan.num_steps();
        let short = self.lower_order_final && n < 15;
        let final_zero = plan.targets[n - 1].sigma == 0.0;
        let lower_final = i == n - 1 && (self.euler_at_final || short || final_zero);
        let lower_second = i + 2 == n && short;
        if self.order == 1 || warm < 1 || lower_final || i + self.first_order_final >= n {
            1
        } else if self.order == 2 || warm < 2 || lower_second {
            2
        } else {
            3
        }
    }
}

impl Sampler for DpmSolverPp {
    fn step<M: Denoiser + ?Sized>(&self, run: &mut Run<'_, M>, i: usize, x: Tensor<4>) -> Result<Tensor<4>> {
        let plan = run.plan();
        let (s0, t) = (run.level(At::Level(i)), run.level(At::Target(i)));
        let d = run.denoise(At::Level(i), x.clone())?;
        run.history.push(d.x0, s0, 3);
        let order = self.step_order(plan, i, run.history.warm);
        let h = t.lambda() - s0.lambda();
        let m0 = run.history.get(0).map(|p| p.0.clone()).expect("just pushed");
        let (em, e2m) = ((-h).exp(), (-2.0 * h).exp());
        // The x_0 combination D0 + c1 D1 + c2 D2 for the chosen order.
        let (a_t, s_t) = (t.alpha, t.sigma);
        let (ode1, sde1) = (-(a_t * (em - 1.0)), a_t * (1.0 - e2m));
        let data = match order {
            1 => m0.clone() * if self.sde { sde1 } else { ode1 },
            2 => {
                let (m1, s1) = run.history.get(1).cloned().expect("order 2 has two predictions");
                let r0 = (s0.lambda() - s1.lambda()) / h;
                let d1 = (m0.clone() - m1) / r0;
                let c1 = match (self.sde, self.solver_type) {
                    (false, SolverType::Midpoint) => 0.5 * ode1,
                    (false, SolverType::Heun) => a_t * ((em - 1.0) / h + 1.0),
                    (true, SolverType::Midpoint) => 0.5 * sde1,
                    (true, SolverType::Heun) => a_t * ((1.0 - e2m) / (-2.0 * h) + 1.0),
                };
                m0.clone() * if self.sde { sde1 } else { ode1 } + d1 * c1
            }
            _ => {
                let (m1, s1) = run.history.get(1).cloned().expect("order 3 has three predictions");
                let (m2, s2) = run.history.get(2).cloned().expect("order 3 has three predictions");
                let (h0, h1) = (s0.lambda() - s1.lambda(), s1.lambda() - s2.lambda());
                let (r0, r1) = (h0 / h, h1 / h);
                let d1_0 = (m0.clone() - m1.clone()) / r0;
                let d1_1 = (m1 - m2) / r1;
                let d1 = d1_0.clone() + (d1_0.clone() - d1_1.clone()) * (r0 / (r0 + r1));
                let d2 = (d1_0 - d1_1) / (r0 + r1);
                let (c0, c1, c2) = if self.sde {
                    (sde1, a_t * ((1.0 - e2m) / (-2.0 * h) + 1.0), a_t * ((1.0 - e2m - 2.0 * h) / (2.0 * h).powi(2) - 0.5))
                } else {
                    (ode1, a_t * ((em - 1.0) / h + 1.0), -(a_t * ((em - 1.0 + h) / (h * h) - 0.5)))
                };
                m0.clone() * c0 + d1 * c1 + d2 * c2
            }
        };
        let out = if self.sde {
            let z = run.noise()?;
            x * (s_t / s0.sigma * em) + data + z * (s_t * (1.0 - e2m).max(0.0).sqrt())
        } else {
            x * (s_t / s0.sigma) + data
        };
        run.history.warm = (run.history.warm + 1).min(self.order);
        run.report(&out, At::Level(i))?;
        Ok(out)
    }
}
