//! DiT (Peebles & Xie, "Scalable Diffusion Models with Transformers"), matching
//! facebookresearch/DiT `models.py`.

use burn::module::Param;
use burn::prelude::*;
use rand::Rng;

use crate::blocks::parts::BlockCondition;
use crate::blocks::{Block, BlockConfig, BlockKind, FinalLayer, FinalLayerConfig};
use crate::blocks::{ConditionEmbedder, ConditionEmbedderConfig, ConditionInput, ConditionKind};
use crate::contracts::{Denoiser, NullConditioned, check_null_class};
use crate::error::{Error, Result, ensure_config, ensure_dims, ensure_divisible, ensure_positive};
use crate::layers::init::frozen_param;
use crate::layers::patch_embed::unpatchify;
use crate::layers::pos_embed::sincos_2d;
use crate::layers::{PatchEmbed, PatchEmbedConfig, TimestepEmbedderConfig};

/// The four DiT model sizes of the paper (Table 1).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum DiTSize {
    /// DiT-S: depth 12, hidden 384, 6 heads.
    S,
    /// DiT-B: depth 12, hidden 768, 12 heads.
    B,
    /// DiT-L: depth 24, hidden 1024, 16 heads.
    L,
    /// DiT-XL: depth 28, hidden 1152, 16 heads.
    XL,
}

impl DiTSize {
    /// `(depth, hidden_size, num_heads)`.
    pub fn dims(self) -> (usize, usize, usize) {
        match self {
            DiTSize::S => (12, 384, 6),
            DiTSize::B => (12, 768, 12),
            DiTSize::L => (24, 1024, 16),
            DiTSize::XL => (28, 1152, 16),
        }
    }
}

/// Configuration of a [`DiT`]; field names follow the official constructor.
#[derive(Config, Debug)]
pub struct DiTConfig {
    /// Latent height = width. Default: 32 (256x256 images through the SD VAE).
    #[config(default = 32)]
    pub input_size: usize,
    /// Patch size `p`. Default: 2.
    #[config(default = 2)]
    pub patch_size: usize,
    /// Latent channels. Default: 4.
    #[config(default = 4)]
    pub in_channels: usize,
    /// Width `D`. Default: 1152.
    #[config(default = 1152)]
    pub hidden_size: usize,
    /// Number of blocks. Default: 28.
    #[config(default = 28)]
    pub depth: usize,
    /// Attention heads. Default: 16.
    #[config(default = 16)]
    pub num_heads: usize,
    /// MLP ratio. Default: 4.0.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Train-time label dropout for classifier-free guidance. Default: 0.1.
    #[config(default = 0.1)]
    pub class_dropout_prob: f64,
    /// Number of classes; 0 builds an unconditional model. Default: 1000.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Predict the variance too (doubles the output channels). Default: true.
    #[config(default = true)]
    pub learn_sigma: bool,
    /// Block conditioning design. Default: adaLN-Zero.
    #[config(default = "BlockKind::AdaLnZero")]
    pub block_kind: BlockKind,
    /// Timestep embedding frequency shift (0 official, 1 for diffusers' DiT). Default: 0.
    #[config(default = 0.0)]
    pub timestep_freq_shift: f64,
    /// Give every block after the first its own timestep/label embedder, as diffusers'
    /// `DiTTransformer2DModel` does; block 0 and the final layer use the model-level ones.
    /// Default: false (the official model).
    #[config(default = false)]
    pub per_block_embedders: bool,
}

