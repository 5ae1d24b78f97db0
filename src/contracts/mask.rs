//! Random token masking for masked diffusion training (MicroDiT's `get_mask`,
//! `mask_out_token`, `unmask_tokens`), and the patch-wise loss over kept tokens only.
//!
//! A [`TokenMask`] keeps `floor(N * (1 - ratio))` of the `N` tokens of every sample: the ones
//! with the smallest values of a uniform noise vector (drawn from a seeded RNG or given), or
//! the zeros of a given binary mask. A [`MaskedDenoiser`](crate::contracts::MaskedDenoiser) is a
//! model that can run on the kept tokens only; masked training objectives (e.g. the diffusion
//! module's `MaskedEdm`) compute their loss on the kept patches with [`patch_loss`].

use burn::prelude::*;
use rand::Rng;

use crate::error::{Error, Result, ensure_dims};

/// Number of tokens kept out of `n` at mask ratio `ratio`: `int(n * (1 - ratio))` as the
/// reference computes it. Errors when `ratio` lies outside `[0, 1)` or nothing would be kept.
pub fn num_keep(n: usize, ratio: f64) -> Result<usize> {
    if !(0.0..1.0).contains(&ratio) {
        return Err(Error::InvalidArgument(format!("mask ratio must lie in [0, 1), got {ratio}")));
    }
    let keep = (n as f64 * (1.0 - ratio)) as usize;
    if keep == 0 {
        return Err(Error::InvalidArgument(format!("mask ratio {ratio} keeps no token out of {n}")));
    }
    Ok(keep)
}

/// Which tokens of a batch are kept, and how to put them back.
#[derive(Debug, Clone)]
pub struct TokenMask {
    /// Kept token indices in the order the backbone sees them, `[B, K]`.
    pub ids_keep: Tensor<2, Int>,
    /// For every original position, its index in the sequence `[kept..., removed...]`,
    /// `[B, N]` (the inverse permutation of the shuffle).
    pub ids_restore: Tensor<2, Int>,
    /// `1.0` where a token is removed, `0.0` where it is kept, `[B, N]`.
    pub mask: Tensor<2>,
}

impl TokenMask {
    /// The reference procedure on given noise: tokens are shuffled by ascending noise and the
    /// first `floor(N * (1 - ratio))` are kept.
    ///
    /// # Shapes
    /// - `noise`: `[B, N]`
    pub fn from_noise(noise: Tensor<2>, ratio: f64) -> Result<Self> {
        let [b, n] = noise.dims();
        let keep = num_keep(n, ratio)?;
        let ids_shuffle = noise.argsort(1);
        let ids_restore = ids_shuffle.clone().argsort(1);
        let ids_keep = ids_shuffle.narrow(1, 0, keep);
        let sorted = Tensor::<2>::ones([b, n], &ids_keep.device()).slice_fill([0..b, 0..keep], 0.0);
        let mask = sorted.gather(1, ids_restore.clone());
        Ok(Self { ids_keep, ids_restore, mask })
    }

    /// A random mask: uniform noise drawn from `rng`, then [`from_noise`](Self::from_noise).
    pub fn random<R: Rng + ?Sized>(batch: usize, n: usize, ratio: f64, rng: &mut R, device: &Device) -> Result<Self> {
        num_keep(n, ratio)?;
        let noise: Vec<f32> = (0..batch * n).map(|_| rng.random::<f32>()).collect();
        Self::from_noise(Tensor::from_data(TensorData::new(noise, [batch, n]), device), ratio)
    }

