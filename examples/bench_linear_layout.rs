//! Times a `Linear` forward in Burn's two weight layouts at SD3-medium's shapes: `Row` (the
//! weight row-major `[in, out]`, as a transposing load writes it) against `Col` (a transposed
//! view of `[out, in]` data, as `LoadOptions::linear_layout` `Col` or a `Linear` built
//! `LinearLayout::Col` hold it), so the cost of a zero-copy load at inference can be read off.
//!
//! ```text
//! cargo run --release --example bench_linear_layout              # f32
//! cargo run --release --example bench_linear_layout -- bf16      # the device configured to bf16
//! BURN_DEVICE=wgpu cargo run --release --features vulkan --example bench_linear_layout -- f16
//! ```
//!
//! The two layouts alternate, `ITERS` timed runs each after a warm-up, on the same inputs; the
//! output is the median wall time of each and their ratio. Shapes: SD3-medium's attention
//! projections (1536 -> 1536), MLP (1536 -> 6144, 6144 -> 1536), at 512, 2048 (one 512x512
//! image at CFG batch 2: 2 x 1024 patch tokens) and 4096 rows.

use std::time::Instant;

use burn::nn::{LinearConfig, LinearLayout};
use burn::prelude::*;
use burn::tensor::{Distribution, FloatDType};

/// Timed runs of each layout per shape.
const ITERS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut device = Device::default();
    if std::env::args().any(|a| a == "bf16") {
        device.configure(FloatDType::BF16)?;
    } else if std::env::args().any(|a| a == "f16") {
        device.configure(FloatDType::F16)?;
    }
    device.seed(0);
    println!("| rows | in -> out | Row ms | Col ms | Col / Row |");
    println!("|---|---|---|---|---|");
    for (d_in, d_out) in [(1536, 1536), (1536, 6144), (6144, 1536)] {
        let row = LinearConfig::new(d_in, d_out).init(&device);
        let col = LinearConfig::new(d_in, d_out).with_layout(LinearLayout::Col).init(&device);
        for rows in [512, 2048, 4096] {
            let x = Tensor::<2>::random([rows, d_in], Distribution::Normal(0.0, 1.0), &device);
            let (mut r, mut c) = (Vec::new(), Vec::new());
            for i in 0..=ITERS {
                for (linear, times) in [(&row, &mut r), (&col, &mut c)] {
                    let start = Instant::now();
                    let y = linear.forward(x.clone());
                    device.sync()?;
                    drop(y);
                    if i > 0 {
                        times.push(start.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
            let (r, c) = (median(r), median(c));
            println!("| {rows} | {d_in} -> {d_out} | {r:.3} | {c:.3} | {:.2}x |", c / r);
        }
    }
    Ok(())
}
