//! Data-driven conformance test: every fixture in `$DT_FIXTURES_DIR` (default
//! `tests/fixtures`) is loaded, dispatched on its sidecar's `kind`, run through the crate's
//! public API and compared with the reference outputs. Unknown kinds and unreadable fixtures
//! fail the test; nothing is skipped.

mod common;
mod diffusion;
mod dit;
mod microdit;
mod flow;
mod mmdit;
mod text;
mod udit;
mod sampler;
mod sd3_pipeline;
mod vae;
mod eval;
mod train;

use std::path::PathBuf;

use common::{Fixture, Outcome};

fn run(fx: &Fixture) -> Outcome {
    match fx.kind() {
        "dit_official" => dit::official(fx),
        "dit_diffusers" => dit::diffusers(fx),
        "sincos_pos_embed_official" => dit::sincos_pos_embed(fx),
        "sd3_diffusers" => mmdit::sd3_diffusers(fx),
        "sd35_diffusers" => mmdit::sd35_diffusers(fx),
        "gaussian_diffusion_official" => diffusion::gaussian_official(fx),
        "ddpm_diffusers" => diffusion::ddpm_diffusers(fx),
        "ddim_diffusers" => diffusion::ddim_diffusers(fx),
        "flow_diffusers" => flow::diffusers(fx),
        "train_step_diffusers" => train::diffusers(fx),
        "microdit_official" => microdit::official(fx),
        "udit_official" => udit::official(fx),
        "vae_diffusers" => vae::diffusers(fx),
        "latent_pipeline_e2e" => vae::latent_pipeline(fx),
        "sampler_diffusers" => sampler::diffusers(fx),
        "clip_text_transformers" => text::clip_text(fx),
        "t5_encoder_transformers" => text::t5_encoder(fx),
        "tokenizer_transformers" => text::tokenizer(fx),
        "clip_text_open_clip" => text::clip_text_open_clip(fx),
        "sd3_pipeline_diffusers" => sd3_pipeline::diffusers(fx),
        "inception_pytorch_fid" => eval::inception(fx),
        "fid_pytorch_fid" => eval::frechet(fx),
        "inception_score" | "inception_score_torch_fidelity" => eval::inception_score_isc(fx),
        "precision_recall" | "precision_recall_prdc" => eval::precision_recall_prdc(fx),
        other => Err(format!("unknown fixture kind `{other}`")),
    }
}

fn main() {
    let dir = std::env::var("DT_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"));
    let mut sidecars: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read fixture directory {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    sidecars.sort();
    if sidecars.is_empty() {
        eprintln!("no fixtures (*.json) in {}", dir.display());
        std::process::exit(1);
    }
    match common::device() {
        Ok(device) => println!("conformance on {device:?} (DT_DEVICE), float dtype {:?} (DT_DTYPE)", device.settings().float_dtype),
        Err(why) => {
            eprintln!("{why}");
            std::process::exit(1);
        }
    }
    // In f16/bf16 the harness measures the error against the f32 references instead of checking.
    let measuring = matches!(common::reduced_precision(), Ok(Some(_)));
    let mut failures = 0;
    for json in &sidecars {
        let file = json.file_name().unwrap().to_string_lossy();
        common::take_relative_error();
        let outcome = Fixture::load(json).and_then(|fx| run(&fx).and_then(|e| fx.check_all_used().map(|()| e)));
        match outcome {
            Ok(err) if measuring => {
                println!("fixture {file}: measured (max abs err {err:.3e}, max rel err {:.3e})", common::take_relative_error())
            }
            Ok(err) => println!("fixture {file}: ok (max abs err {err:.3e})"),
            Err(why) => {
                failures += 1;
                println!("fixture {file}: FAILED ({why})");
            }
        }
    }
    println!("conformance: {} fixtures, {failures} failed", sidecars.len());
    if failures > 0 {
        std::process::exit(1);
    }
}
