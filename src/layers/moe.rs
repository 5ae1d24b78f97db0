//! Expert-choice mixture-of-experts feed-forward layer (Zhou et al. 2022, as MicroDiT's
//! `FeedForwardECMoe`: keys `gate.weight`, `w1`, `w2`).
//!
//! Every expert picks its `k = int(capacity * T / E)` highest-scoring tokens (scores are the
//! router's softmax over experts), runs its two-layer GELU MLP on them and scatter-adds the
//! result back, weighted by the router probability. A token may be chosen by several experts or
//! by none (it then gets a zero update); there is no auxiliary balancing loss.

use burn::module::Param;
use burn::nn::{Initializer, Linear};
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::activation::softmax;

use crate::cpu::{batched_matmul, gelu};

use crate::error::{Error, Result, ensure_config, ensure_dims};
use crate::layers::init::{WeightInit, linear};
use crate::layers::swiglu::round_up;

/// Configuration of an [`ExpertChoiceMoe`].
#[derive(Config, Debug)]
pub struct ExpertChoiceMoeConfig {
    /// Input and output width `D`.
    pub d_model: usize,
    /// Nominal expert hidden width; the actual one is rounded up to a multiple of `multiple_of`.
    pub d_hidden: usize,
    /// Number of experts `E`.
    pub num_experts: usize,
    /// Capacity factor `c`: each expert takes `int(c * T / E)` of the `T` tokens, so on average a
    /// token is processed by `c` experts. Default: 2.0.
    #[config(default = 2.0)]
    pub capacity: f64,
    /// Round the hidden width up to a multiple of this. Default: 1.
    #[config(default = 1)]
    pub multiple_of: usize,
    /// Standard deviation of the router and `w1` weights. Default: 0.02.
    #[config(default = 0.02)]
    pub init_std_in: f64,
    /// Standard deviation of the `w2` weights. Default: 0.02.
    #[config(default = 0.02)]
    pub init_std_out: f64,
}

/// Tokens each expert takes out of `tokens`: `int(capacity * tokens / num_experts)` as the
/// reference computes it; an error when that is zero or more than `tokens`.
pub fn tokens_per_expert(capacity: f64, num_experts: usize, tokens: usize) -> Result<usize> {
    if num_experts == 0 || capacity.is_nan() || capacity <= 0.0 {
        return Err(Error::InvalidConfig(format!(
            "expert-choice MoE needs experts > 0 and capacity > 0, got {num_experts} experts, capacity {capacity}"
        )));
    }
    let k = (capacity * tokens as f64 / num_experts as f64) as usize;
    if k == 0 || k > tokens {
        return Err(Error::InvalidConfig(format!(
            "expert capacity {capacity} with {num_experts} experts gives {k} tokens per expert out of \
             {tokens} (must be between 1 and {tokens})"
        )));
    }
    Ok(k)
}

impl ExpertChoiceMoeConfig {
    /// Actual expert hidden width.
    pub fn hidden(&self) -> usize {
        round_up(self.d_hidden, self.multiple_of.max(1))
    }

    /// Initialise an [`ExpertChoiceMoe`] (normal weights as the reference's `custom_init`).
    pub fn init(&self, device: &Device) -> Result<ExpertChoiceMoe> {
        let (d, e, h) = (self.d_model, self.num_experts, self.hidden());
        ensure_config(d > 0 && e > 0 && h > 0 && self.multiple_of > 0, || {
            format!("MoE sizes must be positive: {self:?}")
        })?;
        ensure_config(self.capacity > 0.0 && self.capacity <= e as f64, || {
            format!("MoE capacity must lie in (0, num_experts = {e}], got {}", self.capacity)
        })?;
        let normal = |std| Initializer::Normal { mean: 0.0, std };
        Ok(ExpertChoiceMoe {
            gate: linear(d, e, false, WeightInit::Normal(self.init_std_in), device),
            w1: normal(self.init_std_in).init([e, d, h], device),
            w2: normal(self.init_std_out).init([e, h, d], device),
            capacity: self.capacity,
        })
    }
}

