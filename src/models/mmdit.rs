//! MM-DiT, the multimodal diffusion transformer of Stable Diffusion 3 (Esser et al. 2024,
//! "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"), matching
//! diffusers' `SD3Transformer2DModel`.
//!
//! ```text
//! x [B, C, H, W] --patchify conv--> + cropped sin-cos table --> image tokens [B, N, D]
//! text [B, L, joint_dim] --context_embedder (Linear)-------> text tokens  [B, L, D]
//! c = TimestepEmbedder(t) + MLP_silu(pooled)                              [B, D]
//! num_layers x JointBlock(image, text | c)   (text stream pre-only in the last block)
//! final adaLN LayerNorm + Linear --> unpatchify --> [B, C_out, H, W]
//! ```
//!
//! `D = num_attention_heads * attention_head_dim`. The depth parametrisation of the paper
//! ([`MMDiTConfig::from_depth`]) sets width `64 d`, `d` heads of 64 channels and `d` blocks.

use burn::nn::Linear;
use burn::prelude::*;

use crate::blocks::{FinalLayer, JointBlock, JointBlockConfig};
use crate::error::{Error, Result, ensure_config, ensure_dims, ensure_positive};
use crate::layers::activation::Activation;
use crate::layers::attention::QkNorm;
use crate::layers::init::{WeightInit, linear};
use crate::layers::patch_embed::unpatchify;
use crate::layers::pos_embed_cropped::{CroppedPosEmbed, CroppedPosEmbedConfig};
use crate::layers::{Mlp, MlpConfig, PatchEmbed, PatchEmbedConfig, TimestepEmbedder, TimestepEmbedderConfig};
use crate::contracts::Denoiser;

/// Text tokens the SD3 paper's compute figures assume: 77 CLIP + 77 T5 tokens.
pub const PAPER_TEXT_TOKENS: usize = 154;

/// Width of the sinusoidal timestep features (diffusers `Timesteps(256, ...)`).
const TIMESTEP_FREQ_DIM: usize = 256;

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
    /// MLP ratio. Default: 4.0.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Divisor of the position-table coordinates (diffusers `interpolation_scale`). Default: 1.0.
    #[config(default = 1.0)]
    pub pos_embed_interpolation_scale: f64,
}

impl MMDiTConfig {
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

    /// A configuration from a diffusers `SD3Transformer2DModel` config (the `config.json` of a
    /// `transformer/` folder, or its constructor arguments); missing fields take diffusers'
    /// defaults. `caption_projection_dim` must equal the width, `pos_embed_max_size` must be
    /// set and `dual_attention_layers` (SD3.5-medium's MMDiT-X) must be empty.
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
        if let Some(v) = cfg.get("dual_attention_layers")
            && !v.as_array().is_some_and(|a| a.is_empty())
        {
            return Err(bad("dual_attention_layers", "dual attention (MMDiT-X) is not supported"));
        }
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
            .with_qk_norm(qk_norm);
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

