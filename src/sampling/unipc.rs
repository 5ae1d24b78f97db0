//! UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast
//! Sampling of Diffusion Models", arXiv:2302.04867), as diffusers'
//! `UniPCMultistepScheduler` (data prediction, `solver_type` `bh1` / `bh2`, orders 1-3,
//! `lower_order_final`, `disable_corrector`), on every process (on a rectified flow this is
//! diffusers' `use_flow_sigmas`).
//!
//! With `lambda = ln(alpha / sigma)`, `h = lambda_t - lambda_s0`, `hh = -h`,
//! `B(h) = hh` (bh1) or `e^hh - 1` (bh2), `r_k = (lambda_{s_k} - lambda_s0) / h` and
//! `D_k = (m_k - m_0) / r_k` from earlier `x_0` predictions `m_k`, the predictor (UniP) is
//!
//! ```text
//! x_t = (sigma_t / sigma_s0) x - alpha_t (e^hh - 1) m_0 - alpha_t B(h) sum_k rho_k D_k
//! ```
//!
//! and the corrector (UniC), applied to the previous step's result once the model has been
//! evaluated there, adds `rho_c D_t` with `D_t = m_t - m_0`; the `rho` solve
//! `R rho = b`, `R_{ik} = r_k^i`, `b_i = i! phi_{i+1}(hh) / B(h)` (order 2 predictor: 1/2).

use burn::prelude::*;

use crate::diffusion::process::Level;
use crate::error::{Error, Result, ensure_config};
use crate::sampling::run::{At, Run};
use crate::contracts::Denoiser;
use crate::sampling::Sampler;

/// UniPC's `B(h)` (diffusers' `solver_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniPcVariant {
    /// `B(h) = h`.
    Bh1,
    /// `B(h) = e^h - 1` (default).
    Bh2,
}

/// UniPC (see the [module docs](self)); one model call per step.
#[derive(Debug, Clone, PartialEq)]
pub struct UniPc {
    /// Order 1-3.
    pub order: usize,
    /// `B(h)`.
    pub variant: UniPcVariant,
    /// Lower the order over the last steps. Default: true.
    pub lower_order_final: bool,
    /// Steps whose result is not corrected.
    pub disable_corrector: Vec<usize>,
}

impl UniPc {
    /// UniPC of `order` (1-3), bh2, diffusers' defaults.
    ///
    /// # Errors
    /// An order outside 1-3.
    pub fn new(order: usize) -> Result<Self> {
        ensure_config((1..=3).contains(&order), || format!("UniPC order must be 1, 2 or 3, got {order}"))?;
        Ok(Self { order, variant: UniPcVariant::Bh2, lower_order_final: true, disable_corrector: Vec::new() })
    }

    /// Sets `B(h)`.
    pub fn with_variant(mut self, variant: UniPcVariant) -> Self {
        self.variant = variant;
        self
    }

