//! Tiled decoding with linear blending of the overlaps (diffusers `AutoencoderKL.tiled_decode`).
//!
//! The latent is cut into `tile_size x tile_size` tiles starting every `tile_size - overlap`
//! latent pixels; each tile is decoded on its own. Every decoded tile is blended with the
//! (already blended) tile above it over its first `overlap * f` rows and with the tile to its
//! left over its first `overlap * f` columns, weights going linearly from the neighbour to
//! itself, then cropped to `(tile_size - overlap) * f` pixels and placed. Only two rows of
//! decoded tiles are alive at any time, so memory is bounded by the tile size, not by the
//! image size.

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::vae::config::AutoencoderKlConfig;

/// Tile geometry of [`AutoencoderKl::decode_tiled`](crate::vae::AutoencoderKl::decode_tiled),
/// in latent pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeTiling {
    /// Side of a latent tile.
    pub tile_size: usize,
    /// Latent pixels shared by neighbouring tiles (blended over `overlap * f` image pixels).
    pub overlap: usize,
}

/// diffusers' `tile_overlap_factor`.
pub const DIFFUSERS_TILE_OVERLAP_FACTOR: f64 = 0.25;

impl DecodeTiling {
    /// Tiles of `tile_size` latent pixels overlapping by `overlap`.
    pub fn new(tile_size: usize, overlap: usize) -> Self {
        Self { tile_size, overlap }
    }

    /// Tiles of `tile_size` whose stride is `floor(tile_size * (1 - overlap_factor))` (at
    /// least 1), as diffusers derives it from `tile_overlap_factor`.
    pub fn from_overlap_factor(tile_size: usize, overlap_factor: f64) -> Self {
        let stride = ((tile_size as f64 * (1.0 - overlap_factor)).max(0.0) as usize).clamp(1, tile_size.max(1));
        Self { tile_size, overlap: tile_size.saturating_sub(stride) }
    }

    /// diffusers' defaults for a VAE: tiles of `sample_size / f` latent pixels, a quarter of
    /// which overlaps (the latent stride is `floor(0.75 * tile)`); 32 and 8 for the SD VAE.
    pub fn for_config(config: &AutoencoderKlConfig) -> Self {
        let tile = (config.sample_size / config.downsample_factor()).max(1);
        Self::from_overlap_factor(tile, DIFFUSERS_TILE_OVERLAP_FACTOR)
    }

    /// Checks `0 <= overlap < tile_size`.
    pub fn validate(&self) -> Result<()> {
        if self.tile_size == 0 || self.overlap >= self.tile_size {
            return Err(Error::InvalidArgument(format!(
                "decode tiling needs 0 <= overlap < tile_size, got tile_size {} and overlap {}",
                self.tile_size, self.overlap
            )));
        }
        Ok(())
    }

    /// Latent stride between tiles.
    pub fn stride(&self) -> usize {
        self.tile_size - self.overlap
    }

    /// Decode `z` tile by tile with `decode`, a function mapping a latent tile `[B, C, th, tw]`
    /// to `[B, C_out, f * th, f * tw]`, and blend the tiles. A latent no larger than one tile
    /// is decoded whole, as diffusers' `decode` does with tiling enabled.
    ///
    /// # Shapes
    /// - `z`: `[B, C, h, w]` -> `[B, C_out, f * h, f * w]`
    pub fn decode_with(&self, z: Tensor<4>, factor: usize, decode: impl Fn(Tensor<4>) -> Tensor<4>) -> Result<Tensor<4>> {
        self.validate()?;
        let [b, c, h, w] = z.dims();
        let (tile, stride) = (self.tile_size, self.stride());
        if h <= tile && w <= tile {
            // One tile covers everything: diffusers' `decode` with tiling enabled does not tile.
            return Ok(decode(z));
        }
        let blend = self.overlap * factor;
        let keep = stride * factor;
        let mut above: Vec<Tensor<4>> = Vec::new();
        let mut rows = Vec::new();
        for i in (0..h).step_by(stride) {
            let mut row: Vec<Tensor<4>> = Vec::new();
            for (jdx, j) in (0..w).step_by(stride).enumerate() {
                let part = z.clone().slice([0..b, 0..c, i..(i + tile).min(h), j..(j + tile).min(w)]);
                let [_, _, th, tw] = part.dims();
                let mut t = decode(part);
                let dims = t.dims();
                if dims[0] != b || dims[2] != th * factor || dims[3] != tw * factor {
                    return Err(Error::Shape {
                        name: "decoded tile".into(),
                        expected: format!("[{b}, _, {}, {}]", th * factor, tw * factor),
                        got: format!("{dims:?}"),
                    });
                }
                if let Some(a) = above.get(jdx) {
                    t = blend_rows(a, t, blend);
                }
                if let Some(l) = row.last() {
                    t = blend_cols(l, t, blend);
                }
                row.push(t);
            }
            let cropped: Vec<Tensor<4>> = row.iter().map(|t| crop(t.clone(), keep)).collect();
            rows.push(Tensor::cat(cropped, 3));
            above = row;
        }
        Ok(Tensor::cat(rows, 2))
    }
}

/// `[.., :keep, :keep]`.
fn crop(t: Tensor<4>, keep: usize) -> Tensor<4> {
    let [b, c, h, w] = t.dims();
    t.slice([0..b, 0..c, 0..h.min(keep), 0..w.min(keep)])
}

