//! Stream a checkpoint into DiT-XL/2 or an SD3-medium-sized MM-DiT and report the time: the
//! Rust side of `benches/load_weights.py`, which makes the files and measures peak memory.
//!
//! ```text
//! cargo run --release --example load_weights -- dit   /tmp/dit_xl/diffusion_pytorch_model.safetensors
//! cargo run --release --example load_weights -- mmdit /tmp/sd3m_bf16/diffusion_pytorch_model.safetensors bf16
//! ```
//!
//! `bf16` builds the model in bf16 (the device's float dtype); the file may be in either dtype.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::FloatDType;
use diffusion_transformers::models::{DiTConfig, MMDiTConfig};
use diffusion_transformers::weights::LoadWeights;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(model), Some(path)) = (args.get(1), args.get(2)) else {
        return Err("usage: load_weights <dit|mmdit> <checkpoint> [bf16]".into());
    };
    let mut device = Device::default();
    if args.get(3).is_some_and(|d| d == "bf16") {
        device.configure(FloatDType::BF16)?;
    }
    let start = Instant::now();
    let params = match model.as_str() {
        "dit" => {
            // diffusers' DiT shifts its timestep frequencies; the layout is detected from the keys
            let mut m = DiTConfig::from_name("DiT-XL/2")?.with_timestep_freq_shift(1.0).init(&device)?;
            let built = start.elapsed();
            m.load_weights(path)?;
            println!("init {:.2} s", built.as_secs_f64());
            m.num_params()
        }
        "mmdit" => {
            let cfg = MMDiTConfig::sd3_medium();
            let mut m = cfg.init(&device)?;
            let built = start.elapsed();
            m.load_weights(path)?;
            println!("init {:.2} s", built.as_secs_f64());
            cfg.num_params()
        }
        other => return Err(format!("unknown model `{other}` (dit or mmdit)").into()),
    };
    println!("loaded {params} parameters in {:.2} s (init + load)", start.elapsed().as_secs_f64());
    Ok(())
}
