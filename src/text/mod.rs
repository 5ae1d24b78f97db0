//! Text encoders and tokenizers for text-to-image models: the CLIP text transformer
//! ([`clip`]), the T5 v1.1 encoder ([`t5`]), the CLIP BPE and T5 unigram tokenizers
//! ([`tokenizer`], crate feature `text`), Stable Diffusion 3's prompt encoding ([`sd3`]) and
//! MicroDiT's caption conditioning ([`microdit`]).
//!
//! The encoders load through the crate's one loader ([`LoadWeights`](crate::weights::LoadWeights):
//! streaming, sharded files, every bad key listed) under transformers' own key names (and
//! OpenCLIP's for the CLIP text tower, [`clip_format`]) and read transformers' `config.json`
//! option names; each matches its reference to float precision (conformance kinds
//! `clip_text_transformers`, `clip_text_open_clip`, `t5_encoder_transformers`).

pub mod clip;
pub mod clip_format;
pub(crate) mod config;
#[cfg(feature = "text")]
pub mod microdit;
#[cfg(feature = "text")]
pub mod sd3;
pub mod t5;
#[cfg(feature = "text")]
pub mod tokenizer;

pub use clip::{ClipTextConfig, ClipTextModel, ClipTextOutput};
pub use clip_format::ClipTextFormat;
#[cfg(feature = "text")]
pub use microdit::MicroDiTTextEncoder;
#[cfg(feature = "text")]
pub use sd3::{Sd3PromptEmbeds, Sd3PromptOptions, Sd3TextEncoders};
pub use t5::{T5EncoderConfig, T5EncoderModel};
#[cfg(feature = "text")]
pub use tokenizer::{ClipTokenizer, T5Tokenizer, TokenizedBatch};

use burn::prelude::*;

use crate::error::{Error, Result};

/// The ids of `[B, L]` token ids, row-major, checked against the vocabulary size.
pub(crate) fn ids_to_host(ids: &Tensor<2, Int>, vocab: usize) -> Result<Vec<i64>> {
    let data = ids.to_data().convert_dtype(burn::tensor::DType::I64);
    let ids: Vec<i64> = data
        .try_into_vec::<i64>()
        .map_err(|e| Error::InvalidArgument(format!("cannot read token ids: {e:?}")))?;
    if let Some(bad) = ids.iter().find(|&&t| t < 0 || t as usize >= vocab) {
        return Err(Error::InvalidArgument(format!("token id {bad} is outside the vocabulary of {vocab} entries")));
    }
    Ok(ids)
}
