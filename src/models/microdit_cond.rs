//! The conditioning of a [`MicroDiT`](crate::models::MicroDiT) (captions or class labels), its
//! unconditional branch for guidance, and how it is batched and sharded.

use burn::prelude::*;

use crate::blocks::ConditionInput;
use crate::contracts::{BatchShard, Conditioning, NullEmbedding};
use crate::error::{Error, Result};

/// The conditioning of a [`MicroDiT`](crate::models::MicroDiT).
#[derive(Debug, Clone)]
pub enum MicroDiTCond {
    /// Caption embeddings `[B, L, caption_channels]` (MicroDiT backbone; the reference's
    /// `[B, 1, L, C]` input with the singleton axis squeezed). All-zero embeddings are the
    /// unconditional caption.
    Caption(Tensor<3>),
    /// Class labels `[B]` in `0..=num_classes` (DiT backbone; `num_classes` is the null class).
    Labels(Tensor<1, Int>),
}

impl MicroDiTCond {
    /// Batch size.
    pub fn batch_size(&self) -> usize {
        match self {
            MicroDiTCond::Caption(y) => y.dims()[0],
            MicroDiTCond::Labels(y) => y.dims()[0],
        }
    }

    /// The condition as the [`ConditionEmbedder`](crate::blocks::ConditionEmbedder) takes it.
    pub fn input(&self) -> ConditionInput<'_> {
        match self {
            MicroDiTCond::Caption(y) => ConditionInput::Caption(y),
            MicroDiTCond::Labels(y) => ConditionInput::Labels(y),
        }
    }
}

/// The unconditional branch of a [`MicroDiTCond`] for
/// classifier-free guidance.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a tensor handle, built once per sampling run
pub enum MicroDiTNull {
    /// All-zero caption embeddings (the reference's unconditional branch).
    ZeroCaption,
    /// Given caption embeddings `[1 or B, L, caption_channels]` (e.g. of an empty or negative
    /// prompt).
    Caption(Tensor<3>),
    /// The null class index (`num_classes`).
    Label(usize),
}

impl Conditioning for MicroDiTCond {
    type Null = MicroDiTNull;

    fn batch_size(&self) -> Option<usize> {
        Some(MicroDiTCond::batch_size(self))
    }

    fn concat_batch(first: &Self, second: &Self) -> Result<Self> {
        match (first, second) {
            (MicroDiTCond::Caption(a), MicroDiTCond::Caption(b)) => {
                Ok(MicroDiTCond::Caption(Tensor::<3>::concat_batch(a, b)?))
            }
            (MicroDiTCond::Labels(a), MicroDiTCond::Labels(b)) => Ok(MicroDiTCond::Labels(Tensor::cat(vec![a.clone(), b.clone()], 0))),
            _ => Err(Error::InvalidArgument("cannot batch captions with labels".into())),
        }
    }

    fn null_like(&self, null: &MicroDiTNull) -> Result<Self> {
        match (self, null) {
            (MicroDiTCond::Caption(y), MicroDiTNull::ZeroCaption) => Ok(MicroDiTCond::Caption(y.null_like(&NullEmbedding::Zeros)?)),
            (MicroDiTCond::Caption(y), MicroDiTNull::Caption(n)) => {
                Ok(MicroDiTCond::Caption(y.null_like(&NullEmbedding::Given(n.clone()))?))
            }
            (MicroDiTCond::Labels(y), MicroDiTNull::Label(k)) => {
                Ok(MicroDiTCond::Labels(Tensor::full([y.dims()[0]], crate::validate::label_value("null label", *k)?, &y.device())))
            }
            _ => Err(Error::InvalidArgument(format!("null conditioning {null:?} does not fit the conditioning kind"))),
        }
    }
}


impl BatchShard for MicroDiTCond {
    fn shard(&self, batch: usize, start: usize, len: usize, device: &Device) -> Result<Self> {
        Ok(match self {
            MicroDiTCond::Caption(y) => MicroDiTCond::Caption(y.shard(batch, start, len, device)?),
            MicroDiTCond::Labels(y) => MicroDiTCond::Labels(y.shard(batch, start, len, device)?),
        })
    }
}

