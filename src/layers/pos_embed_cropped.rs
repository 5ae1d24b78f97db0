//! SD3's cropped 2-D sin-cos position table (diffusers `PatchEmbed(pos_embed_max_size=M)`).
//!
//! One `M x M` table is built once; a latent whose patch grid is `gh x gw` (both `<= M`) uses
//! its centre crop, rows `top = (M - gh) / 2 ..`, columns `left = (M - gw) / 2 ..`. One model
//! therefore serves every resolution and aspect ratio up to `M * patch_size` latent pixels.
//!
//! The grid coordinates are diffusers' `arange(M) / (M / base_size) / interpolation_scale`,
//! evaluated in f32 as PyTorch does (`base_size` is the training grid, `sample_size /
//! patch_size`); the channel layout is the DiT/MAE one of [`sincos_2d_from_coords`] (first half
//! encodes the column, second half the row, sines before cosines).

use burn::module::Param;
use burn::prelude::*;

use crate::error::{Error, Result, ensure_config};
use crate::layers::init::frozen_param;
use crate::layers::pos_embed::sincos_2d_from_coords;

/// Coordinates `i / (size / base_size) / interpolation_scale`, `i < size`, computed in f32
/// like diffusers' `get_2d_sincos_pos_embed` (then widened to f64, as its `torch.outer` with the
/// f64 frequencies does).
pub fn sd3_grid_coords(size: usize, base_size: usize, interpolation_scale: f64) -> Vec<f64> {
    let step = (size as f64 / base_size as f64) as f32;
    let interp = interpolation_scale as f32;
    (0..size).map(|i| f64::from(i as f32 / step / interp)).collect()
}

/// Configuration of a [`CroppedPosEmbed`].
#[derive(Config, Debug)]
pub struct CroppedPosEmbedConfig {
    /// Embedding width `D` (a positive multiple of 4).
    pub d_model: usize,
    /// Side `M` of the square table (diffusers `pos_embed_max_size`).
    pub max_size: usize,
    /// Patch grid side the model was designed for (`sample_size / patch_size`); it sets the
    /// coordinate scale `M / base_size`.
    pub base_size: usize,
    /// Extra divisor of the coordinates (diffusers `interpolation_scale`). Default: 1.0.
    #[config(default = 1.0)]
    pub interpolation_scale: f64,
}

impl CroppedPosEmbedConfig {
    /// Build the `[1, M*M, D]` table.
    pub fn init(&self, device: &Device) -> Result<CroppedPosEmbed> {
        let (d, m) = (self.d_model, self.max_size);
        ensure_config(m > 0 && self.base_size > 0, || format!("position table sizes must be positive: {self:?}"))?;
        ensure_config(self.interpolation_scale > 0.0, || {
            format!("interpolation_scale must be positive, got {}", self.interpolation_scale)
        })?;
        let coords = sd3_grid_coords(m, self.base_size, self.interpolation_scale);
        let data = sincos_2d_from_coords(d, &coords, &coords)?;
        let table = Tensor::<2>::from_data(TensorData::new(data, [m * m, d]), device);
        Ok(CroppedPosEmbed { table: frozen_param(table.unsqueeze_dim::<3>(0)), max_size: m })
    }
}

/// A fixed `M x M` sin-cos table, centre-cropped to each input's patch grid.
#[derive(Module, Debug)]
pub struct CroppedPosEmbed {
    /// The table `[1, M*M, D]`, row-major over the `M x M` grid (persisted like diffusers'
    /// `pos_embed` buffer, never trained).
    pub table: Param<Tensor<3>>,
    /// Side `M` of the table.
    pub max_size: usize,
}

impl CroppedPosEmbed {
    /// The centre crop for a `gh x gw` patch grid.
    ///
    /// # Shapes
    /// - output: `[1, gh*gw, D]`, row-major over the crop
    ///
    /// # Errors
    /// [`Error::Shape`] when the grid is empty or larger than the table on either side.
    pub fn crop(&self, grid: [usize; 2]) -> Result<Tensor<3>> {
        crop_table(self.table.val(), self.max_size, grid)
    }
}

