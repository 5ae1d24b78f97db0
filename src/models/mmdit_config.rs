//! Configuration of the [`MMDiT`]: diffusers' `SD3Transformer2DModel` options, the presets of
//! the released models (SD3-medium, SD3.5 medium / large / large-turbo), the paper's depth
//! parametrisation, parsing of a diffusers `config.json`, and the exact parameter and analytic
//! compute counts.

use burn::prelude::*;

use crate::blocks::{ConditionKind, JointBlockConfig};
use crate::error::{Error, Result, ensure_config, ensure_positive};
use crate::layers::attention::QkNorm;
use crate::models::composed_config::{ComposedDiTConfig, StageLayout};
use crate::models::MMDiT;

/// Text tokens the SD3 paper's compute figures assume: 77 CLIP + 77 T5 tokens.
pub const PAPER_TEXT_TOKENS: usize = 154;

/// Width of the sinusoidal timestep features (diffusers `Timesteps(256, ...)`).
pub(crate) const TIMESTEP_FREQ_DIM: usize = 256;

/// Configuration of an [`MMDiT`]; field names and meanings follow diffusers'
/// `SD3Transformer2DModel` constructor, defaults are SD3-medium (`d = 24`).
#[derive(Config, Debug)]
pub struct MMDiTConfig {
    /// Latent side the model was trained at; sets the position-table scale
    /// (`base_size = sample_size / patch_size`). Default: 128.
    #[config(default = 128)]
    pub sample_size: usize,
    /// Patch size `p`. Default: 2.
    #[config(default = 2)]
    pub patch_size: usize,
    /// Latent channels. Default: 16.
    #[config(default = 16)]
    pub in_channels: usize,
    /// Number of joint blocks. Default: 24.
    #[config(default = 24)]
    pub num_layers: usize,
    /// Channels per head. Default: 64.
    #[config(default = 64)]
    pub attention_head_dim: usize,
    /// Attention heads; the width is `num_attention_heads * attention_head_dim`. Default: 24.
    #[config(default = 24)]
    pub num_attention_heads: usize,
    /// Width of the per-token text embeddings (T5-XXL / padded CLIP: 4096). Default: 4096.
    #[config(default = 4096)]
    pub joint_attention_dim: usize,
    /// Width of the pooled text vector (CLIP-L 768 + CLIP-G 1280). Default: 2048.
    #[config(default = 2048)]
    pub pooled_projection_dim: usize,
    /// Output channels. Default: 16.
    #[config(default = 16)]
    pub out_channels: usize,
    /// Side `M` of the square position table, in patches; inputs may have up to `M` patches
    /// per side. Default: 192 (SD3-medium).
    #[config(default = 192)]
    pub pos_embed_max_size: usize,
    /// Per-head query/key normalisation in every block (eps 1e-6). Default: none (SD3);
    /// RMSNorm for SD3.5.
    #[config(default = "QkNorm::None")]
    pub qk_norm: QkNorm,
    /// Indices of the blocks whose image stream has a second, image-only self-attention
    /// (SD3.5's MMDiT-X, diffusers `dual_attention_layers`; SD3.5-medium: blocks 0..=12).
    /// Default: none (SD3, SD3.5-large).
    #[config(default = "Vec::new()")]
    pub dual_attention_layers: Vec<usize>,
    /// MLP ratio. Default: 4.0.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Divisor of the position-table coordinates (diffusers `interpolation_scale`). Default: 1.0.
    #[config(default = 1.0)]
    pub pos_embed_interpolation_scale: f64,
}