impl DiTConfig {
    /// The names [`from_name`](Self::from_name) accepts: the paper's twelve configurations.
    pub const PRESETS: &'static [&'static str] = &[
        "DiT-S/2", "DiT-S/4", "DiT-S/8", "DiT-B/2", "DiT-B/4", "DiT-B/8", "DiT-L/2", "DiT-L/4", "DiT-L/8", "DiT-XL/2",
        "DiT-XL/4", "DiT-XL/8",
    ];

    /// The paper's preset `DiT-{size}/{patch}` (patch 2, 4 or 8), other fields default.
    pub fn preset(size: DiTSize, patch_size: usize) -> Result<Self> {
        ensure_config(matches!(patch_size, 2 | 4 | 8), || {
            format!("DiT presets exist for patch sizes 2, 4 and 8, got {patch_size}")
        })?;
        let (depth, hidden, heads) = size.dims();
        Ok(Self::new()
            .with_depth(depth)
            .with_hidden_size(hidden)
            .with_num_heads(heads)
            .with_patch_size(patch_size))
    }

    /// Parse a preset name such as `"DiT-XL/2"`.
    pub fn from_name(name: &str) -> Result<Self> {
        let bad = || Error::InvalidConfig(format!("unknown DiT preset `{name}` (expected e.g. DiT-XL/2)"));
        let rest = name.strip_prefix("DiT-").ok_or_else(bad)?;
        let (size, patch) = rest.split_once('/').ok_or_else(bad)?;
        let size = match size {
            "S" => DiTSize::S,
            "B" => DiTSize::B,
            "L" => DiTSize::L,
            "XL" => DiTSize::XL,
            _ => return Err(bad()),
        };
        Self::preset(size, patch.parse().map_err(|_| bad())?)
    }

    /// Output channels (`2 * in_channels` with `learn_sigma`).
    pub fn out_channels(&self) -> usize {
        if self.learn_sigma { 2 * self.in_channels } else { self.in_channels }
    }

    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.input_size / self.patch_size
    }

    /// Number of image tokens `N`.
    pub fn num_tokens(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// The block: the [`Block`] preset of the configured design ([`BlockKind::block_config`]).
    pub fn block_config(&self) -> BlockConfig {
        self.block_kind.block_config(self.hidden_size, self.num_heads, self.mlp_ratio)
    }

    /// Checks every size constraint; called by [`init`](Self::init).
    pub fn validate(&self) -> Result<()> {
        ensure_positive(&[
            ("input_size", self.input_size),
            ("patch_size", self.patch_size),
            ("in_channels", self.in_channels),
            ("hidden_size", self.hidden_size),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
        ])?;
        ensure_divisible("hidden_size", self.hidden_size, "num_heads", self.num_heads)?;
        ensure_divisible("input_size", self.input_size, "patch_size", self.patch_size)?;
        ensure_config(self.hidden_size % 4 == 0, || {
            format!("hidden_size {} must be a multiple of 4 for the 2-D sin-cos table", self.hidden_size)
        })?;
        ensure_config((0.0..1.0).contains(&self.class_dropout_prob), || {
            format!("class_dropout_prob must lie in [0, 1), got {}", self.class_dropout_prob)
        })
    }

    /// Build the model with the official initialisation.
    pub fn init(&self, device: &Device) -> Result<DiT> {
        self.validate()?;
        let d = self.hidden_size;
        let g = self.grid_size();
        let pos = sincos_2d(d, [g, g], device)?.unsqueeze_dim::<3>(0);
        let block = self.block_config();
        let extra = if self.per_block_embedders { self.depth - 1 } else { 0 };
        Ok(DiT {
            x_embedder: PatchEmbedConfig::new(self.in_channels, d, self.patch_size).init(device)?,
            cond_embedder: self.condition_embedder().init(device)?,
            block_embedders: (0..extra).map(|_| self.condition_embedder().init(device)).collect::<Result<_>>()?,
            pos_embed: frozen_param(pos),
            blocks: (0..self.depth).map(|_| block.init(device)).collect::<Result<_>>()?,
            final_layer: FinalLayerConfig::new(d, self.patch_size * self.patch_size * self.out_channels()).init(device)?,
            input_size: self.input_size,
            patch_size: self.patch_size,
            in_channels: self.in_channels,
            out_channels: self.out_channels(),
            block_kind: self.block_kind,
        })
    }

    /// The timestep and label embedder: DiT's timestep embedder (256 frequencies, SiLU) and
    /// label table (none when `num_classes` is 0).
    pub fn condition_embedder(&self) -> ConditionEmbedderConfig {
        let condition = match self.num_classes {
            0 => ConditionKind::None,
            n => ConditionKind::Labels { num_classes: n, dropout_prob: self.class_dropout_prob },
        };
        ConditionEmbedderConfig::new(TimestepEmbedderConfig::new(self.hidden_size).with_downscale_freq_shift(self.timestep_freq_shift))
            .with_condition(condition)
    }

    /// Exact parameter count (as PyTorch's `sum(p.numel())`, `pos_embed` included),
    /// computed without building the model.
    pub fn num_params(&self) -> usize {
        let (d, p, c) = (self.hidden_size, self.patch_size, self.in_channels);
        let lin = |i: usize, o: usize| i * o + o;
        let h = self.block_config().mlp_hidden();
        let freq = 256;
        let mut embedder = lin(freq, d) + lin(d, d); // t_embedder
        if self.num_classes > 0 {
            embedder += (self.num_classes + usize::from(self.class_dropout_prob > 0.0)) * d;
        }
        let copies = if self.per_block_embedders { self.depth } else { 1 };
        let mut n = c * p * p * d + d + copies * embedder; // x_embedder + embedders
        n += self.num_tokens() * d; // pos_embed
        let mut block = lin(d, 3 * d) + lin(d, d) + lin(d, h) + lin(h, d);
        block += match self.block_kind {
            BlockKind::AdaLnZero | BlockKind::AdaLn => lin(d, self.block_kind.modulation_chunks() * d),
            BlockKind::InContext => 4 * d,
            BlockKind::CrossAttention => 6 * d + lin(d, d) + lin(d, 2 * d) + lin(d, d),
        };
        n += self.depth * block;
        n + lin(d, 2 * d) + lin(d, p * p * self.out_channels())
    }

    /// Analytic forward cost per sample in multiply-accumulates, the convention of the DiT
    /// paper's "Gflops" column (fvcore counts one fused multiply-add as one flop).
    pub fn flops(&self) -> f64 {
        let (d, p, c) = (self.hidden_size as f64, self.patch_size as f64, self.in_channels as f64);
        let n = self.num_tokens() as f64;
        let m = match self.block_kind {
            BlockKind::InContext => 2.0,
            _ => 0.0,
        };
        let nt = n + m; // tokens the blocks see
        let h = self.block_config().mlp_hidden() as f64;
        let attn = nt * (3.0 * d * d + d * d) + 2.0 * nt * nt * d;
        let mlp = 2.0 * nt * d * h;
        let cond = match self.block_kind {
            BlockKind::AdaLnZero | BlockKind::AdaLn => self.block_kind.modulation_chunks() as f64 * d * d,
            // q over N tokens, k/v over 2 tokens, output projection, 2x2 attention products
            BlockKind::CrossAttention => nt * d * d * 2.0 + 2.0 * 2.0 * d * d + 2.0 * 2.0 * nt * d,
            BlockKind::InContext => 0.0,
        };
        let blocks = self.depth as f64 * (attn + mlp + cond);
        let embed = n * c * p * p * d + 256.0 * d + d * d;
        let fin = 2.0 * d * d + n * d * p * p * self.out_channels() as f64;
        embed + blocks + fin
    }
}

