//! Kinds `sd3_diffusers` and `sd35_diffusers`: diffusers' `SD3Transformer2DModel` (MM-DiT,
//! and SD3.5's MMDiT-X with `dual_attention_layers`) forward, and for `sd35_diffusers` the
//! forward with `skip_layers` (skip-layer guidance's skipped branch).

use burn::prelude::*;
use diffusion_transformers::models::{MMDiT, MMDiTConfig};

use crate::common::{Fixture, Outcome, all, compare_data, err, to_f64};
use diffusion_transformers::weights::LoadWeights;

/// Builds the model from the sidecar config, checks the position table against the
/// reference's buffer (before loading it) and loads the reference weights.
fn load(fx: &Fixture, results: &mut Vec<Outcome>) -> Result<MMDiT, String> {
    let cfg = MMDiTConfig::from_diffusers_config(fx.config()).map_err(err)?;
    let mut model = cfg.init(&fx.device).map_err(err)?;
    if let Some(table) = fx.weights.get("pos_embed.pos_embed") {
        let ours = model.pos_embed.as_ref().ok_or("the model lacks pos_embed")?.val().into_data();
        results.push(compare_data("pos_embed.pos_embed", ours, table.clone(), fx.atol, fx.rtol));
    }
    model.load_checkpoint(&fx.weights).map_err(err)?;
    Ok(model)
}

/// The forward of `model` on the fixture's inputs with `skip_layers` left out.
fn forward(fx: &Fixture, model: &MMDiT, skip_layers: &[usize]) -> Result<Tensor<4>, String> {
    model
        .forward_skipping(
            fx.float("input.hidden_states")?,
            fx.timesteps("input.timestep")?,
            fx.float("input.encoder_hidden_states")?,
            fx.float("input.pooled_projections")?,
            skip_layers,
        )
        .map_err(err)
}

pub fn sd3_diffusers(fx: &Fixture) -> Outcome {
    let mut results = Vec::new();
    let model = load(fx, &mut results)?;
    results.push(fx.compare("output.sample", forward(fx, &model, &[])?));
    all(results)
}

pub fn sd35_diffusers(fx: &Fixture) -> Outcome {
    let mut results = Vec::new();
    let model = load(fx, &mut results)?;
    results.push(fx.compare("output.sample", forward(fx, &model, &[])?));
    let skip: Vec<usize> = to_f64(fx.raw("input.skip_layers")?).into_iter().map(|i| i as usize).collect();
    results.push(fx.compare("output.sample_skip_layers", forward(fx, &model, &skip)?));
    all(results)
}
