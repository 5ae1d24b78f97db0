//! The checkpoint formats of the model shell ([`ComposedDiT`]): a flat model reads and writes
//! DiT's names (official, or diffusers' `DiTTransformer2DModel`, detected from the keys), a
//! U-shaped one U-DiT's official names in the form of its depthwise-conv FFNs. DiT and U-DiT
//! are presets of the shell, so their checkpoints load through these.

use crate::error::Result;
use crate::layers::dwconv_ffn::FfnForm;
use crate::models::ComposedDiT;
use crate::weights::checkpoint::Checkpoint;
use crate::weights::dit::DiTCheckpointLayout;
use crate::weights::format::{CheckpointFormat, LoadWeights};
use crate::weights::lazy::LazyCheckpoint;
use crate::weights::udit::UDiTOfficial;

/// A checkpoint format of the shell: DiT's layouts or U-DiT's official one (both convert
/// with `.into()`, e.g. `model.load_checkpoint_as(&ck, DiTCheckpointLayout::Diffusers)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ComposedFormat {
    /// DiT's names (flat models).
    DiT(DiTCheckpointLayout),
    /// U-DiT's official names (U-shaped models).
    UDiT(UDiTOfficial),
}

impl From<DiTCheckpointLayout> for ComposedFormat {
    fn from(layout: DiTCheckpointLayout) -> Self {
        Self::DiT(layout)
    }
}

impl From<UDiTOfficial> for ComposedFormat {
    fn from(format: UDiTOfficial) -> Self {
        Self::UDiT(format)
    }
}

impl CheckpointFormat<ComposedDiT> for ComposedFormat {
    fn key(&self, module_path: &str) -> String {
        match self {
            Self::DiT(f) => f.key(module_path),
            Self::UDiT(f) => f.key(module_path),
        }
    }

    fn prepare(&self, model: &ComposedDiT, checkpoint: &mut LazyCheckpoint<'_>) -> Result<()> {
        match self {
            Self::DiT(f) => f.prepare(model, checkpoint),
            Self::UDiT(f) => f.prepare(model, checkpoint),
        }
    }

    fn finish_export(&self, model: &ComposedDiT, checkpoint: &mut Checkpoint) -> Result<()> {
        match self {
            Self::DiT(f) => f.finish_export(model, checkpoint),
            Self::UDiT(f) => f.finish_export(model, checkpoint),
        }
    }
}

fn udit_names(model: &ComposedDiT) -> ComposedFormat {
    ComposedFormat::UDiT(UDiTOfficial { form: model.ffn_form().unwrap_or(FfnForm::Reparam) })
}

/// Flat models load DiT's official or diffusers layout (detected) and export the official
/// one; U-shaped models load and export U-DiT's official layout of their FFN form.
impl LoadWeights for ComposedDiT {
    type Format = ComposedFormat;

    fn format_of(&self, checkpoint: &LazyCheckpoint<'_>) -> ComposedFormat {
        match self.stages.len() {
            1 => ComposedFormat::DiT(DiTCheckpointLayout::detect_keys(checkpoint.keys())),
            _ => udit_names(self),
        }
    }

    fn export_format(&self) -> ComposedFormat {
        match self.stages.len() {
            1 => ComposedFormat::DiT(DiTCheckpointLayout::Official),
            _ => udit_names(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::parts::{AttentionKind, FeedForwardKind};
    use crate::layers::dwconv_ffn::test_support::{Randomize, uniform};
    use crate::models::{ComposedDiTConfig, MaskingConfig, StageLayout};
    use burn::module::Module;
    use burn::prelude::*;
    use burn::tensor::Tolerance;

    #[test]
    fn any_shell_round_trips_through_its_names() {
        let device = Device::flex();
        let base = ComposedDiTConfig::new().with_input_size(8).with_hidden_size(16).with_head_dim(8);
        let u = StageLayout::UShaped { depths: [1, 1, 1, 1, 1] }; // odd: half official blocks
        let down = AttentionKind::Downsampled { down_factor: 1, kernel: 3, cosine: true, rope: false };
        let configs = [
            base.clone().with_stages(u).with_attention(down).with_feed_forward(FeedForwardKind::SwiGlu { multiple_of: 8 }),
            base.with_masking(Some(MaskingConfig::new().with_mixer_depth(1))).with_per_block_embedders(true),
        ];
        let x = uniform([1, 4, 8, 8], 1, &device);
        let t = Tensor::<1>::from_floats([30.0], &device);
        let y = Some(Tensor::<1, Int>::from_ints([2], &device));
        for cfg in configs {
            let a = cfg.init(&device).unwrap().map(&mut Randomize::seeded(1));
            let ck = a.to_checkpoint().unwrap();
            let mut b = cfg.init(&device).unwrap();
            b.load_checkpoint(&ck).unwrap();
            let want = a.forward(x.clone(), t.clone(), y.clone()).unwrap();
            let got = b.forward(x.clone(), t.clone(), y.clone()).unwrap();
            got.into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(0.0));
        }
    }
}
