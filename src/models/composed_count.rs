//! Exact parameter count and analytic compute of a [`ComposedDiTConfig`], from the parts'
//! own counts ([`BlockConfig::num_params`](crate::blocks::BlockConfig::num_params),
//! [`BlockConfig::macs`](crate::blocks::BlockConfig::macs)).

use crate::blocks::ConditionKind;
use crate::blocks::parts::ConditioningKind;
use crate::contracts::num_keep;
use crate::error::Result;
use crate::layers::swiglu::swiglu_hidden;
use crate::models::composed_config::{ComposedDiTConfig, HeadKind, StageLayout, StemKind};

fn lin(i: usize, o: usize) -> usize {
    i * o + o
}

impl ComposedDiTConfig {
    fn embedder_params(&self, w: usize) -> usize {
        let cond = match &self.condition {
            ConditionKind::None => 0,
            ConditionKind::Labels { num_classes, dropout_prob } => (num_classes + usize::from(*dropout_prob > 0.0)) * w,
            ConditionKind::Pooled { pooled_dim } => lin(*pooled_dim, w) + lin(w, w),
            ConditionKind::Caption { caption_channels, multiple_of, bias, .. } => {
                let b = usize::from(*bias);
                let norm_mlp = |i| lin(i, w) + w + lin(w, w);
                let hs = swiglu_hidden(4 * w, (*multiple_of).max(1));
                let prompt = 2 * w + (3 * w * w + b * 3 * w) + (w * w + b * w) + 2 * (w * hs + b * hs) + hs * w + b * w;
                norm_mlp(*caption_channels) + prompt + norm_mlp(w)
            }
        };
        lin(self.timestep_frequency_size, w) + lin(w, w) + cond
    }

    /// Every block config with its width and grid divisor, in order (mixer blocks first).
    fn all_blocks(&self) -> Vec<(crate::blocks::BlockConfig, usize)> {
        let d = self.hidden_size;
        let mixer = self.masking.as_ref().map_or(0, |m| m.mixer_depth);
        let mut out: Vec<_> = (0..mixer).map(|i| (self.mixer_block_config(i), 1)).collect();
        let mut index = 0;
        for (s, (w, g, n)) in self.stages.stages().into_iter().enumerate() {
            for _ in 0..n {
                out.push((self.block_config(index, s, w * d, true), g));
                index += 1;
            }
        }
        out
    }

    /// Exact parameter count (equals `Module::num_params` of the built model; the fixed
    /// sin-cos table and mask token included, as DiT counts its `pos_embed`).
    pub fn num_params(&self) -> usize {
        let (d, p, c) = (self.hidden_size, self.patch_size, self.in_channels);
        let g = self.grid_size();
        let p2c = p * p * self.out_channels();
        let mut n = match self.stem {
            StemKind::Patch => c * p * p * d + d + g * g * d,
            StemKind::Conv3x3 => c * 9 * d + d,
        };
        n += self.cond_widths().iter().map(|&w| self.embedder_params(w)).sum::<usize>();
        n += self.num_block_embedders() * self.embedder_params(d);
        if self.conditioning == ConditioningKind::AdaLnSingle {
            n += self.cond_widths().iter().map(|&w| lin(w, 6 * w)).sum::<usize>();
        }
        n += self.all_blocks().iter().map(|(b, _)| b.num_params()).sum::<usize>();
        if matches!(self.stages, StageLayout::UShaped { .. }) {
            // down(D), down(2D), up(4D), up(2D): bias-free 3x3 convs; the 1x1 skip fusions
            n += 9 * (d * d / 2 + 2 * d * d + 4 * d * 8 * d + 2 * d * 4 * d) + lin(4 * d, 2 * d) + lin(2 * d, 2 * d);
        }
        if let Some(m) = &self.masking {
            n += p2c;
            if self.has_mixer_maps() {
                let (w, b) = (self.mixer_width(), usize::from(m.map_bias));
                let maps = if matches!(self.condition, ConditionKind::Caption { .. }) { 2 } else { 1 };
                n += maps * (d + d * w + b * w) + w + w * d + b * d;
            }
        }
        let f = self.final_width();
        n + lin(f, 2 * f) + if self.final_norm_weight { f } else { 0 }
            + match self.head {
                HeadKind::Linear => lin(f, p2c),
                HeadKind::Conv3x3 => 9 * f * f + f + 9 * f * p2c + p2c,
            }
    }

