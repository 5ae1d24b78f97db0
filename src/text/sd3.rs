//! Stable Diffusion 3's prompt encoding, exactly as diffusers'
//! `StableDiffusion3Pipeline.encode_prompt`.
//!
//! For each prompt (and, with classifier-free guidance, each negative prompt, `""` by default):
//!
//! ```text
//! c_L, p_L = CLIP-L(tokenizer(prompt))        c: hidden_states[-(clip_skip + 2)] [B, 77, 768],  p: text_embeds [B, 768]
//! c_G, p_G = CLIP-G(tokenizer_2(prompt_2))    [B, 77, 1280], [B, 1280]
//! t        = T5(tokenizer_3(prompt_3))        [B, T = max_sequence_length, 4096]   (zeros [B, T, joint_attention_dim] without T5)
//! prompt_embeds = cat_tokens(pad_width(cat_width(c_L, c_G), width(t)), t)  [B, 77 + T, 4096]
//! pooled        = cat_width(p_L, p_G)                                   [B, 2048]
//! ```
//!
//! `pad_width` is `F.pad` with `(0, width(t) - width(c))`: zeros on the right, or the first
//! `width(t)` columns when the CLIP widths are wider (a negative pad, as diffusers' tiny test
//! configs). `prompt_2` and `prompt_3` default to `prompt`; CLIP inputs are padded / truncated to 77 tokens,
//! T5's to `max_sequence_length` (256 by default), without attention masks, as the pipeline.

use std::path::Path;

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::text::clip::ClipTextModel;
use crate::text::config::{JsonConfig, read_config_file};
use crate::text::t5::T5EncoderModel;
use crate::text::tokenizer::{ClipTokenizer, T5Tokenizer};

/// Options of [`Sd3TextEncoders::encode_prompt`], named after the pipeline's arguments.
#[derive(Debug, Clone)]
pub struct Sd3PromptOptions {
    /// Also encode the negative prompts (classifier-free guidance). Default: true.
    pub do_classifier_free_guidance: bool,
    /// T5 token count. Default: 256.
    pub max_sequence_length: usize,
    /// Hidden state `-(clip_skip + 2)` of the CLIP encoders; `None` is the penultimate one.
    pub clip_skip: Option<usize>,
    /// Rows per prompt (each prompt's embeddings repeated). Default: 1.
    pub num_images_per_prompt: usize,
    /// Prompts for CLIP-G (`None`: the prompts).
    pub prompt_2: Option<Vec<String>>,
    /// Prompts for T5 (`None`: the prompts).
    pub prompt_3: Option<Vec<String>>,
    /// Negative prompts for CLIP-G (`None`: the negative prompts).
    pub negative_prompt_2: Option<Vec<String>>,
    /// Negative prompts for T5 (`None`: the negative prompts).
    pub negative_prompt_3: Option<Vec<String>>,
}

impl Default for Sd3PromptOptions {
    fn default() -> Self {
        Self {
            do_classifier_free_guidance: true,
            max_sequence_length: 256,
            clip_skip: None,
            num_images_per_prompt: 1,
            prompt_2: None,
            prompt_3: None,
            negative_prompt_2: None,
            negative_prompt_3: None,
        }
    }
}

/// What [`Sd3TextEncoders::encode_prompt`] returns (the pipeline's four tensors).
#[derive(Debug, Clone)]
pub struct Sd3PromptEmbeds {
    /// `[B * n, 77 + T, joint_attention_dim]`.
    pub prompt_embeds: Tensor<3>,
    /// `[B * n, 2048]` (CLIP-L then CLIP-G pooled widths).
    pub pooled_prompt_embeds: Tensor<2>,
    /// Like `prompt_embeds`, for the negative prompts (with guidance).
    pub negative_prompt_embeds: Option<Tensor<3>>,
    /// Like `pooled_prompt_embeds`, for the negative prompts (with guidance).
    pub negative_pooled_prompt_embeds: Option<Tensor<2>>,
}