/// The conditioning a [`DiT`] computes from `(t, y)`.
#[derive(Debug, Clone)]
pub struct Condition {
    /// Timestep embedding `[B, D]`.
    pub t_emb: Tensor<2>,
    /// Label embedding `[B, D]` (class-conditional models).
    pub y_emb: Option<Tensor<2>>,
    /// Conditioning vectors of blocks 1.. when the model has per-block embedders.
    pub block_vectors: Vec<Tensor<2>>,
}

impl Condition {
    /// `t_emb + y_emb`: the vector of block 0 and the final layer.
    pub fn vector(&self) -> Tensor<2> {
        match &self.y_emb {
            Some(y) => self.t_emb.clone() + y.clone(),
            None => self.t_emb.clone(),
        }
    }

    /// The vector block `i` is conditioned on.
    pub fn block_vector(&self, i: usize) -> Tensor<2> {
        match i.checked_sub(1).and_then(|k| self.block_vectors.get(k)) {
            Some(v) => v.clone(),
            None => self.vector(),
        }
    }

    /// Conditioning tokens `[B, M, D]` (`[t_emb, y_emb]`) for the cross-attention and
    /// in-context designs.
    pub fn tokens(&self) -> Tensor<3> {
        let mut v = vec![self.t_emb.clone().unsqueeze_dim::<3>(1)];
        v.extend(self.y_emb.clone().map(|y| y.unsqueeze_dim::<3>(1)));
        Tensor::cat(v, 1)
    }
}