    /// A mask from a binary tensor (`1` = removed, `0` = kept) with the same number of kept
    /// tokens in every row; the kept tokens are taken in ascending position order.
    ///
    /// # Shapes
    /// - `mask`: `[B, N]`
    pub fn from_binary(mask: Tensor<2>) -> Result<Self> {
        let [b, n] = mask.dims();
        let device = mask.device();
        let values = mask
            .clone()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::InvalidArgument(format!("cannot read mask: {e:?}")))?;
        if values.iter().any(|v| *v != 0.0 && *v != 1.0) {
            return Err(Error::InvalidArgument("mask values must be 0 (keep) or 1 (remove)".into()));
        }
        let mut shuffle = Vec::with_capacity(b * n);
        let mut keep = None;
        for row in values.chunks(n.max(1)).take(b) {
            let kept: Vec<i64> = (0..n).filter(|&i| row[i] == 0.0).map(|i| i as i64).collect();
            if *keep.get_or_insert(kept.len()) != kept.len() {
                return Err(Error::InvalidArgument("every mask row must keep the same number of tokens".into()));
            }
            shuffle.extend(kept);
            shuffle.extend((0..n).filter(|&i| row[i] != 0.0).map(|i| i as i64));
        }
        let keep = keep.unwrap_or(0);
        if keep == 0 {
            return Err(Error::InvalidArgument("the mask keeps no token".into()));
        }
        let mut restore = vec![0i64; b * n];
        for (r, row) in shuffle.chunks(n).enumerate() {
            for (j, &i) in row.iter().enumerate() {
                restore[r * n + i as usize] = j as i64;
            }
        }
        let ids_shuffle = Tensor::<2, Int>::from_data(TensorData::new(shuffle, [b, n]), &device);
        Ok(Self {
            ids_keep: ids_shuffle.narrow(1, 0, keep),
            ids_restore: Tensor::from_data(TensorData::new(restore, [b, n]), &device),
            mask,
        })
    }

    /// Batch size `B`.
    pub fn batch(&self) -> usize {
        self.ids_restore.dims()[0]
    }

    /// Number of tokens before masking, `N`.
    pub fn num_tokens(&self) -> usize {
        self.ids_restore.dims()[1]
    }

    /// Number of kept tokens, `K`.
    pub fn num_kept(&self) -> usize {
        self.ids_keep.dims()[1]
    }

    fn check(&self, name: &str, dims: [usize; 3], n: usize) -> Result<()> {
        ensure_dims(name, dims, [Some(self.batch()), Some(n), None])
    }

    /// `ids` `[B, M]` as flat row indices `batch * N + id` of a `[B * N, C]` view.
    fn rows(&self, ids: Tensor<2, Int>) -> Tensor<1, Int> {
        let [b, m] = ids.dims();
        let offsets = Tensor::<1, Int>::arange(0..b as i64, &ids.device()).mul_scalar(self.num_tokens() as i64);
        let offsets: Tensor<1, Int> = offsets.cast(ids.dtype());
        (ids + offsets.reshape([b, 1])).reshape([b * m])
    }

    /// Keep the selected tokens (`mask_out_token`).
    ///
    /// # Shapes
    /// - `x`: `[B, N, C]` -> `[B, K, C]`
    pub fn keep(&self, x: Tensor<3>) -> Result<Tensor<3>> {
        self.check("x", x.dims(), self.num_tokens())?;
        let [b, n, c] = x.dims();
        let rows = self.rows(self.ids_keep.clone());
        Ok(x.reshape([b * n, c]).select(0, rows).reshape([b, self.num_kept(), c]))
    }

    /// Put kept tokens back in their positions and fill the removed ones with `fill`
    /// (`unmask_tokens`).
    ///
    /// # Shapes
    /// - `x`: `[B, K, C]`, `fill`: `[C]` -> `[B, N, C]`
    pub fn restore(&self, x: Tensor<3>, fill: Tensor<1>) -> Result<Tensor<3>> {
        self.check("x", x.dims(), self.num_kept())?;
        let [b, k, c] = x.dims();
        ensure_dims("fill", fill.dims(), [Some(c)])?;
        let n = self.num_tokens();
        let fill = fill.reshape([1, 1, c]).expand([b, n - k, c]);
        let rows = self.rows(self.ids_restore.clone());
        Ok(Tensor::cat(vec![x, fill], 1).reshape([b * n, c]).select(0, rows).reshape([b, n, c]))
    }

    /// Per-sample mean of a per-token loss over the kept tokens only.
    ///
    /// # Shapes
    /// - `loss`: `[B, N]` -> `[B]`
    pub fn kept_mean(&self, loss: Tensor<2>) -> Result<Tensor<1>> {
        ensure_dims("loss", loss.dims(), [Some(self.batch()), Some(self.num_tokens())])?;
        let keep = self.mask.clone().neg() + 1.0;
        Ok(((loss * keep.clone()).sum_dim(1) / keep.sum_dim(1)).squeeze_dim::<1>(1))
    }
}

