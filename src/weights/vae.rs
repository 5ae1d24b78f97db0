//! Autoencoder checkpoints in diffusers' `AutoencoderKL` layout.
//!
//! The crate's module paths are diffusers' key names except for three renames:
//!
//! | crate module path | diffusers key |
//! |---|---|
//! | `*.downsamplers.conv` | `*.downsamplers.0.conv` |
//! | `*.upsamplers.conv` | `*.upsamplers.0.conv` |
//! | `*.attentions.0.to_out` | `*.attentions.0.to_out.0` |
//!
//! GroupNorm `weight`/`bias` and the `[out, in]` linear layout are converted on load.
//! Checkpoints saved before diffusers 0.14 name the mid-block attention `query`, `key`,
//! `value`, `proj_attn` (as the released `stabilityai/sd-vae-ft-ema` files do, possibly as
//! `[C, C, 1, 1]` convolutions); they are renamed as diffusers does when it loads them.

use std::path::Path;

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::vae::{AutoencoderKl, AutoencoderKlConfig};
use crate::weights::checkpoint::Checkpoint;
use crate::weights::format::{CheckpointFormat, LoadWeights};
use crate::weights::lazy::LazyCheckpoint;
use crate::weights::loader::KeyMap;

/// Module path -> diffusers key.
pub fn diffusers_key_map() -> KeyMap {
    KeyMap::new([("downsamplers", "downsamplers.0"), ("upsamplers", "upsamplers.0"), ("to_out", "to_out.0")])
}

/// Pre-0.14 attention names and their current ones.
const LEGACY_ATTENTION: [(&str, &str); 4] =
    [("query", "to_q"), ("key", "to_k"), ("value", "to_v"), ("proj_attn", "to_out.0")];

/// `*.attentions.{i}.query.weight` -> `*.attentions.{i}.to_q.weight` (and `key`, `value`,
/// `proj_attn`); `None` for every other key.
fn legacy_attention_key(key: &str) -> Option<String> {
    let (prefix, rest) = key.split_once(".attentions.")?;
    let (idx, rest) = rest.split_once('.')?;
    LEGACY_ATTENTION.iter().find_map(|(old, new)| {
        let param = rest.strip_prefix(old)?.strip_prefix('.')?;
        Some(format!("{prefix}.attentions.{idx}.{new}.{param}"))
    })
}

/// Renames legacy attention keys and flattens `[C, C, 1, 1]` attention projections to `[C, C]`
/// (lazily: nothing is read).
fn prepare_diffusers(ck: &mut LazyCheckpoint<'_>) {
    ck.rename(|key| legacy_attention_key(key).unwrap_or_else(|| key.to_string()));
    let flatten: Vec<String> = ck
        .tensors()
        .iter()
        .filter(|(key, t)| {
            let is_projection =
                ["to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight"].iter().any(|s| key.ends_with(s));
            let shape = t.shape();
            key.contains(".attentions.") && is_projection && shape.len() == 4 && shape[2] == 1 && shape[3] == 1
        })
        .map(|(k, _)| k.clone())
        .collect();
    for key in flatten {
        let t = ck.remove(&key).expect("listed");
        let shape = t.shape()[..2].to_vec();
        ck.insert(key, t.reshaped(shape).expect("same size"));
    }
}

fn shape_of(ck: &LazyCheckpoint<'_>, key: &str) -> Result<Vec<usize>> {
    ck.get(key).map(|d| d.shape().to_vec()).ok_or_else(|| {
        Error::InvalidConfig(format!("cannot infer the VAE architecture: the checkpoint has no `{key}`"))
    })
}

/// diffusers' `AutoencoderKL` layout (current or pre-0.14 attention names): the VAE's
/// [`CheckpointFormat`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VaeDiffusers;

impl CheckpointFormat<AutoencoderKl> for VaeDiffusers {
    fn key(&self, module_path: &str) -> String {
        diffusers_key_map().checkpoint_key(module_path)
    }

    fn prepare(&self, _model: &AutoencoderKl, checkpoint: &mut LazyCheckpoint<'_>) -> Result<()> {
        prepare_diffusers(checkpoint);
        Ok(())
    }
}

impl LoadWeights for AutoencoderKl {
    type Format = VaeDiffusers;

    fn format_of(&self, _checkpoint: &LazyCheckpoint<'_>) -> VaeDiffusers {
        VaeDiffusers
    }

    fn export_format(&self) -> VaeDiffusers {
        VaeDiffusers
    }
}

impl AutoencoderKlConfig {
    /// Infer the architecture from a diffusers `AutoencoderKL` checkpoint's shapes, for
    /// weights that come without their `config.json`: image and latent channels, level widths,
    /// ResNets per level, quant convolutions and mid-block attention. Two values are not
    /// recorded in the weights: `norm_num_groups` is taken as 32 (every released VAE) and the
    /// latent scaling as the preset with the same latent channels (0.18215 for 4 channels,
    /// SD3's 1.5305 / 0.0609 for 16; 1.0 otherwise); `sample_size` as the preset's too.
    pub fn from_checkpoint(checkpoint: &Checkpoint) -> Result<Self> {
        Self::from_lazy(&checkpoint.into())
    }