impl MMDiTConfig {
    /// The names [`from_name`](Self::from_name) accepts: the released models and the paper's
    /// depth presets.
    pub const PRESETS: &'static [&'static str] =
        &["SD3-medium", "SD3.5-medium", "SD3.5-large", "SD3.5-large-turbo", "MM-DiT-d2", "MM-DiT-d24", "MM-DiT-d38"];

    /// A preset by name (one of [`PRESETS`](Self::PRESETS)).
    ///
    /// # Errors
    /// An unknown name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "SD3-medium" => Ok(Self::sd3_medium()),
            "SD3.5-medium" => Ok(Self::sd35_medium()),
            "SD3.5-large" => Ok(Self::sd35_large()),
            "SD3.5-large-turbo" => Ok(Self::sd35_large_turbo()),
            _ => match name.strip_prefix("MM-DiT-d").and_then(|d| d.parse::<usize>().ok()) {
                Some(depth @ (2 | 24 | 38)) => Self::preset(depth),
                _ => Err(Error::InvalidConfig(format!(
                    "unknown MM-DiT preset `{name}` (expected one of {})",
                    Self::PRESETS.join(", ")
                ))),
            },
        }
    }

    /// The paper's depth parametrisation: width `64 d`, `d` heads of 64 channels, `d` blocks,
    /// MLP ratio 4; every other field is SD3-medium's (16 latent channels, patch 2, text widths
    /// 4096 / 2048, table 192).
    pub fn from_depth(depth: usize) -> Result<Self> {
        ensure_config(depth > 0, || "MM-DiT depth must be positive".to_string())?;
        Ok(Self::new().with_num_layers(depth).with_num_attention_heads(depth).with_attention_head_dim(64))
    }

    /// The presets: `d = 2` (tiny, for tests and toy training: 4 latent channels, 16x16
    /// latents, table 32, text widths 64), `d = 24` (SD3-medium) and `d = 38` (the 8B model,
    /// with QK RMSNorm as SD3.5-Large).
    pub fn preset(depth: usize) -> Result<Self> {
        let cfg = Self::from_depth(depth)?;
        match depth {
            2 => Ok(cfg
                .with_in_channels(4)
                .with_out_channels(4)
                .with_sample_size(16)
                .with_pos_embed_max_size(32)
                .with_joint_attention_dim(64)
                .with_pooled_projection_dim(64)),
            24 => Ok(cfg),
            38 => Ok(cfg.with_qk_norm(QkNorm::RmsNorm)),
            _ => Err(Error::InvalidConfig(format!(
                "MM-DiT presets exist for depths 2, 24 and 38, got {depth} (use from_depth for others)"
            ))),
        }
    }

    /// SD3-medium (`stabilityai/stable-diffusion-3-medium-diffusers`): 24 blocks of width
    /// 1536, table 192, no QK norm; 2.03B parameters. Equal to `preset(24)`.
    pub fn sd3_medium() -> Self {
        Self::new()
    }

    /// SD3.5-medium (`stabilityai/stable-diffusion-3.5-medium`), MMDiT-X: 24 blocks of width
    /// 1536, QK RMSNorm, dual attention in blocks 0..=12, table 384; 2.24B parameters, 2.47B
    /// with the 384 x 384 position table (a parameter in Stability's checkpoint, hence the
    /// "2.5B" of the release).
    pub fn sd35_medium() -> Self {
        Self::new()
            .with_qk_norm(QkNorm::RmsNorm)
            .with_pos_embed_max_size(384)
            .with_dual_attention_layers((0..=12).collect())
    }

    /// SD3.5-large (`stabilityai/stable-diffusion-3.5-large`): 38 blocks of width 2432, QK
    /// RMSNorm, table 192, no dual attention; 8.06B parameters. Equal to `preset(38)`.
    pub fn sd35_large() -> Self {
        Self::new()
            .with_num_layers(38)
            .with_num_attention_heads(38)
            .with_qk_norm(QkNorm::RmsNorm)
    }

    /// SD3.5-large-turbo (`stabilityai/stable-diffusion-3.5-large-turbo`), the
    /// timestep-distilled SD3.5-large: the same transformer as [`sd35_large`](Self::sd35_large)
    /// (it differs in its weights and in being sampled in about 4 steps without guidance).
    pub fn sd35_large_turbo() -> Self {
        Self::sd35_large()
    }

    /// A configuration from a diffusers `SD3Transformer2DModel` config (the `config.json` of a
    /// `transformer/` folder, or its constructor arguments); missing fields take diffusers'
    /// defaults. `caption_projection_dim` must equal the width and `pos_embed_max_size` must be
    /// set; `dual_attention_layers` (SD3.5-medium's MMDiT-X) lists block indices.
    pub fn from_diffusers_config(cfg: &serde_json::Value) -> Result<Self> {
        use serde_json::Value;
        let bad = |key: &str, why: &str| Error::InvalidConfig(format!("diffusers config `{key}`: {why}"));
        let int = |key: &str, default: usize| -> Result<usize> {
            match cfg.get(key) {
                None => Ok(default),
                Some(v) => v.as_u64().map(|v| v as usize).ok_or_else(|| bad(key, "expected an integer")),
            }
        };
        let in_channels = int("in_channels", 16)?;
        let out_channels = match cfg.get("out_channels") {
            None | Some(Value::Null) => in_channels,
            Some(_) => int("out_channels", 16)?,
        };
        let pos_embed_max_size = match cfg.get("pos_embed_max_size") {
            Some(Value::Null) => {
                return Err(bad("pos_embed_max_size", "null (an uncropped table) is not supported"));
            }
            _ => int("pos_embed_max_size", 96)?,
        };
        let qk_norm = match cfg.get("qk_norm") {
            None | Some(Value::Null) => QkNorm::None,
            Some(v) => match v.as_str() {
                Some("rms_norm") => QkNorm::RmsNorm,
                Some("layer_norm") => QkNorm::LayerNorm,
                _ => return Err(bad("qk_norm", &format!("{v} is not supported (null, \"rms_norm\", \"layer_norm\")"))),
            },
        };
        let dual_attention_layers = match cfg.get("dual_attention_layers") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|i| i.as_u64().map(|i| i as usize)).collect::<Option<Vec<_>>>())
                .ok_or_else(|| bad("dual_attention_layers", "expected a list of block indices"))?,
        };
        let out = Self::new()
            .with_sample_size(int("sample_size", 128)?)
            .with_patch_size(int("patch_size", 2)?)
            .with_in_channels(in_channels)
            .with_num_layers(int("num_layers", 18)?)
            .with_attention_head_dim(int("attention_head_dim", 64)?)
            .with_num_attention_heads(int("num_attention_heads", 18)?)
            .with_joint_attention_dim(int("joint_attention_dim", 4096)?)
            .with_pooled_projection_dim(int("pooled_projection_dim", 2048)?)
            .with_out_channels(out_channels)
            .with_pos_embed_max_size(pos_embed_max_size)
            .with_qk_norm(qk_norm)
            .with_dual_attention_layers(dual_attention_layers);
        let caption = int("caption_projection_dim", 1152)?;
        ensure_config(caption == out.hidden_size(), || {
            format!(
                "caption_projection_dim {caption} must equal num_attention_heads * attention_head_dim = {}",
                out.hidden_size()
            )
        })?;
        Ok(out)
    }

    /// Model width `D = num_attention_heads * attention_head_dim`.
    pub fn hidden_size(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// MLP hidden width `int(D * mlp_ratio)`.
    pub fn mlp_hidden(&self) -> usize {
        (self.hidden_size() as f64 * self.mlp_ratio) as usize
    }

    /// Patch grid of the training resolution, `sample_size / patch_size`.
    pub fn base_size(&self) -> usize {
        self.sample_size / self.patch_size
    }

    /// Whether block `index` has a dual attention (MMDiT-X).
    pub fn is_dual_attention(&self, index: usize) -> bool {
        self.dual_attention_layers.contains(&index)
    }

    /// The joint block preset of block `index`: MMDiT-X dual attention in the listed blocks,
    /// a pre-only text stream (`context_pre_only`) in the last one.
    pub fn block_config(&self, index: usize) -> JointBlockConfig {
        JointBlockConfig::new(self.hidden_size(), self.num_attention_heads)
            .with_mlp_ratio(self.mlp_ratio)
            .with_qk_norm(self.qk_norm)
            .with_dual_attention(self.is_dual_attention(index))
            .with_context_pre_only(index + 1 == self.num_layers)
    }

    /// Checks every size constraint; called by [`init`](Self::init).
    pub fn validate(&self) -> Result<()> {
        ensure_positive(&[
            ("sample_size", self.sample_size),
            ("patch_size", self.patch_size),
            ("in_channels", self.in_channels),
            ("num_layers", self.num_layers),
            ("attention_head_dim", self.attention_head_dim),
            ("num_attention_heads", self.num_attention_heads),
            ("joint_attention_dim", self.joint_attention_dim),
            ("pooled_projection_dim", self.pooled_projection_dim),
            ("out_channels", self.out_channels),
            ("pos_embed_max_size", self.pos_embed_max_size),
        ])?;
        ensure_config(self.dual_attention_layers.iter().all(|&i| i < self.num_layers), || {
            format!(
                "dual_attention_layers {:?} must be block indices below num_layers {}",
                self.dual_attention_layers, self.num_layers
            )
        })?;
        ensure_config(self.sample_size >= self.patch_size, || {
            format!("sample_size {} is smaller than patch_size {}", self.sample_size, self.patch_size)
        })?;
        ensure_config(self.hidden_size().is_multiple_of(4), || {
            format!("width {} must be a multiple of 4 for the 2-D sin-cos table", self.hidden_size())
        })?;
        ensure_config(self.mlp_ratio > 0.0 && self.mlp_hidden() > 0, || {
            format!("mlp_ratio must give a positive hidden width, got {}", self.mlp_ratio)
        })
    }

    /// The model shell this preset builds: patch stem with the `pos_embed_max_size` table
    /// centre-cropped to each input, the pooled-text condition and the `context_embedder`, one
    /// flat stage of joint blocks ([`block_config`](Self::block_config); the last one's text
    /// stream is pre-only), DiT's final layer.
    pub fn shell(&self) -> ComposedDiTConfig {
        ComposedDiTConfig::new()
            .with_input_size(self.sample_size)
            .with_patch_size(self.patch_size)
            .with_in_channels(self.in_channels)
            .with_output_channels(Some(self.out_channels))
            .with_hidden_size(self.hidden_size())
            .with_head_dim(self.attention_head_dim)
            .with_stages(StageLayout::Flat { depth: self.num_layers })
            .with_blocks(Some((0..self.num_layers).map(|i| self.block_config(i).block_config()).collect()))
            .with_condition(ConditionKind::Pooled { pooled_dim: self.pooled_projection_dim })
            .with_timestep_frequency_size(TIMESTEP_FREQ_DIM)
            .with_pos_embed_max_size(Some(self.pos_embed_max_size))
            .with_pos_interp_scale(self.pos_embed_interpolation_scale)
            .with_context_dim(Some(self.joint_attention_dim))
    }

    /// Build the model (the [`shell`](Self::shell)): Xavier-uniform linears, zero adaLN
    /// modulations and final layer (adaLN-Zero, as DiT), normal(0.02) timestep embedder, the
    /// fixed sin-cos table.
    ///
    /// # Errors
    /// As [`validate`](Self::validate).
    pub fn init(&self, device: &Device) -> Result<MMDiT> {
        self.validate()?;
        Ok(MMDiT { shell: self.shell().init(device)? })
    }

    /// Exact parameter count as PyTorch's `sum(p.numel() for p in model.parameters())` of the
    /// diffusers model (the position table is a buffer there and is not counted), computed
    /// without building the model. Burn's `Module::num_params` of an [`MMDiT`] additionally
    /// counts the frozen `pos_embed_max_size^2 * D` table.
    pub fn num_params(&self) -> usize {
        let d = self.hidden_size();
        let p = self.patch_size;
        let lin = |i: usize, o: usize| i * o + o;
        let mut n = self.in_channels * p * p * d + d; // patch embedding
        n += lin(TIMESTEP_FREQ_DIM, d) + lin(d, d); // timestep embedder
        n += lin(self.pooled_projection_dim, d) + lin(d, d); // pooled projection
        n += lin(self.joint_attention_dim, d); // context embedder
        n += (0..self.num_layers).map(|i| self.block_config(i).block_config().num_params()).sum::<usize>();
        n + lin(d, 2 * d) + lin(d, p * p * self.out_channels) // final layer
    }

    /// Analytic forward cost per sample, in multiply-accumulates (the DiT paper's "Gflops"
    /// convention, as [`crate::models::DiTConfig::flops`]), at the training resolution
    /// (`sample_size`) with [`PAPER_TEXT_TOKENS`] text tokens.
    pub fn flops(&self) -> f64 {
        self.flops_at(self.sample_size, self.sample_size, PAPER_TEXT_TOKENS)
    }

    /// Analytic forward cost per sample in multiply-accumulates for a `height x width` latent
    /// and `text_tokens` text tokens. Counts every matrix product (projections, attention
    /// scores and values, MLPs, embedders, modulations); elementwise work is ignored. The last
    /// block evaluates no text queries, output projection or MLP (pre-only text stream); a
    /// dual-attention block adds 3 modulation chunks and an image-only self-attention.
    pub fn flops_at(&self, height: usize, width: usize, text_tokens: usize) -> f64 {
        let d = self.hidden_size() as f64;
        let p = self.patch_size as f64;
        let n = ((height / self.patch_size) * (width / self.patch_size)) as f64;
        let l = text_tokens as f64;
        let embed = n * self.in_channels as f64 * p * p * d
            + l * self.joint_attention_dim as f64 * d
            + TIMESTEP_FREQ_DIM as f64 * d
            + self.pooled_projection_dim as f64 * d
            + 2.0 * d * d;
        let grid = [height / self.patch_size, width / self.patch_size];
        let blocks: f64 = (0..self.num_layers)
            .map(|i| {
                let block = self.block_config(i).block_config();
                block.macs(grid[0] * grid[1], grid, text_tokens).expect("MLP blocks count without error")
            })
            .sum();
        let fin = 2.0 * d * d + n * d * p * p * self.out_channels as f64;
        embed + blocks + fin
    }
}

