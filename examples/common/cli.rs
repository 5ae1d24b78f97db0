//! Value parsers for the examples' `clap` command lines: each rejects a bad value with a
//! message naming what is expected.

use diffusion_transformers::models::DiTConfig;

/// A whole number of at least 1.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(format!("expected a whole number of at least 1, got `{s}`")),
    }
}

/// A whole number of at least 1 (`u64`).
pub fn positive_u64(s: &str) -> Result<u64, String> {
    positive(s).map(|v| v as u64)
}

/// An image side of at least 8 pixels.
pub fn image_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v >= 8 => Ok(v),
        _ => Err(format!("expected an image size of at least 8, got `{s}`")),
    }
}

fn finite(s: &str) -> Result<f64, String> {
    s.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| format!("expected a number, got `{s}`"))
}

/// A finite number `>= 0`.
pub fn non_negative(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| if v >= 0.0 { Ok(v) } else { Err(format!("expected a number >= 0, got `{s}`")) })
}

/// A finite number `> 0`.
pub fn positive_f64(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| if v > 0.0 { Ok(v) } else { Err(format!("expected a number > 0, got `{s}`")) })
}

/// A number in `[0, 1)`.
pub fn unit_interval(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| if (0.0..1.0).contains(&v) { Ok(v) } else { Err(format!("expected a number in [0, 1), got `{s}`")) })
}

/// The quickstart's own models (see its `--model`).
pub const MODEL_NAMES: [&str; 5] = ["tiny", "small", "conv", "unet", "udit"];

/// One of [`MODEL_NAMES`] or a DiT preset name (`DiT-S/2`, ..., `DiT-XL/8`).
pub fn model_name(s: &str) -> Result<String, String> {
    if MODEL_NAMES.contains(&s) || DiTConfig::from_name(s).is_ok() {
        Ok(s.to_string())
    } else {
        Err(format!("expected {} or a DiT preset such as DiT-S/2, got `{s}`", MODEL_NAMES.join(", ")))
    }
}

/// The examples' `main`: parse the command line (clap exits with its own message on a bad
/// one), keep large CPU buffers for reuse, run, and print an error and exit 1 on failure.
pub fn main_with<A: clap::Parser>(run: fn(A) -> Result<(), String>) {
    diffusion_transformers::cpu::tune_allocator();
    if let Err(msg) = run(A::parse()) {
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
