//! Plot the four rectified-flow timestep densities of SD3 (uniform, logit-normal(0, 1),
//! mode(1.29), CosMap) over `t` in `(0, 1)` as a PNG, like the densities figure of Esser et
//! al. 2024, and print a table of their values.
//!
//! ```text
//! cargo run --example flow_densities -- [--out docs/flow_densities.png] [--shift 1.0]
//! ```
//!
//! `--shift` applies the resolution shift to every density first (`t' = s t / (1 + (s-1) t)`).

mod common;

use std::path::PathBuf;

use clap::Parser;
use common::plot::{LineChart, Series};
use diffusion_transformers::diffusion::{TimestepDensity, TimestepSamplerConfig};
use plotters::style::RGBColor;

/// Plot SD3's rectified-flow timestep densities (uniform, logit-normal, mode, CosMap).
#[derive(Parser, Debug)]
struct Args {
    /// Output PNG.
    #[arg(long, default_value = "docs/flow_densities.png")]
    out: PathBuf,
    /// Resolution shift applied to every density first (`t' = s t / (1 + (s - 1) t)`).
    #[arg(long, default_value_t = 1.0, value_parser = common::cli::positive_f64)]
    shift: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { out, shift } = Args::parse();
    let curves = [
        ("uniform", TimestepDensity::Uniform, RGBColor(110, 110, 110)),
        ("logit-normal(0, 1)", TimestepDensity::logit_normal(0.0, 1.0)?, RGBColor(31, 119, 180)),
        ("mode(1.29)", TimestepDensity::mode(1.29)?, RGBColor(214, 39, 40)),
        ("CosMap", TimestepDensity::CosMap, RGBColor(44, 160, 44)),
    ];
    // t on (0, 1), ends excluded.
    let n = 1000;
    let grid: Vec<f64> = (1..n).map(|i| i as f64 / n as f64).collect();
    let mut values = Vec::new();
    for (_, density, _) in &curves {
        let sampler = TimestepSamplerConfig::new().with_density(*density).with_shift(shift).init()?;
        values.push(grid.iter().map(|&t| sampler.pdf(t)).collect::<Vec<f64>>());
    }
    let title = format!("rectified-flow timestep densities (shift {shift})");
    let series = values
        .iter()
        .zip(&curves)
        .map(|(v, c)| Series { name: c.0, points: grid.iter().copied().zip(v.iter().copied()).collect(), colour: c.2, width: 2 })
        .collect();
    LineChart { title: &title, x_label: "t (noise level)", y_label: "density", log_y: false, series }.save(&out)?;
    println!("wrote {}", out.display());
    println!("\n    t  {}", curves.map(|c| format!("{:>19}", c.0)).join(""));
    for i in (49..n - 1).step_by(100) {
        println!("{:5.2}  {}", grid[i], values.iter().map(|v| format!("{:>19.4}", v[i])).collect::<String>());
    }
    Ok(())
}
