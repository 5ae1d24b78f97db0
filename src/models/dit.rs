//! DiT (Peebles & Xie, "Scalable Diffusion Models with Transformers"), matching
//! facebookresearch/DiT `models.py`: a preset of the model shell
//! ([`ComposedDiT`]), whose [`DiTConfig`] names the paper's options.

use burn::prelude::*;

use crate::blocks::parts::{AttentionKind, FeedForwardKind};
use crate::blocks::{BlockKind, ConditionKind};
use crate::error::{Error, Result, ensure_config, ensure_divisible, ensure_positive};
use crate::models::composed::{ComposedDiT, ComposedDiTConfig, StageLayout};

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
        ensure_config((0.0..1.0).contains(&self.class_dropout_prob), || {
            format!("class_dropout_prob must lie in [0, 1), got {}", self.class_dropout_prob)
        })?;
        self.shell().validate()
    }

    /// The model shell this preset builds: patchify + sin-cos table, one flat stage of
    /// `depth` [`BlockKind`] blocks (multi-head attention, tanh-GELU MLP), DiT's timestep
    /// and label embedders (or per-block ones, diffusers' layout), the linear final layer.
    pub fn shell(&self) -> ComposedDiTConfig {
        ComposedDiTConfig::new()
            .with_input_size(self.input_size)
            .with_patch_size(self.patch_size)
            .with_in_channels(self.in_channels)
            .with_learn_sigma(self.learn_sigma)
            .with_hidden_size(self.hidden_size)
            .with_num_heads(Some(self.num_heads))
            .with_stages(StageLayout::Flat { depth: self.depth })
            .with_attention(AttentionKind::MultiHead)
            .with_feed_forward(FeedForwardKind::Mlp)
            .with_conditioning(self.block_kind.conditioning())
            .with_mlp_ratio(self.mlp_ratio)
            .with_condition(ConditionKind::labels(self.num_classes, self.class_dropout_prob))
            .with_timestep_freq_shift(self.timestep_freq_shift)
            .with_per_block_embedders(self.per_block_embedders)
    }

    /// Build the model (the [`shell`](Self::shell)) with the official initialisation.
    ///
    /// # Errors
    /// As [`validate`](Self::validate).
    pub fn init(&self, device: &Device) -> Result<DiT> {
        self.validate()?;
        self.shell().init(device)
    }

    /// Exact parameter count (as PyTorch's `sum(p.numel())`, `pos_embed` included),
    /// computed without building the model.
    pub fn num_params(&self) -> usize {
        self.shell().num_params()
    }

    /// Analytic forward cost per sample in multiply-accumulates, the convention of the DiT
    /// paper's "Gflops" column (fvcore counts one fused multiply-add as one flop).
    pub fn flops(&self) -> f64 {
        // only a mask ratio or an expert-choice MoE can fail the count; DiT has neither
        self.shell().flops(0.0).unwrap_or(f64::NAN)
    }
}

/// DiT is the [`ComposedDiT`] shell built by a [`DiTConfig`]: one forward, one set of
/// contracts and one checkpoint loader for every preset of the shell.
pub type DiT = ComposedDiT;

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
    fn flops_of_every_design_are_the_closed_form() {
        // DiT-S/2 per design: patchify and embedders, attention and MLP over the tokens the
        // blocks see (two more in context), the design's conditioning, the final layer
        let (d, n, h): (f64, f64, f64) = (384.0, 256.0, 1536.0);
        for kind in [BlockKind::AdaLnZero, BlockKind::AdaLn, BlockKind::CrossAttention, BlockKind::InContext] {
            let cfg = DiTConfig::from_name("DiT-S/2").unwrap().with_block_kind(kind);
            let nt = if kind == BlockKind::InContext { n + 2.0 } else { n };
            let cond = match kind {
                BlockKind::AdaLnZero => 6.0 * d * d,
                BlockKind::AdaLn => 4.0 * d * d,
                BlockKind::CrossAttention => 2.0 * nt * d * d + 4.0 * d * d + 4.0 * nt * d,
                BlockKind::InContext => 0.0,
            };
            let block = 4.0 * nt * d * d + 2.0 * nt * nt * d + 2.0 * nt * d * h + cond;
            let want = n * 16.0 * d + 256.0 * d + d * d + 12.0 * block + 2.0 * d * d + n * d * 32.0;
            assert!((cfg.flops() / want - 1.0).abs() < 1e-12, "{kind:?}: {} vs {want}", cfg.flops());
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
