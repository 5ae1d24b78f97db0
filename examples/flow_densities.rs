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

use diffusion_transformers::diffusion::{TimestepDensity, TimestepSamplerConfig};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(arg("--out").unwrap_or_else(|| "docs/flow_densities.png".into()));
    let shift: f64 = arg("--shift").map(|s| s.parse()).transpose()?.unwrap_or(1.0);
    let curves = [
        ("uniform", TimestepDensity::Uniform, [110, 110, 110]),
        ("logit-normal(0, 1)", TimestepDensity::logit_normal(0.0, 1.0)?, [31, 119, 180]),
        ("mode(1.29)", TimestepDensity::mode(1.29)?, [214, 39, 40]),
        ("CosMap", TimestepDensity::CosMap, [44, 160, 44]),
    ];
    // t on (0, 1), ends excluded.
    let n = 1000;
    let grid: Vec<f64> = (1..n).map(|i| i as f64 / n as f64).collect();
    let mut values = Vec::new();
    for (_, density, _) in &curves {
        let sampler = TimestepSamplerConfig::new().with_density(*density).with_shift(shift).init()?;
        values.push(grid.iter().map(|&t| sampler.pdf(t)).collect::<Vec<f64>>());
    }
    let series: Vec<(&[f64], [u8; 3])> = values.iter().zip(&curves).map(|(v, c)| (v.as_slice(), c.2)).collect();
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    common::save_line_plot(&series, false, &out)?;

    let max = values.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
    println!("wrote {} (x: t from {} to {}, y: density from 0 to {max:.3}, shift {shift})", out.display(), grid[0], grid[n - 2]);
    for (name, _, [r, g, b]) in &curves {
        println!("  rgb({r:3}, {g:3}, {b:3}): {name}");
    }
    println!("\n    t  {}", curves.map(|c| format!("{:>19}", c.0)).join(""));
    for i in (49..n - 1).step_by(100) {
        println!("{:5.2}  {}", grid[i], values.iter().map(|v| format!("{:>19.4}", v[i])).collect::<String>());
    }
    Ok(())
}
