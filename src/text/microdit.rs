//! MicroDiT's caption conditioning, exactly as SonyResearch/micro_diffusion computes it for its
//! released checkpoints (`create_latent_diffusion` with the default
//! `text_encoder_name = "openclip:hf-hub:apple/DFN5B-CLIP-ViT-H-14-378"`):
//!
//! ```text
//! ids = open_clip tokenizer(prompts, context_length = 77)   [B, 77]: <start>, BPE, <end>, pad 0
//! h   = ln_final(transformer(E_tok[ids] + E_pos))          [B, 77, 1024]   (causal; all 77 tokens, no pooling)
//! y   = h                                                   MicroDiT's caption input ([B, 1, 77, 1024] in the reference)
//! y_uncond = 0                                              classifier-free guidance: zeros_like(y)
//! ```
//!
//! The text encoder is OpenCLIP's ViT-H/14 text tower with QuickGELU (Apple's DFN5B
//! `ViT-H-14-378-quickgelu`: width 1024, 24 layers, 16 heads); the tokenizer is open_clip's
//! `SimpleTokenizer` (CLIP's BPE vocabulary, padding id 0), built here from open_clip's own
//! vocabulary file or CLIP BPE tokenizer files ([`ClipTokenizer::encode_open_clip`]). Neither the projection nor the pooled output
//! is used. The unconditional branch of guidance is all-zero caption embeddings
//! ([`MicroDiTNull::ZeroCaption`]), not an encoded empty prompt.
//!
//! The released `.pt` files are loaded by micro_diffusion into the whole `LatentDiffusion`
//! model: the DiT under `dit.` (loaded by [`MicroDiT`](crate::models::MicroDiT)'s format), the
//! text tower under `text_encoder.encoder.clip_model.` (loaded here; the vision tower is
//! skipped) and the VAE under `vae.` (diffusers `AutoencoderKL` names: SDXL's VAE for the
//! 4-channel models, `ostris/vae-kl-f8-d16` for the 16-channel one). The text tower loads as
//! well from open_clip's own file of the DFN5B model.

use std::path::Path;

use burn::prelude::*;

use crate::contracts::{EncodedPrompts, PromptEncoder};
use crate::error::{Error, Result};
use crate::models::{MicroDiTCond, MicroDiTNull};
use crate::text::clip::{ClipTextConfig, ClipTextModel};
use crate::text::clip_format::ClipTextFormat;
use crate::text::tokenizer::ClipTokenizer;
use crate::weights::{LazyCheckpoint, LoadWeights};

/// MicroDiT's text encoder and tokenizer (see the [module docs](self)).
///
/// ```no_run
/// use burn::prelude::*;
/// use diffusion_transformers::models::MicroDiTConfig;
/// use diffusion_transformers::text::MicroDiTTextEncoder;
/// use diffusion_transformers::vae::{AutoencoderKl, AutoencoderKlConfig};
/// use diffusion_transformers::weights::{LazyCheckpoint, LoadWeights};
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let device = Device::flex();
/// let ckpt = "dit_4_channel_37M_real_and_synthetic_data.pt";
/// // open_clip's vocabulary file (gunzipped), or any CLIP BPE tokenizer folder
/// let text = MicroDiTTextEncoder::load(ckpt, "bpe_simple_vocab_16e6.txt", &device)?;
/// let caption = text.conditioning(&["An elegant squirrel pirate on a ship"])?; // [1, 77, 1024]
/// let null = text.null_conditioning(); // zero captions for guidance
/// // 512px: latent 64, pos_interp_scale 2
/// let mut dit = MicroDiTConfig::from_name("MicroDiT_XL_2")?.with_input_size(64).with_pos_interp_scale(2.0).init(&device)?;
/// dit.load_weights(ckpt)?; // the `dit.*` tensors
/// let mut vae_weights = LazyCheckpoint::open(ckpt)?;
/// vae_weights.retain_prefix("vae.");
/// // SDXL's VAE: scaling factor 0.13025 (the shapes alone would give SD's 0.18215)
/// let mut vae: AutoencoderKl = AutoencoderKlConfig::from_lazy(&vae_weights)?.with_scaling_factor(0.13025).init(&device)?;
/// vae.load_lazy(vae_weights)?;
/// # let _ = (caption, null);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MicroDiTTextEncoder {
    /// The OpenCLIP text tower (its projection is loaded but unused).
    pub model: ClipTextModel,
    /// CLIP's BPE tokenizer, used as open_clip's.
    pub tokenizer: ClipTokenizer,
}

