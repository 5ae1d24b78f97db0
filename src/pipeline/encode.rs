//! Images to diffusion latents, for training latent models: `scale(sample or mode of
//! vae.encode(2 * image / 255 - 1))`, as DiT's feature extraction does
//! (`vae.encode(x).latent_dist.sample().mul_(0.18215)`).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use rand::RngCore;

use crate::error::{Error, Result};
use crate::pipeline::image::{ImageFolder, RgbImage, images_to_tensor};
use crate::vae::AutoencoderKl;

/// Which latent to take from the posterior.
pub enum LatentDraw<'a> {
    /// The posterior mean (deterministic).
    Mode,
    /// A draw from the posterior with this RNG (DiT's feature extraction).
    Sample(&'a mut dyn RngCore),
}

/// Encode images of one size to scaled diffusion latents.
///
/// # Shapes
/// - output: `[B, C_lat, H / f, W / f]` (`f` the VAE's downsampling factor)
pub fn encode_images(vae: &AutoencoderKl, images: &[RgbImage], draw: &mut LatentDraw<'_>, device: &Device) -> Result<Tensor<4>> {
    let posterior = vae.encode(images_to_tensor(images, device)?)?;
    let z = match draw {
        LatentDraw::Mode => posterior.mode(),
        LatentDraw::Sample(rng) => posterior.sample(*rng),
    };
    Ok(vae.scale(z))
}

/// One batch of [`encode_folder`]'s output.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// The image files, in folder order.
    pub paths: Vec<PathBuf>,
    /// Their class indices (`None` for an unlabelled folder).
    pub labels: Vec<Option<usize>>,
    /// Scaled latents `[B, C_lat, H / f, W / f]`.
    pub latents: Tensor<4>,
}

/// Encode every image of `folder` in batches of `batch_size`, handing each batch to `sink`
/// (e.g. to append it to a dataset file), so memory holds one batch at a time. `read` decodes
/// a file into RGB pixels (resized or cropped to the size the latent model trains at); all
/// images must come out the same size, a multiple of the VAE's downsampling factor. Returns
/// the number of images encoded.
pub fn encode_folder(
    vae: &AutoencoderKl,
    folder: &ImageFolder,
    batch_size: usize,
    mut read: impl FnMut(&Path) -> Result<RgbImage>,
    draw: &mut LatentDraw<'_>,
    device: &Device,
    mut sink: impl FnMut(EncodedBatch) -> Result<()>,
) -> Result<usize> {
    if batch_size == 0 {
        return Err(Error::InvalidArgument("batch_size must be positive".into()));
    }
    let mut size = None;
    for chunk in folder.items.chunks(batch_size) {
        let mut images = Vec::with_capacity(chunk.len());
        for (path, _) in chunk {
            let img = read(path)?;
            let dims = (img.width(), img.height());
            if *size.get_or_insert(dims) != dims {
                let (w, h) = size.expect("set");
                return Err(Error::InvalidArgument(format!(
                    "`{}` is {}x{} but earlier images are {w}x{h}; resize or crop them to one size",
                    path.display(),
                    dims.0,
                    dims.1
                )));
            }
            images.push(img);
        }
        let latents = encode_images(vae, &images, draw, device)?;
        sink(EncodedBatch {
            paths: chunk.iter().map(|(p, _)| p.clone()).collect(),
            labels: chunk.iter().map(|(_, l)| *l).collect(),
            latents,
        })?;
    }
    Ok(folder.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vae::AutoencoderKlConfig;
    use burn::tensor::Tolerance;
    use rand::SeedableRng;

    fn vae(device: &Device) -> AutoencoderKl {
        AutoencoderKlConfig::new()
            .with_block_out_channels(vec![4, 8])
            .with_norm_num_groups(2)
            .with_scaling_factor(0.5)
            .init(device)
            .unwrap()
    }

    /// A fake decoder: a 4x4 image whose bytes come from the file name's length.
    fn read(path: &Path) -> Result<RgbImage> {
        let n = path.file_name().unwrap().len() as u8;
        RgbImage::new(4, 4, (0..48).map(|i| n.wrapping_mul(7).wrapping_add(i as u8 * 5)).collect())
    }

    #[test]
    fn batches_labels_and_determinism() {
        let device = Device::flex();
        let vae = vae(&device);
        let items: Vec<(PathBuf, Option<usize>)> =
            ["a.png", "bb.png", "ccc.png"].iter().enumerate().map(|(i, p)| (PathBuf::from(p), Some(i % 2))).collect();
        let folder = ImageFolder { classes: vec!["x".into(), "y".into()], items };
        let mut batches = Vec::new();
        let n = encode_folder(&vae, &folder, 2, read, &mut LatentDraw::Mode, &device, |b| {
            batches.push(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].labels, vec![Some(0), Some(1)]);
        assert_eq!(batches[1].paths, vec![PathBuf::from("ccc.png")]);
        assert_eq!(batches[0].latents.dims(), [2, 4, 2, 2]);
        // the latents are the scaled posterior mode of the converted images
        let imgs = vec![read(Path::new("a.png")).unwrap(), read(Path::new("bb.png")).unwrap()];
        let want = vae.scale(vae.encode(images_to_tensor(&imgs, &device).unwrap()).unwrap().mode());
        batches[0].latents.clone().into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-6));
        // sampled latents are reproducible from the seed
        let draw = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            encode_images(&vae, &imgs, &mut LatentDraw::Sample(&mut rng), &device).unwrap().into_data()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn errors() {
        let device = Device::flex();
        let vae = vae(&device);
        let folder = ImageFolder { classes: vec![], items: vec![(PathBuf::from("a.png"), None), (PathBuf::from("b.png"), None)] };
        let ok = |_: EncodedBatch| Ok(());
        assert!(encode_folder(&vae, &folder, 0, read, &mut LatentDraw::Mode, &device, ok).is_err());
        let mut calls = 0;
        let uneven = |p: &Path| {
            calls += 1;
            if calls == 1 { read(p) } else { RgbImage::new(2, 2, vec![0; 12]) }
        };
        assert!(encode_folder(&vae, &folder, 2, uneven, &mut LatentDraw::Mode, &device, ok).is_err());
        let failing = |p: &Path| Err(Error::Io { path: p.to_path_buf(), reason: "corrupt".into() });
        assert!(matches!(encode_folder(&vae, &folder, 2, failing, &mut LatentDraw::Mode, &device, ok), Err(Error::Io { .. })));
        let odd = |_: &Path| RgbImage::new(3, 3, vec![0; 27]);
        assert!(matches!(encode_folder(&vae, &folder, 2, odd, &mut LatentDraw::Mode, &device, ok), Err(Error::Shape { .. })));
    }
}