/// Expert-choice MoE: `E` GELU MLPs `D -> hidden -> D` and a bias-free router.
#[derive(Module, Debug)]
pub struct ExpertChoiceMoe {
    /// Router `[D, E]` (no bias).
    pub gate: Linear,
    /// First expert matrices `[E, D, hidden]` (PyTorch layout, used as `x @ w1[e]`).
    pub w1: Param<Tensor<3>>,
    /// Second expert matrices `[E, hidden, D]`.
    pub w2: Param<Tensor<3>>,
    /// Capacity factor.
    pub capacity: f64,
}

/// What the router decided for a batch.
#[derive(Debug, Clone)]
pub struct Routing {
    /// Router probabilities of the chosen tokens, `[B, E, k]`, descending per expert.
    pub gates: Tensor<3>,
    /// The chosen token indices, `[B, E, k]`.
    pub token_ids: Tensor<3, Int>,
}

impl ExpertChoiceMoe {
    /// Number of experts.
    pub fn num_experts(&self) -> usize {
        self.w1.dims()[0]
    }

    /// Expert hidden width.
    pub fn hidden(&self) -> usize {
        self.w1.dims()[2]
    }

    /// Tokens each expert processes for a sequence of `tokens` tokens.
    pub fn tokens_per_expert(&self, tokens: usize) -> Result<usize> {
        tokens_per_expert(self.capacity, self.num_experts(), tokens)
    }

    /// Router: softmax over experts, then each expert's top-`k` tokens.
    ///
    /// # Shapes
    /// - `x`: `[B, T, D]` -> gates and token ids `[B, E, k]`
    pub fn route(&self, x: Tensor<3>) -> Result<Routing> {
        let [_, t, d] = x.dims();
        ensure_dims("x", [d], [Some(self.gate.weight.dims()[0])])?;
        let k = self.tokens_per_expert(t)?;
        // Router logits computed directly in `[B, E, T]` layout (`W^T x^T`): CubeCL's top-k
        // misreads a transposed view of `[B, T, E]` logits, so the sorted tensor must be a
        // fresh one.
        let w = self.gate.weight.val().transpose().unsqueeze_dim::<3>(0); // [1, E, D]
        let mut logits = w.matmul(x.swap_dims(1, 2)); // [B, E, T]
        if let Some(bias) = &self.gate.bias {
            logits = logits + bias.val().reshape([1, self.num_experts(), 1]);
        }
        let (gates, token_ids) = softmax(logits, 1).topk_with_indices(k, 2);
        Ok(Routing { gates, token_ids })
    }