impl MicroDiTTextEncoder {
    /// Wrap a text tower and its tokenizer; the context length is the tower's
    /// `max_position_embeddings` (77).
    pub fn new(model: ClipTextModel, tokenizer: ClipTokenizer) -> Self {
        Self { model, tokenizer }
    }

    /// The DFN5B ViT-H/14 text tower ([`ClipTextConfig::open_clip_vit_h_14`] with QuickGELU)
    /// streamed from `weights`: a MicroDiT release (`dit_*.pt`, the tower under
    /// `text_encoder.encoder.clip_model.`) or open_clip's own file of the model
    /// (`open_clip_pytorch_model.bin` / `open_clip_model.safetensors`); the tokenizer from
    /// open_clip's own `bpe_simple_vocab_16e6.txt` (gunzipped;
    /// [`ClipTokenizer::from_open_clip_bpe`]) or a CLIP BPE tokenizer folder (`tokenizer.json`
    /// or `vocab.json` + `merges.txt`, e.g. `openai/clip-vit-large-patch14`'s or SD3's
    /// `tokenizer_2`: the same vocabulary; [`ClipTokenizer::from_dir`]).
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable files (`.pt` needs the `pytorch` feature),
    /// [`Error::CheckpointMismatch`] for other weights.
    pub fn load(weights: impl AsRef<Path>, tokenizer: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::load_with(&ClipTextConfig::open_clip_vit_h_14(true), weights, tokenizer, device)
    }

    /// As [`load`](Self::load) for a text tower of another configuration (e.g. a small test
    /// tower, [`ClipTextConfig::from_open_clip`]).
    ///
    /// # Errors
    /// As [`load`](Self::load), and an invalid `config`.
    pub fn load_with(config: &ClipTextConfig, weights: impl AsRef<Path>, tokenizer: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let tokenizer = tokenizer.as_ref();
        let tokenizer = if tokenizer.is_dir() { ClipTokenizer::from_dir(tokenizer)? } else { ClipTokenizer::from_open_clip_bpe(tokenizer)? };
        let mut model = config.init(device)?;
        model.load_lazy_as(LazyCheckpoint::open(weights)?, ClipTextFormat::OpenClip)?;
        Ok(Self { model, tokenizer })
    }

    /// Tokens per caption (the tower's `max_position_embeddings`, 77).
    pub fn context_length(&self) -> usize {
        self.model.embeddings.position_embedding.weight.dims()[0]
    }

    /// Token ids as open_clip's tokenizer gives them.
    ///
    /// # Shapes
    /// - `prompts`: `B` strings -> `[B, context_length]`
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for text the tokenizer rejects.
    pub fn tokenize(&self, prompts: &[&str]) -> Result<Tensor<2, Int>> {
        let device = self.model.embeddings.token_embedding.weight.device();
        Ok(self.tokenizer.encode_open_clip(prompts, self.context_length())?.ids(&device))
    }

    /// Caption embeddings of token ids: `ln_final` of the last layer, every token.
    ///
    /// # Shapes
    /// - `input_ids`: `[B, L]` -> `[B, L, D]`
    ///
    /// # Errors
    /// As [`ClipTextModel::forward`].
    pub fn encode_ids(&self, input_ids: Tensor<2, Int>) -> Result<Tensor<3>> {
        Ok(self.model.forward(input_ids)?.last_hidden_state)
    }

    /// Caption embeddings of prompts (see the [module docs](self)).
    ///
    /// # Shapes
    /// - `prompts`: `B` strings -> `[B, context_length, D]` (`[B, 77, 1024]`)
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty batch or text the
    /// tokenizer rejects.
    pub fn encode(&self, prompts: &[&str]) -> Result<Tensor<3>> {
        if prompts.is_empty() {
            return Err(Error::InvalidArgument("no prompts to encode".into()));
        }
        self.encode_ids(self.tokenize(prompts)?)
    }

    /// MicroDiT's conditioning for prompts, [`MicroDiTCond::Caption`] of [`encode`](Self::encode).
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    pub fn conditioning(&self, prompts: &[&str]) -> Result<MicroDiTCond> {
        Ok(MicroDiTCond::Caption(self.encode(prompts)?))
    }

    /// The unconditional branch of classifier-free guidance as micro_diffusion samples:
    /// all-zero caption embeddings.
    pub fn null_conditioning(&self) -> MicroDiTNull {
        MicroDiTNull::ZeroCaption
    }
}

