//! Stream a checkpoint into DiT-XL/2 or an SD3-medium-sized MM-DiT, touch every parameter and
//! report the time: the Rust side of `benches/load_weights.py`, which makes the files and
//! measures peak memory.
//!
//! ```text
//! cargo run --release --example load_weights -- dit   /tmp/dit_xl/diffusion_pytorch_model.safetensors
//! cargo run --release --example load_weights -- mmdit /tmp/sd3m_bf16/diffusion_pytorch_model.safetensors bf16 mapped
//! ```
//!
//! `bf16` builds the model in bf16 (the device's float dtype); the file may be in either dtype.
//! `mapped` memory-maps the file (`LazyCheckpoint::open_mapped`) instead of reading it. Every
//! parameter is then summed (as the diffusers side does), so mapped pages are really read.
//! `thp` backs the copied tensors with transparent huge pages (`weights::set_huge_pages`).
//! `col` loads every `Linear` weight as a column-major view of the file's `[out, in]` data
//! (`LoadOptions::linear_layout`: no transpose; mapped, no copy); the touch then sums those
//! weights in their memory order (`[out, in]`, as PyTorch's are), since flex's reduction over
//! a strided bf16 view is several times slower than the load itself. The load and the touch
//! are timed apart.

use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;
use diffusion_transformers::models::{DiTConfig, MMDiTConfig};
use diffusion_transformers::weights::{LazyCheckpoint, LinearLayout, LoadOptions, LoadWeights, set_huge_pages};

/// Sums every float parameter, so each one's memory is read: in memory order, so a `Linear`
/// weight loaded as a transposed view (`col`) is summed through its transpose.
struct Touch {
    sum: f64,
    col: bool,
    linear: Vec<bool>,
}

impl ModuleVisitor for Touch {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        self.linear.push(container_type == "Struct:Linear");
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.linear.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let view = self.col && D == 2 && self.linear.last() == Some(&true);
        let value = if view { value.swap_dims(0, 1) } else { value };
        self.sum += value.sum().into_scalar::<f32>() as f64;
    }
}

fn load<M: LoadWeights>(m: &mut M, path: &str, mapped: bool, options: LoadOptions) -> diffusion_transformers::Result<()> {
    if mapped {
        // SAFETY: the benchmark's files are not modified while the process runs.
        m.load_lazy_with(unsafe { LazyCheckpoint::open_mapped(path)? }, options)
    } else {
        m.load_lazy_with(LazyCheckpoint::open(path)?, options)
    }
}

fn touch<M: Module>(m: &M, col: bool) -> f64 {
    let mut t = Touch { sum: 0.0, col, linear: Vec::new() };
    m.visit(&mut t);
    t.sum
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(model), Some(path)) = (args.get(1), args.get(2)) else {
        return Err("usage: load_weights <dit|mmdit> <checkpoint> [bf16] [mapped] [thp] [col]".into());
    };
    let mut device = Device::default();
    if args.iter().any(|a| a == "bf16") {
        device.configure(FloatDType::BF16)?;
    }
    let mapped = args.iter().any(|a| a == "mapped");
    set_huge_pages(args.iter().any(|a| a == "thp"));
    let col = args.iter().any(|a| a == "col");
    let layout = if col { LinearLayout::Col } else { LinearLayout::Row };
    let options = LoadOptions::new().with_linear_layout(layout);
    let start = Instant::now();
    let (params, sum) = match model.as_str() {
        "dit" => {
            // diffusers' DiT shifts its timestep frequencies; the layout is detected from the keys
            let mut m = DiTConfig::from_name("DiT-XL/2")?.with_timestep_freq_shift(1.0).init(&device)?;
            let built = start.elapsed();
            load(&mut m, path, mapped, options)?;
            println!("init {:.2} s, load {:.2} s", built.as_secs_f64(), start.elapsed().as_secs_f64());
            (m.num_params(), touch(&m, col))
        }
        "mmdit" => {
            let cfg = MMDiTConfig::sd3_medium();
            let mut m = cfg.init(&device)?;
            let built = start.elapsed();
            load(&mut m, path, mapped, options)?;
            println!("init {:.2} s, load {:.2} s", built.as_secs_f64(), start.elapsed().as_secs_f64());
            (cfg.num_params(), touch(&m, col))
        }
        other => return Err(format!("unknown model `{other}` (dit or mmdit)").into()),
    };
    let secs = start.elapsed().as_secs_f64();
    println!("loaded {params} parameters in {secs:.2} s (init + load + touch; checksum {sum:.3})");
    Ok(())
}
