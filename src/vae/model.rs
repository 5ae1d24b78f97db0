//! The autoencoder: [`Encoder`], [`Decoder`] and [`AutoencoderKl`] (diffusers
//! `models/autoencoders/vae.py` and `autoencoder_kl.py`).

use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::activation::silu;
use rand::Rng;

use crate::error::{Error, Result, ensure_dims};
use crate::vae::blocks::{DownEncoderBlock2d, MidBlock2d, UpDecoderBlock2d, conv, group_norm};
use crate::vae::config::AutoencoderKlConfig;
use crate::vae::posterior::DiagonalGaussian;
use crate::vae::tiling::DecodeTiling;

/// The encoder (diffusers `Encoder` with `double_z=True`): `conv_in`, one
/// [`DownEncoderBlock2d`] per level, the [`MidBlock2d`], GroupNorm, SiLU and `conv_out` to the
/// `2 * latent_channels` moments.
#[derive(Module, Debug)]
pub struct Encoder {
    /// 3x3 convolution `C_img -> block_out_channels[0]`.
    pub conv_in: Conv2d,
    /// One level per entry of `block_out_channels`.
    pub down_blocks: Vec<DownEncoderBlock2d>,
    /// Mid block at the last width.
    pub mid_block: MidBlock2d,
    /// Output GroupNorm.
    pub conv_norm_out: GroupNorm,
    /// 3x3 convolution to the moments `[mean; logvar]`.
    pub conv_out: Conv2d,
}

impl Encoder {
    fn new(c: &AutoencoderKlConfig, device: &Device) -> Result<Self> {
        let widths = &c.block_out_channels;
        let last = *widths.last().expect("validated non-empty");
        let mut down_blocks = Vec::with_capacity(widths.len());
        let mut prev = widths[0];
        for (i, &w) in widths.iter().enumerate() {
            let is_final = i + 1 == widths.len();
            down_blocks.push(DownEncoderBlock2d::new(prev, w, c.layers_per_block, c.norm_num_groups, !is_final, device)?);
            prev = w;
        }
        Ok(Self {
            conv_in: conv(c.in_channels, widths[0], 3, device),
            down_blocks,
            mid_block: MidBlock2d::new(last, c.norm_num_groups, c.mid_block_add_attention, device)?,
            conv_norm_out: group_norm(c.norm_num_groups, last, device),
            conv_out: conv(last, 2 * c.latent_channels, 3, device),
        })
    }

    /// # Shapes
    /// - `x`: `[B, C_img, H, W]` -> `[B, 2 * C_lat, H / f, W / f]` (`f = 2^(levels - 1)`)
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.conv_in.forward(x);
        let x = self.down_blocks.iter().fold(x, |x, b| b.forward(x));
        let x = self.mid_block.forward(x);
        self.conv_out.forward(silu(self.conv_norm_out.forward(x)))
    }
}

/// The decoder (diffusers `Decoder` with group norms): `conv_in`, the [`MidBlock2d`], one
/// [`UpDecoderBlock2d`] per level (widths reversed, `layers_per_block + 1` ResNets each),
/// GroupNorm, SiLU and `conv_out`.
#[derive(Module, Debug)]
pub struct Decoder {
    /// 3x3 convolution `C_lat -> block_out_channels[last]`.
    pub conv_in: Conv2d,
    /// Mid block at the last width.
    pub mid_block: MidBlock2d,
    /// One level per entry of `block_out_channels`, from the smallest resolution up.
    pub up_blocks: Vec<UpDecoderBlock2d>,
    /// Output GroupNorm.
    pub conv_norm_out: GroupNorm,
    /// 3x3 convolution to the image channels.
    pub conv_out: Conv2d,
}