/// Diffusion transformer with patchify, sin-cos positions, timestep/label embedders, a stack of
/// [`Block`]s (the preset of the block design), the adaLN final layer and unpatchify.
#[derive(Module, Debug)]
pub struct DiT {
    /// Patch embedding (`x_embedder.proj`).
    pub x_embedder: PatchEmbed,
    /// Timestep and label embedders (`t_embedder.mlp.{0,2}`, `y_embedder.embedding_table`).
    pub cond_embedder: ConditionEmbedder,
    /// Embedders of blocks 1.. (only with `per_block_embedders`, diffusers' layout).
    pub block_embedders: Vec<ConditionEmbedder>,
    /// Fixed 2-D sin-cos table `[1, N, D]` (persisted and counted, never trained).
    pub pos_embed: Param<Tensor<3>>,
    /// Transformer blocks (the [`Block`] preset of the block design).
    pub blocks: Vec<Block>,
    /// Final adaLN layer.
    pub final_layer: FinalLayer,
    /// Latent height = width.
    pub input_size: usize,
    /// Patch size.
    pub patch_size: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Block design.
    #[module(skip)]
    pub block_kind: BlockKind,
}

fn labels(y: Option<&Tensor<1, Int>>) -> ConditionInput<'_> {
    y.map_or(ConditionInput::None, ConditionInput::Labels)
}

impl DiT {
    /// Number of real classes (0 for unconditional models); label `num_classes` is the null
    /// class.
    pub fn num_classes(&self) -> usize {
        self.cond_embedder.labels().map_or(0, |e| e.num_classes)
    }

    /// Shapes, labels' presence, then [`crate::validate::model_inputs`] (non-empty batch, dtype,
    /// finite values, timestep range).
    fn check_inputs(&self, x: Tensor<4>, t: Tensor<1>, y: Option<&Tensor<1, Int>>) -> Result<(Tensor<4>, Tensor<1>)> {
        let s = Some(self.input_size);
        ensure_dims("x", x.dims(), [None, Some(self.in_channels), s, s])?;
        let b = x.dims()[0];
        ensure_dims("t", t.dims(), [Some(b)])?;
        self.cond_embedder.check(labels(y), b)?;
        crate::validate::model_inputs(x, t, self.x_embedder.proj.weight.dtype())
    }

    /// Patch embedding plus position table.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]` -> `[B, N, D]`
    pub fn embed(&self, x: Tensor<4>) -> Result<Tensor<3>> {
        Ok(self.x_embedder.forward(x)? + self.pos_embed.val())
    }