    fn block_config(&self, index: usize) -> JointBlockConfig {
        let cfg = JointBlockConfig::new(self.hidden_size(), self.num_attention_heads)
            .with_mlp_ratio(self.mlp_ratio)
            .with_qk_norm(self.qk_norm);
        // SD3: the text stream of the last block is pre-only (`context_pre_only`).
        if index + 1 == self.num_layers { cfg.with_pre_only(vec![1]) } else { cfg }
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

    /// Build the model: Xavier-uniform linears, zero adaLN modulations and final layer
    /// (adaLN-Zero, as DiT), normal(0.02) timestep embedder, the fixed sin-cos table.
    pub fn init(&self, device: &Device) -> Result<MMDiT> {
        self.validate()?;
        let d = self.hidden_size();
        Ok(MMDiT {
            x_embedder: PatchEmbedConfig::new(self.in_channels, d, self.patch_size).init(device)?,
            pos_embed: CroppedPosEmbedConfig::new(d, self.pos_embed_max_size, self.base_size())
                .with_interpolation_scale(self.pos_embed_interpolation_scale)
                .init(device)?,
            t_embedder: TimestepEmbedderConfig::new(d).with_frequency_embedding_size(TIMESTEP_FREQ_DIM).init(device)?,
            pooled_embedder: MlpConfig::new(self.pooled_projection_dim, d)
                .with_d_output(Some(d))
                .with_activation(Activation::Silu)
                .init(device)?,
            context_embedder: linear(self.joint_attention_dim, d, true, WeightInit::XavierUniform, device),
            blocks: (0..self.num_layers).map(|i| self.block_config(i).init(device)).collect::<Result<_>>()?,
            final_layer: FinalLayer::new(d, self.patch_size, self.out_channels, device),
            patch_size: self.patch_size,
            in_channels: self.in_channels,
            out_channels: self.out_channels,
        })
    }

    /// Exact parameter count as PyTorch's `sum(p.numel() for p in model.parameters())` of the
    /// diffusers model (the position table is a buffer there and is not counted), computed
    /// without building the model. Burn's `Module::num_params` of an [`MMDiT`] additionally
    /// counts the frozen `pos_embed_max_size^2 * D` table.
    pub fn num_params(&self) -> usize {
        let d = self.hidden_size();
        let (p, h, dh) = (self.patch_size, self.mlp_hidden(), self.attention_head_dim);
        let lin = |i: usize, o: usize| i * o + o;
        let mut n = self.in_channels * p * p * d + d; // patch embedding
        n += lin(TIMESTEP_FREQ_DIM, d) + lin(d, d); // timestep embedder
        n += lin(self.pooled_projection_dim, d) + lin(d, d); // pooled projection
        n += lin(self.joint_attention_dim, d); // context embedder
        let qk_norm = match self.qk_norm {
            QkNorm::None => 0,
            QkNorm::RmsNorm => 2 * dh,
            QkNorm::LayerNorm => 4 * dh,
        };
        let full_stream = lin(d, 6 * d) + 3 * lin(d, d) + qk_norm + lin(d, d) + lin(d, h) + lin(h, d);
        let pre_only_stream = lin(d, 2 * d) + 3 * lin(d, d) + qk_norm;
        n += (2 * self.num_layers - 1) * full_stream + pre_only_stream;
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
    /// block evaluates no text queries, output projection or MLP (pre-only text stream).
    pub fn flops_at(&self, height: usize, width: usize, text_tokens: usize) -> f64 {
        let d = self.hidden_size() as f64;
        let p = self.patch_size as f64;
        let n = ((height / self.patch_size) * (width / self.patch_size)) as f64;
        let l = text_tokens as f64;
        let h = self.mlp_hidden() as f64;
        let embed = n * self.in_channels as f64 * p * p * d
            + l * self.joint_attention_dim as f64 * d
            + TIMESTEP_FREQ_DIM as f64 * d
            + self.pooled_projection_dim as f64 * d
            + 2.0 * d * d;
        let block = |last: bool| {
            let out_tokens = if last { n } else { n + l }; // streams producing outputs
            let modulation = if last { 8.0 } else { 12.0 } * d * d;
            let qkv = 3.0 * (n + l) * d * d;
            let attention = 2.0 * out_tokens * (n + l) * d;
            let proj = out_tokens * d * d;
            let mlp = 2.0 * out_tokens * d * h;
            modulation + qkv + attention + proj + mlp
        };
        let blocks = (self.num_layers - 1) as f64 * block(false) + block(true);
        let fin = 2.0 * d * d + n * d * p * p * self.out_channels as f64;
        embed + blocks + fin
    }
}

/// The MM-DiT of Stable Diffusion 3 (diffusers `SD3Transformer2DModel`).
///
/// Module paths and diffusers keys: `x_embedder.proj` = `pos_embed.proj`, `pos_embed.table` =
/// `pos_embed.pos_embed`, `t_embedder` = `time_text_embed.timestep_embedder`,
/// `pooled_embedder.fc{1,2}` = `time_text_embed.text_embedder.linear_{1,2}`,
/// `context_embedder`, `blocks.{i}` = `transformer_blocks.{i}`, `final_layer` =
/// `norm_out` + `proj_out` (see the `weights::mmdit` module).
#[derive(Module, Debug)]
pub struct MMDiT {
    /// Patch embedding (conv `[D, C, p, p]`, stride `p`).
    pub x_embedder: PatchEmbed,
    /// The fixed `M x M` sin-cos table, centre-cropped to each input's grid.
    pub pos_embed: CroppedPosEmbed,
    /// Timestep embedder (sinusoids cos-first, 256 wide; Linear, SiLU, Linear).
    pub t_embedder: TimestepEmbedder,
    /// Pooled-text projection (Linear, SiLU, Linear), added to the timestep embedding.
    pub pooled_embedder: Mlp,
    /// Caption projection `[joint_attention_dim, D]` of the per-token text embeddings.
    pub context_embedder: Linear,
    /// Joint blocks over (image, text); the last one has a pre-only text stream.
    pub blocks: Vec<JointBlock>,
    /// Final adaLN LayerNorm (eps 1e-6) + linear to `p*p*C_out` per token.
    pub final_layer: FinalLayer,
    /// Patch size.
    pub patch_size: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
}

impl MMDiT {
    /// Width `D`.
    pub fn hidden_size(&self) -> usize {
        self.context_embedder.weight.dims()[1]
    }

    /// Width of the per-token text embeddings the model takes.
    pub fn joint_attention_dim(&self) -> usize {
        self.context_embedder.weight.dims()[0]
    }

    /// Width of the pooled text vector the model takes.
    pub fn pooled_projection_dim(&self) -> usize {
        self.pooled_embedder.fc1.weight.dims()[0]
    }

    /// Side of the position table: the most patches per side an input may have.
    pub fn pos_embed_max_size(&self) -> usize {
        self.pos_embed.max_size
    }

    /// Patch embedding plus the centre crop of the position table.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]`, `H` and `W` multiples of `p`, at most `M * p`
    /// - output: `[B, (H/p)*(W/p), D]`
    pub fn embed(&self, x: Tensor<4>) -> Result<Tensor<3>> {
        let [_, _, h, w] = x.dims();
        let p = self.patch_size;
        let m = self.pos_embed.max_size;
        // checks the channels and that H, W are positive multiples of p
        let tokens = self.x_embedder.forward(x)?;
        let pos = self.pos_embed.crop([h / p, w / p]).map_err(|_| Error::Shape {
            name: "x".into(),
            expected: format!("a latent of at most {0}x{0} (pos_embed_max_size {m} patches of {p})", m * p),
            got: format!("[_, {}, {h}, {w}]", self.in_channels),
        })?;
        Ok(tokens + pos)
    }

    /// The conditioning vector `TimestepEmbedder(t) + MLP(pooled)`.
    ///
    /// # Shapes
    /// - `t`: `[B]` float timesteps (SD3: `1000 * sigma`), `pooled`: `[B, pooled_dim]`
    /// - output: `[B, D]`
    pub fn embed_condition(&self, t: Tensor<1>, pooled: Tensor<2>) -> Result<Tensor<2>> {
        let b = t.dims()[0];
        ensure_dims("pooled", pooled.dims(), [Some(b), Some(self.pooled_projection_dim())])?;
        Ok(self.t_embedder.forward(t) + self.pooled_embedder.forward(pooled))
    }

    /// The caption projection of the per-token text embeddings.
    ///
    /// # Shapes
    /// - `text`: `[B, L, joint_attention_dim]`, `L >= 1` -> `[B, L, D]`
    pub fn embed_text(&self, text: Tensor<3>) -> Result<Tensor<3>> {
        let [_, l, j] = text.dims();
        if l == 0 || j != self.joint_attention_dim() {
            return Err(Error::Shape {
                name: "text".into(),
                expected: format!("[B, L >= 1, {}]", self.joint_attention_dim()),
                got: format!("{:?}", text.dims()),
            });
        }
        Ok(self.context_embedder.forward(text))
    }

    /// Runs the joint blocks and the final layer on embedded tokens.
    ///
    /// # Shapes
    /// - `image`: `[B, gh*gw, D]`, `text`: `[B, L, D]`, `c`: `[B, D]`, `grid`: `[gh, gw]`
    /// - output: `[B, C_out, gh*p, gw*p]`
    pub fn forward_tokens(
        &self,
        image: Tensor<3>,
        text: Tensor<3>,
        c: Tensor<2>,
        grid: [usize; 2],
    ) -> Result<Tensor<4>> {
        let mut image = image;
        let mut text = Some(text);
        for (i, block) in self.blocks.iter().enumerate() {
            let t = text.ok_or_else(|| {
                Error::InvalidArgument(format!("block {i} follows a block whose text stream is pre-only"))
            })?;
            let mut out = block.forward(vec![image, t], c.clone())?.into_iter();
            image = out
                .next()
                .flatten()
                .ok_or_else(|| Error::InvalidArgument(format!("block {i} has a pre-only image stream")))?;
            text = out.next().flatten();
        }
        let out = self.final_layer.forward(image, c);
        Ok(unpatchify(out, self.patch_size, self.out_channels, grid))
    }

    /// The denoiser forward (diffusers' `SD3Transformer2DModel.forward(...).sample`).
    ///
    /// # Shapes
    /// - `x`: `[B, in_channels, H, W]`; `H`, `W` multiples of `p` and at most
    ///   `pos_embed_max_size * p` (any aspect ratio)
    /// - `t`: `[B]` float timesteps (SD3 uses `1000 * sigma`, sigma in `[0, 1]`)
    /// - `text`: `[B, L, joint_attention_dim]` per-token text embeddings
    /// - `pooled`: `[B, pooled_projection_dim]` pooled text embedding
    /// - output: `[B, out_channels, H, W]` (SD3: the flow velocity `noise - x0`)
    ///
    /// # Errors
    /// [`Error::Shape`] for inputs of the wrong shape, a latent not divisible by the patch
    /// size, or a patch grid larger than the position table; [`Error::Numerical`] for NaN/inf
    /// in any input; [`Error::InvalidArgument`] for `|t| > 1e5` (continuous time; see
    /// [`crate::validate`]). Float64 inputs are cast to the model's dtype.
    pub fn forward(&self, x: Tensor<4>, t: Tensor<1>, text: Tensor<3>, pooled: Tensor<2>) -> Result<Tensor<4>> {
        let (x, t, text, pooled) = crate::validate::mmdit_inputs(x, t, text, pooled, self.x_embedder.proj.weight.dtype())?;
        let [b, _, h, w] = x.dims();
        ensure_dims("t", t.dims(), [Some(b)])?;
        ensure_dims("text", [text.dims()[0]], [Some(b)])?;
        let tokens = self.embed(x)?;
        let c = self.embed_condition(t, pooled)?;
        let text = self.embed_text(text)?;
        self.forward_tokens(tokens, text, c, [h / self.patch_size, w / self.patch_size])
    }
}

impl Denoiser for MMDiT {
    /// `(text tokens [B, L, joint_attention_dim], pooled [B, pooled_projection_dim])`.
    type Cond = (Tensor<3>, Tensor<2>);

    fn denoise(&self, x: Tensor<4>, t: Tensor<1>, cond: &Self::Cond) -> Result<Tensor<4>> {
        self.forward(x, t, cond.0.clone(), cond.1.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> MMDiTConfig {
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

    fn inputs(device: &Device, b: usize, h: usize, w: usize) -> (Tensor<4>, Tensor<1>, Tensor<3>, Tensor<2>) {
        (
            crate::test_util::randn([b, 4, h, w], 101, device),
            Tensor::from_data(TensorData::new(vec![250.0f32, 900.0, 40.0][..b].to_vec(), [b]), device),
            crate::test_util::randn([b, 3, 12], 102, device),
            crate::test_util::randn([b, 10], 103, device),
        )
    }

    #[test]
    fn analytic_params_match_the_module() {
        let device = Device::flex();
        for qk in [QkNorm::None, QkNorm::RmsNorm, QkNorm::LayerNorm] {
            for layers in [1, 3] {
                let cfg = tiny().with_qk_norm(qk).with_num_layers(layers).with_out_channels(6);
                let m = cfg.init(&device).unwrap();
                let table = cfg.pos_embed_max_size.pow(2) * cfg.hidden_size();
                assert_eq!(m.num_params(), cfg.num_params() + table, "{qk:?} layers={layers}");
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
        assert!(with("dual_attention_layers", serde_json::json!([0, 1])).is_err());
        assert!(with("pos_embed_max_size", serde_json::Value::Null).is_err());
        assert!(with("num_layers", "two".into()).is_err());
        assert_eq!(with("qk_norm", "layer_norm".into()).unwrap().qk_norm, QkNorm::LayerNorm);
    }

    #[test]
    fn forward_shapes_any_aspect_ratio_and_zero_init() {
        let device = Device::flex();
        let m = tiny().init(&device).unwrap();
        for (h, w) in [(8, 8), (4, 12), (12, 2)] {
            let (x, t, text, pooled) = inputs(&device, 2, h, w);
            let out = m.forward(x, t, text, pooled).unwrap();
            assert_eq!(out.dims(), [2, 4, h, w]);
            // the final layer is zero-initialised
            assert!(out.equal_elem(0.0).all().into_scalar::<bool>());
        }
    }

    #[test]
    fn denoiser_is_the_forward() {
        let device = Device::flex();
        let mut m = tiny().init(&device).unwrap();
        // a non-zero final layer so the comparison means something
        let w = m.final_layer.linear.weight.dims();
        m.final_layer.linear.weight =
            burn::module::Param::from_tensor(crate::test_util::randn(w, 104, &device) * 0.5);
        let (x, t, text, pooled) = inputs(&device, 2, 8, 4);
        let a = m.forward(x.clone(), t.clone(), text.clone(), pooled.clone()).unwrap();
        let b = m.denoise(x, t, &(text, pooled)).unwrap();
        assert!(a.clone().abs().sum().into_scalar::<f32>() > 0.0);
        assert!(a.equal(b).all().into_scalar::<bool>());
    }

    /// Lists the trainable parameters without a gradient (paths tracked through
    /// `enter_module`/`exit_module`: Burn's traversal does not call `visit_float_with_path`).
    struct MissingGrads<'a> {
        grads: &'a burn::tensor::Gradients,
        path: Vec<String>,
        visited: usize,
        missing: Vec<String>,
    }

    impl burn::module::ModuleVisitor for MissingGrads<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }

        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }

        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let t = param.val();
            self.visited += 1;
            if t.is_require_grad() && t.grad(self.grads).is_none() {
                self.missing.push(self.path.join("."));
            }
        }
    }

    #[test]
    fn gradients_reach_every_used_parameter_and_adamw_fits() {
        use burn::optim::{AdamWConfig, GradientsParams};
        let device = Device::flex().autodiff();
        let mut model = tiny().with_qk_norm(QkNorm::RmsNorm).init(&device).unwrap();
        let data = |n: usize, k: usize| -> Vec<f32> { (0..n).map(|i| ((i * k % 97) as f32 / 48.0) - 1.0).collect() };
        let x = Tensor::<4>::from_data(TensorData::new(data(2 * 4 * 8 * 4, 53), [2, 4, 8, 4]), &device);
        let text = Tensor::<3>::from_data(TensorData::new(data(2 * 3 * 12, 31), [2, 3, 12]), &device);
        let pooled = Tensor::<2>::from_data(TensorData::new(data(2 * 10, 17), [2, 10]), &device);
        let t = Tensor::<1>::from_floats([100.0, 800.0], &device);
        let target = x.clone().flip([3]) * 0.5;
        let mut optim = AdamWConfig::new().with_weight_decay(0.0).with_epsilon(1e-8).init();
        let mut losses = Vec::new();
        for step in 0..30 {
            let out = model.forward(x.clone(), t.clone(), text.clone(), pooled.clone()).unwrap();
            let loss = (out - target.clone()).square().mean();
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = loss.backward();
            if step == 1 {
                // After one update the zero-initialised layers are non-zero. Only the query
                // norm of the last block's pre-only text stream is off the gradient path: its
                // queries are never evaluated (in diffusers they are, and their gradient is 0).
                let mut v = MissingGrads { grads: &grads, path: vec![], visited: 0, missing: vec![] };
                model.visit(&mut v);
                assert!(v.visited > 50, "the visitor saw only {} parameters", v.visited);
                assert_eq!(v.missing, vec!["blocks.1.attn.streams.1.q_norm.weight".to_string()]);
            }
            let grads = GradientsParams::from_grads(grads, &model);
            model = optim.step(1e-3, model, grads);
        }
        assert!(losses[29] < 0.5 * losses[0], "loss {} -> {}", losses[0], losses[29]);
    }

    #[test]
    fn classifier_free_guidance_wraps_the_text_conditioning() {
        use crate::contracts::{GuidedChannels, NullEmbedding};
        use crate::sampling::ClassifierFreeGuidance;
        let device = Device::flex();
        // Random weights everywhere: a fresh model's zero gates make cond == uncond.
        let m = tiny().init(&device).unwrap().map(&mut crate::layers::init::Randomize::seeded(6));
        let (x, t, text, pooled) = inputs(&device, 2, 4, 8);
        let cfg = ClassifierFreeGuidance::new(&m, (NullEmbedding::Zeros, NullEmbedding::Zeros), 3.0)
            .unwrap()
            .with_channels(GuidedChannels::All);
        let guided = cfg.denoise(x.clone(), t.clone(), &(text.clone(), pooled.clone())).unwrap();
        let cond = m.forward(x.clone(), t.clone(), text.clone(), pooled.clone()).unwrap();
        let uncond = m.forward(x, t, text.zeros_like(), pooled.zeros_like()).unwrap();
        let gap = (cond.clone() - uncond.clone()).abs().max().into_scalar::<f32>();
        assert!(gap > 1e-3, "the text must change the output: {gap}");
        let expected = uncond.clone() + (cond - uncond) * 3.0;
        guided.into_data().assert_approx_eq::<f32>(&expected.into_data(), burn::tensor::Tolerance::absolute(1e-5));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let device = Device::flex();
        let m = tiny().init(&device).unwrap();
        let (x, t, text, pooled) = inputs(&device, 2, 8, 8);
        let shape_err = |r: Result<Tensor<4>>| assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
        // latent channels, latent not divisible by the patch, grid larger than the table (6 x 2 = 12)
        shape_err(m.forward(Tensor::zeros([2, 3, 8, 8], &device), t.clone(), text.clone(), pooled.clone()));
        shape_err(m.forward(Tensor::zeros([2, 4, 7, 8], &device), t.clone(), text.clone(), pooled.clone()));
        shape_err(m.forward(Tensor::zeros([2, 4, 14, 8], &device), t.clone(), text.clone(), pooled.clone()));
        shape_err(m.forward(Tensor::zeros([2, 4, 8, 14], &device), t.clone(), text.clone(), pooled.clone()));
        // text and pooled widths that do not match the config, batch mismatches, empty text
        shape_err(m.forward(x.clone(), t.clone(), Tensor::zeros([2, 3, 11], &device), pooled.clone()));
        shape_err(m.forward(x.clone(), t.clone(), Tensor::zeros([2, 0, 12], &device), pooled.clone()));
        shape_err(m.forward(x.clone(), t.clone(), text.clone(), Tensor::zeros([2, 9], &device)));
        shape_err(m.forward(x.clone(), t.clone(), Tensor::zeros([1, 3, 12], &device), pooled.clone()));
        shape_err(m.forward(x.clone(), t.clone(), text.clone(), Tensor::zeros([1, 10], &device)));
        shape_err(m.forward(x, Tensor::zeros([3], &device), text, pooled));
    }
}
