//! Prints, as JSON, the floating-point operations of each benchmark workload (for achieved
//! GFLOP/s in `benches/compare.sh`) and the machine's measured FP32 peak.
//!
//! One multiply-accumulate = 2 FLOPs; a training step counts 3x the forward (forward +
//! backward); a sampler step counts its model calls. The peak is timed with independent
//! FMA chains in the widest vector registers the CPU has (AVX-512, else AVX2), on every
//! thread (`RAYON_NUM_THREADS` or all cores): the practical ceiling of any FP32 kernel here.
//!
//! `cargo run --release --example bench_flops > target/flops.json`

use std::time::Instant;

use clap::Parser;
use diffusion_transformers::models::{DiTConfig, MMDiTConfig, MicroDiTConfig, UDiTConfig};
use serde_json::{Map, Value};

/// Print the FLOPs of each benchmark workload and the measured FP32 peak as JSON (stdout).
#[derive(Parser, Debug)]
struct Args {}

fn main() -> Result<(), diffusion_transformers::Error> {
    Args::parse();
    let mut out = Map::new();
    let mut add = |key: String, macs: f64| out.insert(key, Value::from(2.0 * macs));
    for name in ["DiT-S/2", "DiT-B/2"] {
        let macs = DiTConfig::from_name(name)?.flops();
        for batch in [1usize, 8] {
            add(format!("dit_forward/{name}/b{batch}"), macs * batch as f64);
            add(format!("dit_train_step/{name}/b{batch}"), 3.0 * macs * batch as f64);
        }
    }
    let b = 2.0;
    let udit = UDiTConfig::from_name("U-DiT-S")?.flops();
    add("udit_forward/U-DiT-S/b2".into(), b * udit);
    add("udit_train_step/U-DiT-S/b2".into(), 3.0 * b * udit);
    let micro = MicroDiTConfig::from_name("MicroDiT_Tiny_2")?;
    let (m0, m75) = (micro.flops(0.0, 77)?, micro.flops(0.75, 77)?);
    add("microdit_forward/MicroDiT_Tiny_2/b2".into(), b * m0);
    add("microdit_forward/MicroDiT_Tiny_2/mask0.75/b2".into(), b * m75);
    add("microdit_train_step/MicroDiT_Tiny_2/mask0/b2".into(), 3.0 * b * m0);
    add("microdit_train_step/MicroDiT_Tiny_2/mask0.75/b2".into(), 3.0 * b * m75);
    let mm = MMDiTConfig::from_depth(8)?.flops_at(32, 32, 77);
    add("mmdit_forward/d8/b2".into(), b * mm);
    add("mmdit_train_step/d8/b2".into(), 3.0 * b * mm);
    for batch in [1usize, 2] {
        add(format!("mmdit_forward/ours/d8/b{batch}"), batch as f64 * mm);
        add(format!("mmdit_forward/candle/d8/b{batch}"), batch as f64 * mm);
    }
    // Samplers: a 4-step run of DiT-S/2 at batch 8 divided by 4 (Heun: 7 model calls).
    let s2 = 8.0 * DiTConfig::from_name("DiT-S/2")?.flops();
    for (name, calls) in [("ddpm", 4.0), ("ddim", 4.0), ("dpm_solver++2m", 4.0), ("flow_euler", 4.0), ("flow_heun", 7.0), ("edm_heun", 7.0)] {
        add(format!("sampler_step/{name}/DiT-S/2/b8"), s2 * calls / 4.0);
    }
    out.insert("peak_fp32_flops".into(), Value::from(peak_fp32_flops()));
    println!("{}", Value::Object(out));
    Ok(())
}

/// Measured FP32 FLOP/s of all threads running independent FMA chains for ~0.5 s.
fn peak_fp32_flops() -> f64 {
    let threads = diffusion_transformers::cpu::num_threads();
    let rounds = 20_000_000u64;
    let start = Instant::now();
    let flops: f64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(move || fma_chains(rounds))).collect();
        handles.into_iter().map(|h| h.join().expect("peak thread")).sum()
    });
    flops / start.elapsed().as_secs_f64()
}

/// Runs 12 independent FMA chains for `rounds` rounds; returns the FLOPs done.
fn fma_chains(rounds: u64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(rounds: u64) -> f64 {
            let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
            let mut acc = [_mm512_set1_ps(1.0); 12];
            for _ in 0..rounds {
                for r in acc.iter_mut() {
                    *r = _mm512_fmadd_ps(*r, a, b);
                }
            }
            let sum = acc.iter().fold(_mm512_setzero_ps(), |s, &r| _mm512_add_ps(s, r));
            std::hint::black_box(_mm512_reduce_add_ps(sum));
            (rounds * 12 * 16 * 2) as f64
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(rounds: u64) -> f64 {
            let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
            let mut acc = [_mm256_set1_ps(1.0); 12];
            for _ in 0..rounds {
                for r in acc.iter_mut() {
                    *r = _mm256_fmadd_ps(*r, a, b);
                }
            }
            std::hint::black_box(acc);
            (rounds * 12 * 8 * 2) as f64
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked).
            return unsafe { avx512(rounds) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked).
            return unsafe { avx2(rounds) };
        }
    }
    let mut acc = [1.0f32; 12];
    for _ in 0..rounds {
        for r in acc.iter_mut() {
            *r = r.mul_add(0.999_999, 1e-7);
        }
    }
    std::hint::black_box(acc);
    (rounds * 12 * 2) as f64
}