    /// The conditioning computed from timesteps and labels; labels where `drop` is true are
    /// replaced by the null class.
    ///
    /// # Shapes
    /// - `t`: `[B]`, `y`: `[B]`, `drop`: `[B]`
    pub fn embed_condition(
        &self,
        t: Tensor<1>,
        y: Option<Tensor<1, Int>>,
        drop: Option<Tensor<1, Bool>>,
    ) -> Result<Condition> {
        let e = self.cond_embedder.forward(t.clone(), labels(y.as_ref()), drop.clone())?;
        let block_vectors = self
            .block_embedders
            .iter()
            .map(|b| Ok(b.forward(t.clone(), labels(y.as_ref()), drop.clone())?.vector()))
            .collect::<Result<_>>()?;
        Ok(Condition { t_emb: e.t_emb, y_emb: e.y_emb, block_vectors })
    }

    fn forward_block_with(&self, i: usize, x: Tensor<3>, cond: &Condition, context: Option<Tensor<3>>) -> Result<Tensor<3>> {
        let block = self.blocks.get(i).ok_or_else(|| Error::InvalidArgument(format!("block {i} of {}", self.blocks.len())))?;
        block.forward(x, None, &BlockCondition { c: cond.block_vector(i), shared: None, context })
    }

    /// Runs block `i` alone (the cross-attention design attends to `cond.tokens()`).
    ///
    /// # Shapes
    /// - `x`: `[B, N, D]` -> `[B, N, D]`
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an index past the last block, [`Error::Shape`] for a
    /// wrong width.
    pub fn forward_block(&self, i: usize, x: Tensor<3>, cond: &Condition) -> Result<Tensor<3>> {
        let context = (self.block_kind == BlockKind::CrossAttention).then(|| cond.tokens());
        self.forward_block_with(i, x, cond, context)
    }

    /// Runs the blocks and final layer on embedded tokens.
    ///
    /// # Shapes
    /// - `tokens`: `[B, N, D]` -> `[B, C_out, H, W]`
    ///
    /// # Errors
    /// [`Error::Shape`] when the tokens' width is not the model's.
    pub fn forward_tokens(&self, tokens: Tensor<3>, cond: &Condition) -> Result<Tensor<4>> {
        let [b, n, d] = tokens.dims();
        let (mut h, context, m) = match self.block_kind {
            BlockKind::InContext => {
                let ct = cond.tokens();
                let m = ct.dims()[1];
                (Tensor::cat(vec![ct, tokens], 1), None, m)
            }
            BlockKind::CrossAttention => (tokens, Some(cond.tokens()), 0),
            _ => (tokens, None, 0),
        };
        for i in 0..self.blocks.len() {
            h = self.forward_block_with(i, h, cond, context.clone())?;
        }
        if m > 0 {
            h = h.slice([0..b, m..m + n, 0..d]);
        }
        let out = self.final_layer.forward(h, cond.vector())?;
        let g = self.input_size / self.patch_size;
        Ok(unpatchify(out, self.patch_size, self.out_channels, [g, g]))
    }