    /// [`from_checkpoint`](Self::from_checkpoint) from an opened file's headers alone.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the shapes do not describe an `AutoencoderKL`.
    pub fn from_lazy(checkpoint: &LazyCheckpoint<'_>) -> Result<Self> {
        let mut ck = checkpoint.clone();
        prepare_diffusers(&mut ck);
        let conv_in = shape_of(&ck, "encoder.conv_in.weight")?;
        let post_in = shape_of(&ck, "decoder.conv_in.weight")?;
        let conv_out = shape_of(&ck, "decoder.conv_out.weight")?;
        let (in_channels, latent_channels, out_channels) = (conv_in[1], post_in[1], conv_out[0]);
        let mut widths = Vec::new();
        while ck.contains(&format!("encoder.down_blocks.{}.resnets.0.conv1.weight", widths.len())) {
            let i = widths.len();
            widths.push(shape_of(&ck, &format!("encoder.down_blocks.{i}.resnets.0.conv1.weight"))?[0]);
        }
        let mut layers = 0;
        while ck.contains(&format!("encoder.down_blocks.0.resnets.{layers}.conv1.weight")) {
            layers += 1;
        }
        if widths.is_empty() || layers == 0 {
            return Err(Error::InvalidConfig("cannot infer the VAE architecture: no encoder.down_blocks.*.resnets.*".into()));
        }
        let preset = match latent_channels {
            4 => Self::sd_vae_ft(),
            16 => Self::sd3(),
            _ => Self::new().with_scaling_factor(1.0),
        };
        let groups = 32;
        if widths.iter().any(|w| w % groups != 0) {
            return Err(Error::InvalidConfig(format!(
                "cannot infer norm_num_groups for block widths {widths:?}; give the VAE's config.json"
            )));
        }
        let config = Self {
            in_channels,
            out_channels,
            block_out_channels: widths,
            layers_per_block: layers,
            latent_channels,
            norm_num_groups: groups,
            sample_size: preset.sample_size,
            scaling_factor: preset.scaling_factor,
            shift_factor: preset.shift_factor,
            use_quant_conv: ck.contains("quant_conv.weight"),
            use_post_quant_conv: ck.contains("post_quant_conv.weight"),
            mid_block_add_attention: ck.contains("encoder.mid_block.attentions.0.to_q.weight"),
        };
        config.validate()?;
        Ok(config)
    }
}