    /// `(h, hh, e^hh - 1, R rows, b)` for an update from `s0` to `t` with ratios `rks`
    /// (without the trailing 1), of `order`.
    fn coefficients(&self, s0: &Level, t: &Level, rks: &[f64], order: usize) -> (f64, f64, Vec<f64>, Vec<Vec<f64>>) {
        let h = t.lambda() - s0.lambda();
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = match self.variant {
            UniPcVariant::Bh1 => hh,
            UniPcVariant::Bh2 => hh.exp_m1(),
        };
        let mut r_all = rks.to_vec();
        r_all.push(1.0);
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let (mut rows, mut b) = (Vec::new(), Vec::new());
        for i in 1..=order {
            rows.push(r_all.iter().map(|r| r.powi(i as i32 - 1)).collect());
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        (h_phi_1, b_h, b, rows)
    }

    /// `(D_k, r_k)` for the `order - 1` predictions before the newest (`offset` = history
    /// index of `m_0`).
    fn differences(run: &Run<'_, impl Denoiser + ?Sized>, s0: &Level, h: f64, order: usize, offset: usize) -> Result<(Vec<Tensor<4>>, Vec<f64>)> {
        let m0 = &run.history.get(offset).ok_or_else(missing)?.0;
        let mut out = (Vec::new(), Vec::new());
        for k in 1..order {
            let (mk, lk) = run.history.get(offset + k).ok_or_else(missing)?;
            let rk = (lk.lambda() - s0.lambda()) / h;
            out.0.push((mk.clone() - m0.clone()) / rk);
            out.1.push(rk);
        }
        Ok(out)
    }

    fn update(x: Tensor<4>, s0: &Level, t: &Level, m0: Tensor<4>, h_phi_1: f64, b_h: f64, terms: Vec<(Tensor<4>, f64)>) -> Tensor<4> {
        let mut out = x * (t.sigma / s0.sigma) - m0 * (t.alpha * h_phi_1);
        for (d, rho) in terms {
            out = out - d * (t.alpha * b_h * rho);
        }
        out
    }
}

fn missing() -> Error {
    Error::InvalidArgument("UniPC history is shorter than its order".into())
}

/// Solves the small system `a x = b` (Gaussian elimination with partial pivoting).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap_or(c);
        if a[p][c] == 0.0 || !a[p][c].is_finite() {
            return Err(Error::Numerical("UniPC coefficient system is singular".into()));
        }
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            for k in c..n {
                a[r][k] -= f * a[c][k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        x[r] = (b[r] - (r + 1..n).map(|k| a[r][k] * x[k]).sum::<f64>()) / a[r][r];
    }
    Ok(x)
}

/// `order`, lowered so that no difference uses a level at `alpha = 0` (pure noise,
/// `lambda = -inf`: its `r_k` is infinite and its term `D_k = (m_k - m_0) / r_k` vanishes).
fn usable_order(run: &Run<'_, impl Denoiser + ?Sized>, order: usize) -> usize {
    (1..=order).rev().find(|&k| k == 1 || run.history.get(k - 1).is_some_and(|(_, l)| l.alpha > 0.0)).unwrap_or(1)
}

impl Sampler for UniPc {
    /// A level at `alpha = 0` (a rectified flow's `FlowMatch` plan starts there) needs the
    /// `bh2` variant, whose `B(h) = e^-h - 1` stays finite as `h -> inf` (`bh1`'s `B(h) = -h`
    /// does not); diffusers' `use_flow_sigmas` spacing (`FlowSigmas::UniPc`) avoids it.
    fn check(&self, plan: &crate::diffusion::process::Plan) -> Result<()> {
        if self.variant == UniPcVariant::Bh1 && plan.levels.iter().any(|l| l.alpha <= 0.0) {
            return Err(Error::InvalidConfig("UniPC bh1 needs alpha > 0 at every level (use bh2, or FlowSigmas::UniPc on a rectified flow)".into()));
        }
        Ok(())
    }

    fn step<M: Denoiser + ?Sized>(&self, run: &mut Run<'_, M>, i: usize, x: Tensor<4>) -> Result<Tensor<4>> {
        let n = run.plan().num_steps();
        let level = run.level(At::Level(i));
        let d = run.denoise(At::Level(i), x.clone())?;
        let mut x = x;
        // Corrector: refine the previous step's result with this evaluation.
        if let (true, Some(last)) = (i > 0 && !self.disable_corrector.contains(&(i - 1)), run.history.last_sample.clone()) {
            let order = usable_order(run, run.history.last_order);
            let s0 = run.history.get(0).ok_or_else(missing)?.1;
            let h = level.lambda() - s0.lambda();
            let (ds, rks) = Self::differences(run, &s0, h, order, 0)?;
            let (h_phi_1, b_h, b, rows) = self.coefficients(&s0, &level, &rks, order);
            let rhos = if order == 1 { vec![0.5] } else { solve(rows, b)? };
            let m0 = run.history.get(0).ok_or_else(missing)?.0.clone();
            let mut terms: Vec<(Tensor<4>, f64)> = ds.into_iter().zip(rhos.iter().copied()).collect();
            terms.push((d.x0.clone() - m0.clone(), rhos[rhos.len() - 1]));
            x = Self::update(last, &s0, &level, m0, h_phi_1, b_h, terms);
        }
        run.history.push(d.x0, level, 3);
        let this_order = if self.lower_order_final { self.order.min(n - i) } else { self.order };
        let this_order = usable_order(run, this_order.min(run.history.warm + 1));
        run.history.last_order = this_order;
        run.history.last_sample = Some(x.clone());
        // Predictor.
        let t = run.level(At::Target(i));
        let h = t.lambda() - level.lambda();
        let (ds, rks) = Self::differences(run, &level, h, this_order, 0)?;
        let (h_phi_1, b_h, b, rows) = self.coefficients(&level, &t, &rks, this_order);
        let rhos = match this_order {
            1 => vec![],
            2 => vec![0.5],
            _ => {
                let k = this_order - 1;
                solve(rows[..k].iter().map(|r| r[..k].to_vec()).collect(), b[..k].to_vec())?
            }
        };
        let m0 = run.history.get(0).ok_or_else(missing)?.0.clone();
        let out = Self::update(x, &level, &t, m0, h_phi_1, b_h, ds.into_iter().zip(rhos).collect());
        run.history.warm = (run.history.warm + 1).min(self.order);
        run.report(&out, At::Level(i))?;
        Ok(out)
    }
}