    /// Denoiser forward (eval mode, no label dropout).
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]`, `t`: `[B]` (float timesteps), `y`: `[B]` labels in
    ///   `0..=num_classes` (`num_classes` is the null class), `None` for unconditional models
    /// - output: `[B, C_out, H, W]`
    ///
    /// # Errors
    /// [`Error::Shape`] for wrong shapes or an empty batch, [`Error::InvalidArgument`] for
    /// missing/unexpected labels, labels outside the table or `|t| > 1e5`, [`Error::Numerical`]
    /// for NaN/inf in `x` or `t`. Time is continuous: any finite `|t| <= 1e5` is accepted
    /// (respaced and flow samplers use fractional `t`); see [`crate::validate`]. Float64
    /// inputs are cast to the model's dtype.
    pub fn forward(&self, x: Tensor<4>, t: Tensor<1>, y: Option<Tensor<1, Int>>) -> Result<Tensor<4>> {
        self.forward_with_drop(x, t, y, None)
    }

    /// Forward with forced label dropout: labels where `drop` is true become the null class.
    pub fn forward_with_drop(
        &self,
        x: Tensor<4>,
        t: Tensor<1>,
        y: Option<Tensor<1, Int>>,
        drop: Option<Tensor<1, Bool>>,
    ) -> Result<Tensor<4>> {
        let (x, t) = self.check_inputs(x, t, y.as_ref())?;
        let tokens = self.embed(x)?;
        let cond = self.embed_condition(t, y, drop)?;
        self.forward_tokens(tokens, &cond)
    }

    /// Training forward: labels are dropped to the null class with the configured probability,
    /// drawing from `rng`.
    pub fn forward_train<R: Rng>(
        &self,
        x: Tensor<4>,
        t: Tensor<1>,
        y: Option<Tensor<1, Int>>,
        rng: &mut R,
    ) -> Result<Tensor<4>> {
        let drop = self.cond_embedder.labels().and_then(|e| e.draw_drop_mask(x.dims()[0], rng, &x.device()));
        self.forward_with_drop(x, t, y, drop)
    }

    /// Classifier-free guidance exactly as the official `forward_with_cfg`: the batch's first
    /// half is conditional, the second half carries null labels; both halves are run on the
    /// first half's latents, the first `guided_channels` output channels are guided
    /// (`uncond + scale * (cond - uncond)`, the official code uses 3) and the rest passed
    /// through; the guided half is returned twice.
    ///
    /// Kept only as the official code's parity path (the `dit_official` fixtures check it); new
    /// code guides through the sampling module's `ClassifierFreeGuidance::for_model`
    /// (`GuidedChannels::First(3)` for this rule).
    ///
    /// # Shapes
    /// - `x`: `[2B, C, H, W]`, `t`: `[2B]`, `y`: `[2B]` -> `[2B, C_out, H, W]`
    pub fn forward_with_cfg(
        &self,
        x: Tensor<4>,
        t: Tensor<1>,
        y: Tensor<1, Int>,
        cfg_scale: f64,
        guided_channels: usize,
    ) -> Result<Tensor<4>> {
        crate::models::official_cfg::official_forward_with_cfg(x, cfg_scale, guided_channels, |x| self.forward(x, t, Some(y)))
    }
}

impl Denoiser for DiT {
    /// Class labels (`None` for unconditional models); the null class is `num_classes`.
    type Cond = Option<Tensor<1, Int>>;

    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
        self.forward(x, t, cond.clone())
    }
}

/// The null class must be `num_classes`, the label table's extra row.
impl NullConditioned for DiT {
    fn check_null(&self, null: &usize) -> Result<()> {
        let e = self.cond_embedder.labels();
        check_null_class(*null, e.map_or(0, |e| e.num_classes), e.map_or(0, |e| e.num_rows()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(kind: BlockKind) -> DiTConfig {
        DiTConfig::new()
            .with_input_size(8)
            .with_hidden_size(32)
            .with_depth(2)
            .with_num_heads(4)
            .with_num_classes(5)
            .with_block_kind(kind)
    }

    #[test]
    fn analytic_params_match_module_for_every_design() {
        let device = Device::flex();
        for kind in [BlockKind::AdaLnZero, BlockKind::AdaLn, BlockKind::CrossAttention, BlockKind::InContext] {
            for (classes, per_block) in [(0, false), (5, false), (5, true)] {
                let cfg = tiny(kind).with_num_classes(classes).with_per_block_embedders(per_block);
                let m = cfg.init(&device).unwrap();
                assert_eq!(m.num_params(), cfg.num_params(), "{kind:?} classes={classes}");
            }
        }
    }

    #[test]
    fn official_parameter_counts() {
        let count = |name: &str| DiTConfig::from_name(name).unwrap().num_params();
        assert_eq!(count("DiT-XL/2"), 675_129_632);
        assert_eq!(count("DiT-S/2"), 32_963_360);
        assert_eq!(count("DiT-B/4"), 130_475_648);
        assert_eq!(count("DiT-L/8"), 458_594_816);
    }

    #[test]
    fn paper_gflops_within_a_tenth_of_a_percent() {
        for (name, paper) in [
            ("DiT-S/2", 6.06),
            ("DiT-B/2", 23.01),
            ("DiT-L/2", 80.71),
            ("DiT-XL/2", 118.64),
            ("DiT-XL/4", 29.05),
            ("DiT-XL/8", 7.39),
        ] {
            let g = DiTConfig::from_name(name).unwrap().flops() / 1e9;
            assert!((g / paper - 1.0).abs() < 1e-3, "{name}: {g} vs {paper}");
        }
    }

    #[test]
    fn all_twelve_presets_validate() {
        for size in [DiTSize::S, DiTSize::B, DiTSize::L, DiTSize::XL] {
            for p in [2, 4, 8] {
                DiTConfig::preset(size, p).unwrap().validate().unwrap();
            }
        }
        assert!(DiTConfig::preset(DiTSize::S, 3).is_err());
        assert!(DiTConfig::from_name("DiT-M/2").is_err());
    }

    #[test]
    fn invalid_configs_are_errors() {
        let device = Device::flex();
        assert!(tiny(BlockKind::AdaLnZero).with_num_heads(5).init(&device).is_err());
        assert!(tiny(BlockKind::AdaLnZero).with_input_size(9).init(&device).is_err());
        assert!(tiny(BlockKind::AdaLnZero).with_depth(0).init(&device).is_err());
        assert!(tiny(BlockKind::AdaLnZero).with_class_dropout_prob(1.5).init(&device).is_err());
    }

    #[test]
    fn forward_shapes_and_zero_init_output() {
        let device = Device::flex();
        for kind in [BlockKind::AdaLnZero, BlockKind::AdaLn, BlockKind::CrossAttention, BlockKind::InContext] {
            let m = tiny(kind).init(&device).unwrap();
            let x = crate::test_util::randn([2, 4, 8, 8], 101, &device);
            let t = Tensor::<1>::from_floats([1.0, 500.0], &device);
            let y = Tensor::<1, Int>::from_ints([0, 5], &device);
            let out = m.forward(x, t, Some(y)).unwrap();
            assert_eq!(out.dims(), [2, 8, 8, 8]);
            // the final layer is zero-initialised
            assert!(out.equal_elem(0.0).all().into_scalar::<bool>());
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let device = Device::flex();
        let m = tiny(BlockKind::AdaLnZero).init(&device).unwrap();
        let t = Tensor::<1>::zeros([2], &device);
        let y = Some(Tensor::<1, Int>::from_ints([0, 1], &device));
        assert!(m.forward(Tensor::zeros([2, 3, 8, 8], &device), t.clone(), y.clone()).is_err());
        assert!(m.forward(Tensor::zeros([2, 4, 6, 8], &device), t.clone(), y.clone()).is_err());
        assert!(m.forward(Tensor::zeros([2, 4, 8, 8], &device), Tensor::zeros([3], &device), y).is_err());
        assert!(m.forward(Tensor::zeros([2, 4, 8, 8], &device), t.clone(), None).is_err());
        let big = Some(Tensor::<1, Int>::from_ints([0, 6], &device));
        assert!(m.forward(Tensor::zeros([2, 4, 8, 8], &device), t.clone(), big).is_err());
        let y2 = Tensor::<1, Int>::from_ints([0, 5], &device);
        assert!(m.forward_with_cfg(Tensor::zeros([3, 4, 8, 8], &device), Tensor::zeros([3], &device), Tensor::from_ints([0, 1, 5], &device), 4.0, 3).is_err());
        assert!(m.forward_with_cfg(Tensor::zeros([2, 4, 8, 8], &device), t, y2, 4.0, 9).is_err());
    }
}