impl AutoencoderKl {
    /// Build an autoencoder from diffusers files: a directory holding `config.json` and
    /// `diffusion_pytorch_model.safetensors` (as `stabilityai/sd-vae-ft-ema` on the Hugging
    /// Face Hub), or a single weights file (its directory's `config.json` is used when
    /// present; otherwise the architecture is inferred with
    /// [`AutoencoderKlConfig::from_checkpoint`]). The weights are streamed.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::InvalidConfig`], [`Error::CheckpointMismatch`].
    pub fn from_pretrained(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::Io { path: path.to_path_buf(), reason: "no such file or directory".into() });
        }
        let dir = if path.is_dir() { Some(path) } else { path.parent() };
        let config_file = dir.map(|d| d.join("config.json")).filter(|p| p.is_file());
        let checkpoint = LazyCheckpoint::open(path)?;
        let config = match config_file {
            Some(cfg) => AutoencoderKlConfig::from_diffusers_file(cfg)?,
            None => AutoencoderKlConfig::from_lazy(&checkpoint)?,
        };
        let mut vae = config.init(device)?;
        vae.load_lazy(checkpoint)?;
        Ok(vae)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// The same elements under another shape (of the same size).
    fn reshape(data: TensorData, shape: Vec<usize>) -> TensorData {
        let (bytes, _, dtype) = data.into_parts();
        TensorData::from_bytes(bytes, shape, dtype)
    }

    fn tiny() -> AutoencoderKlConfig {
        AutoencoderKlConfig::new().with_block_out_channels(vec![32, 64]).with_layers_per_block(2).with_sample_size(16)
    }

    #[test]
    fn key_names() {
        let map = diffusers_key_map();
        assert_eq!(map.checkpoint_key("encoder.down_blocks.0.downsamplers.conv.weight"), "encoder.down_blocks.0.downsamplers.0.conv.weight");
        assert_eq!(map.checkpoint_key("decoder.up_blocks.1.upsamplers.conv.bias"), "decoder.up_blocks.1.upsamplers.0.conv.bias");
        assert_eq!(map.checkpoint_key("decoder.mid_block.attentions.0.to_out.weight"), "decoder.mid_block.attentions.0.to_out.0.weight");
        let device = Device::flex();
        let ck = tiny().init(&device).unwrap().to_checkpoint().unwrap();
        for k in [
            "encoder.conv_norm_out.weight",
            "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
            "decoder.up_blocks.0.resnets.2.norm2.bias",
            "encoder.mid_block.attentions.0.group_norm.weight",
            "quant_conv.weight",
            "post_quant_conv.bias",
        ] {
            assert!(ck.contains(k), "{k}");
        }
        assert_eq!(ck.get("encoder.mid_block.attentions.0.to_q.weight").unwrap().shape().to_vec(), vec![64, 64]);
    }

    #[test]
    fn roundtrip_legacy_names_inference_and_errors() {
        let device = Device::flex();
        let src = tiny().init(&device).unwrap();
        let ck = src.to_checkpoint().unwrap();
        let x = crate::test_util::uniform([1, 3, 8, 8], 101, &device);
        let want = src.forward(x.clone()).unwrap().into_data();

        let mut dst = tiny().init(&device).unwrap();
        dst.load_checkpoint(&ck).unwrap();
        assert_eq!(dst.forward(x.clone()).unwrap().into_data(), want);

        // pre-0.14 names with 1x1-conv projections
        let mut legacy = Checkpoint::new();
        for (k, v) in ck.tensors() {
            let k = k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.").replace(".to_out.0.", ".proj_attn.");
            let v = if k.contains(".attentions.") && k.ends_with("weight") && !k.contains("group_norm") {
                let s = v.shape().to_vec();
                reshape(v.clone(), vec![s[0], s[1], 1, 1])
            } else {
                v.clone()
            };
            legacy.insert(k, v);
        }
        let mut dst = tiny().init(&device).unwrap();
        dst.load_checkpoint(&legacy).unwrap();
        assert_eq!(dst.forward(x.clone()).unwrap().into_data(), want);

        let inferred = AutoencoderKlConfig::from_checkpoint(&legacy).unwrap();
        assert_eq!(inferred, tiny().with_sample_size(256));

        // every problem is reported; the model is unchanged
        let mut broken = ck.clone();
        broken.remove("decoder.conv_in.bias");
        broken.insert("extra.weight", TensorData::from([1.0f32]));
        let bad_shape = TensorData::new(vec![0.0f32; 3], [3]);
        broken.insert("encoder.conv_in.bias", bad_shape);
        let err = dst.load_checkpoint(&broken).unwrap_err();
        match &err {
            Error::CheckpointMismatch { missing, unexpected, mismatched } => {
                assert_eq!(missing, &vec!["decoder.conv_in.bias".to_string()]);
                assert_eq!(unexpected, &vec!["extra.weight".to_string()]);
                assert_eq!(mismatched[0].0, "encoder.conv_in.bias");
            }
            e => panic!("{e}"),
        }
        assert_eq!(dst.forward(x).unwrap().into_data(), want);
        assert!(AutoencoderKlConfig::from_checkpoint(&Checkpoint::new()).is_err());
    }


    #[test]
    fn from_pretrained_reads_directories_and_files() {
        let device = Device::flex();
        let root = std::env::temp_dir().join(format!("dt_vae_pretrained_{}", std::process::id()));
        let (dir, lone) = (root.join("with_config"), root.join("weights_only"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&lone).unwrap();
        assert!(matches!(AutoencoderKl::from_pretrained(root.join("nope"), &device), Err(Error::Io { .. })));
        assert!(matches!(AutoencoderKl::from_pretrained(&dir, &device), Err(Error::Io { .. }))); // no weights yet

        let cfg = tiny().with_scaling_factor(0.5);
        let src = cfg.init(&device).unwrap();
        let ck = src.to_checkpoint().unwrap();
        ck.save_safetensors(dir.join("diffusion_pytorch_model.safetensors")).unwrap();
        ck.save_safetensors(lone.join("vae.safetensors")).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"_class_name": "AutoencoderKL", "block_out_channels": [32, 64], "layers_per_block": 2,
                "sample_size": 16, "scaling_factor": 0.5}"#,
        )
        .unwrap();
        let z = crate::test_util::randn([1, 4, 2, 2], 102, &device);
        let want = src.decode(z.clone()).unwrap().into_data();
        let from_dir = AutoencoderKl::from_pretrained(&dir, &device).unwrap();
        assert_eq!(from_dir.config(), &cfg);
        assert_eq!(from_dir.decode(z.clone()).unwrap().into_data(), want);
        let from_file = AutoencoderKl::from_pretrained(dir.join("diffusion_pytorch_model.safetensors"), &device).unwrap();
        assert_eq!(from_file.config(), &cfg);
        // no config.json: architecture inferred, scaling from the 4-channel preset
        let inferred = AutoencoderKl::from_pretrained(lone.join("vae.safetensors"), &device).unwrap();
        assert_eq!(inferred.config().scaling_factor, 0.18215);
        assert_eq!(inferred.decode(z).unwrap().into_data(), want);
        // a config that disagrees with the weights
        std::fs::write(dir.join("config.json"), r#"{"block_out_channels": [32, 32], "layers_per_block": 2}"#).unwrap();
        assert!(matches!(AutoencoderKl::from_pretrained(&dir, &device), Err(Error::CheckpointMismatch { .. })));
        let _ = std::fs::remove_dir_all(&root);
    }
}