impl Decoder {
    fn new(c: &AutoencoderKlConfig, device: &Device) -> Result<Self> {
        let reversed: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(reversed.len());
        let mut prev = reversed[0];
        for (i, &w) in reversed.iter().enumerate() {
            let is_final = i + 1 == reversed.len();
            up_blocks.push(UpDecoderBlock2d::new(prev, w, c.layers_per_block + 1, c.norm_num_groups, !is_final, device)?);
            prev = w;
        }
        let first = c.block_out_channels[0];
        Ok(Self {
            conv_in: conv(c.latent_channels, reversed[0], 3, device),
            mid_block: MidBlock2d::new(reversed[0], c.norm_num_groups, c.mid_block_add_attention, device)?,
            up_blocks,
            conv_norm_out: group_norm(c.norm_num_groups, first, device),
            conv_out: conv(first, c.out_channels, 3, device),
        })
    }

    /// # Shapes
    /// - `z`: `[B, C_lat, h, w]` -> `[B, C_img, f * h, f * w]`
    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let x = self.conv_in.forward(z);
        let x = self.mid_block.forward(x);
        let x = self.up_blocks.iter().fold(x, |x, b| b.forward(x));
        self.conv_out.forward(silu(self.conv_norm_out.forward(x)))
    }
}

impl AutoencoderKlConfig {
    /// Build the autoencoder (PyTorch default initialisation; load released weights with
    /// `weights::LoadWeights::load_weights` or build from files with
    /// [`AutoencoderKl::from_pretrained`]).
    pub fn init(&self, device: &Device) -> Result<AutoencoderKl> {
        self.validate()?;
        let lat2 = 2 * self.latent_channels;
        Ok(AutoencoderKl {
            encoder: Encoder::new(self, device)?,
            decoder: Decoder::new(self, device)?,
            quant_conv: self.use_quant_conv.then(|| conv(lat2, lat2, 1, device)),
            post_quant_conv: self.use_post_quant_conv.then(|| conv(self.latent_channels, self.latent_channels, 1, device)),
            config: self.clone(),
        })
    }
}

/// The Stable Diffusion variational autoencoder (diffusers `AutoencoderKL`): images in
/// `[-1, 1]` to a [`DiagonalGaussian`] posterior over latents downsampled by
/// `f = 2^(levels - 1)`, and latents back to images.
///
/// Diffusion models work on *scaled* latents: [`scale`](Self::scale) maps `z` to
/// `(z - shift_factor) * scaling_factor`, [`unscale`](Self::unscale) inverts it before
/// decoding. Large latents decode tile by tile with bounded memory through
/// [`decode_tiled`](Self::decode_tiled).
///
/// ```no_run
/// use burn::prelude::*;
/// use rand::SeedableRng;
/// use diffusion_transformers::vae::AutoencoderKl;
///
/// # fn main() -> Result<(), diffusion_transformers::Error> {
/// let device = Device::flex();
/// // a directory with config.json + diffusion_pytorch_model.safetensors (stabilityai/sd-vae-ft-ema)
/// let vae = AutoencoderKl::from_pretrained("sd-vae-ft-ema", &device)?;
/// let images = Tensor::<4>::zeros([1, 3, 256, 256], &device); // in [-1, 1]
/// let posterior = vae.encode(images)?;
/// let latents = vae.scale(posterior.sample(&mut rand::rngs::StdRng::seed_from_u64(0))); // [1, 4, 32, 32]
/// let decoded = vae.decode(vae.unscale(latents))?; // [1, 3, 256, 256]
/// # Ok(()) }
/// ```
#[derive(Module, Debug)]
pub struct AutoencoderKl {
    /// The encoder.
    pub encoder: Encoder,
    /// The decoder.
    pub decoder: Decoder,
    /// 1x1 convolution on the moments (`use_quant_conv`).
    pub quant_conv: Option<Conv2d>,
    /// 1x1 convolution on the latents before decoding (`use_post_quant_conv`).
    pub post_quant_conv: Option<Conv2d>,
    /// The configuration the model was built from.
    #[module(skip)]
    pub config: AutoencoderKlConfig,
}