/// SD3's three text encoders and their tokenizers (`text_encoder`, `text_encoder_2`,
/// `text_encoder_3` and `tokenizer*` of a diffusers SD3 / SD3.5 folder).
#[derive(Debug)]
pub struct Sd3TextEncoders {
    /// CLIP-L/14 (`text_encoder`, `CLIPTextModelWithProjection`).
    pub clip_l: ClipTextModel,
    /// Its tokenizer (`tokenizer`).
    pub tokenizer: ClipTokenizer,
    /// OpenCLIP bigG/14 (`text_encoder_2`).
    pub clip_g: ClipTextModel,
    /// Its tokenizer (`tokenizer_2`, padding with `!`).
    pub tokenizer_2: ClipTokenizer,
    /// T5 v1.1 XXL (`text_encoder_3`) and its tokenizer, if used.
    pub t5: Option<(T5EncoderModel, T5Tokenizer)>,
    /// CLIP token count (the tokenizer's `model_max_length`, 77).
    pub tokenizer_max_length: usize,
    /// The transformer's context width (`joint_attention_dim`, 4096): the width zeros take
    /// without T5.
    pub joint_attention_dim: usize,
}

impl Sd3TextEncoders {
    /// Load from a diffusers SD3 folder: `text_encoder*` and `tokenizer*` subfolders, and
    /// `transformer/config.json` for `joint_attention_dim` (4096 when absent). `with_t5 =
    /// false` skips `text_encoder_3` (zeros instead of T5 tokens, as the pipeline with
    /// `text_encoder_3=None`).
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::InvalidConfig`], [`Error::CheckpointMismatch`] from the parts.
    pub fn load(dir: impl AsRef<Path>, with_t5: bool, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let transformer_cfg = dir.join("transformer/config.json");
        let joint_attention_dim = if transformer_cfg.is_file() {
            JsonConfig::new(&read_config_file(&transformer_cfg)?).usize("joint_attention_dim", 4096)?
        } else {
            4096
        };
        let t5 = if with_t5 {
            Some((T5EncoderModel::from_pretrained(dir.join("text_encoder_3"), device)?, T5Tokenizer::from_dir(dir.join("tokenizer_3"))?))
        } else {
            None
        };
        Ok(Self {
            clip_l: ClipTextModel::from_pretrained(dir.join("text_encoder"), device)?,
            tokenizer: ClipTokenizer::from_dir(dir.join("tokenizer"))?,
            clip_g: ClipTextModel::from_pretrained(dir.join("text_encoder_2"), device)?,
            tokenizer_2: ClipTokenizer::from_dir(dir.join("tokenizer_2"))?,
            t5,
            tokenizer_max_length: 77,
            joint_attention_dim,
        })
    }

    /// CLIP hidden states `[B, 77, D]` and projected pooled output `[B, P]` of one encoder.
    fn clip(&self, index: usize, prompts: &[&str], clip_skip: Option<usize>) -> Result<(Tensor<3>, Tensor<2>)> {
        let (model, tok) = if index == 0 { (&self.clip_l, &self.tokenizer) } else { (&self.clip_g, &self.tokenizer_2) };
        let device = model.embeddings.token_embedding.weight.device();
        let ids = tok.encode(prompts, self.tokenizer_max_length)?.ids(&device);
        let out = model.forward_skip(ids, clip_skip.unwrap_or(0))?;
        let pooled = out.text_embeds.ok_or_else(|| {
            Error::InvalidConfig("SD3's CLIP encoders need a text_projection (CLIPTextModelWithProjection)".into())
        })?;
        Ok((out.penultimate_hidden_state, pooled))
    }

    /// T5 tokens `[B, T, 4096]`, or zeros `[B, max_sequence_length, joint_attention_dim]`
    /// without T5 (as diffusers 0.42's `_get_t5_prompt_embeds`).
    fn t5(&self, prompts: &[&str], max_sequence_length: usize, device: &Device) -> Result<Tensor<3>> {
        match &self.t5 {
            None => Ok(Tensor::zeros([prompts.len(), max_sequence_length, self.joint_attention_dim], device)),
            Some((model, tok)) => {
                let ids = tok.encode(prompts, max_sequence_length)?.ids(&model.shared.weight.device());
                model.forward(ids, None)
            }
        }
    }
}

/// Borrowed views of owned prompts.
fn as_str(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

impl Sd3TextEncoders {
    /// One side (positive or negative) of `encode_prompt`.
    fn encode_side(&self, p1: &[&str], p2: &[&str], p3: &[&str], o: &Sd3PromptOptions) -> Result<(Tensor<3>, Tensor<2>)> {
        let (b, n) = (p1.len(), o.num_images_per_prompt);
        if p2.len() != b || p3.len() != b {
            return Err(Error::InvalidArgument(format!(
                "prompt, prompt_2 and prompt_3 batches differ: {b}, {}, {}",
                p2.len(),
                p3.len()
            )));
        }
        let (c_l, pooled_l) = self.clip(0, p1, o.clip_skip)?;
        let (c_g, pooled_g) = self.clip(1, p2, o.clip_skip)?;
        let t5 = self.t5(p3, o.max_sequence_length, &c_l.device())?;
        let clip = Tensor::cat(vec![c_l, c_g], 2);
        let [_, l, w] = clip.dims();
        let width = t5.dims()[2];
        // F.pad(clip, (0, width - w)): zero columns, or a crop when negative.
        let clip = match w.cmp(&width) {
            std::cmp::Ordering::Less => Tensor::cat(vec![clip.clone(), Tensor::zeros([b, l, width - w], &clip.device())], 2),
            std::cmp::Ordering::Greater => clip.slice([0..b, 0..l, 0..width]),
            std::cmp::Ordering::Equal => clip,
        };
        let embeds = Tensor::cat(vec![clip, t5], 1);
        let pooled = Tensor::cat(vec![pooled_l, pooled_g], 1);
        // repeat(1, n, 1).view(B * n, ...): each prompt's rows n times in a row.
        let [_, s, c] = embeds.dims();
        let embeds = embeds.unsqueeze_dim::<4>(1).repeat_dim(1, n).reshape([b * n, s, c]);
        let pw = pooled.dims()[1];
        let pooled = pooled.unsqueeze_dim::<3>(1).repeat_dim(1, n).reshape([b * n, pw]);
        Ok((embeds, pooled))
    }

    /// Encode prompts (and negative prompts) as the SD3 pipeline does (see the
    /// [module docs](self)); `negative_prompt` defaults to `""` for every prompt.
    ///
    /// # Shapes
    /// - `prompt`: `B` strings -> [`Sd3PromptEmbeds`] with `B * num_images_per_prompt` rows
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty batch, batches of different sizes or
    /// `num_images_per_prompt == 0`; tokenizer and encoder errors.
    pub fn encode_prompt(&self, prompt: &[&str], negative_prompt: Option<&[&str]>, options: &Sd3PromptOptions) -> Result<Sd3PromptEmbeds> {
        if prompt.is_empty() || options.num_images_per_prompt == 0 {
            return Err(Error::InvalidArgument("encode_prompt needs at least one prompt and one image per prompt".into()));
        }
        let refs = |v: &Option<Vec<String>>, fallback: &[&str]| -> Vec<String> {
            v.clone().unwrap_or_else(|| fallback.iter().map(|s| s.to_string()).collect())
        };
        let (p2, p3) = (refs(&options.prompt_2, prompt), refs(&options.prompt_3, prompt));
        let (prompt_embeds, pooled_prompt_embeds) = self.encode_side(prompt, &as_str(&p2), &as_str(&p3), options)?;
        let mut out = Sd3PromptEmbeds { prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds: None, negative_pooled_prompt_embeds: None };
        if options.do_classifier_free_guidance {
            let empty = vec![""; prompt.len()];
            let neg = negative_prompt.unwrap_or(&empty);
            if neg.len() != prompt.len() {
                return Err(Error::InvalidArgument(format!("{} negative prompts for {} prompts", neg.len(), prompt.len())));
            }
            let (n2, n3) = (refs(&options.negative_prompt_2, neg), refs(&options.negative_prompt_3, neg));
            let (e, p) = self.encode_side(neg, &as_str(&n2), &as_str(&n3), options)?;
            out.negative_prompt_embeds = Some(e);
            out.negative_pooled_prompt_embeds = Some(p);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{ClipTextConfig, T5EncoderConfig};
    use crate::weights::{Checkpoint, LoadWeights};
    use serde_json::json;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A CLIP text encoder folder (config + weights) and its tokenizer folder.
    fn clip_folders(dir: &Path, name: &str, tokenizer: &str, width: usize, pad: &str, device: &Device) -> ClipTextModel {
        let config = json!({"vocab_size": 514, "hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": 2,
            "num_attention_heads": 2, "projection_dim": 8, "hidden_act": "gelu", "eos_token_id": 513});
        let model = ClipTextConfig::from_transformers(&config, true).unwrap().init(device).unwrap();
        write(&dir.join(name).join("config.json"), &config.to_string());
        model.to_checkpoint().unwrap().save_safetensors(dir.join(name).join("model.safetensors")).unwrap();
        let mut vocab = crate::test_util::byte_level_vocab();
        vocab.insert("<|startoftext|>".into(), 512.into());
        vocab.insert("<|endoftext|>".into(), 513.into());
        write(&dir.join(tokenizer).join("vocab.json"), &serde_json::Value::Object(vocab).to_string());
        write(&dir.join(tokenizer).join("merges.txt"), "#version: 0.2\n");
        write(&dir.join(tokenizer).join("special_tokens_map.json"), &json!({"pad_token": pad}).to_string());
        model
    }

    #[test]
    fn loads_a_diffusers_folder_with_a_sharded_t5() {
        let device = Device::flex();
        let dir = std::env::temp_dir().join(format!("dt_sd3_folder_{}", std::process::id()));
        let clip_l = clip_folders(&dir, "text_encoder", "tokenizer", 16, "<|endoftext|>", &device);
        clip_folders(&dir, "text_encoder_2", "tokenizer_2", 24, "!", &device);
        let t5_config = json!({"vocab_size": 16, "d_model": 48, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 2,
            "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16, "feed_forward_proj": "gated-gelu"});
        let t5 = T5EncoderConfig::from_transformers(&t5_config).unwrap().init(&device).unwrap();
        let te3 = dir.join("text_encoder_3");
        write(&te3.join("config.json"), &t5_config.to_string());
        let mut shards = [Checkpoint::new(), Checkpoint::new()];
        let mut weight_map = serde_json::Map::new();
        for (i, (k, v)) in t5.to_checkpoint().unwrap().into_tensors().into_iter().enumerate() {
            weight_map.insert(k.clone(), format!("model-{}.safetensors", i % 2).into());
            shards[i % 2].insert(k, v);
        }
        for (i, s) in shards.iter().enumerate() {
            s.save_safetensors(te3.join(format!("model-{i}.safetensors"))).unwrap();
        }
        write(&te3.join("model.safetensors.index.json"), &json!({"weight_map": weight_map}).to_string());
        let unigram = json!({"model": {"type": "Unigram", "unk_id": 2, "vocab": [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0],
            ["\u{2581}a", -1.0], ["\u{2581}cat", -1.0], ["\u{2581}", -2.0], ["a", -3.0], ["c", -3.0], ["t", -3.0]]}});
        write(&dir.join("tokenizer_3/tokenizer.json"), &unigram.to_string());
        write(&dir.join("transformer/config.json"), &json!({"joint_attention_dim": 48}).to_string());

        let encoders = Sd3TextEncoders::load(&dir, true, &device).unwrap();
        let without_t5 = Sd3TextEncoders::load(&dir, false, &device).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let options = Sd3PromptOptions { max_sequence_length: 8, ..Default::default() };
        let out = encoders.encode_prompt(&["a cat"], None, &options).unwrap();
        assert_eq!(out.prompt_embeds.dims(), [1, 77 + 8, 48]);
        assert_eq!(out.pooled_prompt_embeds.dims(), [1, 16]);
        assert_eq!(out.negative_prompt_embeds.unwrap().dims(), [1, 77 + 8, 48]);
        // without T5 the zeros are `max_sequence_length` tokens long, as in diffusers 0.42
        assert_eq!(without_t5.encode_prompt(&["a cat"], None, &options).unwrap().prompt_embeds.dims(), [1, 77 + 8, 48]);
        // the loaded encoders are the saved ones
        let ids = Tensor::<2, Int>::from_ints([[512, 65, 513, 513]], &device);
        let (a, b) = (clip_l.forward(ids.clone()).unwrap(), encoders.clip_l.forward(ids).unwrap());
        a.text_embeds.unwrap().into_data().assert_eq(&b.text_embeds.unwrap().into_data(), true);
        let ids = Tensor::<2, Int>::from_ints([[3, 4, 1]], &device);
        let t5_loaded = &encoders.t5.as_ref().unwrap().0;
        t5.forward(ids.clone(), None).unwrap().into_data().assert_eq(&t5_loaded.forward(ids, None).unwrap().into_data(), true);
    }
}
