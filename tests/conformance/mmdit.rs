//! Kind `sd3_diffusers`: diffusers' `SD3Transformer2DModel` (MM-DiT) forward.

use diffusion_transformers::models::MMDiTConfig;

use crate::common::{Fixture, Outcome, all, compare_data, err};

pub fn sd3_diffusers(fx: &Fixture) -> Outcome {
    let cfg = MMDiTConfig::from_diffusers_config(fx.config()).map_err(err)?;
    let mut model = cfg.init(&fx.device).map_err(err)?;
    let mut results = Vec::new();
    // The table the crate computes equals the reference's buffer (checked before loading it).
    if let Some(table) = fx.weights.get("pos_embed.pos_embed") {
        let ours = model.pos_embed.table.val().into_data();
        results.push(compare_data("pos_embed.pos_embed", ours, table.clone(), fx.atol, fx.rtol));
    }
    model.load_checkpoint(&fx.weights).map_err(err)?;
    let out = model
        .forward(
            fx.float("input.hidden_states")?,
            fx.float("input.timestep")?,
            fx.float("input.encoder_hidden_states")?,
            fx.float("input.pooled_projections")?,
        )
        .map_err(err)?;
    results.push(fx.compare("output.sample", out));
    all(results)
}