impl AutoencoderKl {
    /// The configuration.
    pub fn config(&self) -> &AutoencoderKlConfig {
        &self.config
    }

    /// Spatial factor between images and latents (8 for the released VAEs).
    pub fn downsample_factor(&self) -> usize {
        self.config.downsample_factor()
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.encoder.conv_in.weight.val().device()
    }

    /// Latent channels.
    pub fn latent_channels(&self) -> usize {
        self.config.latent_channels
    }

    /// Shape checks, then [`crate::validate::float_input`] (dtype, finite values).
    fn check_images(&self, x: Tensor<4>) -> Result<Tensor<4>> {
        let [b, _, h, w] = x.dims();
        ensure_dims("images", x.dims(), [None, Some(self.config.in_channels), None, None])?;
        let f = self.downsample_factor();
        if b == 0 || h == 0 || w == 0 || h % f != 0 || w % f != 0 {
            return Err(Error::Shape {
                name: "images".into(),
                expected: format!("a non-empty batch with height and width positive multiples of {f}"),
                got: format!("{:?}", x.dims()),
            });
        }
        crate::validate::float_input("images", x, self.encoder.conv_in.weight.dtype())
    }

    /// Shape checks, then [`crate::validate::float_input`] (dtype, finite values).
    pub(crate) fn check_latents(&self, z: Tensor<4>) -> Result<Tensor<4>> {
        let [b, _, h, w] = z.dims();
        ensure_dims("latents", z.dims(), [None, Some(self.config.latent_channels), None, None])?;
        if b == 0 || h == 0 || w == 0 {
            return Err(Error::Shape {
                name: "latents".into(),
                expected: "a non-empty batch of non-empty latents".into(),
                got: format!("{:?}", z.dims()),
            });
        }
        crate::validate::float_input("latents", z, self.decoder.conv_in.weight.dtype())
    }

    /// The encoder's moments `[mean; logvar]` after `quant_conv` (diffusers `_encode`).
    ///
    /// # Shapes
    /// - `x`: `[B, C_img, H, W]` (values in `[-1, 1]`, `H`, `W` multiples of `f`) ->
    ///   `[B, 2 * C_lat, H / f, W / f]`
    pub fn encode_moments(&self, x: Tensor<4>) -> Result<Tensor<4>> {
        let x = self.check_images(x)?;
        // on the CPU pool's threads, as the denoisers' forwards
        Ok(crate::cpu::on_workers(&x.device(), || {
            let moments = self.encoder.forward(x);
            match &self.quant_conv {
                Some(q) => q.forward(moments),
                None => moments,
            }
        }))
    }

    /// Encode images to the latent posterior (unscaled latents).
    ///
    /// # Shapes
    /// - `x`: `[B, C_img, H, W]` -> posterior over `[B, C_lat, H / f, W / f]`
    pub fn encode(&self, x: Tensor<4>) -> Result<DiagonalGaussian> {
        DiagonalGaussian::from_moments(self.encode_moments(x)?)
    }

    /// `post_quant_conv` and the decoder, without checks, on the CPU pool's threads
    /// ([`crate::cpu::on_workers`]).
    pub(crate) fn decode_unchecked(&self, z: Tensor<4>) -> Tensor<4> {
        crate::cpu::on_workers(&z.device(), || {
            let z = match &self.post_quant_conv {
                Some(p) => p.forward(z),
                None => z,
            };
            self.decoder.forward(z)
        })
    }

    /// Decode (unscaled) latents to images in about `[-1, 1]`.
    ///
    /// # Shapes
    /// - `z`: `[B, C_lat, h, w]` -> `[B, C_img, f * h, f * w]`
    pub fn decode(&self, z: Tensor<4>) -> Result<Tensor<4>> {
        let z = self.check_latents(z)?;
        Ok(self.decode_unchecked(z))
    }

