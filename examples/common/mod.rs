//! Helpers shared by the examples: image grids and simple line plots as PNG (`image` crate).
#![allow(dead_code)]

pub mod classifier;
pub mod generate;

use std::path::Path;

use burn::prelude::*;
use image::{Rgb, RgbImage};

/// Write `[B, 3, H, W]` images in `[-1, 1]` as a grid with `ncol` columns, each image scaled
/// up `zoom` times, with a 2-pixel gap.
pub fn save_grid(images: Tensor<4>, ncol: usize, zoom: usize, path: &Path) -> Result<(), String> {
    let [b, c, h, w] = images.dims();
    if c != 3 {
        return Err(format!("save_grid needs RGB images, got {c} channels"));
    }
    let data: Vec<f32> = images.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| format!("{e:?}"))?;
    let nrow = b.div_ceil(ncol);
    let gap = 2;
    let (cw, ch) = (w * zoom + gap, h * zoom + gap);
    let mut img = RgbImage::from_pixel((ncol * cw + gap) as u32, (nrow * ch + gap) as u32, Rgb([255, 255, 255]));
    for i in 0..b {
        let (gx, gy) = (gap + (i % ncol) * cw, gap + (i / ncol) * ch);
        for y in 0..h * zoom {
            for x in 0..w * zoom {
                let px = |ch: usize| {
                    let v = data[((i * 3 + ch) * h + y / zoom) * w + x / zoom];
                    (((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8
                };
                img.put_pixel((gx + x) as u32, (gy + y) as u32, Rgb([px(0), px(1), px(2)]));
            }
        }
    }
    img.save(path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Plot one or more series (each `(values, colour)`) against their index on a white canvas
/// with axes; `log_y` plots log10 of the values. No text (no font dependency): the caller
/// prints the ranges.
pub fn save_line_plot(series: &[(&[f64], [u8; 3])], log_y: bool, path: &Path) -> Result<(), String> {
    let (width, height, margin) = (640u32, 400u32, 30u32);
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let tf = |v: f64| if log_y { v.max(1e-12).log10() } else { v };
    let all: Vec<f64> = series.iter().flat_map(|(s, _)| s.iter().map(|v| tf(*v))).filter(|v| v.is_finite()).collect();
    if all.is_empty() {
        return Err("nothing to plot".into());
    }
    let (lo, hi) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let (pw, ph) = ((width - 2 * margin) as f64, (height - 2 * margin) as f64);
    for x in margin..width - margin {
        img.put_pixel(x, height - margin, Rgb([0, 0, 0]));
    }
    for y in margin..=height - margin {
        img.put_pixel(margin, y, Rgb([0, 0, 0]));
    }
    for (values, color) in series {
        let n = values.len().max(2) - 1;
        let pt = |i: usize| {
            let x = margin as f64 + pw * i as f64 / n as f64;
            let y = (height - margin) as f64 - ph * (tf(values[i]) - lo) / span;
            (x, y)
        };
        for i in 1..values.len() {
            let ((x0, y0), (x1, y1)) = (pt(i - 1), pt(i));
            let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
            for s in 0..=steps {
                let f = s as f64 / steps as f64;
                let (x, y) = (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f);
                if x >= 0.0 && y >= 0.0 && (x as u32) < width && (y as u32) < height {
                    img.put_pixel(x as u32, y as u32, Rgb(*color));
                }
            }
        }
    }
    img.save(path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
