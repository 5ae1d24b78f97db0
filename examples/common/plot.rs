//! PNG figures for the examples with `plotters` (bitmap backend): line charts with titled,
//! labelled axes (optionally log-scaled) and image grids labelled by row. Text uses the DejaVu
//! Sans subset in `fonts/` (embedded in the binary), so nothing depends on system fonts.

use std::path::Path;
use std::sync::Once;

use burn::prelude::*;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// The embedded font (see `fonts/LICENSE.txt`).
const FONT: &[u8] = include_bytes!("fonts/DejaVuSans-subset.ttf");

/// Registers the embedded font as `sans-serif` (once per process).
fn register() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| result = register_font("sans-serif", FontStyle::Normal, FONT).map_err(|_| "the embedded font is invalid".to_string()));
    result
}

fn create_parent(path: &Path) -> Result<(), String> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display())),
        None => Ok(()),
    }
}

/// Renders `draw` on a white `width x height` RGB canvas and writes it to `path` as PNG.
fn render(
    width: u32,
    height: u32,
    path: &Path,
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<(), String> {
    register()?;
    create_parent(path)?;
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    draw(BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area())?;
    image::RgbImage::from_raw(width, height, buffer)
        .ok_or("plot buffer of the wrong size")?
        .save(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// One line of a chart.
pub struct Series<'a> {
    /// Legend entry.
    pub name: &'a str,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
    /// Line colour.
    pub colour: RGBColor,
    /// Line width in pixels.
    pub width: u32,
}

/// A line chart: title, axis labels, legend (for named series), optionally log-scaled `y`.
pub struct LineChart<'a> {
    /// Title above the chart.
    pub title: &'a str,
    /// Label of the `x` axis.
    pub x_label: &'a str,
    /// Label of the `y` axis.
    pub y_label: &'a str,
    /// Log-scaled `y` axis (values must be positive; others are dropped).
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series<'a>>,
}

impl LineChart<'_> {
    /// Writes the chart as an 800x500 PNG.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let keep = |y: f64| y.is_finite() && (!self.log_y || y > 0.0);
        let points: Vec<(f64, f64)> =
            self.series.iter().flat_map(|s| s.points.iter().copied()).filter(|&(x, y)| x.is_finite() && keep(y)).collect();
        if points.is_empty() {
            return Err(format!("{}: nothing to plot", self.title));
        }
        let fold = |f: fn(&(f64, f64)) -> f64| points.iter().map(f).fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let (x0, mut x1) = fold(|p| p.0);
        let (mut y0, mut y1) = fold(|p| p.1);
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if self.log_y {
            (y0, y1) = (y0 * 0.9, y1 * 1.1);
        } else {
            let pad = 0.05 * (y1 - y0).max(1e-9);
            (y0, y1) = (if y0 >= 0.0 { (y0 - pad).max(0.0) } else { y0 - pad }, y1 + pad);
        }
        let err = |e: DrawingAreaErrorKind<_>| format!("{}: {e:?}", self.title);
        render(800, 500, path, |root| {
            root.fill(&WHITE).map_err(err)?;
            let mut builder = ChartBuilder::on(&root);
            builder
                .caption(self.title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(70);
            let named = self.series.iter().any(|s| !s.name.is_empty());
            macro_rules! draw {
                ($chart:expr) => {{
                    let mut chart = $chart;
                    chart
                        .configure_mesh()
                        .x_desc(self.x_label)
                        .y_desc(self.y_label)
                        .axis_desc_style(("sans-serif", 16))
                        .label_style(("sans-serif", 13))
                        .x_label_formatter(&|v| tick(*v))
                        .y_label_formatter(&|v| tick(*v))
                        .light_line_style(RGBColor(235, 235, 235))
                        .draw()
                        .map_err(err)?;
                    for s in &self.series {
                        let style = ShapeStyle::from(&s.colour).stroke_width(s.width);
                        let line = LineSeries::new(s.points.iter().copied().filter(|&(_, y)| keep(y)), style);
                        let drawn = chart.draw_series(line).map_err(err)?;
                        if !s.name.is_empty() {
                            let c = s.colour;
                            drawn.label(s.name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
                        }
                    }
                    if named {
                        chart
                            .configure_series_labels()
                            .background_style(WHITE.mix(0.85))
                            .border_style(BLACK)
                            .label_font(("sans-serif", 14))
                            .position(SeriesLabelPosition::UpperRight)
                            .draw()
                            .map_err(err)?;
                    }
                }};
            }
            if self.log_y {
                // Labels at 1, 2 and 5 times each power of ten in range (plotters' own log
                // labels thin out below a decade).
                let keys: Vec<f64> = (y0.log10().floor() as i32..=y1.log10().ceil() as i32)
                    .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
                    .filter(|v| (y0..=y1).contains(v))
                    .collect();
                draw!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale().with_key_points(keys)).map_err(err)?);
            } else {
                draw!(builder.build_cartesian_2d(x0..x1, y0..y1).map_err(err)?);
            }
            root.present().map_err(err)
        })
    }
}

