//! MicroDiT (Sehwag et al. 2024, "Stretching Each Dollar: Diffusion Training from Scratch on a
//! Micro-Budget", arXiv:2407.15811), matching SonyResearch/micro_diffusion
//! `micro_diffusion/models/dit.py`.
//!
//! The pieces, each usable on its own and in any combination:
//!
//! - **patch-mixer**: a few transformer blocks over *all* patch tokens before masking, so that
//!   the kept tokens carry information about the whole image (`use_patch_mixer`);
//! - **deferred masking**: the backbone sees only `floor(N (1 - ratio))` tokens chosen after the
//!   patch-mixer ([`MaskingMode::Deferred`]), or before it ([`MaskingMode::Naive`], the paper's
//!   baseline); removed positions are filled with `mask_token` after the final layer;
//! - **expert-choice MoE** feed-forwards in every `experts_every_n`-th block;
//! - **layer-wise scaling**: per-block attention and feed-forward widths from
//!   `qkv_multipliers` / `ffn_multipliers` (linearly spaced in the presets);
//! - **caption conditioning** ([`MicroDiTBackbone::MicroDiT`]): caption tokens go through an MLP
//!   and an attention block, are cross-attended by every block, and their pooled mean (through
//!   another MLP) is added to the timestep embedding that drives adaLN;
//! - or a **plain class-conditional DiT backbone** ([`MicroDiTBackbone::DiT`]): DiT's
//!   adaLN-Zero blocks, timestep and label embedders and final layer, with the same
//!   patch-mixer, masking, MoE and layer-wise scaling on top (a masked, sparse DiT). Without
//!   those extras it is exactly DiT and loads official DiT checkpoints.
//!
//! ```
//! use burn::prelude::*;
//! use diffusion_transformers::contracts::TokenMask;
//! use diffusion_transformers::models::{MicroDiTCond, MicroDiTConfig};
//! use rand::SeedableRng;
//!
//! # fn main() -> Result<(), diffusion_transformers::Error> {
//! let device = Device::flex();
//! // `MicroDiTConfig::from_name("MicroDiT_XL_2")` is the paper's 1.16B model; a small one here
//! let cfg = MicroDiTConfig::new().with_input_size(8).with_dim(32).with_depth(4).with_head_dim(8)
//!     .with_multiple_of(16).with_caption_channels(24).with_patch_mixer_depth(2)
//!     .with_patch_mixer_dim(32).with_num_experts(4).with_expert_capacity(2.0)
//!     .with_layerwise_scaling([0.5, 1.0], [0.5, 4.0]);
//! let model = cfg.init(&device)?;
//! let x = Tensor::<4>::zeros([2, 4, 8, 8], &device);
//! let t = Tensor::<1>::from_floats([0.1, -0.3], &device); // EDM: ln(sigma) / 4
//! let captions = MicroDiTCond::Caption(Tensor::zeros([2, 7, 24], &device));
//! let out = model.forward(x.clone(), t.clone(), &captions)?; // [2, 4, 8, 8]
//! // training: the backbone sees 4 of the 16 tokens
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! let mask = TokenMask::random(2, 16, 0.75, &mut rng, &device)?;
//! let masked = model.forward_masked(x, t, &captions, &mask)?;
//! assert_eq!((out.dims(), masked.dims(), mask.num_kept()), ([2, 4, 8, 8], [2, 4, 8, 8], 4));
//! # Ok(()) }
//! ```

use burn::module::Param;
use burn::prelude::*;
use rand::Rng;

use crate::blocks::microdit_block::{
    BlockStyle, MicroDiTBlock, MicroDiTBlockConfig, MicroFinalLayer, NormLinear, NormMlp, PromptBlock,
};
use crate::error::{Error, Result, ensure_config, ensure_dims, ensure_positive};
use crate::layers::activation::Activation;
use crate::layers::init::frozen_param;
use crate::layers::label_embed::random_drop_mask;
use crate::contracts::{MaskedDenoiser, TokenMask, num_keep};
use crate::layers::moe::tokens_per_expert;
use crate::layers::patch_embed::unpatchify;
use crate::layers::pos_embed::sincos_2d_from_coords;
use crate::layers::swiglu::swiglu_hidden;
use crate::layers::{LabelEmbedder, LabelEmbedderConfig, PatchEmbed, PatchEmbedConfig};
use crate::layers::{TimestepEmbedder, TimestepEmbedderConfig};
use crate::contracts::{BatchShard, Conditioning, Denoiser, NullEmbedding};

/// Which backbone and conditioning a [`MicroDiT`] uses.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MicroDiTBackbone {
    /// The reference text-to-image MicroDiT: caption embeddings, MicroDiT blocks
    /// ([`BlockStyle::MicroDiT`]), 512-frequency tanh-GELU timestep embedder.
    MicroDiT,
    /// A class-conditional DiT: label embedder, DiT adaLN-Zero blocks ([`BlockStyle::DiT`]),
    /// DiT's 256-frequency SiLU timestep embedder and final layer.
    DiT,
}

impl MicroDiTBackbone {
    /// The block design of this backbone.
    pub fn block_style(self) -> BlockStyle {
        match self {
            MicroDiTBackbone::MicroDiT => BlockStyle::MicroDiT,
            MicroDiTBackbone::DiT => BlockStyle::DiT,
        }
    }

    fn frequency_size(self) -> usize {
        match self {
            MicroDiTBackbone::MicroDiT => 512,
            MicroDiTBackbone::DiT => 256,
        }
    }
}

/// Where tokens are dropped when a mask is applied.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MaskingMode {
    /// After the patch-mixer (MicroDiT's deferred masking).
    Deferred,
    /// Right after the patch embedding, before the patch-mixer (the paper's naive baseline).
    Naive,
}

/// The named presets of the reference (`MicroDiT_Tiny_2`, `MicroDiT_XL_2`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum MicroDiTSize {
    /// `MicroDiT_Tiny_2`: width 512, depth 16, head width 32, 4 mixer blocks of width 512.
    Tiny,
    /// `MicroDiT_XL_2`: width 1024, depth 28, head width 64, 6 mixer blocks of width 768
    /// (the paper's 1.16B-parameter sparse model).
    XL,
}

/// `numpy.linspace(start, end, num)`: `start + i * (end - start) / (num - 1)`, the last value
/// exactly `end`.
pub fn linspace(start: f64, end: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (end - start) / (num - 1) as f64;
    (0..num).map(|i| if i + 1 == num { end } else { start + i as f64 * step }).collect()
}

/// Configuration of a [`MicroDiT`]; field names and defaults follow the reference `DiT`
/// constructor.
#[derive(Config, Debug)]
pub struct MicroDiTConfig {
    /// Latent height = width. Default: 32.
    #[config(default = 32)]
    pub input_size: usize,
    /// Patch size `p`. Default: 2.
    #[config(default = 2)]
    pub patch_size: usize,
    /// Latent channels (output channels too). Default: 4.
    #[config(default = 4)]
    pub in_channels: usize,
    /// Backbone width `D`. Default: 1152.
    #[config(default = 1152)]
    pub dim: usize,
    /// Number of backbone blocks. Default: 28.
    #[config(default = 28)]
    pub depth: usize,
    /// Width of one attention head. Default: 64.
    #[config(default = 64)]
    pub head_dim: usize,
    /// Feed-forward hidden widths are rounded up to a multiple of this. Default: 256.
    #[config(default = 256)]
    pub multiple_of: usize,
    /// Width of the caption embeddings (MicroDiT backbone). Default: 1024.
    #[config(default = 1024)]
    pub caption_channels: usize,
    /// Position-table interpolation: positions are divided by it (1.0 at 256px, 2.0 at 512px
    /// in the reference). Default: 1.0.
    #[config(default = 1.0)]
    pub pos_interp_scale: f64,
    /// LayerNorm epsilon. Default: 1e-6.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// Output-projection init std `0.02 / sqrt(2 (i + 1))` for block `i` (else
    /// `0.02 / sqrt(2 depth)`). Default: true.
    #[config(default = true)]
    pub depth_init: bool,
    /// Attention-width multipliers: one per block, or fewer that divide `depth` (each repeated
    /// over an equal run of blocks). Default: `[1.0]`.
    #[config(default = "vec![1.0]")]
    pub qkv_multipliers: Vec<f64>,
    /// Feed-forward-width multipliers, same length as `qkv_multipliers`. Default: `[4.0]`.
    #[config(default = "vec![4.0]")]
    pub ffn_multipliers: Vec<f64>,
    /// Run a patch-mixer before masking. Default: true.
    #[config(default = true)]
    pub use_patch_mixer: bool,
    /// Patch-mixer blocks. Default: 4.
    #[config(default = 4)]
    pub patch_mixer_depth: usize,
    /// Patch-mixer width (in/out maps are added when it differs from `dim`). Default: 512.
    #[config(default = 512)]
    pub patch_mixer_dim: usize,
    /// Patch-mixer attention-width multiplier. Default: 1.0.
    #[config(default = 1.0)]
    pub patch_mixer_qkv_ratio: f64,
    /// Patch-mixer feed-forward-width multiplier. Default: 1.0.
    #[config(default = 1.0)]
    pub patch_mixer_mlp_ratio: f64,
    /// Biases in attention, SwiGLU and patch-mixer maps (MicroDiT backbone). Default: true.
    #[config(default = true)]
    pub use_bias: bool,
    /// Experts per MoE feed-forward. Default: 8.
    #[config(default = 8)]
    pub num_experts: usize,
    /// Expert capacity factor. Default: 1.0.
    #[config(default = 1.0)]
    pub expert_capacity: f64,
    /// Every `n`-th block (`(i + 1) % n == 0`) has an MoE feed-forward; the last backbone block
    /// and the first mixer block never do; 0 disables MoE. Default: 2.
    #[config(default = 2)]
    pub experts_every_n: usize,
    /// Backbone and conditioning. Default: MicroDiT (captions).
    #[config(default = "MicroDiTBackbone::MicroDiT")]
    pub backbone: MicroDiTBackbone,
    /// Number of classes (DiT backbone). Default: 1000.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Train-time condition dropout of [`MicroDiT::forward_train`]: labels become the null
    /// class (DiT backbone; a positive value adds the null row), captions become zero
    /// embeddings (the reference's `cap_drop_prob`). Default: 0.1.
    #[config(default = 0.1)]
    pub cond_dropout_prob: f64,
    /// Predict the variance too (doubles the output channels, DiT backbone). Default: false.
    #[config(default = false)]
    pub learn_sigma: bool,
    /// Where masks are applied. Default: deferred (after the patch-mixer).
    #[config(default = "MaskingMode::Deferred")]
    pub masking: MaskingMode,
    /// Mask ratio of [`MicroDiT::forward_train`]; 0 trains unmasked (the final fine-tuning
    /// phase). Default: 0.0.
    #[config(default = 0.0)]
    pub train_mask_ratio: f64,
}