    /// Analytic forward cost per sample in multiply-accumulates (the DiT paper's "Gflops"
    /// convention: matrix products and attention scores), with a fraction `mask_ratio` of the
    /// tokens removed after the patch-mixer (0: unmasked).
    ///
    /// # Errors
    /// A ratio outside `[0, 1)` or an MoE whose experts would take no token.
    pub fn flops(&self, mask_ratio: f64) -> Result<f64> {
        let (d, p, c) = (self.hidden_size, self.patch_size as f64, self.in_channels as f64);
        let g = self.grid_size();
        let n = g * g;
        let kept = num_keep(n, mask_ratio)?;
        let ctx = match &self.condition {
            ConditionKind::Caption { .. } => 0, // caption length is the caller's; not counted
            ConditionKind::None => 1,
            _ => 2,
        };
        let in_context = if self.conditioning == ConditioningKind::InContext { ctx } else { 0 };
        let uses_ctx = self.conditioning.needs_context() || self.attention.needs_context();
        let m = if uses_ctx || in_context > 0 { ctx } else { 0 };
        let stem_kernel = match self.stem {
            StemKind::Patch => p * p,
            StemKind::Conv3x3 => 9.0,
        };
        let mut f = n as f64 * c * stem_kernel * d as f64;
        let block_widths = std::iter::repeat_n(d, self.num_block_embedders());
        for w in self.cond_widths().into_iter().chain(block_widths) {
            let wf = w as f64;
            f += self.timestep_frequency_size as f64 * wf + wf * wf;
            if let ConditionKind::Pooled { pooled_dim } = &self.condition {
                f += *pooled_dim as f64 * wf + wf * wf;
            }
            if self.conditioning == ConditioningKind::AdaLnSingle {
                f += 6.0 * wf * wf;
            }
        }
        let mixer = self.masking.as_ref().map_or(0, |m| m.mixer_depth);
        let naive = self.masking.as_ref().is_some_and(|m| m.naive);
        let mixer_tokens = if naive && mask_ratio > 0.0 { kept } else { n };
        if self.has_mixer_maps() {
            f += (mixer_tokens + kept) as f64 * d as f64 * self.mixer_width() as f64;
        }
        for (i, (block, div)) in self.all_blocks().iter().enumerate() {
            let side = g / div;
            let tokens = if i < mixer { mixer_tokens } else if mask_ratio == 0.0 { side * side } else { kept };
            f += block.macs(tokens + in_context, [side, side], m)?;
        }
        if matches!(self.stages, StageLayout::UShaped { .. }) {
            let (df, g1, g2, g4) = (d as f64, (g * g) as f64, ((g / 2) * (g / 2)) as f64, ((g / 4) * (g / 4)) as f64);
            // resampling convs at their input grids, then the 1x1 skip fusions
            f += 9.0 * (g1 * df * df / 2.0 + g2 * 2.0 * df * df + g4 * 4.0 * df * 8.0 * df + g2 * 2.0 * df * 4.0 * df);
            f += g2 * 4.0 * df * 2.0 * df + g1 * 2.0 * df * 2.0 * df;
        }
        let fw = self.final_width() as f64;
        let out = (self.patch_size * self.patch_size * self.out_channels()) as f64;
        let final_tokens = (if mask_ratio == 0.0 { n } else { kept }) as f64;
        let head = match self.head {
            HeadKind::Linear => final_tokens * fw * out,
            HeadKind::Conv3x3 => 9.0 * final_tokens * (fw * fw + fw * out),
        };
        Ok(f + 2.0 * fw * fw + head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::parts::FeedForwardKind;
    use crate::models::{DiTConfig, MaskingConfig};
    use burn::module::Module;
    use burn::prelude::*;

    #[test]
    fn params_match_the_module_for_every_condition_and_layout() {
        let device = Device::flex();
        let caption =
            ConditionKind::Caption { caption_channels: 12, head_dim: 8, multiple_of: 8, bias: true, norm_eps: 1e-6 };
        let conditions = [
            ConditionKind::None,
            ConditionKind::Labels { num_classes: 5, dropout_prob: 0.1 },
            ConditionKind::Labels { num_classes: 5, dropout_prob: 0.0 },
            ConditionKind::Pooled { pooled_dim: 7 },
            caption,
        ];
        for condition in conditions {
            for u in [false, true] {
                let cfg = ComposedDiTConfig::new()
                    .with_input_size(16)
                    .with_hidden_size(16)
                    .with_head_dim(8)
                    .with_condition(condition.clone())
                    .with_conditioning(ConditioningKind::AdaLnSingle)
                    .with_feed_forward(FeedForwardKind::SwiGlu { multiple_of: 8 })
                    .with_learn_sigma(true);
                let cfg = match u {
                    true => cfg.with_stages(StageLayout::UShaped { depths: [1, 2, 1, 1, 1] }),
                    false => cfg.with_masking(Some(MaskingConfig::new().with_mixer_width(Some(8)).with_naive(true))),
                };
                assert_eq!(cfg.init(&device).unwrap().num_params(), cfg.num_params(), "{condition:?} u={u}");
                assert!(cfg.flops(0.0).unwrap() > 0.0);
            }
        }
    }

    #[test]
    fn dit_preset_of_the_parts_counts_as_dit() {
        for name in ["DiT-S/2", "DiT-B/4", "DiT-XL/2"] {
            let dit = DiTConfig::from_name(name).unwrap().with_learn_sigma(false);
            let (depth, hidden, heads) = (dit.depth, dit.hidden_size, dit.num_heads);
            let cfg = ComposedDiTConfig::new()
                .with_patch_size(dit.patch_size)
                .with_hidden_size(hidden)
                .with_head_dim(hidden / heads)
                .with_stages(StageLayout::Flat { depth });
            assert_eq!(cfg.num_params(), dit.num_params(), "{name}");
            let (a, b) = (cfg.flops(0.0).unwrap(), dit.flops());
            assert!((a / b - 1.0).abs() < 1e-12, "{name}: {a} vs {b}");
        }
    }

    #[test]
    fn masking_cuts_the_backbone_cost() {
        let cfg = ComposedDiTConfig::new().with_masking(Some(MaskingConfig::new().with_mixer_depth(1)));
        let (full, half) = (cfg.flops(0.0).unwrap(), cfg.flops(0.5).unwrap());
        assert!(half < 0.6 * full && half > 0.4 * full, "{half} vs {full}");
        assert!(cfg.flops(1.0).is_err());
    }
}