/// The centre crop of an `M x M` table `[1, M*M, D]` for a `gh x gw` patch grid.
///
/// # Shapes
/// - `table`: `[1, M*M, D]` -> `[1, gh*gw, D]`, row-major over the crop
///
/// # Errors
/// [`Error::Shape`] when the grid is empty or larger than the table on either side.
pub fn crop_table(table: Tensor<3>, m: usize, grid: [usize; 2]) -> Result<Tensor<3>> {
    let [gh, gw] = grid;
    if gh == 0 || gw == 0 || gh > m || gw > m {
        return Err(Error::Shape {
            name: "patch grid".into(),
            expected: format!("between 1x1 and {m}x{m} patches (pos_embed_max_size {m})"),
            got: format!("{gh}x{gw}"),
        });
    }
    let [_, _, d] = table.dims();
    let (top, left) = ((m - gh) / 2, (m - gw) / 2);
    Ok(table.reshape([1, m, m, d]).slice([0..1, top..top + gh, left..left + gw, 0..d]).reshape([1, gh * gw, d]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coords_follow_the_reference_scale() {
        // M = 12 over a base grid of 4: step 3, so coordinates 0, 1/3, 2/3, ...
        let c = sd3_grid_coords(12, 4, 1.0);
        assert_eq!(c.len(), 12);
        assert_eq!(c[3], 1.0);
        assert_eq!(c[1], f64::from(1.0f32 / 3.0));
        let half = sd3_grid_coords(4, 4, 2.0);
        assert_eq!(half, vec![0.0, 0.5, 1.0, 1.5]);
    }

    #[test]
    fn crop_is_the_centre_of_the_table() {
        let device = Device::flex();
        let pe = CroppedPosEmbedConfig::new(8, 5, 5).init(&device).unwrap();
        assert_eq!(pe.table.dims(), [1, 25, 8]);
        let full = pe.table.val().into_data().try_to_vec::<f32>().unwrap();
        // a 2x3 crop of a 5x5 table starts at row 1, column 1
        let crop = pe.crop([2, 3]).unwrap();
        assert_eq!(crop.dims(), [1, 6, 8]);
        let got = crop.into_data().try_to_vec::<f32>().unwrap();
        for i in 0..2 {
            for j in 0..3 {
                let src = ((1 + i) * 5 + (1 + j)) * 8;
                let dst = (i * 3 + j) * 8;
                assert_eq!(&got[dst..dst + 8], &full[src..src + 8], "token ({i}, {j})");
            }
        }
        // the full grid is the table itself
        let all = pe.crop([5, 5]).unwrap().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(all, full);
    }

    #[test]
    fn table_matches_sincos_of_scaled_coordinates() {
        let device = Device::flex();
        let pe = CroppedPosEmbedConfig::new(4, 2, 1).init(&device).unwrap();
        // base 1, M 2: coordinates 0 and 1/2; D = 4 -> one frequency (1) per axis half.
        let v = pe.table.val().into_data().try_to_vec::<f32>().unwrap();
        let tok = &v[4..8]; // row 0, column 1
        let exp = [0.5f64.sin(), 0.5f64.cos(), 0.0f64.sin(), 0.0f64.cos()];
        for (a, b) in tok.iter().zip(exp) {
            assert!((f64::from(*a) - b).abs() < 1e-7, "{tok:?}");
        }
    }

    #[test]
    fn bad_grids_and_configs_are_errors() {
        let device = Device::flex();
        let pe = CroppedPosEmbedConfig::new(8, 4, 2).init(&device).unwrap();
        assert!(matches!(pe.crop([5, 2]), Err(Error::Shape { .. })));
        assert!(matches!(pe.crop([2, 5]), Err(Error::Shape { .. })));
        assert!(matches!(pe.crop([0, 2]), Err(Error::Shape { .. })));
        assert!(CroppedPosEmbedConfig::new(6, 4, 2).init(&device).is_err());
        assert!(CroppedPosEmbedConfig::new(8, 0, 2).init(&device).is_err());
        assert!(CroppedPosEmbedConfig::new(8, 4, 2).with_interpolation_scale(0.0).init(&device).is_err());
    }
}