/// The tiny configuration the crate's MM-DiT tests share: 2 blocks of width 16 (2 heads of 8),
/// 4 latent channels, 8x8 latents, table 6, text widths 12 / 10.
#[cfg(test)]
pub(crate) fn tiny_test_config() -> MMDiTConfig {
    MMDiTConfig::new()
        .with_sample_size(8)
        .with_in_channels(4)
        .with_out_channels(4)
        .with_num_layers(2)
        .with_attention_head_dim(8)
        .with_num_attention_heads(2)
        .with_joint_attention_dim(12)
        .with_pooled_projection_dim(10)
        .with_pos_embed_max_size(6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiny_test_config as tiny;

    #[test]
    fn analytic_params_match_the_module() {
        let device = Device::flex();
        for qk in [QkNorm::None, QkNorm::RmsNorm, QkNorm::LayerNorm] {
            for layers in [1, 3] {
                // MMDiT-X in the first block (and the last one, pre-only text, with 3 blocks)
                for dual in [vec![], vec![0], vec![0, 2]].into_iter().filter(|d| d.iter().all(|&i| i < layers)) {
                    let cfg = tiny().with_qk_norm(qk).with_num_layers(layers).with_out_channels(6);
                    let cfg = cfg.with_dual_attention_layers(dual.clone());
                    let m = cfg.init(&device).unwrap();
                    let table = cfg.pos_embed_max_size.pow(2) * cfg.hidden_size();
                    assert_eq!(m.num_params(), cfg.num_params() + table, "{qk:?} layers={layers} dual={dual:?}");
                }
            }
        }
    }

    #[test]
    fn depth_parametrisation_and_presets() {
        let c = MMDiTConfig::from_depth(24).unwrap();
        assert_eq!((c.hidden_size(), c.num_attention_heads, c.num_layers, c.mlp_hidden()), (1536, 24, 24, 6144));
        let m = MMDiTConfig::preset(24).unwrap();
        assert_eq!((m.in_channels, m.patch_size, m.joint_attention_dim, m.pooled_projection_dim), (16, 2, 4096, 2048));
        // SD3-medium: about 2.03B parameters; the d=38 model about 8.1B
        let b = |d| MMDiTConfig::preset(d).unwrap().num_params() as f64 / 1e9;
        assert!((b(24) - 2.03).abs() < 0.02, "{}", b(24));
        assert!((b(38) - 8.06).abs() < 0.1, "{}", b(38));
        assert_eq!(MMDiTConfig::preset(38).unwrap().hidden_size(), 2432);
        assert!(MMDiTConfig::preset(2).unwrap().init(&Device::flex()).is_ok());
        assert!(MMDiTConfig::preset(12).is_err());
        assert!(MMDiTConfig::from_depth(0).is_err());
        // compute grows with depth and resolution
        let f = |d| MMDiTConfig::from_depth(d).unwrap().flops();
        assert!(f(2) < f(24) && f(24) < f(38));
        let cfg = MMDiTConfig::preset(24).unwrap();
        assert!(cfg.flops_at(64, 64, 154) < cfg.flops_at(128, 128, 154));
    }

    #[test]
    fn released_presets_match_diffusers_parameter_counts() {
        // sum(p.numel() for p in SD3Transformer2DModel(**config).parameters()) of the released
        // transformer/config.json files, counted by diffusers 0.42.1 on the meta device
        let medium = MMDiTConfig::sd3_medium();
        let (medium35, large) = (MMDiTConfig::sd35_medium(), MMDiTConfig::sd35_large());
        assert_eq!(medium.num_params(), 2_028_328_000);
        assert_eq!(medium35.num_params(), 2_243_171_520);
        assert_eq!(large.num_params(), 8_056_627_520);
        assert_eq!(MMDiTConfig::sd35_large_turbo().num_params(), large.num_params());
        // with the position table (a parameter in Stability's checkpoints): the "2.5B" of SD3.5-medium
        assert_eq!(medium35.num_params() + 384 * 384 * 1536, 2_469_663_936);
        assert_eq!(format!("{:?}", MMDiTConfig::preset(24).unwrap()), format!("{medium:?}"));
        assert_eq!(format!("{:?}", MMDiTConfig::preset(38).unwrap()), format!("{large:?}"));
        assert_eq!(medium35.dual_attention_layers, (0..13).collect::<Vec<_>>());
        assert!(medium35.is_dual_attention(12) && !medium35.is_dual_attention(13));
        // MMDiT-X costs more than SD3-medium at the same width and depth
        assert!(medium35.flops() > medium.flops());
    }

    #[test]
    fn dual_attention_flops_are_a_self_attention_and_three_chunks() {
        let (d, n) = (16.0, 16.0);
        let plain = tiny().with_num_layers(2);
        let dual = plain.clone().with_dual_attention_layers(vec![0]);
        let extra = 3.0 * d * d + 3.0 * n * d * d + 2.0 * n * n * d + n * d * d;
        assert_eq!(dual.flops_at(8, 8, 3), plain.flops_at(8, 8, 3) + extra);
    }

    #[test]
    fn flops_count_the_dominant_products() {
        // one block (pre-only text), D = 16, 16 image tokens, 3 text tokens, written out by hand
        let cfg = tiny().with_num_layers(1);
        let (d, n, l, p) = (16.0, 16.0, 3.0, 2.0);
        let embed = n * 4.0 * p * p * d + l * 12.0 * d + 256.0 * d + 10.0 * d + 2.0 * d * d;
        let block = 8.0 * d * d + 3.0 * (n + l) * d * d + 2.0 * n * (n + l) * d + n * d * d + 2.0 * n * d * 4.0 * d;
        let fin = 2.0 * d * d + n * d * p * p * 4.0;
        assert_eq!(cfg.flops_at(8, 8, 3), embed + block + fin);
    }

    #[test]
    fn invalid_configs_are_errors() {
        let device = Device::flex();
        assert!(tiny().with_num_layers(0).init(&device).is_err());
        assert!(tiny().with_attention_head_dim(3).with_num_attention_heads(2).init(&device).is_err());
        assert!(tiny().with_sample_size(1).init(&device).is_err());
        assert!(tiny().with_joint_attention_dim(0).init(&device).is_err());
        assert!(tiny().with_mlp_ratio(0.0).init(&device).is_err());
    }

    #[test]
    fn diffusers_config_parsing() {
        let v: serde_json::Value = serde_json::json!({
            "sample_size": 8, "patch_size": 2, "in_channels": 4, "num_layers": 2,
            "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 24,
            "caption_projection_dim": 32, "pooled_projection_dim": 20, "out_channels": null,
            "pos_embed_max_size": 12, "qk_norm": "rms_norm", "dual_attention_layers": []
        });
        let c = MMDiTConfig::from_diffusers_config(&v).unwrap();
        assert_eq!((c.hidden_size(), c.out_channels, c.qk_norm), (32, 4, QkNorm::RmsNorm));
        let with = |k: &str, val: serde_json::Value| {
            let mut v = v.clone();
            v[k] = val;
            MMDiTConfig::from_diffusers_config(&v)
        };
        assert!(with("caption_projection_dim", 48.into()).is_err());
        assert!(with("qk_norm", "l2".into()).is_err());
        assert_eq!(with("dual_attention_layers", serde_json::json!([0, 1])).unwrap().dual_attention_layers, vec![0, 1]);
        assert!(with("dual_attention_layers", serde_json::Value::Null).unwrap().dual_attention_layers.is_empty());
        assert!(with("dual_attention_layers", serde_json::json!([0, "a"])).is_err());
        // a block index beyond num_layers is an error when the model is built
        assert!(with("dual_attention_layers", serde_json::json!([2])).unwrap().init(&Device::flex()).is_err());
        assert!(with("pos_embed_max_size", serde_json::Value::Null).is_err());
        assert!(with("num_layers", "two".into()).is_err());
        assert_eq!(with("qk_norm", "layer_norm".into()).unwrap().qk_norm, QkNorm::LayerNorm);
    }

}
