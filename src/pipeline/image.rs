//! 8-bit RGB images and their conversion to and from the autoencoder's `[-1, 1]` tensors, and
//! image folders laid out as torchvision's `ImageFolder` (one sub-directory per class).
//!
//! The crate decodes and encodes no image file format itself; callers pass decoded pixels
//! (e.g. from the `image` crate: `RgbImage::new(w, h, img.to_rgb8().into_raw())`).

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::error::{Error, Result};

/// An 8-bit RGB image, rows top to bottom, pixels `[r, g, b]` (`height * width * 3` bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl RgbImage {
    /// Wrap interleaved RGB bytes; `data.len()` must be `width * height * 3`.
    pub fn new(width: usize, height: usize, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 || data.len() != width * height * 3 {
            return Err(Error::InvalidArgument(format!(
                "an RGB image of {width}x{height} needs {} bytes, got {}",
                width * height * 3,
                data.len()
            )));
        }
        Ok(Self { width, height, data })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The interleaved RGB bytes.
    pub fn as_raw(&self) -> &[u8] {
        &self.data
    }

    /// Consume into the interleaved RGB bytes.
    pub fn into_raw(self) -> Vec<u8> {
        self.data
    }

    /// The pixel at column `x`, row `y`.
    pub fn pixel(&self, x: usize, y: usize) -> Option<[u8; 3]> {
        (x < self.width && y < self.height).then(|| {
            let i = 3 * (y * self.width + x);
            [self.data[i], self.data[i + 1], self.data[i + 2]]
        })
    }
}

/// Images to the autoencoder's input, `2 * (v / 255) - 1` (the `ToTensor` + `Normalize(0.5,
/// 0.5)` of DiT's training transform, diffusers' `VaeImageProcessor`). All images must have
/// the same size.
///
/// # Shapes
/// - output: `[B, 3, H, W]` in `[-1, 1]`
pub fn images_to_tensor(images: &[RgbImage], device: &Device) -> Result<Tensor<4>> {
    let first = images.first().ok_or_else(|| Error::InvalidArgument("no images to convert".into()))?;
    let (w, h) = (first.width, first.height);
    let mut values = Vec::with_capacity(images.len() * 3 * h * w);
    for (i, img) in images.iter().enumerate() {
        if (img.width, img.height) != (w, h) {
            return Err(Error::InvalidArgument(format!(
                "image {i} is {}x{}, the first is {w}x{h}; batch images of one size",
                img.width, img.height
            )));
        }
        for c in 0..3 {
            values.extend(img.data[c..].iter().step_by(3).map(|v| *v as f32 / 127.5 - 1.0));
        }
    }
    Ok(Tensor::from_data(TensorData::new(values, [images.len(), 3, h, w]), device))
}

/// Decoded images back to 8 bits: `floor(255 * clamp((x + 1) / 2, 0, 1) + 0.5)` (torchvision's
/// `save_image` of DiT's `sample.py`).
///
/// # Shapes
/// - `x`: `[B, 3, H, W]` (about `[-1, 1]`)
pub fn tensor_to_images(x: Tensor<4>) -> Result<Vec<RgbImage>> {
    let [b, c, h, w] = x.dims();
    if c != 3 || h == 0 || w == 0 {
        return Err(Error::Shape { name: "images".into(), expected: "[B, 3, H, W]".into(), got: format!("{:?}", x.dims()) });
    }
    let bytes = (((x + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0 + 0.5).floor();
    let values = bytes
        .into_data()
        .convert_dtype(burn::tensor::DType::F32)
        .try_into_vec::<f32>()
        .map_err(|e| Error::InvalidArgument(format!("cannot read the decoded images: {e:?}")))?;
    let plane = h * w;
    (0..b)
        .map(|n| {
            let img = &values[n * 3 * plane..(n + 1) * 3 * plane];
            let data = (0..plane).flat_map(|p| (0..3).map(move |ch| img[ch * plane + p] as u8)).collect();
            RgbImage::new(w, h, data)
        })
        .collect()
}

/// File extensions treated as images (torchvision's `IMG_EXTENSIONS`).
pub const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"];

/// The images of a folder, as torchvision's `ImageFolder` lists them: with sub-directories,
/// each is a class (labels by sorted name) holding images at any depth; without, the files
/// of the folder itself, unlabelled. Paths are sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolder {
    /// Class names (sub-directory names), sorted; empty for an unlabelled folder.
    pub classes: Vec<String>,
    /// Image files with their class index (`None` for an unlabelled folder).
    pub items: Vec<(PathBuf, Option<usize>)>,
}

fn io_err(path: &Path, e: impl ToString) -> Error {
    Error::Io { path: path.to_path_buf(), reason: e.to_string() }
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| io_err(dir, e)))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}

