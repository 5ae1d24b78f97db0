//! Configuration of an [`AutoencoderKl`](crate::vae::AutoencoderKl), mirroring the fields of
//! diffusers' `AutoencoderKL` `config.json`.

use std::path::Path;

use burn::prelude::*;
use serde_json::Value;

use crate::error::{Error, Result, ensure_config, ensure_positive};

/// Configuration of an [`AutoencoderKl`](crate::vae::AutoencoderKl).
///
/// Field names and defaults are diffusers' `AutoencoderKL.__init__` arguments, so
/// `AutoencoderKlConfig::new()` describes the same network as `AutoencoderKL()` and a
/// `config.json` maps field for field ([`from_diffusers_json`](Self::from_diffusers_json)).
/// The released autoencoders have presets: [`sd_vae_ft`](Self::sd_vae_ft) (Stable Diffusion
/// 1/2, `stabilityai/sd-vae-ft-ema` and `-mse`, the VAE of DiT) and [`sd3`](Self::sd3).
#[derive(Config, Debug, PartialEq)]
pub struct AutoencoderKlConfig {
    /// Image channels in. Default: 3.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Image channels out. Default: 3.
    #[config(default = 3)]
    pub out_channels: usize,
    /// Width of each resolution level, from full resolution down; `n` levels downsample by
    /// `2^(n-1)`. Default: `[64]`.
    #[config(default = "vec![64]")]
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per encoder level (the decoder has one more per level). Default: 1.
    #[config(default = 1)]
    pub layers_per_block: usize,
    /// Latent channels. Default: 4.
    #[config(default = 4)]
    pub latent_channels: usize,
    /// Groups of every GroupNorm (each width must be divisible by it). Default: 32.
    #[config(default = 32)]
    pub norm_num_groups: usize,
    /// Image side the autoencoder was trained at; sets the default decoding tile
    /// (see [`DecodeTiling`](crate::vae::DecodeTiling)). Default: 32.
    #[config(default = 32)]
    pub sample_size: usize,
    /// Latent scaling factor: diffusion models see `(z - shift_factor) * scaling_factor`.
    /// Default: 0.18215 (the Stable Diffusion 1/2 VAEs).
    #[config(default = 0.18215)]
    pub scaling_factor: f64,
    /// Latent shift (SD3: 0.0609); `None` means 0. Default: none.
    #[config(default = "None")]
    pub shift_factor: Option<f64>,
    /// 1x1 convolution on the encoder moments. Default: true.
    #[config(default = true)]
    pub use_quant_conv: bool,
    /// 1x1 convolution on the latents before the decoder. Default: true.
    #[config(default = true)]
    pub use_post_quant_conv: bool,
    /// Self-attention in the encoder's and decoder's mid blocks. Default: true.
    #[config(default = true)]
    pub mid_block_add_attention: bool,
}

/// The released VAEs [`AutoencoderKlConfig::from_name`] knows.
pub const VAE_PRESETS: [&str; 3] = ["sd-vae-ft-ema", "sd-vae-ft-mse", "sd3"];

impl AutoencoderKlConfig {
    /// The Stable Diffusion 1/2 autoencoder (`stabilityai/sd-vae-ft-ema` and
    /// `stabilityai/sd-vae-ft-mse`, which share the architecture): 4 latent channels, factor-8
    /// downsampling, scaling factor 0.18215. DiT was trained on its latents.
    pub fn sd_vae_ft() -> Self {
        Self::new()
            .with_block_out_channels(vec![128, 256, 512, 512])
            .with_layers_per_block(2)
            .with_sample_size(256)
    }

    /// Stable Diffusion 3's autoencoder: 16 latent channels, scaling factor 1.5305, shift
    /// 0.0609, no quant convolutions.
    pub fn sd3() -> Self {
        Self::new()
            .with_block_out_channels(vec![128, 256, 512, 512])
            .with_layers_per_block(2)
            .with_latent_channels(16)
            .with_sample_size(1024)
            .with_scaling_factor(1.5305)
            .with_shift_factor(Some(0.0609))
            .with_use_quant_conv(false)
            .with_use_post_quant_conv(false)
    }