/// A per-pixel loss averaged over channels and over each `p x p` patch (the reference's
/// `avg_pool2d(loss.mean(dim=1), p).flatten(1)`), giving one value per token in row-major
/// patch order.
///
/// # Shapes
/// - `loss`: `[B, C, H, W]` -> `[B, (H/p) * (W/p)]`
pub fn patch_loss(loss: Tensor<4>, patch_size: usize) -> Result<Tensor<2>> {
    let [b, _, h, w] = loss.dims();
    let p = patch_size;
    if p == 0 || h % p != 0 || w % p != 0 {
        return Err(Error::Shape {
            name: "loss".into(),
            expected: format!("H and W multiples of the patch size {p}"),
            got: format!("{:?}", loss.dims()),
        });
    }
    let m = loss.mean_dim(1).reshape([b, h / p, p, w / p, p]);
    Ok(m.mean_dim(4).mean_dim(2).reshape([b, (h / p) * (w / p)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ints(t: Tensor<2, Int>) -> Vec<i64> {
        t.into_data().convert::<i64>().try_into_vec::<i64>().unwrap()
    }

    #[test]
    fn keeps_floor_of_kept_fraction() {
        assert_eq!(num_keep(16, 0.75).unwrap(), 4);
        assert_eq!(num_keep(10, 0.75).unwrap(), 2); // int(2.5)
        assert_eq!(num_keep(256, 0.5).unwrap(), 128);
        assert_eq!(num_keep(7, 0.0).unwrap(), 7);
        assert!(num_keep(16, 1.0).is_err());
        assert!(num_keep(16, -0.1).is_err());
        assert!(num_keep(3, 0.9).is_err()); // keeps nothing
        let device = Device::flex();
        let mut rng = StdRng::seed_from_u64(3);
        for (n, ratio) in [(16, 0.75), (10, 0.75), (9, 0.5), (64, 0.3)] {
            let m = TokenMask::random(3, n, ratio, &mut rng, &device).unwrap();
            let k = (n as f64 * (1.0 - ratio)) as usize;
            assert_eq!(m.num_kept(), k);
            let removed = m.mask.clone().sum_dim(1).into_data().try_into_vec::<f32>().unwrap();
            assert!(removed.iter().all(|r| *r as usize == n - k));
        }
    }

    #[test]
    fn smallest_noise_is_kept_and_restore_inverts() {
        let device = Device::flex();
        let noise = Tensor::<2>::from_floats([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.6, 0.05]], &device);
        let m = TokenMask::from_noise(noise, 0.5).unwrap();
        assert_eq!(ints(m.ids_keep.clone()), vec![1, 3, 3, 0]);
        assert_eq!(m.mask.clone().into_data().try_into_vec::<f32>().unwrap(), vec![1., 0., 1., 0., 0., 1., 1., 0.]);
        // positions as features: keep then restore puts kept ones back, fills the rest
        let x = Tensor::<1, Int>::arange(0..8, &device).float().reshape([2, 4, 1]);
        let kept = m.keep(x).unwrap();
        assert_eq!(kept.clone().reshape([4]).into_data().try_into_vec::<f32>().unwrap(), vec![1., 3., 7., 4.]);
        let back = m.restore(kept, Tensor::from_floats([-1.0], &device)).unwrap();
        assert_eq!(back.reshape([8]).into_data().try_into_vec::<f32>().unwrap(), vec![-1., 1., -1., 3., 4., -1., -1., 7.]);
        // the same selection from the binary mask
        let b = TokenMask::from_binary(m.mask.clone()).unwrap();
        assert_eq!(ints(b.ids_keep.clone()), vec![1, 3, 0, 3]);
        let x = Tensor::<1, Int>::arange(0..8, &device).float().reshape([2, 4, 1]);
        let back = b.restore(b.keep(x).unwrap(), Tensor::from_floats([-1.0], &device)).unwrap();
        assert_eq!(back.reshape([8]).into_data().try_into_vec::<f32>().unwrap(), vec![-1., 1., -1., 3., 4., -1., -1., 7.]);
    }

    #[test]
    fn loss_ignores_masked_patches() {
        let device = Device::flex();
        // 1 sample, 1 channel, 4x4 pixels, patch 2 -> 4 tokens; tokens 0 and 3 kept
        let m = TokenMask::from_binary(Tensor::from_floats([[0.0, 1.0, 1.0, 0.0]], &device)).unwrap();
        let mut px = vec![0f32; 16];
        for (i, v) in px.iter_mut().enumerate() {
            let (r, c) = (i / 4, i % 4);
            *v = ((r / 2) * 2 + c / 2) as f32 + 1.0; // token id + 1
        }
        let loss = Tensor::<4>::from_data(TensorData::new(px, [1, 1, 4, 4]), &device);
        let per_token = patch_loss(loss.clone(), 2).unwrap();
        assert_eq!(per_token.clone().into_data().try_into_vec::<f32>().unwrap(), vec![1., 2., 3., 4.]);
        assert_eq!(m.kept_mean(per_token).unwrap().into_scalar::<f32>(), 2.5); // (1 + 4) / 2
        // huge values in removed patches change nothing
        let loss = loss.clone().mask_fill(loss.clone().equal_elem(2.0), 1e6);
        assert_eq!(m.kept_mean(patch_loss(loss, 2).unwrap()).unwrap().into_scalar::<f32>(), 2.5);
    }

    #[test]
    fn bad_masks_are_errors() {
        let device = Device::flex();
        assert!(TokenMask::from_binary(Tensor::from_floats([[0.0, 1.0], [1.0, 1.0]], &device)).is_err());
        assert!(TokenMask::from_binary(Tensor::from_floats([[0.0, 0.5]], &device)).is_err());
        assert!(TokenMask::from_binary(Tensor::from_floats([[1.0, 1.0]], &device)).is_err());
        assert!(TokenMask::from_noise(Tensor::zeros([1, 4], &device), 1.0).is_err());
        let m = TokenMask::from_noise(Tensor::from_floats([[0.1, 0.2, 0.3, 0.4]], &device), 0.5).unwrap();
        assert!(m.keep(Tensor::zeros([1, 5, 2], &device)).is_err());
        assert!(m.restore(Tensor::zeros([1, 3, 2], &device), Tensor::zeros([2], &device)).is_err());
        assert!(m.restore(Tensor::zeros([1, 2, 2], &device), Tensor::zeros([3], &device)).is_err());
        assert!(patch_loss(Tensor::zeros([1, 1, 3, 4], &device), 2).is_err());
    }
}