impl MicroDiTConfig {
    /// The reference preset `MicroDiT_{Tiny,XL}_2` with its defaults: captions of width 1024,
    /// linearly spaced multipliers qkv 0.5 -> 1.0 and FFN 0.5 -> 4.0, 8 experts of capacity 2
    /// in every second block, no biases.
    pub fn preset(size: MicroDiTSize) -> Self {
        let (dim, depth, head_dim, mixer_depth, mixer_dim) = match size {
            MicroDiTSize::Tiny => (512, 16, 32, 4, 512),
            MicroDiTSize::XL => (1024, 28, 64, 6, 768),
        };
        Self::new()
            .with_dim(dim)
            .with_depth(depth)
            .with_head_dim(head_dim)
            .with_multiple_of(256)
            .with_caption_channels(1024)
            .with_patch_mixer_depth(mixer_depth)
            .with_patch_mixer_dim(mixer_dim)
            .with_patch_mixer_qkv_ratio(1.0)
            .with_patch_mixer_mlp_ratio(4.0)
            .with_use_bias(false)
            .with_num_experts(8)
            .with_expert_capacity(2.0)
            .with_experts_every_n(2)
            .with_layerwise_scaling([0.5, 1.0], [0.5, 4.0])
    }

    /// Parse a preset name: `"MicroDiT_Tiny_2"` or `"MicroDiT_XL_2"`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "MicroDiT_Tiny_2" => Ok(Self::preset(MicroDiTSize::Tiny)),
            "MicroDiT_XL_2" => Ok(Self::preset(MicroDiTSize::XL)),
            _ => Err(Error::InvalidConfig(format!(
                "unknown MicroDiT preset `{name}` (expected MicroDiT_Tiny_2 or MicroDiT_XL_2)"
            ))),
        }
    }

    /// Layer-wise scaling as the presets build it: per-block multipliers
    /// `linspace(qkv[0], qkv[1], depth)` and `linspace(ffn[0], ffn[1], depth)`. Call it after
    /// setting `depth`.
    pub fn with_layerwise_scaling(self, qkv: [f64; 2], ffn: [f64; 2]) -> Self {
        let d = self.depth.max(1);
        self.with_qkv_multipliers(linspace(qkv[0], qkv[1], d)).with_ffn_multipliers(linspace(ffn[0], ffn[1], d))
    }

    /// Output channels (`2 * in_channels` with `learn_sigma`).
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma { 2 * self.in_channels } else { self.in_channels }
    }

    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.input_size / self.patch_size.max(1)
    }

    /// Number of image tokens `N`.
    pub fn num_tokens(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Per-block `(qkv, ffn)` multipliers, expanded to `depth` entries as the reference does.
    pub fn block_ratios(&self) -> Result<Vec<(f64, f64)>> {
        let (q, f) = (&self.qkv_multipliers, &self.ffn_multipliers);
        ensure_config(!q.is_empty() && q.len() == f.len(), || {
            format!("qkv_multipliers ({}) and ffn_multipliers ({}) must be non-empty and of equal length", q.len(), f.len())
        })?;
        ensure_config(self.depth.is_multiple_of(q.len()), || {
            format!("depth {} is not divisible by the {} width multipliers", self.depth, q.len())
        })?;
        let run = self.depth / q.len();
        Ok(q.iter().zip(f).flat_map(|(&a, &b)| std::iter::repeat_n((a, b), run)).collect())
    }

    /// Which backbone blocks have an MoE feed-forward: `(i + 1) % experts_every_n == 0`, never
    /// the last block.
    pub fn backbone_moe_blocks(&self) -> Vec<bool> {
        let n = self.experts_every_n;
        (0..self.depth).map(|i| n > 0 && i + 1 < self.depth && (i + 1) % n == 0).collect()
    }

    /// Which patch-mixer blocks have an MoE feed-forward: `(i + 1) % experts_every_n == 0`,
    /// never the first block.
    pub fn mixer_moe_blocks(&self) -> Vec<bool> {
        let n = self.experts_every_n;
        let depth = if self.use_patch_mixer { self.patch_mixer_depth } else { 0 };
        (0..depth).map(|i| n > 0 && i >= 1 && (i + 1) % n == 0).collect()
    }

    /// Configuration of backbone block `i` (layer-wise scaled widths).
    pub fn block_config(&self, i: usize) -> Result<MicroDiTBlockConfig> {
        let ratios = self.block_ratios()?;
        let (q, f) = *ratios.get(i).ok_or_else(|| Error::InvalidArgument(format!("no block {i}")))?;
        let std = if self.depth_init {
            0.02 / (2.0 * (i + 1) as f64).sqrt()
        } else {
            0.02 / (2.0 * self.depth as f64).sqrt()
        };
        Ok(self.common_block(self.dim, q, f, self.backbone_moe_blocks()[i], std))
    }

    /// Configuration of patch-mixer block `i`.
    pub fn mixer_block_config(&self, i: usize) -> MicroDiTBlockConfig {
        let moe = self.mixer_moe_blocks().get(i).copied().unwrap_or(false);
        let std = 0.02 / (2.0 * self.depth as f64).sqrt();
        self.common_block(self.patch_mixer_dim, self.patch_mixer_qkv_ratio, self.patch_mixer_mlp_ratio, moe, std)
    }

    fn common_block(&self, d: usize, qkv: f64, ffn: f64, moe: bool, std: f64) -> MicroDiTBlockConfig {
        MicroDiTBlockConfig::new(d, self.dim, self.head_dim)
            .with_qkv_ratio(qkv)
            .with_mlp_ratio(ffn)
            .with_multiple_of(self.multiple_of)
            .with_style(self.backbone.block_style())
            .with_bias(self.use_bias)
            .with_norm_eps(self.norm_eps)
            .with_moe(moe)
            .with_num_experts(self.num_experts)
            .with_expert_capacity(self.expert_capacity)
            .with_init_std(std)
    }

    fn has_mixer_maps(&self) -> bool {
        self.use_patch_mixer && self.patch_mixer_dim != self.dim
    }

    /// Tokens seen by the patch-mixer and by the backbone at mask ratio `ratio`.
    fn token_counts(&self, ratio: f64) -> Result<(usize, usize)> {
        let n = self.num_tokens();
        let k = num_keep(n, ratio)?;
        let mixer = if self.masking == MaskingMode::Naive { k } else { n };
        Ok((mixer, k))
    }

    /// Checks every size constraint; called by [`init`](Self::init).
    pub fn validate(&self) -> Result<()> {
        ensure_positive(&[
            ("input_size", self.input_size),
            ("patch_size", self.patch_size),
            ("in_channels", self.in_channels),
            ("dim", self.dim),
            ("depth", self.depth),
            ("head_dim", self.head_dim),
            ("multiple_of", self.multiple_of),
        ])?;
        ensure_config(self.input_size.is_multiple_of(self.patch_size), || {
            format!("input_size {} is not divisible by patch_size {}", self.input_size, self.patch_size)
        })?;
        ensure_config(self.dim.is_multiple_of(self.head_dim), || {
            format!("dim {} is not divisible by head_dim {}", self.dim, self.head_dim)
        })?;
        ensure_config(self.pos_interp_scale > 0.0, || "pos_interp_scale must be positive".into())?;
        ensure_config((0.0..1.0).contains(&self.train_mask_ratio), || {
            format!("train_mask_ratio must lie in [0, 1), got {}", self.train_mask_ratio)
        })?;
        ensure_config((0.0..1.0).contains(&self.cond_dropout_prob), || {
            format!("cond_dropout_prob must lie in [0, 1), got {}", self.cond_dropout_prob)
        })?;
        match self.backbone {
            MicroDiTBackbone::MicroDiT => {
                ensure_config(self.caption_channels > 0, || "caption_channels must be positive".into())?;
                ensure_config(!self.learn_sigma, || "learn_sigma is only available with the DiT backbone".into())?;
            }
            MicroDiTBackbone::DiT => ensure_config(self.num_classes > 0, || "num_classes must be positive".into())?,
        }
        if self.use_patch_mixer {
            ensure_config(self.patch_mixer_depth > 0 && self.patch_mixer_dim > 0, || {
                "the patch-mixer needs a positive depth and width".into()
            })?;
            ensure_config(self.patch_mixer_dim.is_multiple_of(self.head_dim), || {
                format!("patch_mixer_dim {} is not divisible by head_dim {}", self.patch_mixer_dim, self.head_dim)
            })?;
        }
        for i in 0..self.depth {
            self.block_config(i)?.validate()?;
        }
        for i in 0..self.mixer_moe_blocks().len() {
            self.mixer_block_config(i).validate()?;
        }
        let any_moe = self.backbone_moe_blocks().iter().chain(&self.mixer_moe_blocks()).any(|m| *m);
        if any_moe {
            ensure_config(self.num_experts > 0, || "MoE blocks need num_experts > 0".into())?;
            ensure_config(self.expert_capacity > 0.0 && self.expert_capacity <= self.num_experts as f64, || {
                format!("expert_capacity must lie in (0, num_experts], got {}", self.expert_capacity)
            })?;
        }
        // every expert must take at least one token, unmasked and at the training mask ratio
        for ratio in [0.0, self.train_mask_ratio] {
            let (mixer, backbone) = self.token_counts(ratio)?;
            if self.mixer_moe_blocks().iter().any(|m| *m) {
                tokens_per_expert(self.expert_capacity, self.num_experts, mixer)?;
            }
            if self.backbone_moe_blocks().iter().any(|m| *m) {
                tokens_per_expert(self.expert_capacity, self.num_experts, backbone)?;
            }
        }
        Ok(())
    }

    /// Number of parameters as the reference's `model.parameters()` counts them (the fixed
    /// `pos_embed` and `mask_token` buffers excluded; see [`num_buffer_elements`](Self::num_buffer_elements)).
    pub fn num_params(&self) -> usize {
        self.count_params().0
    }

    /// Parameters used per token: as [`num_params`](Self::num_params), with every MoE layer
    /// counted as `expert_capacity` experts (the expected number of experts processing a token
    /// under expert-choice routing) instead of all `num_experts`.
    pub fn num_active_params(&self) -> usize {
        self.count_params().1.round() as usize
    }

    /// Elements of the persisted but untrained buffers (`pos_embed`, `mask_token`), which a
    /// [`MicroDiT`] module stores as frozen parameters.
    pub fn num_buffer_elements(&self) -> usize {
        self.num_tokens() * self.dim + self.patch_size * self.patch_size * self.out_channels()
    }

    fn count_params(&self) -> (usize, f64) {
        let (d, p) = (self.dim, self.patch_size);
        let micro = self.backbone == MicroDiTBackbone::MicroDiT;
        let ub = usize::from(self.use_bias);
        let linear = |i: usize, o: usize, bias: bool| i * o + if bias { o } else { 0 };
        let mut total = linear(self.in_channels * p * p, d, true); // x_embedder
        total += linear(self.backbone.frequency_size(), d, true) + linear(d, d, true); // t_embedder
        if micro {
            total += linear(self.caption_channels, d, true) + d + linear(d, d, true); // y_embedder
            let h = swiglu_hidden(4 * d, self.multiple_of);
            total += 2 * d + linear(d, 3 * d, ub == 1) + linear(d, d, ub == 1); // prompt block attn
            total += 2 * linear(d, h, ub == 1) + linear(h, d, ub == 1); // prompt block SwiGLU
            total += 2 * linear(d, d, true) + d; // pooled_y_emb_process
        } else {
            total += (self.num_classes + usize::from(self.cond_dropout_prob > 0.0)) * d;
        }
        if self.has_mixer_maps() {
            let m = self.patch_mixer_dim;
            total += d + linear(d, m, ub == 1) + m + linear(m, d, ub == 1);
            if micro {
                total += d + linear(d, m, ub == 1);
            }
        }
        let mut active = total as f64;
        let mut blocks: Vec<MicroDiTBlockConfig> = (0..self.mixer_moe_blocks().len()).map(|i| self.mixer_block_config(i)).collect();
        blocks.extend((0..self.depth).filter_map(|i| self.block_config(i).ok()));
        for b in &blocks {
            let (t, a) = block_params(b);
            total += t;
            active += a;
        }
        let fin = if micro { d } else { 0 } + linear(d, 2 * d, true) + linear(d, p * p * self.out_channels(), true);
        (total + fin, active + fin as f64)
    }

    /// Forward cost per image, in multiply-accumulates (one fused multiply-add counts one, as
    /// the DiT paper's "Gflops" and [`DiTConfig::flops`](crate::models::DiTConfig::flops)), at
    /// mask ratio `mask_ratio` with `caption_tokens` caption tokens (ignored by the DiT
    /// backbone). Matrix products and attention are counted; norms, activations and
    /// element-wise ops are not. MoE layers count the router and the `E * k` token-expert
    /// evaluations.
    pub fn flops(&self, mask_ratio: f64, caption_tokens: usize) -> Result<f64> {
        let (mixer_tokens, kept) = self.token_counts(mask_ratio)?;
        let (d, p) = (self.dim as f64, self.patch_size as f64);
        let micro = self.backbone == MicroDiTBackbone::MicroDiT;
        let n = self.num_tokens() as f64;
        let l = if micro { caption_tokens as f64 } else { 0.0 };
        let mut total = n * self.in_channels as f64 * p * p * d; // patch embedding
        total += self.backbone.frequency_size() as f64 * d + d * d; // timestep embedder
        if micro {
            let h = swiglu_hidden(4 * self.dim, self.multiple_of) as f64;
            total += l * (self.caption_channels as f64 * d + d * d); // caption projection
            total += l * 4.0 * d * d + 2.0 * l * l * d + 3.0 * l * d * h; // prompt block
            total += 2.0 * d * d; // pooled caption MLP
        }
        if self.use_patch_mixer {
            let m = self.patch_mixer_dim as f64;
            if self.has_mixer_maps() {
                total += mixer_tokens as f64 * d * m + kept as f64 * m * d + l * d * m;
            }
            for i in 0..self.patch_mixer_depth {
                total += block_flops(&self.mixer_block_config(i), mixer_tokens, l)?;
            }
        }
        for i in 0..self.depth {
            total += block_flops(&self.block_config(i)?, kept, l)?;
        }
        total += 2.0 * d * d + kept as f64 * d * p * p * self.out_channels() as f64; // final layer
        Ok(total)
    }

    /// Initialise a [`MicroDiT`] with the reference initialisation (DiT's for the DiT
    /// backbone).
    pub fn init(&self, device: &Device) -> Result<MicroDiT> {
        self.validate()?;
        let d = self.dim;
        let micro = self.backbone == MicroDiTBackbone::MicroDiT;
        let style = self.backbone.block_style();
        let g = self.grid_size();
        // numpy: arange(g, float32) / (g / base_size) / pos_interp_scale, base_size = g
        let coords: Vec<f64> = (0..g).map(|i| (i as f32 / self.pos_interp_scale as f32) as f64).collect();
        let table = sincos_2d_from_coords(d, &coords, &coords)?;
        let pos_embed = Tensor::<2>::from_data(TensorData::new(table, [g * g, d]), device).unsqueeze_dim::<3>(0);
        let activation = if micro { Activation::GeluTanh } else { Activation::Silu };
        let eps = self.norm_eps;
        let mixer = if self.use_patch_mixer {
            (0..self.patch_mixer_depth).map(|i| self.mixer_block_config(i).init(device)).collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let maps = self.has_mixer_maps();
        let (m, bias) = (self.patch_mixer_dim, self.use_bias);
        Ok(MicroDiT {
            x_embedder: PatchEmbedConfig::new(self.in_channels, d, self.patch_size).init(device)?,
            t_embedder: TimestepEmbedderConfig::new(d)
                .with_frequency_embedding_size(self.backbone.frequency_size())
                .with_activation(activation)
                .init(device)?,
            pos_embed: frozen_param(pos_embed),
            caption_embedder: micro.then(|| NormMlp::new(self.caption_channels, d, eps, device)),
            y_emb_preprocess: match micro {
                true => Some(PromptBlock::new(d, self.head_dim, self.multiple_of, bias, eps, device)?),
                false => None,
            },
            pooled_y_emb_process: micro.then(|| NormMlp::new(d, d, eps, device)),
            y_embedder: match micro {
                true => None,
                false => Some(
                    LabelEmbedderConfig::new(self.num_classes, d).with_dropout_prob(self.cond_dropout_prob).init(device)?,
                ),
            },
            patch_mixer: mixer,
            patch_mixer_map_xin: maps.then(|| NormLinear::new(d, m, bias, eps, device)),
            patch_mixer_map_xout: maps.then(|| NormLinear::new(m, d, bias, eps, device)),
            patch_mixer_map_y: (maps && micro).then(|| NormLinear::new(d, m, bias, eps, device)),
            blocks: (0..self.depth).map(|i| self.block_config(i)?.init(device)).collect::<Result<_>>()?,
            mask_token: frozen_param(Tensor::zeros([1, 1, self.patch_size * self.patch_size * self.out_channels()], device)),
            final_layer: MicroFinalLayer::new(d, d, self.patch_size * self.patch_size * self.out_channels(), style, eps, device),
            input_size: self.input_size,
            patch_size: self.patch_size,
            in_channels: self.in_channels,
            out_channels: self.out_channels(),
            backbone: self.backbone,
            masking: self.masking,
            train_mask_ratio: self.train_mask_ratio,
            cond_dropout_prob: self.cond_dropout_prob,
        })
    }
}

/// `(total, active)` parameters of one block.
fn block_params(b: &MicroDiTBlockConfig) -> (usize, f64) {
    let (d, h, f) = (b.d_model, b.qkv_hidden(), b.ffn_hidden());
    let micro = b.style == BlockStyle::MicroDiT;
    let bias = b.bias || !micro;
    let linear = |i: usize, o: usize, bias: bool| i * o + if bias { o } else { 0 };
    let mut total = linear(d, 3 * h, bias) + linear(h, d, bias) + linear(b.d_cond, 6 * d, true);
    if micro {
        let x = b.cross_hidden();
        total += 3 * d + linear(d, x, bias) + linear(d, 2 * x, bias) + linear(x, d, bias);
    }
    let mut active = total as f64;
    if b.moe {
        let expert = 2 * d * f;
        total += d * b.num_experts + b.num_experts * expert;
        active += (d * b.num_experts) as f64 + b.expert_capacity * expert as f64;
    } else {
        let ffn = if micro { 2 * linear(d, f, bias) + linear(f, d, bias) } else { linear(d, f, true) + linear(f, d, true) };
        total += ffn;
        active += ffn as f64;
    }
    (total, active)
}

/// Multiply-accumulates of one block over `t` tokens with `l` context tokens.
fn block_flops(b: &MicroDiTBlockConfig, t: usize, l: f64) -> Result<f64> {
    let (d, h, f) = (b.d_model as f64, b.qkv_hidden() as f64, b.ffn_hidden() as f64);
    let tf = t as f64;
    let mut total = b.d_cond as f64 * 6.0 * d; // adaLN
    total += tf * 4.0 * d * h + 2.0 * tf * tf * h; // self-attention
    if b.style == BlockStyle::MicroDiT {
        let x = b.cross_hidden() as f64;
        total += 2.0 * tf * d * x + 2.0 * l * d * x + 2.0 * tf * l * x; // cross-attention
    }
    total += if b.moe {
        let k = tokens_per_expert(b.expert_capacity, b.num_experts, t)? as f64;
        tf * d * b.num_experts as f64 + b.num_experts as f64 * k * 2.0 * d * f
    } else if b.style == BlockStyle::MicroDiT {
        3.0 * tf * d * f
    } else {
        2.0 * tf * d * f
    };
    Ok(total)
}

/// The conditioning of a [`MicroDiT`].
#[derive(Debug, Clone)]
pub enum MicroDiTCond {
    /// Caption embeddings `[B, L, caption_channels]` (MicroDiT backbone; the reference's
    /// `[B, 1, L, C]` input with the singleton axis squeezed). All-zero embeddings are the
    /// unconditional caption.
    Caption(Tensor<3>),
    /// Class labels `[B]` in `0..=num_classes` (DiT backbone; `num_classes` is the null class).
    Labels(Tensor<1, Int>),
}

impl MicroDiTCond {
    /// Batch size.
    pub fn batch_size(&self) -> usize {
        match self {
            MicroDiTCond::Caption(y) => y.dims()[0],
            MicroDiTCond::Labels(y) => y.dims()[0],
        }
    }
}

/// The unconditional branch of a [`MicroDiTCond`] for
/// classifier-free guidance.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a tensor handle, built once per sampling run
pub enum MicroDiTNull {
    /// All-zero caption embeddings (the reference's unconditional branch).
    ZeroCaption,
    /// Given caption embeddings `[1 or B, L, caption_channels]` (e.g. of an empty or negative
    /// prompt).
    Caption(Tensor<3>),
    /// The null class index (`num_classes`).
    Label(usize),
}

impl Conditioning for MicroDiTCond {
    type Null = MicroDiTNull;

    fn batch_size(&self) -> Option<usize> {
        Some(MicroDiTCond::batch_size(self))
    }

    fn concat_batch(first: &Self, second: &Self) -> Result<Self> {
        match (first, second) {
            (MicroDiTCond::Caption(a), MicroDiTCond::Caption(b)) => {
                Ok(MicroDiTCond::Caption(Tensor::<3>::concat_batch(a, b)?))
            }
            (MicroDiTCond::Labels(a), MicroDiTCond::Labels(b)) => Ok(MicroDiTCond::Labels(Tensor::cat(vec![a.clone(), b.clone()], 0))),
            _ => Err(Error::InvalidArgument("cannot batch captions with labels".into())),
        }
    }

    fn null_like(&self, null: &MicroDiTNull) -> Result<Self> {
        match (self, null) {
            (MicroDiTCond::Caption(y), MicroDiTNull::ZeroCaption) => Ok(MicroDiTCond::Caption(y.null_like(&NullEmbedding::Zeros)?)),
            (MicroDiTCond::Caption(y), MicroDiTNull::Caption(n)) => {
                Ok(MicroDiTCond::Caption(y.null_like(&NullEmbedding::Given(n.clone()))?))
            }
            (MicroDiTCond::Labels(y), MicroDiTNull::Label(k)) => {
                Ok(MicroDiTCond::Labels(Tensor::full([y.dims()[0]], crate::validate::label_value("null label", *k)?, &y.device())))
            }
            _ => Err(Error::InvalidArgument(format!("null conditioning {null:?} does not fit the conditioning kind"))),
        }
    }
}

/// What a masked training forward returns.
#[derive(Debug, Clone)]
pub struct MicroDiTOutput {
    /// The prediction `[B, C_out, H, W]` (removed patches filled with `mask_token`).
    pub sample: Tensor<4>,
    /// The mask used, `None` when nothing was masked.
    pub mask: Option<TokenMask>,
}

/// MicroDiT: patch embedding, caption (or label) and timestep conditioning, optional
/// patch-mixer, optional masking, the backbone blocks, the final layer and unpatchify.
///
/// Official keys: `x_embedder.proj`, `t_embedder.mlp.{0,2}`, `pos_embed`,
/// `y_embedder.y_proj.{fc1,norm,fc2}`, `y_emb_preprocess.*`, `pooled_y_emb_process.*`,
/// `patch_mixer.{i}.*`, `patch_mixer_map_{xin,xout,y}.{0,1}`, `blocks.{i}.*`, `mask_token`,
/// `final_layer.*` (see the `weights::microdit` module).
#[derive(Module, Debug)]
pub struct MicroDiT {
    /// Patch embedding.
    pub x_embedder: PatchEmbed,
    /// Timestep embedder.
    pub t_embedder: TimestepEmbedder,
    /// Fixed 2-D sin-cos table `[1, N, D]` (a buffer in the reference: persisted, never trained).
    pub pos_embed: Param<Tensor<3>>,
    /// Caption projection `caption_channels -> D` (reference `y_embedder.y_proj`).
    pub caption_embedder: Option<NormMlp>,
    /// Attention block over the caption tokens.
    pub y_emb_preprocess: Option<PromptBlock>,
    /// MLP of the pooled caption, added to the timestep embedding.
    pub pooled_y_emb_process: Option<NormMlp>,
    /// Label embedder (DiT backbone).
    pub y_embedder: Option<LabelEmbedder>,
    /// Patch-mixer blocks (empty without a patch-mixer).
    pub patch_mixer: Vec<MicroDiTBlock>,
    /// `D -> D_mixer` map into the patch-mixer (only when the widths differ).
    pub patch_mixer_map_xin: Option<NormLinear>,
    /// `D_mixer -> D` map out of the patch-mixer (applied after masking).
    pub patch_mixer_map_xout: Option<NormLinear>,
    /// `D -> D_mixer` map of the caption tokens for the patch-mixer.
    pub patch_mixer_map_y: Option<NormLinear>,
    /// Backbone blocks.
    pub blocks: Vec<MicroDiTBlock>,
    /// Fill value of removed patches `[1, 1, p*p*C_out]` (a zero buffer in the reference).
    pub mask_token: Param<Tensor<3>>,
    /// Final layer.
    pub final_layer: MicroFinalLayer,
    /// Latent height = width.
    pub input_size: usize,
    /// Patch size.
    pub patch_size: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Backbone and conditioning.
    #[module(skip)]
    pub backbone: MicroDiTBackbone,
    /// Where masks are applied.
    #[module(skip)]
    pub masking: MaskingMode,
    /// Mask ratio of [`forward_train`](Self::forward_train).
    pub train_mask_ratio: f64,
    /// Condition dropout probability of [`forward_train`](Self::forward_train).
    pub cond_dropout_prob: f64,
}

/// Tokens and conditioning ready for the transformer.
struct Embedded {
    tokens: Tensor<3>,
    c: Tensor<2>,
    context: Option<Tensor<3>>,
}

impl MicroDiT {
    /// Number of image tokens `N`.
    pub fn num_tokens(&self) -> usize {
        let g = self.input_size / self.patch_size;
        g * g
    }

    /// Set the mask ratio used by [`forward_train`](Self::forward_train) (0 disables masking).
    pub fn with_train_mask_ratio(mut self, ratio: f64) -> Result<Self> {
        num_keep(self.num_tokens(), ratio)?;
        self.train_mask_ratio = ratio;
        Ok(self)
    }

    /// Switch to unmasked training (mask ratio 0), the reference's final fine-tuning phase.
    pub fn unmasked_finetuning(mut self) -> Self {
        self.train_mask_ratio = 0.0;
        self
    }

    /// Shapes and conditioning kind, then [`crate::validate::model_inputs`] (non-empty batch,
    /// dtype, finite values, timestep range).
    fn check_inputs(&self, x: Tensor<4>, t: Tensor<1>, cond: &MicroDiTCond) -> Result<(Tensor<4>, Tensor<1>)> {
        let s = Some(self.input_size);
        ensure_dims("x", x.dims(), [None, Some(self.in_channels), s, s])?;
        let b = x.dims()[0];
        if t.dims()[0] != 1 {
            ensure_dims("t", t.dims(), [Some(b)])?;
        }
        match (cond, self.backbone) {
            (MicroDiTCond::Caption(y), MicroDiTBackbone::MicroDiT) => {
                let c = self.caption_embedder.as_ref().map(|e| e.fc1.weight.dims()[0]);
                ensure_dims("captions", y.dims(), [Some(b), None, c])
            }
            (MicroDiTCond::Labels(y), MicroDiTBackbone::DiT) => ensure_dims("labels", y.dims(), [Some(b)]),
            (MicroDiTCond::Caption(_), MicroDiTBackbone::DiT) => {
                Err(Error::InvalidArgument("the DiT backbone is conditioned on class labels, not captions".into()))
            }
            (MicroDiTCond::Labels(_), MicroDiTBackbone::MicroDiT) => {
                Err(Error::InvalidArgument("the MicroDiT backbone is conditioned on captions, not labels".into()))
            }
        }?;
        crate::validate::model_inputs(x, t, self.x_embedder.proj.weight.dtype())
    }

    /// Patch embedding plus position table, and the conditioning: `c = t_emb + pooled caption`
    /// (or `+ label embedding`) and the processed caption tokens.
    fn embed(&self, x: Tensor<4>, t: Tensor<1>, cond: &MicroDiTCond, drop: Option<Tensor<1, Bool>>) -> Result<Embedded> {
        let (x, t) = self.check_inputs(x, t, cond)?;
        let (b, x_dtype) = (x.dims()[0], x.dtype());
        let tokens = self.x_embedder.forward(x)? + self.pos_embed.val();
        let t = if t.dims()[0] == 1 && b != 1 { t.expand([b]) } else { t };
        let t_emb = self.t_embedder.forward(t);
        match cond {
            MicroDiTCond::Caption(y) => {
                let (proj, pre, pool) = match (&self.caption_embedder, &self.y_emb_preprocess, &self.pooled_y_emb_process) {
                    (Some(a), Some(b), Some(c)) => (a, b, c),
                    _ => return Err(Error::InvalidArgument("model has no caption path".into())),
                };
                let y = crate::validate::float_input("captions", y.clone(), x_dtype)?;
                let y = match drop {
                    Some(mask) => y.clone().mask_fill(mask.reshape([b, 1, 1]).expand(y.dims()), 0.0),
                    None => y,
                };
                let y = pre.forward(proj.forward(y)); // [B, L, D]
                let pooled = pool.forward(y.clone().mean_dim(1).squeeze_dim::<2>(1));
                Ok(Embedded { tokens, c: t_emb + pooled, context: Some(y) })
            }
            MicroDiTCond::Labels(y) => {
                let e = self.y_embedder.as_ref().ok_or_else(|| Error::InvalidArgument("model has no label embedder".into()))?;
                Ok(Embedded { tokens, c: t_emb + e.forward(y.clone(), drop)?, context: None })
            }
        }
    }

    /// Patch-mixer, masking, backbone, final layer, unmasking and unpatchify.
    fn run(&self, e: Embedded, mask: Option<&TokenMask>) -> Result<Tensor<4>> {
        let Embedded { mut tokens, c, context } = e;
        if let Some(m) = mask {
            ensure_dims("mask", [m.batch(), m.num_tokens()], [Some(tokens.dims()[0]), Some(self.num_tokens())])?;
        }
        let naive = self.masking == MaskingMode::Naive;
        if let (Some(m), true) = (mask, naive) {
            tokens = m.keep(tokens)?;
        }
        if !self.patch_mixer.is_empty() {
            if let Some(map) = &self.patch_mixer_map_xin {
                tokens = map.forward(tokens);
            }
            let mixer_ctx = match (&context, &self.patch_mixer_map_y) {
                (Some(y), Some(map)) => Some(map.forward(y.clone())),
                (y, _) => y.clone(),
            };
            for block in &self.patch_mixer {
                tokens = block.forward(tokens, mixer_ctx.as_ref(), c.clone())?;
            }
        }
        if let (Some(m), false) = (mask, naive) {
            tokens = m.keep(tokens)?;
        }
        if let Some(map) = &self.patch_mixer_map_xout {
            tokens = map.forward(tokens);
        }
        for block in &self.blocks {
            tokens = block.forward(tokens, context.as_ref(), c.clone())?;
        }
        let mut out = self.final_layer.forward(tokens, c);
        if let Some(m) = mask {
            out = m.restore(out, self.mask_token.val().flatten::<1>(0, 2))?;
        }
        let g = self.input_size / self.patch_size;
        Ok(unpatchify(out, self.patch_size, self.out_channels, [g, g]))
    }

    /// Unmasked forward (inference path).
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]`; `t`: `[B]` or `[1]` (broadcast) float timesteps (EDM feeds
    ///   `ln(sigma) / 4`); `cond`: captions `[B, L, caption_channels]` or labels `[B]`
    /// - output: `[B, C_out, H, W]`
    ///
    /// # Errors
    /// [`Error::Shape`] for wrong shapes or an empty batch, [`Error::InvalidArgument`] for the
    /// wrong conditioning kind, labels outside the table or `|t| > 1e5`, [`Error::Numerical`]
    /// for NaN/inf in `x`, `t` or the captions. Time is continuous (EDM's `ln(sigma) / 4` is
    /// negative for `sigma < 1`); see [`crate::validate`]. Float64 inputs are cast.
    pub fn forward(&self, x: Tensor<4>, t: Tensor<1>, cond: &MicroDiTCond) -> Result<Tensor<4>> {
        let e = self.embed(x, t, cond, None)?;
        self.run(e, None)
    }

    /// Masked forward with a given mask: only the kept tokens go through the backbone (and
    /// through the patch-mixer too with [`MaskingMode::Naive`]); removed patches of the output
    /// hold `mask_token`.
    ///
    /// # Shapes
    /// - as [`forward`](Self::forward); `mask` over `B` samples and `N` tokens
    pub fn forward_masked(&self, x: Tensor<4>, t: Tensor<1>, cond: &MicroDiTCond, mask: &TokenMask) -> Result<Tensor<4>> {
        let e = self.embed(x, t, cond, None)?;
        self.run(e, Some(mask))
    }

    /// Forward with a random mask of ratio `mask_ratio` drawn from `rng` (the reference's
    /// `forward(mask_ratio=...)`); ratio 0 masks nothing.
    pub fn forward_with_mask_ratio<R: Rng + ?Sized>(
        &self,
        x: Tensor<4>,
        t: Tensor<1>,
        cond: &MicroDiTCond,
        mask_ratio: f64,
        rng: &mut R,
    ) -> Result<MicroDiTOutput> {
        let mask = self.draw_mask(x.dims()[0], mask_ratio, rng, &x.device())?;
        let e = self.embed(x, t, cond, None)?;
        Ok(MicroDiTOutput { sample: self.run(e, mask.as_ref())?, mask })
    }

    fn draw_mask<R: Rng + ?Sized>(&self, batch: usize, ratio: f64, rng: &mut R, device: &Device) -> Result<Option<TokenMask>> {
        if ratio == 0.0 {
            return Ok(None);
        }
        Ok(Some(TokenMask::random(batch, self.num_tokens(), ratio, rng, device)?))
    }

    /// Training forward: conditions are dropped with `cond_dropout_prob` (labels to the null
    /// class, captions to zeros) and tokens masked at the model's `train_mask_ratio`, both
    /// drawn from `rng`.
    pub fn forward_train<R: Rng + ?Sized>(&self, x: Tensor<4>, t: Tensor<1>, cond: &MicroDiTCond, rng: &mut R) -> Result<MicroDiTOutput> {
        let b = x.dims()[0];
        let device = x.device();
        let p = match (cond, &self.y_embedder) {
            (MicroDiTCond::Labels(_), Some(e)) => e.dropout_prob,
            _ => self.cond_dropout_prob,
        };
        let drop = (p > 0.0).then(|| random_drop_mask(b, p, &mut &mut *rng, &device));
        let mask = self.draw_train_mask(b, rng, &device)?;
        let e = self.embed(x, t, cond, drop)?;
        Ok(MicroDiTOutput { sample: self.run(e, mask.as_ref())?, mask })
    }

    /// Classifier-free guidance as the reference `forward_with_cfg`: the batch is doubled with
    /// the unconditional branch (all-zero caption embeddings, or the null class), and
    /// `uncond + scale * (cond - uncond)` is returned on all channels for the `B` inputs.
    ///
    /// # Shapes
    /// - as [`forward`](Self::forward) -> `[B, C_out, H, W]`
    pub fn forward_with_cfg(&self, x: Tensor<4>, t: Tensor<1>, cond: &MicroDiTCond, scale: f64) -> Result<Tensor<4>> {
        let (x, t) = self.check_inputs(x, t, cond)?;
        let b = x.dims()[0];
        let uncond = match cond {
            MicroDiTCond::Caption(y) => MicroDiTCond::Caption(y.zeros_like()),
            MicroDiTCond::Labels(y) => {
                let e = self.y_embedder.as_ref().ok_or_else(|| Error::InvalidArgument("model has no label embedder".into()))?;
                if e.num_rows() == e.num_classes {
                    return Err(Error::InvalidArgument(
                        "guidance needs the null class, but the model was built with cond_dropout_prob = 0".into(),
                    ));
                }
                MicroDiTCond::Labels(y.zeros_like().add_scalar(e.null_label() as i64))
            }
        };
        let both = match (cond, uncond) {
            (MicroDiTCond::Caption(a), MicroDiTCond::Caption(u)) => MicroDiTCond::Caption(Tensor::cat(vec![a.clone(), u], 0)),
            (MicroDiTCond::Labels(a), MicroDiTCond::Labels(u)) => MicroDiTCond::Labels(Tensor::cat(vec![a.clone(), u], 0)),
            _ => unreachable!("same kind"),
        };
        let t = if t.dims()[0] == 1 { t } else { Tensor::cat(vec![t.clone(), t], 0) };
        let out = self.forward(Tensor::cat(vec![x.clone(), x], 0), t, &both)?;
        let [_, c, h, w] = out.dims();
        let cond_out = out.clone().slice([0..b, 0..c, 0..h, 0..w]);
        let uncond_out = out.slice([b..2 * b, 0..c, 0..h, 0..w]);
        Ok(uncond_out.clone() + (cond_out - uncond_out) * scale)
    }
}

impl Denoiser for MicroDiT {
    /// Captions or labels, matching the backbone.
    type Cond = MicroDiTCond;

    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
        self.forward(x, t, cond)
    }
}

impl MaskedDenoiser for MicroDiT {
    fn patch_size(&self) -> usize {
        self.patch_size
    }

    fn num_tokens(&self) -> usize {
        MicroDiT::num_tokens(self)
    }

    fn train_mask_ratio(&self) -> f64 {
        self.train_mask_ratio
    }

    fn denoise_masked(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond, mask: &TokenMask) -> Result<Tensor<4>> {
        self.forward_masked(x, t, cond, mask)
    }
}

impl BatchShard for MicroDiTCond {
    fn shard(&self, batch: usize, start: usize, len: usize, device: &Device) -> Result<Self> {
        Ok(match self {
            MicroDiTCond::Caption(y) => MicroDiTCond::Caption(y.shard(batch, start, len, device)?),
            MicroDiTCond::Labels(y) => MicroDiTCond::Labels(y.shard(batch, start, len, device)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::patch_embed::patchify;
    use crate::models::DiTConfig;
    use crate::contracts::GuidedChannels;
    use crate::sampling::ClassifierFreeGuidance;
    use crate::weights::{Checkpoint, LoadWeights};
    use burn::tensor::Tolerance;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn tiny(backbone: MicroDiTBackbone) -> MicroDiTConfig {
        MicroDiTConfig::new()
            .with_input_size(8)
            .with_dim(32)
            .with_depth(4)
            .with_head_dim(8)
            .with_multiple_of(16)
            .with_caption_channels(12)
            .with_patch_mixer_depth(2)
            .with_patch_mixer_dim(16)
            .with_patch_mixer_mlp_ratio(4.0)
            .with_num_experts(4)
            .with_expert_capacity(2.0)
            .with_num_classes(5)
            .with_backbone(backbone)
            .with_layerwise_scaling([0.5, 1.0], [0.5, 4.0])
    }

    fn randn<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    /// The model with every weight (adaLN and final layers included) set to deterministic
    /// non-zero values, so that every path contributes to the output.
    fn randomized(model: MicroDiT) -> MicroDiT {
        let ck = model.to_checkpoint().unwrap();
        let mut rng = StdRng::seed_from_u64(42);
        let mut out = Checkpoint::new();
        for (k, v) in ck.tensors() {
            if k == "pos_embed" {
                out.insert(k.clone(), v.clone());
                continue;
            }
            let n: usize = v.shape().iter().product();
            let vals: Vec<f32> = (0..n).map(|_| (rng.random::<f32>() - 0.5) * 0.6).collect();
            out.insert(k.clone(), TensorData::new(vals, v.shape().to_vec()));
        }
        let mut model = model;
        model.load_checkpoint(&out).unwrap();
        model
    }

    fn captions(b: usize, device: &Device) -> MicroDiTCond {
        MicroDiTCond::Caption(randn([b, 3, 12], 5, device))
    }

    #[test]
    fn linspace_matches_numpy() {
        // numpy: start + i * step, step = (end - start) / (num - 1)
        assert_eq!(linspace(0.5, 4.0, 4), vec![0.5, 1.6666666666666667, 2.8333333333333335, 4.0]);
        assert_eq!(linspace(0.5, 1.0, 1), vec![0.5]);
        assert_eq!(linspace(0.5, 1.0, 3), vec![0.5, 0.75, 1.0]);
    }

    #[test]
    fn analytic_params_match_module() {
        let device = Device::flex();
        for backbone in [MicroDiTBackbone::MicroDiT, MicroDiTBackbone::DiT] {
            for (mixer_dim, bias, mixer) in [(16, false, true), (32, true, true), (16, true, false)] {
                let cfg = tiny(backbone).with_patch_mixer_dim(mixer_dim).with_use_bias(bias).with_use_patch_mixer(mixer);
                let cfg = if backbone == MicroDiTBackbone::DiT { cfg.with_learn_sigma(bias) } else { cfg };
                let m = cfg.init(&device).unwrap();
                assert_eq!(m.num_params(), cfg.num_params() + cfg.num_buffer_elements(), "{backbone:?} {mixer_dim} {bias}");
                // active: each MoE layer counts `capacity` of its experts
                let moe_blocks: usize = m.blocks.iter().chain(&m.patch_mixer).map(|b| match &b.mlp {
                    crate::blocks::microdit_block::FeedForward::Moe(e) => e.w1.num_params() + e.w2.num_params(),
                    _ => 0,
                }).sum();
                let expected = cfg.num_params() as f64 - moe_blocks as f64 * (1.0 - 2.0 / 4.0);
                assert_eq!(cfg.num_active_params(), expected.round() as usize);
            }
        }
    }

    #[test]
    fn preset_sizes() {
        // the paper's 1.16B-parameter sparse model
        let xl = MicroDiTConfig::from_name("MicroDiT_XL_2").unwrap();
        assert_eq!(xl.num_params(), 1_165_442_320);
        assert_eq!(xl.num_active_params(), 712_457_488);
        let tiny = MicroDiTConfig::from_name("MicroDiT_Tiny_2").unwrap();
        assert_eq!(tiny.num_params(), 200_692_752);
        assert!(MicroDiTConfig::from_name("MicroDiT_M_2").is_err());
        xl.validate().unwrap();
        tiny.validate().unwrap();
    }

    #[test]
    fn layerwise_widths_follow_the_formula() {
        let xl = MicroDiTConfig::preset(MicroDiTSize::XL);
        for i in 0..28 {
            let (q, f) = (0.5 + i as f64 * 0.5 / 27.0, 0.5 + i as f64 * 3.5 / 27.0);
            let b = xl.block_config(i).unwrap();
            let want_q = if i == 27 { 1024 } else { 128 * ((1024.0 * q) as usize).div_ceil(128) };
            assert_eq!(b.qkv_hidden(), want_q, "block {i}");
            assert_eq!(b.num_heads(), want_q / 64);
            let h = (1024.0 * if i == 27 { 4.0 } else { f }) as usize;
            let want_f = if b.moe { 256 * h.div_ceil(256) } else { 256 * ((2 * h) / 3).div_ceil(256) };
            assert_eq!(b.ffn_hidden(), want_f, "block {i}");
        }
        // module shapes follow the configs
        let device = Device::flex();
        let cfg = tiny(MicroDiTBackbone::MicroDiT);
        let m = cfg.init(&device).unwrap();
        for (i, block) in m.blocks.iter().enumerate() {
            let b = cfg.block_config(i).unwrap();
            assert_eq!(block.attn.qkv.weight.dims(), [32, 3 * b.qkv_hidden()]);
            assert_eq!(block.attn.n_heads, b.num_heads());
        }
        assert_eq!(m.blocks[0].attn.qkv.weight.dims(), [32, 48]);
        assert_eq!(m.blocks[3].attn.qkv.weight.dims(), [32, 96]);
    }

    #[test]
    fn moe_placement() {
        let cfg = MicroDiTConfig::preset(MicroDiTSize::XL);
        let backbone = cfg.backbone_moe_blocks();
        assert_eq!(backbone.iter().filter(|m| **m).count(), 13); // blocks 1, 3, ..., 25; never 27
        assert!(backbone[1] && !backbone[0] && !backbone[27] && backbone[25]);
        assert_eq!(cfg.mixer_moe_blocks(), vec![false, true, false, true, false, true]);
        let none = cfg.clone().with_experts_every_n(0);
        assert!(none.backbone_moe_blocks().iter().chain(&none.mixer_moe_blocks()).all(|m| !m));
        let device = Device::flex();
        let m = tiny(MicroDiTBackbone::MicroDiT).init(&device).unwrap();
        let is_moe = |b: &MicroDiTBlock| matches!(b.mlp, crate::blocks::microdit_block::FeedForward::Moe(_));
        assert_eq!(m.blocks.iter().map(is_moe).collect::<Vec<_>>(), vec![false, true, false, false]);
        assert_eq!(m.patch_mixer.iter().map(is_moe).collect::<Vec<_>>(), vec![false, true]);
    }

    #[test]
    fn invalid_configs_are_errors() {
        let device = Device::flex();
        let base = || tiny(MicroDiTBackbone::MicroDiT);
        assert!(base().with_head_dim(12).init(&device).is_err()); // 32 % 12
        assert!(base().with_patch_mixer_dim(20).init(&device).is_err()); // 20 % 8
        assert!(base().with_input_size(9).init(&device).is_err());
        assert!(base().with_train_mask_ratio(1.0).init(&device).is_err());
        assert!(base().with_train_mask_ratio(-0.5).init(&device).is_err());
        // capacity 0.25 with 4 experts: int(0.25 * 16 / 4) = 1 token unmasked, 0 at ratio 0.75
        assert!(base().with_expert_capacity(0.25).init(&device).is_ok());
        assert!(base().with_expert_capacity(0.25).with_train_mask_ratio(0.75).init(&device).is_err());
        assert!(base().with_expert_capacity(5.0).init(&device).is_err());
        assert!(base().with_qkv_multipliers(vec![1.0, 1.0, 1.0]).with_ffn_multipliers(vec![4.0; 3]).init(&device).is_err());
        assert!(base().with_qkv_multipliers(vec![1.0, 0.5]).with_ffn_multipliers(vec![4.0]).init(&device).is_err());
        assert!(base().with_learn_sigma(true).init(&device).is_err());
        assert!(tiny(MicroDiTBackbone::DiT).with_num_classes(0).init(&device).is_err());
        // two multipliers over four blocks: each repeated twice
        let split = base().with_qkv_multipliers(vec![0.5, 1.0]).with_ffn_multipliers(vec![1.0, 2.0]);
        assert_eq!(split.block_ratios().unwrap(), vec![(0.5, 1.0), (0.5, 1.0), (1.0, 2.0), (1.0, 2.0)]);
    }

    #[test]
    fn masked_forward_fills_removed_patches() {
        let device = Device::flex();
        let mut m = randomized(tiny(MicroDiTBackbone::MicroDiT).init(&device).unwrap());
        m.mask_token = frozen_param(Tensor::full([1, 1, 16], 0.7, &device));
        let x = randn([2, 4, 8, 8], 1, &device);
        let t = Tensor::<1>::from_floats([0.3, -1.2], &device);
        let cond = captions(2, &device);
        let mask = TokenMask::random(2, 16, 0.75, &mut StdRng::seed_from_u64(0), &device).unwrap();
        assert_eq!(mask.num_kept(), 4);
        let out = m.forward_masked(x.clone(), t.clone(), &cond, &mask).unwrap();
        let tokens = patchify(out, 2); // [B, N, p*p*C]
        let removed = mask.mask.clone().bool().unsqueeze_dim::<3>(2).expand([2, 16, 16]);
        let at_removed = tokens.clone().mask_fill(removed.clone().bool_not(), 0.7);
        assert!(at_removed.equal_elem(0.7).all().into_scalar::<bool>());
        // the kept patches carry real predictions
        let at_kept = tokens.mask_fill(removed, 0.7);
        assert!(!at_kept.equal_elem(0.7).all().into_scalar::<bool>());
        // a wrong-sized mask is an error
        let other = TokenMask::random(2, 9, 0.5, &mut StdRng::seed_from_u64(0), &device).unwrap();
        assert!(m.forward_masked(x, t, &cond, &other).is_err());
    }

    #[test]
    fn deferred_masking_lets_kept_tokens_see_removed_ones() {
        let device = Device::flex();
        let x = randn([1, 4, 8, 8], 2, &device);
        // change only pixels of token 0, which the mask removes
        let bump = Tensor::<4>::zeros([1, 4, 8, 8], &device).slice_fill([0..1, 0..4, 0..2, 0..2], 3.0);
        let t = Tensor::<1>::from_floats([0.5], &device);
        let cond = captions(1, &device);
        let mut bits = vec![1.0f32; 16];
        for i in [3, 6, 9, 12] {
            bits[i] = 0.0;
        }
        let mask = TokenMask::from_binary(Tensor::from_data(TensorData::new(bits, [1, 16]), &device)).unwrap();
        for (mode, sees) in [(MaskingMode::Deferred, true), (MaskingMode::Naive, false)] {
            let m = randomized(tiny(MicroDiTBackbone::MicroDiT).with_masking(mode).init(&device).unwrap());
            let a = m.forward_masked(x.clone(), t.clone(), &cond, &mask).unwrap();
            let b = m.forward_masked(x.clone() + bump.clone(), t.clone(), &cond, &mask).unwrap();
            let diff = (a - b).abs().max().into_scalar::<f32>();
            // naive: the removed token never enters the network, so nothing changes at all
            assert!(if sees { diff > 1e-6 } else { diff == 0.0 }, "{mode:?}: {diff}");
        }
        // without a patch-mixer both modes are the same model
        let cfg = tiny(MicroDiTBackbone::MicroDiT).with_use_patch_mixer(false);
        let d = randomized(cfg.clone().init(&device).unwrap());
        let mut n = randomized(cfg.with_masking(MaskingMode::Naive).init(&device).unwrap());
        n.load_checkpoint(&d.to_checkpoint().unwrap()).unwrap();
        let a = d.forward_masked(x.clone(), t.clone(), &cond, &mask).unwrap();
        let b = n.forward_masked(x, t, &cond, &mask).unwrap();
        a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-6));
    }

    #[test]
    fn seeded_masks_and_the_unmasked_switch() {
        let device = Device::flex();
        let m = randomized(tiny(MicroDiTBackbone::MicroDiT).init(&device).unwrap());
        let x = randn([2, 4, 8, 8], 3, &device);
        let t = Tensor::<1>::from_floats([0.1, 0.9], &device);
        let cond = captions(2, &device);
        let a = m.forward_with_mask_ratio(x.clone(), t.clone(), &cond, 0.5, &mut StdRng::seed_from_u64(9)).unwrap();
        let b = m.forward_with_mask_ratio(x.clone(), t.clone(), &cond, 0.5, &mut StdRng::seed_from_u64(9)).unwrap();
        assert_eq!(a.mask.as_ref().unwrap().num_kept(), 8);
        a.sample.into_data().assert_approx_eq::<f32>(&b.sample.into_data(), Tolerance::absolute(0.0));
        let unmasked = m.forward_with_mask_ratio(x.clone(), t.clone(), &cond, 0.0, &mut StdRng::seed_from_u64(9)).unwrap();
        assert!(unmasked.mask.is_none());
        let full = m.forward(x.clone(), t.clone(), &cond).unwrap();
        unmasked.sample.into_data().assert_approx_eq::<f32>(&full.into_data(), Tolerance::absolute(0.0));
        // training forward: masked at the train ratio, then the unmasked fine-tuning switch
        let m = m.with_train_mask_ratio(0.75).unwrap();
        let out = m.forward_train(x.clone(), t.clone(), &cond, &mut StdRng::seed_from_u64(1)).unwrap();
        assert_eq!(out.mask.unwrap().num_kept(), 4);
        let m = m.unmasked_finetuning();
        assert!(m.forward_train(x, t, &cond, &mut StdRng::seed_from_u64(1)).unwrap().mask.is_none());
        assert!(m.with_train_mask_ratio(1.0).is_err());
    }

    #[test]
    fn cfg_combines_zero_caption_branch_on_all_channels() {
        let device = Device::flex();
        let m = randomized(tiny(MicroDiTBackbone::MicroDiT).init(&device).unwrap());
        let x = randn([2, 4, 8, 8], 4, &device);
        let t = Tensor::<1>::from_floats([0.2, 0.6], &device);
        let cond = captions(2, &device);
        let MicroDiTCond::Caption(y) = &cond else { unreachable!() };
        let c = m.forward(x.clone(), t.clone(), &cond).unwrap();
        let u = m.forward(x.clone(), t.clone(), &MicroDiTCond::Caption(y.zeros_like())).unwrap();
        let want = u.clone() + (c - u) * 3.0;
        let got = m.forward_with_cfg(x.clone(), t.clone(), &cond, 3.0).unwrap();
        got.clone().into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
        let guided = ClassifierFreeGuidance::new(&m, MicroDiTNull::ZeroCaption, 3.0).unwrap().with_channels(GuidedChannels::All);
        let wrapped = guided.denoise(x.clone(), t, &cond).unwrap();
        wrapped.into_data().assert_approx_eq::<f32>(&got.into_data(), Tolerance::absolute(1e-5));
        // class labels: the null class is the unconditional branch
        let d = randomized(tiny(MicroDiTBackbone::DiT).init(&device).unwrap());
        let y = Tensor::<1, Int>::from_ints([1, 4], &device);
        let tt = Tensor::<1>::from_floats([10.0], &device); // one timestep for the batch
        let c = d.forward(x.clone(), tt.clone(), &MicroDiTCond::Labels(y.clone())).unwrap();
        let u = d.forward(x.clone(), tt.clone(), &MicroDiTCond::Labels(Tensor::from_ints([5, 5], &device))).unwrap();
        let want = u.clone() + (c - u) * 1.5;
        let got = d.forward_with_cfg(x.clone(), tt.clone(), &MicroDiTCond::Labels(y.clone()), 1.5).unwrap();
        got.clone().into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
        // the crate's guidance wrapper gives the same result
        let guided = ClassifierFreeGuidance::new(&d, MicroDiTNull::Label(5), 1.5).unwrap().with_channels(GuidedChannels::All);
        let wrapped = guided.denoise(x.clone(), tt.clone().expand([2]), &MicroDiTCond::Labels(y.clone())).unwrap();
        wrapped.into_data().assert_approx_eq::<f32>(&got.into_data(), Tolerance::absolute(1e-5));
        assert!(ClassifierFreeGuidance::new(&d, MicroDiTNull::ZeroCaption, 1.5)
            .unwrap()
            .denoise(x.clone(), tt.clone().expand([2]), &MicroDiTCond::Labels(y.clone()))
            .is_err());
        let no_null = tiny(MicroDiTBackbone::DiT).with_cond_dropout_prob(0.0).init(&device).unwrap();
        assert!(no_null.forward_with_cfg(x, tt, &MicroDiTCond::Labels(y), 1.5).is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let device = Device::flex();
        let m = tiny(MicroDiTBackbone::MicroDiT).init(&device).unwrap();
        let t = Tensor::<1>::zeros([2], &device);
        let cond = captions(2, &device);
        let x = Tensor::<4>::zeros([2, 4, 8, 8], &device);
        assert!(m.forward(Tensor::zeros([2, 3, 8, 8], &device), t.clone(), &cond).is_err());
        assert!(m.forward(Tensor::zeros([2, 4, 6, 6], &device), t.clone(), &cond).is_err());
        assert!(m.forward(x.clone(), Tensor::zeros([3], &device), &cond).is_err());
        assert!(m.forward(x.clone(), t.clone(), &MicroDiTCond::Caption(Tensor::zeros([2, 3, 11], &device))).is_err());
        assert!(m.forward(x.clone(), t.clone(), &MicroDiTCond::Caption(Tensor::zeros([1, 3, 12], &device))).is_err());
        assert!(m.forward(x.clone(), t.clone(), &MicroDiTCond::Labels(Tensor::from_ints([0, 1], &device))).is_err());
        assert!(m.forward_with_mask_ratio(x.clone(), t.clone(), &cond, 1.0, &mut StdRng::seed_from_u64(0)).is_err());
        let d = tiny(MicroDiTBackbone::DiT).init(&device).unwrap();
        assert!(d.forward(x.clone(), t.clone(), &cond).is_err());
        assert!(d.forward(x, t, &MicroDiTCond::Labels(Tensor::from_ints([0, 6], &device))).is_err());
    }

    #[test]
    fn flops_table_and_dit_agreement() {
        // a DiT-backbone MicroDiT without extras costs exactly what DiT's own count says
        let dit = DiTConfig::from_name("DiT-XL/2").unwrap().with_learn_sigma(true);
        let cfg = MicroDiTConfig::new()
            .with_dim(1152)
            .with_depth(28)
            .with_head_dim(72)
            .with_multiple_of(1)
            .with_use_patch_mixer(false)
            .with_experts_every_n(0)
            .with_backbone(MicroDiTBackbone::DiT)
            .with_learn_sigma(true);
        let (a, b) = (cfg.flops(0.0, 0).unwrap(), dit.flops());
        assert!((a / b - 1.0).abs() < 1e-12, "{a} vs {b}");
        // DiT counts its fixed position table as a parameter and has no mask token
        assert_eq!(cfg.num_params() + 256 * 1152, dit.num_params());
        // masking cuts the cost; the patch-mixer always sees every token
        let xl = MicroDiTConfig::preset(MicroDiTSize::XL);
        let f: Vec<f64> = [0.0, 0.5, 0.75].iter().map(|r| xl.flops(*r, 77).unwrap()).collect();
        assert!(f[0] > f[1] && f[1] > f[2]);
        assert!(xl.clone().with_masking(MaskingMode::Naive).flops(0.75, 77).unwrap() < f[2]);
        assert!(xl.flops(1.0, 77).is_err());
        // the MicroDiT training-cost table in docs/architecture.md (GMACs per image, 256px, 77 caption tokens)
        for (name, want) in [("MicroDiT_Tiny_2", [21.31, 13.68, 10.03]), ("MicroDiT_XL_2", [119.07, 70.68, 47.05])] {
            let c = MicroDiTConfig::from_name(name).unwrap();
            for (r, w) in [0.0, 0.5, 0.75].iter().zip(want) {
                assert!((c.flops(*r, 77).unwrap() / 1e9 - w).abs() < 0.006, "{name} {r}");
            }
        }
        println!("MicroDiT_XL_2 GMACs/image at 256px, 77 caption tokens: {:?}", f.iter().map(|v| v / 1e9).collect::<Vec<_>>());
    }

    /// Composition: a class-conditional DiT backbone with a patch-mixer, deferred 50% masking,
    /// expert-choice MoE and layer-wise scaling trains with the masked EDM loss (averaged over
    /// kept patches), then switches to unmasked fine-tuning.
    #[test]
    fn masked_sparse_dit_trains_with_edm() {
        use crate::diffusion::EdmConfig;
        use burn::optim::{AdamWConfig, GradientsParams};
        let device = Device::flex().autodiff();
        let cfg = tiny(MicroDiTBackbone::DiT).with_train_mask_ratio(0.5).with_cond_dropout_prob(0.0);
        let mut model = cfg.init(&device).unwrap();
        assert!(model.patch_mixer.len() == 2 && model.blocks.len() == 4);
        assert!(model.patch_mixer_map_xin.is_some()); // mixer width 16, backbone 32
        let edm = EdmConfig::new().init().unwrap();
        let mut optim = AdamWConfig::new().with_weight_decay(0.0).with_epsilon(1e-8).init();
        let x0 = randn([4, 4, 8, 8], 11, &device);
        let noise = randn([4, 4, 8, 8], 12, &device);
        let sigma = Tensor::<1>::from_floats([0.4, 0.9, 1.5, 3.0], &device);
        let cond = MicroDiTCond::Labels(Tensor::from_ints([0, 1, 2, 3], &device));
        let mut rng = StdRng::seed_from_u64(5);
        let mut losses = Vec::new();
        for _ in 0..25 {
            let mask = model.draw_train_mask(4, &mut rng, &device).unwrap().expect("masked training");
            assert_eq!(mask.num_kept(), 8);
            let l = edm.masked_loss_at(&model, x0.clone(), &cond, sigma.clone(), noise.clone(), Some(&mask)).unwrap();
            losses.push(l.loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(l.loss.backward(), &model);
            model = optim.step(1e-2, model, grads);
        }
        let last: f32 = losses[22..].iter().sum::<f32>() / 3.0;
        assert!(last < 0.7 * losses[0], "{losses:?}");
        // the fine-tuning phase: no mask, the loss covers the whole image
        let model = model.unmasked_finetuning();
        assert!(model.draw_train_mask(4, &mut rng, &device).unwrap().is_none());
        let l = edm.masked_training_loss(&model, x0, &cond, &mut rng).unwrap();
        assert!(l.loss.into_scalar::<f32>().is_finite());
    }

    #[test]
    fn edm_sampling_with_guidance() {
        use crate::diffusion::EdmConfig;
        use crate::diffusion::process::{EdmProcess, Process};
        use crate::diffusion::timesteps::{SigmaSpacing, TimestepSchedule};
        use crate::sampling::{Euler, Sampler};
        let device = Device::flex();
        let m = randomized(tiny(MicroDiTBackbone::MicroDiT).init(&device).unwrap());
        let edm = EdmConfig::new().init().unwrap();
        let cond = captions(2, &device);
        let guided = ClassifierFreeGuidance::new(&m, MicroDiTNull::ZeroCaption, 4.0).unwrap().with_channels(GuidedChannels::All);
        let noise = randn([2, 4, 8, 8], 8, &device);
        let plan = EdmProcess::new(0.002, 80.0, 7.0, edm.sigma_data())
            .unwrap()
            .plan(2, &TimestepSchedule::new().with_sigmas(SigmaSpacing::Karras))
            .unwrap();
        let out = Euler.sample_from(&plan, &guided, &cond, noise.clone(), &mut StdRng::seed_from_u64(0), None).unwrap();
        // by hand: one Euler step 80 -> sigma_1, then the last step lands on D(x_1, sigma_1)
        let s1 = plan.levels[1].sigma;
        let x = noise * 80.0;
        let full = |s: f64| Tensor::<1>::full([2], s as f32, &device);
        let d0 = edm.denoise(&guided, x.clone(), full(80.0), &cond).unwrap();
        let x1 = x.clone() + (x - d0) * ((s1 - 80.0) / 80.0);
        let want = edm.denoise(&guided, x1, full(s1), &cond).unwrap();
        out.into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::rel_abs(1e-4, 1e-4));
        // the guided model is the reference forward_with_cfg on the scaled input
        let sc = edm.scalings(full(2.0));
        let xin = randn([2, 4, 8, 8], 9, &device);
        let a = guided.denoise(xin.clone(), sc.c_noise.clone(), &cond).unwrap();
        let b = m.forward_with_cfg(xin, sc.c_noise, &cond, 4.0).unwrap();
        a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-5));
    }
}