    /// Decode (unscaled) latents tile by tile, blending the overlaps linearly, as diffusers'
    /// `tiled_decode`: memory stays that of one row of tiles whatever the latent size. The
    /// result equals diffusers' `decode` with `enable_tiling()` and the same tile size and
    /// overlap (a latent within one tile is decoded whole); it differs
    /// from [`decode`](Self::decode) wherever a tile's receptive field (GroupNorm statistics,
    /// attention, borders) differs from the whole latent's.
    ///
    /// # Shapes
    /// - `z`: `[B, C_lat, h, w]` -> `[B, C_img, f * h, f * w]`
    pub fn decode_tiled(&self, z: Tensor<4>, tiling: &DecodeTiling) -> Result<Tensor<4>> {
        let z = self.check_latents(z)?;
        tiling.decode_with(z, self.downsample_factor(), |t| self.decode_unchecked(t))
    }

    /// Encode with the posterior mode and decode (diffusers `forward(sample_posterior=False)`).
    ///
    /// # Shapes
    /// - `x`: `[B, C_img, H, W]` -> `[B, C_img, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<4>> {
        let z = self.encode(x)?.mode();
        self.decode(z)
    }

    /// Encode, draw from the posterior with `rng` and decode (diffusers
    /// `forward(sample_posterior=True)`).
    pub fn forward_sampled<R: Rng + ?Sized>(&self, x: Tensor<4>, rng: &mut R) -> Result<Tensor<4>> {
        let z = self.encode(x)?.sample(rng);
        self.decode(z)
    }

    /// Latents as the diffusion model sees them: `(z - shift_factor) * scaling_factor`.
    pub fn scale<const D: usize>(&self, z: Tensor<D>) -> Tensor<D> {
        (z - self.config.shift()) * self.config.scaling_factor
    }

    /// The inverse of [`scale`](Self::scale): `latents / scaling_factor + shift_factor`.
    pub fn unscale<const D: usize>(&self, latents: Tensor<D>) -> Tensor<D> {
        latents / self.config.scaling_factor + self.config.shift()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{ModuleMapper, Param};
    use burn::tensor::Tolerance;

    fn tiny() -> AutoencoderKlConfig {
        AutoencoderKlConfig::new()
            .with_block_out_channels(vec![8, 16])
            .with_norm_num_groups(4)
            .with_latent_channels(3)
            .with_sample_size(8)
    }

    #[test]
    fn shapes_and_parameter_layout() {
        let device = Device::flex();
        let vae = tiny().with_layers_per_block(2).init(&device).unwrap();
        assert_eq!(vae.encoder.down_blocks.len(), 2);
        assert!(vae.encoder.down_blocks[0].downsamplers.is_some() && vae.encoder.down_blocks[1].downsamplers.is_none());
        assert_eq!(vae.encoder.down_blocks[1].resnets.len(), 2);
        assert_eq!(vae.decoder.up_blocks[0].resnets.len(), 3);
        assert!(vae.decoder.up_blocks[1].upsamplers.is_none());
        let x = crate::test_util::uniform([2, 3, 8, 12], 101, &device);
        let post = vae.encode(x.clone()).unwrap();
        assert_eq!(post.mean.dims(), [2, 3, 4, 6]);
        assert_eq!(vae.decode(post.mode()).unwrap().dims(), [2, 3, 8, 12]);
        assert_eq!(vae.forward(x).unwrap().dims(), [2, 3, 8, 12]);
        let no_quant = tiny().with_use_quant_conv(false).with_use_post_quant_conv(false).with_mid_block_add_attention(false);
        let v2 = no_quant.init(&device).unwrap();
        assert!(v2.quant_conv.is_none() && v2.post_quant_conv.is_none() && v2.encoder.mid_block.attentions.is_empty());
    }

    /// Keeps only the centre tap of every 3x3 kernel, making each convolution pointwise.
    struct CentreTaps;

    impl ModuleMapper for CentreTaps {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            p.map(|t| {
                let dims = t.dims();
                if D != 4 || dims[2] != 3 || dims[3] != 3 {
                    return t;
                }
                let mut shape = [1; D];
                shape[2] = 3;
                shape[3] = 3;
                let mut centre = [0.0f32; 9];
                centre[4] = 1.0;
                t.clone() * Tensor::<1>::from_floats(centre, &t.device()).reshape(shape)
            })
        }
    }

    #[test]
    fn tiled_decode_equals_decode_where_tiles_see_what_the_whole_sees() {
        // With pointwise convolutions and a latent periodic with a period dividing the tile
        // stride, every tile holds whole periods: GroupNorm statistics and attention weights
        // per tile equal the whole latent's, so tiling must reproduce `decode` exactly.
        let device = Device::flex();
        let vae = tiny().with_layers_per_block(2).init(&device).unwrap().map(&mut CentreTaps);
        let cell = crate::test_util::randn([2, 3, 2, 2], 102, &device);
        for ([rh, rw], tiling) in [([6, 6], DecodeTiling::new(4, 2)), ([6, 4], DecodeTiling::new(6, 2)), ([3, 5], DecodeTiling::new(2, 0))] {
            let z = cell.clone().repeat_dim(2, rh).repeat_dim(3, rw);
            let full = vae.decode(z.clone()).unwrap();
            let tiled = vae.decode_tiled(z, &tiling).unwrap();
            assert_eq!(tiled.dims(), full.dims());
            tiled.into_data().assert_approx_eq::<f32>(&full.into_data(), Tolerance::absolute(1e-4));
        }
        // General weights and inputs: same shape, seams blended, close but not equal.
        let vae = tiny().init(&device).unwrap();
        let z = crate::test_util::randn([1, 3, 10, 10], 103, &device);
        let tiled = vae.decode_tiled(z.clone(), &DecodeTiling::new(6, 2)).unwrap();
        assert_eq!(tiled.dims(), [1, 3, 20, 20]);
        let one_tile = vae.decode_tiled(z.clone(), &DecodeTiling::new(10, 0)).unwrap();
        one_tile.into_data().assert_approx_eq::<f32>(&vae.decode(z).unwrap().into_data(), Tolerance::absolute(1e-6));
    }

    #[test]
    fn scale_roundtrip() {
        let device = Device::flex();
        let vae = AutoencoderKlConfig::new()
            .with_block_out_channels(vec![4])
            .with_norm_num_groups(2)
            .with_scaling_factor(1.5305)
            .with_shift_factor(Some(0.0609))
            .init(&device)
            .unwrap();
        let z = Tensor::<4>::from_floats([[[[1.0]], [[0.0609]], [[-2.0]], [[3.0]]]], &device);
        let s = vae.scale(z.clone());
        let want = TensorData::from([[[[(1.0 - 0.0609) * 1.5305f32]], [[0.0]], [[(-2.0 - 0.0609) * 1.5305]], [[(3.0 - 0.0609) * 1.5305]]]]);
        s.clone().into_data().assert_approx_eq::<f32>(&want, Tolerance::absolute(1e-5));
        vae.unscale(s).into_data().assert_approx_eq::<f32>(&z.into_data(), Tolerance::absolute(1e-6));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let device = Device::flex();
        let vae = tiny().init(&device).unwrap();
        for x in [[1, 4, 8, 8], [1, 3, 7, 8], [1, 3, 8, 0], [0, 3, 8, 8]] {
            assert!(matches!(vae.encode(Tensor::zeros(x, &device)), Err(Error::Shape { .. })), "{x:?}");
        }
        for z in [[1, 4, 4, 4], [1, 3, 0, 4]] {
            assert!(matches!(vae.decode(Tensor::zeros(z, &device)), Err(Error::Shape { .. })), "{z:?}");
            assert!(vae.decode_tiled(Tensor::zeros(z, &device), &DecodeTiling::new(2, 1)).is_err());
        }
        assert!(tiny().with_norm_num_groups(3).init(&device).is_err());
        assert!(tiny().with_block_out_channels(vec![]).init(&device).is_err());
    }
}
