//! Batch sharding: cutting a conditioning along the batch so each device of a data-parallel
//! step gets its share.

use burn::prelude::*;
use burn::tensor::kind::Basic;

use crate::error::{Error, Result};

/// Conditioning that can be cut along the batch dimension and sent to another device, so a
/// data-parallel step can give each device its share of the batch. Implemented for tensors
/// (batch first), `()`, `Option`, pairs and triples; models with their own conditioning
/// type implement it in their own file.
pub trait BatchShard: Sized {
    /// Samples `start..start + len` of a batch of `batch` samples, on `device`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the conditioning does not hold `batch` samples.
    fn shard(&self, batch: usize, start: usize, len: usize, device: &Device) -> Result<Self>;
}

impl BatchShard for () {
    fn shard(&self, _batch: usize, _start: usize, _len: usize, _device: &Device) -> Result<Self> {
        Ok(())
    }
}

impl<const D: usize, K: Basic> BatchShard for Tensor<D, K> {
    fn shard(&self, batch: usize, start: usize, len: usize, device: &Device) -> Result<Self> {
        let dims = self.dims();
        if D == 0 || dims[0] != batch {
            return Err(Error::Shape {
                name: "cond".into(),
                expected: format!("{batch} samples along the first axis, like x0"),
                got: format!("{dims:?}"),
            });
        }
        Ok(self.clone().narrow(0, start, len).to_device(device))
    }
}

impl<T: BatchShard> BatchShard for Option<T> {
    fn shard(&self, batch: usize, start: usize, len: usize, device: &Device) -> Result<Self> {
        self.as_ref().map(|c| c.shard(batch, start, len, device)).transpose()
    }
}

impl<A: BatchShard, B: BatchShard> BatchShard for (A, B) {
    fn shard(&self, batch: usize, start: usize, len: usize, device: &Device) -> Result<Self> {
        Ok((self.0.shard(batch, start, len, device)?, self.1.shard(batch, start, len, device)?))
    }
}

impl<A: BatchShard, B: BatchShard, C: BatchShard> BatchShard for (A, B, C) {
    fn shard(&self, batch: usize, start: usize, len: usize, device: &Device) -> Result<Self> {
        Ok((
            self.0.shard(batch, start, len, device)?,
            self.1.shard(batch, start, len, device)?,
            self.2.shard(batch, start, len, device)?,
        ))
    }
}