fn images_below(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for p in sorted_entries(dir)? {
        if p.is_dir() {
            images_below(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

impl ImageFolder {
    /// List the images under `root` (see the type's documentation); a folder without images
    /// is an error.
    pub fn scan(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let entries = sorted_entries(root)?;
        let class_dirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
        let mut folder = Self { classes: Vec::new(), items: Vec::new() };
        if class_dirs.is_empty() {
            folder.items = entries.into_iter().filter(|p| is_image(p)).map(|p| (p, None)).collect();
        } else {
            for (label, dir) in class_dirs.into_iter().enumerate() {
                folder.classes.push(dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
                let mut files = Vec::new();
                images_below(dir, &mut files)?;
                folder.items.extend(files.into_iter().map(|p| (p, Some(label))));
            }
        }
        if folder.items.is_empty() {
            return Err(io_err(root, format!("no images (extensions {}) found", IMAGE_EXTENSIONS.join(", "))));
        }
        Ok(folder)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no images (never true for a scanned folder).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_roundtrip_is_exact() {
        let device = Device::flex();
        let data: Vec<u8> = (0..2 * 3 * 5 * 3).map(|i| (i * 37 % 256) as u8).collect();
        let a = RgbImage::new(5, 3, data[..45].to_vec()).unwrap();
        let b = RgbImage::new(5, 3, data[45..].to_vec()).unwrap();
        let t = images_to_tensor(&[a.clone(), b.clone()], &device).unwrap();
        assert_eq!(t.dims(), [2, 3, 3, 5]);
        // channel planes: pixel (x=1, y=0) of image 0 is bytes 3..6
        let v = t.clone().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(v[1], a.as_raw()[3] as f32 / 127.5 - 1.0);
        assert_eq!(v[15 + 1], a.as_raw()[4] as f32 / 127.5 - 1.0);
        assert_eq!(tensor_to_images(t).unwrap(), vec![a, b]);
    }

    #[test]
    fn quantisation_and_errors() {
        let device = Device::flex();
        let x = Tensor::<4>::from_floats([[[[-2.0, 1.5]], [[0.0, -1.0]], [[1.0, 0.999]]]], &device);
        let img = &tensor_to_images(x).unwrap()[0];
        assert_eq!(img.pixel(0, 0), Some([0, 128, 255]));
        assert_eq!(img.pixel(1, 0), Some([255, 0, 255]));
        assert_eq!(img.pixel(2, 0), None);
        assert!(RgbImage::new(2, 2, vec![0; 11]).is_err());
        assert!(RgbImage::new(0, 2, vec![]).is_err());
        assert!(images_to_tensor(&[], &device).is_err());
        let small = RgbImage::new(1, 1, vec![0; 3]).unwrap();
        let big = RgbImage::new(2, 1, vec![0; 6]).unwrap();
        assert!(images_to_tensor(&[small, big], &device).is_err());
        assert!(tensor_to_images(Tensor::zeros([1, 4, 2, 2], &device)).is_err());
    }

    #[test]
    fn folders_like_torchvision() {
        let root = std::env::temp_dir().join(format!("dt_image_folder_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for f in ["b_dogs/x/2.PNG", "b_dogs/1.jpg", "a_cats/3.png", "a_cats/notes.txt"] {
            let p = root.join("labelled").join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        }
        let f = ImageFolder::scan(root.join("labelled")).unwrap();
        assert_eq!(f.classes, vec!["a_cats", "b_dogs"]);
        let names: Vec<(String, Option<usize>)> = f
            .items
            .iter()
            .map(|(p, l)| (p.strip_prefix(root.join("labelled")).unwrap().to_string_lossy().into_owned(), *l))
            .collect();
        assert_eq!(
            names,
            vec![("a_cats/3.png".into(), Some(0)), ("b_dogs/1.jpg".into(), Some(1)), ("b_dogs/x/2.PNG".into(), Some(1))]
        );
        std::fs::create_dir_all(root.join("flat")).unwrap();
        std::fs::write(root.join("flat/z.webp"), b"").unwrap();
        std::fs::write(root.join("flat/a.bmp"), b"").unwrap();
        let flat = ImageFolder::scan(root.join("flat")).unwrap();
        assert!(flat.classes.is_empty());
        assert_eq!(flat.items, vec![(root.join("flat/a.bmp"), None), (root.join("flat/z.webp"), None)]);
        std::fs::create_dir_all(root.join("empty")).unwrap();
        assert!(matches!(ImageFolder::scan(root.join("empty")), Err(Error::Io { .. })));
        assert!(matches!(ImageFolder::scan(root.join("missing")), Err(Error::Io { .. })));
        let _ = std::fs::remove_dir_all(&root);
    }
}