    /// A preset by name: `sd-vae-ft-ema`, `sd-vae-ft-mse` or `sd3` (a `stabilityai/` prefix is
    /// accepted).
    pub fn from_name(name: &str) -> Result<Self> {
        match name.strip_prefix("stabilityai/").unwrap_or(name) {
            "sd-vae-ft-ema" | "sd-vae-ft-mse" => Ok(Self::sd_vae_ft()),
            "sd3" => Ok(Self::sd3()),
            _ => Err(Error::InvalidConfig(format!("unknown VAE preset `{name}` (known: {})", VAE_PRESETS.join(", ")))),
        }
    }

    /// Parse diffusers' `config.json` of an `AutoencoderKL`. Absent fields take diffusers'
    /// defaults; fields that only concern PyTorch (`force_upcast`, `_class_name`, ...) are
    /// ignored. Block types other than `DownEncoderBlock2D`/`UpDecoderBlock2D`, activations
    /// other than SiLU and inconsistent values are errors.
    pub fn from_diffusers_json(json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json).map_err(|e| Error::InvalidConfig(format!("VAE config JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| Error::InvalidConfig("VAE config JSON is not an object".into()))?;
        let bad = |k: &str, what: &str| {
            let got = obj.get(k).map_or_else(|| "nothing".to_string(), Value::to_string);
            Error::InvalidConfig(format!("VAE config field `{k}` must be {what}, got {got}"))
        };
        let uint = |k: &str, d: usize| -> Result<usize> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(x) => x.as_u64().map(|u| u as usize).ok_or_else(|| bad(k, "a non-negative integer")),
            }
        };
        let boolean = |k: &str, d: bool| -> Result<bool> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(x) => x.as_bool().ok_or_else(|| bad(k, "a boolean")),
            }
        };
        let float = |k: &str| -> Result<Option<f64>> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_f64().map(Some).ok_or_else(|| bad(k, "a number")),
            }
        };
        let d = Self::new();
        let block_out_channels = match obj.get("block_out_channels") {
            None | Some(Value::Null) => d.block_out_channels.clone(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_u64().map(|u| u as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("block_out_channels", "a list of integers"))?,
            Some(_) => return Err(bad("block_out_channels", "a list of integers")),
        };
        let levels = block_out_channels.len();
        for (key, expected) in [("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")] {
            let Some(types) = obj.get(key).filter(|t| !t.is_null()) else { continue };
            let types = types.as_array().ok_or_else(|| bad(key, "a list of block names"))?;
            ensure_config(types.len() == levels, || {
                format!("`{key}` has {} entries but `block_out_channels` has {levels}", types.len())
            })?;
            ensure_config(types.iter().all(|t| t.as_str() == Some(expected)), || {
                format!("only `{expected}` blocks are supported in `{key}`, got {}", Value::Array(types.clone()))
            })?;
        }
        if let Some(act) = obj.get("act_fn").filter(|a| !a.is_null()) {
            ensure_config(matches!(act.as_str(), Some("silu" | "swish")), || {
                format!("only the SiLU activation is supported, got act_fn {act}")
            })?;
        }
        let sample_size = match obj.get("sample_size") {
            None | Some(Value::Null) => d.sample_size,
            // diffusers accepts `[height, width]` and tiles with the first entry.
            Some(Value::Array(a)) => a.first().and_then(Value::as_u64).ok_or_else(|| bad("sample_size", "an integer"))? as usize,
            Some(x) => x.as_u64().ok_or_else(|| bad("sample_size", "an integer"))? as usize,
        };
        let config = Self {
            in_channels: uint("in_channels", d.in_channels)?,
            out_channels: uint("out_channels", d.out_channels)?,
            block_out_channels,
            layers_per_block: uint("layers_per_block", d.layers_per_block)?,
            latent_channels: uint("latent_channels", d.latent_channels)?,
            norm_num_groups: uint("norm_num_groups", d.norm_num_groups)?,
            sample_size,
            scaling_factor: float("scaling_factor")?.unwrap_or(d.scaling_factor),
            shift_factor: float("shift_factor")?,
            use_quant_conv: boolean("use_quant_conv", d.use_quant_conv)?,
            use_post_quant_conv: boolean("use_post_quant_conv", d.use_post_quant_conv)?,
            mid_block_add_attention: boolean("mid_block_add_attention", d.mid_block_add_attention)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Read diffusers' `config.json` (see [`from_diffusers_json`](Self::from_diffusers_json)).
    pub fn from_diffusers_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_path_buf(), reason: e.to_string() })?;
        Self::from_diffusers_json(&text)
    }

    /// Spatial downsampling factor between images and latents, `2^(levels - 1)` (8 for the
    /// released VAEs).
    pub fn downsample_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// The latent shift (0 when unset).
    pub fn shift(&self) -> f64 {
        self.shift_factor.unwrap_or(0.0)
    }

    /// Checks every constraint; called by [`init`](Self::init).
    pub fn validate(&self) -> Result<()> {
        ensure_positive(&[
            ("VAE in_channels", self.in_channels),
            ("VAE out_channels", self.out_channels),
            ("VAE layers_per_block", self.layers_per_block),
            ("VAE latent_channels", self.latent_channels),
            ("VAE norm_num_groups", self.norm_num_groups),
            ("VAE sample_size", self.sample_size),
        ])?;
        ensure_config(!self.block_out_channels.is_empty(), || "VAE block_out_channels must not be empty".into())?;
        ensure_config(self.block_out_channels.len() <= 16, || "VAE block_out_channels has more than 16 levels".into())?;
        for &c in &self.block_out_channels {
            ensure_config(c > 0 && c % self.norm_num_groups == 0, || {
                format!("VAE block width {c} must be a positive multiple of norm_num_groups {}", self.norm_num_groups)
            })?;
        }
        ensure_config(self.scaling_factor.is_finite() && self.scaling_factor != 0.0, || {
            format!("VAE scaling_factor must be finite and non-zero, got {}", self.scaling_factor)
        })?;
        ensure_config(self.shift().is_finite(), || "VAE shift_factor must be finite".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_factor() {
        let sd = AutoencoderKlConfig::from_name("stabilityai/sd-vae-ft-ema").unwrap();
        assert_eq!(sd, AutoencoderKlConfig::from_name("sd-vae-ft-mse").unwrap());
        assert_eq!(sd.downsample_factor(), 8);
        assert_eq!((sd.latent_channels, sd.scaling_factor, sd.shift()), (4, 0.18215, 0.0));
        let sd3 = AutoencoderKlConfig::from_name("sd3").unwrap();
        assert_eq!((sd3.latent_channels, sd3.scaling_factor, sd3.shift()), (16, 1.5305, 0.0609));
        assert!(!sd3.use_quant_conv && !sd3.use_post_quant_conv);
        assert!(AutoencoderKlConfig::from_name("sdxl-nope").is_err());
        for p in VAE_PRESETS {
            AutoencoderKlConfig::from_name(p).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn parses_the_released_config_json() {
        // stabilityai/sd-vae-ft-ema config.json
        let json = r#"{
          "_class_name": "AutoencoderKL", "_diffusers_version": "0.4.2", "act_fn": "silu",
          "block_out_channels": [128, 256, 512, 512],
          "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
          "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
          "out_channels": 3, "sample_size": 256,
          "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
        }"#;
        assert_eq!(AutoencoderKlConfig::from_diffusers_json(json).unwrap(), AutoencoderKlConfig::sd_vae_ft());
        let sd3 = r#"{"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 16,
            "sample_size": 1024, "scaling_factor": 1.5305, "shift_factor": 0.0609, "use_quant_conv": false,
            "use_post_quant_conv": false, "force_upcast": true, "latents_mean": null}"#;
        assert_eq!(AutoencoderKlConfig::from_diffusers_json(sd3).unwrap(), AutoencoderKlConfig::sd3());
        assert_eq!(AutoencoderKlConfig::from_diffusers_json("{}").unwrap(), AutoencoderKlConfig::new());
    }

    #[test]
    fn bad_configs_are_errors() {
        for json in [
            "[1, 2]",
            "not json",
            r#"{"block_out_channels": [64, 48]}"#,
            r#"{"block_out_channels": []}"#,
            r#"{"block_out_channels": "64"}"#,
            r#"{"latent_channels": 0}"#,
            r#"{"act_fn": "gelu"}"#,
            r#"{"down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"]}"#,
            r#"{"up_block_types": ["AttnUpDecoderBlock2D"]}"#,
            r#"{"scaling_factor": 0}"#,
            r#"{"use_quant_conv": "yes"}"#,
        ] {
            assert!(matches!(AutoencoderKlConfig::from_diffusers_json(json), Err(Error::InvalidConfig(_))), "{json}");
        }
        assert!(matches!(AutoencoderKlConfig::from_diffusers_file("/nonexistent/config.json"), Err(Error::Io { .. })));
    }
}