/// micro_diffusion's prompt encoding as a [`PromptEncoder`]: the captions of the prompts and,
/// for guidance, all-zero captions ([`MicroDiTNull::ZeroCaption`], as
/// `forward_with_cfg`), or, when negative prompts are given, their caption embeddings (an
/// extension: micro_diffusion has no negative prompts).
impl PromptEncoder for MicroDiTTextEncoder {
    type Cond = MicroDiTCond;

    fn encode_prompts(&self, prompts: &[&str], negative_prompts: Option<&[&str]>, guidance: bool) -> Result<EncodedPrompts<MicroDiTCond>> {
        let cond = self.conditioning(prompts)?;
        let null = match (guidance, negative_prompts) {
            (false, _) => None,
            (true, None) => Some(self.null_conditioning()),
            (true, Some(neg)) if neg.len() != prompts.len() => {
                return Err(Error::InvalidArgument(format!("{} negative prompts for {} prompts", neg.len(), prompts.len())));
            }
            (true, Some(neg)) => Some(MicroDiTNull::Caption(self.encode(neg)?)),
        };
        Ok((cond, null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::Checkpoint;

    #[test]
    fn encodes_every_token_and_pads_with_zero() {
        let dir = std::env::temp_dir().join(format!("dt_microdit_text_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A byte-level vocabulary, a merge, the two specials.
        let mut vocab = crate::test_util::byte_level_vocab();
        vocab.insert("ca".into(), 512.into());
        vocab.insert("<start_of_text>".into(), 513.into());
        vocab.insert("<end_of_text>".into(), 514.into());
        std::fs::write(dir.join("vocab.json"), serde_json::Value::Object(vocab).to_string()).unwrap();
        std::fs::write(dir.join("merges.txt"), "#version: 0.2\nc a\n").unwrap();
        let specials = r#"{"bos_token": "<start_of_text>", "eos_token": "<end_of_text>", "unk_token": "<end_of_text>", "pad_token": "<end_of_text>"}"#;
        std::fs::write(dir.join("special_tokens_map.json"), specials).unwrap();
        let tokenizer = ClipTokenizer::from_dir(&dir).unwrap();

        let device = Device::flex();
        let cfg = ClipTextConfig::new()
            .with_vocab_size(515)
            .with_hidden_size(16)
            .with_intermediate_size(32)
            .with_num_hidden_layers(2)
            .with_num_attention_heads(2)
            .with_max_position_embeddings(6)
            .with_projection_dim(Some(8));
        let model = cfg.init(&device).unwrap();
        let enc = MicroDiTTextEncoder::new(model, tokenizer);
        let ids = enc.tokenize(&["cab", "b b b b b b"]).unwrap();
        let want = TensorData::new(vec![513i64, 512, 354, 514, 0, 0, 513, 354, 354, 354, 354, 514], [2, 6]);
        ids.into_data().convert_dtype(burn::tensor::DType::I64).assert_eq(&want, true);
        let y = enc.encode(&["cab", ""]).unwrap();
        assert_eq!(y.dims(), [2, 6, 16]);
        assert!(matches!(enc.conditioning(&["x"]).unwrap(), MicroDiTCond::Caption(c) if c.dims() == [1, 6, 16]));
        assert!(matches!(enc.null_conditioning(), MicroDiTNull::ZeroCaption));
        assert!(enc.encode(&[]).is_err());
        // as a prompt encoder: zero captions for guidance unless negative prompts are given
        let (c, null) = enc.encode_prompts(&["cab", "b"], None, true).unwrap();
        assert!(matches!((c, null), (MicroDiTCond::Caption(c), Some(MicroDiTNull::ZeroCaption)) if c.dims() == [2, 6, 16]));
        assert!(enc.encode_prompts(&["cab"], None, false).unwrap().1.is_none());
        let (_, null) = enc.encode_prompts(&["cab"], Some(&[""]), true).unwrap();
        let Some(MicroDiTNull::Caption(n)) = null else { panic!("negative prompts give their captions") };
        n.into_data().assert_approx_eq::<f32>(&y.clone().slice(1..2).into_data(), burn::tensor::Tolerance::default());
        assert!(enc.encode_prompts(&["a", "b"], Some(&[""]), true).is_err());
        // a checkpoint without an OpenCLIP text tower is refused, saying so
        let mut ck = Checkpoint::new();
        ck.insert("dit.x_embedder.proj.weight", TensorData::new(vec![0.0f32; 4], [4]));
        let file = dir.join("dit.safetensors");
        ck.save_safetensors(&file).unwrap();
        let err = MicroDiTTextEncoder::load(&file, &dir, &device).unwrap_err().to_string();
        assert!(err.contains("not an OpenCLIP checkpoint"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
