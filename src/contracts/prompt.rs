//! Prompt encoding for text-to-image pipelines: text to a model's conditioning.
//!
//! A text-to-image pipeline needs, for a batch of prompts, the conditioning its denoiser takes
//! and, with classifier-free guidance, the "unconditional" conditioning of the negative prompts
//! (`""` by default). [`PromptEncoder`] is that step, whatever the text encoders: SD3's three
//! (CLIP-L, CLIP-G, T5) giving `(tokens, pooled)`, or a single text tower giving caption tokens.

use crate::contracts::Conditioning;
use crate::error::Result;

/// Encoded prompts: the conditioning and, for classifier-free guidance, the null conditioning
/// (e.g. the negative prompts' embeddings, or zeros for a model trained with zero captions).
pub type EncodedPrompts<C> = (C, Option<<C as Conditioning>::Null>);

/// Encodes prompts into a model's conditioning (tokenize, run the text encoders, assemble).
pub trait PromptEncoder {
    /// The conditioning the denoiser takes (e.g. `(tokens [B, L, D], pooled [B, P])`).
    type Cond: Conditioning;

    /// The conditioning of `prompts` (`B` rows) and, when `guidance` is set, the null
    /// conditioning for classifier-free guidance: that of `negative_prompts` (`B` of them;
    /// `None`: the empty prompt for every row), or whatever null the model was trained with.
    ///
    /// # Errors
    /// An empty batch, `negative_prompts` of another length than `prompts`, text the
    /// tokenizers reject, and the encoders' errors.
    fn encode_prompts(
        &self,
        prompts: &[&str],
        negative_prompts: Option<&[&str]>,
        guidance: bool,
    ) -> Result<EncodedPrompts<Self::Cond>>;
}