/// Linear ramp `y / e` for `y` in `0..e`, shaped to broadcast along `axis` (2 or 3).
fn ramp(e: usize, axis: usize, device: &Device) -> Tensor<4> {
    let r = Tensor::<1, Int>::arange(0..e as i64, device).float() / e as f64;
    if axis == 2 { r.reshape([1, 1, e, 1]) } else { r.reshape([1, 1, 1, e]) }
}

/// diffusers `blend_v`: the first `e` rows of `b` fade from `a`'s last `e` rows to `b`'s own.
fn blend_rows(a: &Tensor<4>, b: Tensor<4>, extent: usize) -> Tensor<4> {
    let [n, c, ah, aw] = a.dims();
    let [_, _, bh, bw] = b.dims();
    let e = extent.min(ah).min(bh);
    if e == 0 {
        return b;
    }
    let wgt = ramp(e, 2, &b.device());
    let a_tail = a.clone().slice([0..n, 0..c, ah - e..ah, 0..aw]);
    let b_head = b.clone().slice([0..n, 0..c, 0..e, 0..bw]);
    let mixed = a_tail * (wgt.clone().neg() + 1.0) + b_head * wgt;
    b.slice_assign([0..n, 0..c, 0..e, 0..bw], mixed)
}

/// diffusers `blend_h`: the first `e` columns of `b` fade from `a`'s last `e` columns.
fn blend_cols(a: &Tensor<4>, b: Tensor<4>, extent: usize) -> Tensor<4> {
    let [n, c, ah, aw] = a.dims();
    let [_, _, bh, bw] = b.dims();
    let e = extent.min(aw).min(bw);
    if e == 0 {
        return b;
    }
    let wgt = ramp(e, 3, &b.device());
    let a_tail = a.clone().slice([0..n, 0..c, 0..ah, aw - e..aw]);
    let b_head = b.clone().slice([0..n, 0..c, 0..bh, 0..e]);
    let mixed = a_tail * (wgt.clone().neg() + 1.0) + b_head * wgt;
    b.slice_assign([0..n, 0..c, 0..bh, 0..e], mixed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    /// Nearest 2x upsampling: a pointwise "decoder", so tiling must reproduce it exactly.
    fn up2(t: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = t.dims();
        t.reshape([b, c, h, 1, w, 1]).expand([b, c, h, 2, w, 2]).reshape([b, c, 2 * h, 2 * w])
    }

    #[test]
    fn pointwise_decoder_is_reproduced_exactly() {
        let device = Device::flex();
        let z = crate::test_util::randn([2, 3, 11, 7], 101, &device);
        let full = up2(z.clone());
        for (tile, overlap) in [(4, 1), (4, 2), (5, 0), (3, 2), (16, 3), (1, 0)] {
            let out = DecodeTiling::new(tile, overlap).decode_with(z.clone(), 2, up2).unwrap();
            out.into_data().assert_approx_eq::<f32>(&full.clone().into_data(), Tolerance::absolute(1e-6));
        }
    }

    #[test]
    fn blends_linearly_across_seams() {
        let device = Device::flex();
        // A "decoder" that outputs its tile's column offset marker: every tile decodes to a
        // constant, so the blend ramp is visible.
        let z = Tensor::<4>::zeros([1, 1, 1, 6], &device);
        let calls = std::cell::Cell::new(0.0);
        let out = DecodeTiling::new(4, 2)
            .decode_with(z, 1, |t| {
                calls.set(calls.get() + 1.0);
                t.ones_like() * calls.get()
            })
            .unwrap();
        // tiles at columns 0 (value 1, cols 0..4), 2 (value 2, cols 2..6), 4 (value 3, cols 4..6)
        // tile 2 blended over its 2 first cols with tile 1's last 2: [1, 1.5], then 2, 2
        // tile 3 blended with tile 2's (blended) last 2 cols [2, 2]: [2, 2.5]
        let want = TensorData::from([[[[1.0f32, 1.0, 1.0, 1.5, 2.0, 2.5]]]]);
        out.into_data().assert_approx_eq::<f32>(&want, Tolerance::absolute(1e-6));
        assert_eq!(calls.get(), 3.0);
    }

    #[test]
    fn geometry() {
        let sd = DecodeTiling::for_config(&AutoencoderKlConfig::sd_vae_ft());
        assert_eq!((sd.tile_size, sd.overlap, sd.stride()), (32, 8, 24));
        let sd3 = DecodeTiling::for_config(&AutoencoderKlConfig::sd3());
        assert_eq!((sd3.tile_size, sd3.overlap), (128, 32));
        assert_eq!(DecodeTiling::from_overlap_factor(10, 0.25), DecodeTiling::new(10, 3));
        assert_eq!(DecodeTiling::from_overlap_factor(1, 0.25), DecodeTiling::new(1, 0));
        assert!(DecodeTiling::new(4, 4).validate().is_err());
        assert!(DecodeTiling::new(0, 0).validate().is_err());
        let device = Device::flex();
        let bad = DecodeTiling::new(2, 0).decode_with(Tensor::zeros([1, 1, 4, 4], &device), 2, |t| t);
        assert!(matches!(bad, Err(Error::Shape { .. })));
    }
}