    /// # Shapes
    /// - `x`: `[B, T, D]` -> `[B, T, D]`
    pub fn forward(&self, x: Tensor<3>) -> Result<Tensor<3>> {
        let [b, t, d] = x.dims();
        let Routing { gates, token_ids } = self.route(x.clone())?;
        let [_, e, k] = token_ids.dims();
        // Flat row indices `batch * T + token` in expert-major order `[E, B, k]`, so each expert's
        // tokens are contiguous for one batched matmul; `select` / `select_assign` on them avoid
        // materialising `[B, E*k, D]` index tensors.
        let offsets = Tensor::<1, Int>::arange(0..b as i64, &x.device()).mul_scalar(t as i64);
        let offsets: Tensor<1, Int> = offsets.cast(token_ids.dtype());
        let offsets = offsets.reshape([1, b, 1]);
        let rows = (token_ids.swap_dims(0, 1) + offsets).reshape([e * b * k]);
        let xin = x.reshape([b * t, d]).select(0, rows.clone()).reshape([e, b * k, d]);
        let h = batched_matmul(gelu(batched_matmul(xin, self.w1.val())), self.w2.val()); // [E, B*k, D]
        let h = h * gates.swap_dims(0, 1).reshape([e, b * k, 1]);
        let out = Tensor::<2>::zeros([b * t, d], &h.device());
        Ok(out.select_assign(0, rows, h.reshape([e * b * k, d]), IndexingUpdateOp::Add).reshape([b, t, d]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn randn(shape: [usize; 3], seed: u64, device: &Device) -> Tensor<3> {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    #[test]
    fn capacity_rules() {
        assert_eq!(tokens_per_expert(2.0, 4, 16).unwrap(), 8);
        assert_eq!(tokens_per_expert(2.0, 8, 4).unwrap(), 1);
        assert_eq!(tokens_per_expert(1.0, 8, 20).unwrap(), 2); // int(2.5)
        assert!(tokens_per_expert(1.0, 8, 4).is_err()); // zero tokens per expert
        assert!(tokens_per_expert(0.0, 8, 64).is_err());
        assert!(tokens_per_expert(2.0, 0, 64).is_err());
        let device = Device::flex();
        assert!(ExpertChoiceMoeConfig::new(8, 16, 4).with_capacity(5.0).init(&device).is_err());
        assert!(ExpertChoiceMoeConfig::new(8, 16, 0).init(&device).is_err());
        let moe = ExpertChoiceMoeConfig::new(8, 16, 4).with_capacity(1.0).init(&device).unwrap();
        assert!(moe.forward(Tensor::zeros([1, 3, 8], &device)).is_err()); // int(3/4) = 0
        assert!(moe.forward(Tensor::zeros([1, 8, 7], &device)).is_err()); // wrong width
    }

    #[test]
    fn each_expert_takes_exactly_its_capacity() {
        let device = Device::flex();
        let moe = ExpertChoiceMoeConfig::new(8, 12, 4).with_capacity(2.0).with_multiple_of(8).init(&device).unwrap();
        assert_eq!(moe.hidden(), 16);
        let x = randn([2, 10, 8], 1, &device);
        let r = moe.route(x).unwrap();
        assert_eq!(r.token_ids.dims(), [2, 4, 5]); // int(2 * 10 / 4)
        let ids = r.token_ids.into_data().convert::<i64>().try_into_vec::<i64>().unwrap();
        for chunk in ids.chunks(5) {
            let mut c = chunk.to_vec();
            c.sort_unstable();
            c.dedup();
            assert_eq!(c.len(), 5, "an expert chose a token twice: {chunk:?}");
            assert!(c.iter().all(|&i| (0..10).contains(&i)));
        }
        // gates are router probabilities: in (0, 1), sorted descending per expert
        let g = r.gates.into_data().try_into_vec::<f32>().unwrap();
        for chunk in g.chunks(5) {
            assert!(chunk.windows(2).all(|w| w[0] >= w[1]) && chunk.iter().all(|p| *p > 0.0 && *p < 1.0));
        }
    }

    #[test]
    fn output_is_gate_weighted_sum_of_choosing_experts() {
        let device = Device::flex();
        let moe = ExpertChoiceMoeConfig::new(6, 8, 3)
            .with_capacity(1.5)
            .with_init_std_in(0.5)
            .with_init_std_out(0.5)
            .init(&device)
            .unwrap();
        let (b, t, d) = (2, 8, 6);
        let x = randn([b, t, d], 7, &device);
        let out = moe.forward(x.clone()).unwrap().into_data().try_into_vec::<f32>().unwrap();
        // explicit loop: every token accumulates gate * expert(token) over the experts choosing it
        let probs = softmax(moe.gate.forward(x.clone()), 2).into_data().try_into_vec::<f32>().unwrap();
        let ids = moe.route(x.clone()).unwrap().token_ids.into_data().convert::<i64>().try_into_vec::<i64>().unwrap();
        let k = 4; // int(1.5 * 8 / 3)
        let mut expected = vec![0f32; b * t * d];
        for bi in 0..b {
            for e in 0..3 {
                let w1 = moe.w1.val().narrow(0, e, 1).reshape([d, 8]);
                let w2 = moe.w2.val().narrow(0, e, 1).reshape([8, d]);
                for j in 0..k {
                    let tok = ids[(bi * 3 + e) * k + j] as usize;
                    let xt = x.clone().slice([bi..bi + 1, tok..tok + 1]).reshape([1, d]);
                    let y = gelu(xt.matmul(w1.clone())).matmul(w2.clone()).into_data().try_into_vec::<f32>().unwrap();
                    let p = probs[(bi * t + tok) * 3 + e];
                    for c in 0..d {
                        expected[(bi * t + tok) * d + c] += p * y[c];
                    }
                }
            }
        }
        TensorData::new(out, [b, t, d])
            .assert_approx_eq::<f32>(&TensorData::new(expected, [b, t, d]), Tolerance::absolute(1e-5));
    }
}