/// A tick label: at most 3 significant digits, no trailing zeros (`0.3`, `1.25`, `2000`).
fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// A bias-corrected exponential moving average of `values` (as Adam's moments: the average
/// of the values so far, weighted by `decay^age`), the smoothed line of a loss plot.
pub fn ema_smooth(values: &[f64], decay: f64) -> Vec<f64> {
    let (mut avg, mut weight) = (0.0, 0.0);
    values
        .iter()
        .map(|&v| {
            avg = decay * avg + (1.0 - decay) * v;
            weight = decay * weight + (1.0 - decay);
            avg / weight
        })
        .collect()
}

/// Writes `[B, 3, H, W]` images in `[-1, 1]` as a grid of `ncol` columns, each image scaled up
/// `zoom` times; with `row_labels`, each row is labelled on the left, and `title` goes above.
pub fn save_grid(
    images: Tensor<4>,
    ncol: usize,
    zoom: usize,
    title: Option<&str>,
    row_labels: Option<&[&str]>,
    path: &Path,
) -> Result<(), String> {
    let [b, c, h, w] = images.dims();
    if c != 3 || ncol == 0 || zoom == 0 {
        return Err(format!("save_grid needs RGB images, columns and zoom, got {c} channels, {ncol} columns, zoom {zoom}"));
    }
    let data: Vec<f32> = images.into_data().convert::<f32>().try_to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
    let nrow = b.div_ceil(ncol);
    let gap = 2;
    let (cw, ch) = (w * zoom + gap, h * zoom + gap);
    let left = if row_labels.is_some() { 130 } else { 0 };
    let top = if title.is_some() { 34 } else { 0 };
    let (width, height) = ((left + ncol * cw + gap) as u32, (top + nrow * ch + gap) as u32);
    register()?;
    create_parent(path)?;
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    for i in 0..b {
        let (gx, gy) = (left + gap + (i % ncol) * cw, top + gap + (i / ncol) * ch);
        for y in 0..h * zoom {
            for x in 0..w * zoom {
                let offset = ((gy + y) * width as usize + gx + x) * 3;
                for k in 0..3 {
                    let v = data[((i * 3 + k) * h + y / zoom) * w + x / zoom];
                    buffer[offset + k] = ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
                }
            }
        }
    }
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| format!("{}: {e:?}", path.display());
        let font = ("sans-serif", 15).into_font().color(&BLACK);
        if let Some(t) = title {
            let style = ("sans-serif", 18).into_font().color(&BLACK);
            root.draw(&Text::new(t.to_string(), (left as i32 + 4, 8), style)).map_err(err)?;
        }
        for (r, label) in row_labels.unwrap_or(&[]).iter().enumerate().take(nrow) {
            let y = (top + gap + r * ch + ch / 2) as i32 - 8;
            root.draw(&Text::new(label.to_string(), (6, y), font.clone())).map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    image::RgbImage::from_raw(width, height, buffer)
        .ok_or("grid buffer of the wrong size")?
        .save(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
