//! Kinds `dit_official`, `dit_diffusers` and `sincos_pos_embed_official`.

use burn::prelude::Device;
use diffusion_transformers::blocks::ConditionInput;
use diffusion_transformers::layers::pos_embed::sincos_2d;
use diffusion_transformers::models::{DiT, DiTConfig};
use diffusion_transformers::weights::DiTCheckpointLayout;
use serde_json::Value;

use crate::common::{Fixture, Outcome, all, cfg_bool, cfg_f64, cfg_usize, err};
use diffusion_transformers::weights::LoadWeights;

fn official_config(cfg: &Value) -> Result<DiTConfig, String> {
    Ok(DiTConfig::new()
        .with_input_size(cfg_usize(cfg, "input_size")?)
        .with_patch_size(cfg_usize(cfg, "patch_size")?)
        .with_in_channels(cfg_usize(cfg, "in_channels")?)
        .with_hidden_size(cfg_usize(cfg, "hidden_size")?)
        .with_depth(cfg_usize(cfg, "depth")?)
        .with_num_heads(cfg_usize(cfg, "num_heads")?)
        .with_mlp_ratio(cfg_f64(cfg, "mlp_ratio")?)
        .with_class_dropout_prob(cfg_f64(cfg, "class_dropout_prob")?)
        .with_num_classes(cfg_usize(cfg, "num_classes")?)
        .with_learn_sigma(cfg_bool(cfg, "learn_sigma")?))
}

fn build(fx: &Fixture, cfg: DiTConfig, layout: DiTCheckpointLayout, device: &Device) -> Result<DiT, String> {
    let mut model = cfg.init(device).map_err(err)?;
    model.load_checkpoint_as(&fx.weights, layout).map_err(err)?;
    Ok(model)
}

pub fn official(fx: &Fixture) -> Outcome {
    let model = build(fx, official_config(fx.config())?, DiTCheckpointLayout::Official, &fx.device)?;
    let x = fx.float::<4>("input.x")?;
    let t = fx.timesteps("input.t")?;
    let y = fx.int::<1>("input.y")?;
    let mut results = vec![fx.compare("output.forward", model.forward(x.clone(), t.clone(), Some(y.clone())).map_err(err)?)];
    let cond = model.embed_condition(t, ConditionInput::Labels(&y), None).map_err(err)?;
    let tokens = model.embed(x).map_err(err)?;
    if fx.has("intermediate.t_embedder") {
        results.push(fx.compare("intermediate.t_embedder", cond.stages[0].t_emb.clone()));
    }
    if let (true, Some(y_emb)) = (fx.has("intermediate.y_embedder"), cond.stages[0].y_emb.clone()) {
        results.push(fx.compare("intermediate.y_embedder", y_emb));
    }
    if fx.has("intermediate.x_embedder_plus_pos") {
        results.push(fx.compare("intermediate.x_embedder_plus_pos", tokens.clone()));
    }
    if fx.has("intermediate.block0") {
        results.push(fx.compare("intermediate.block0", model.forward_block(0, tokens, &cond).map_err(err)?));
    }
    if fx.has("output.forward_with_cfg") {
        let scale = fx.field("cfg_scale").and_then(Value::as_f64).ok_or("sidecar lacks cfg_scale")?;
        let channels = fx.field("cfg_channels").and_then(Value::as_u64).unwrap_or(3) as usize;
        let out = model
            .forward_with_cfg(fx.float("input.cfg_x")?, fx.timesteps("input.cfg_t")?, fx.int("input.cfg_y")?, scale, channels)
            .map_err(err)?;
        results.push(fx.compare("output.forward_with_cfg", out));
    }
    all(results)
}

pub fn diffusers(fx: &Fixture) -> Outcome {
    let model = diffusers_model(fx, fx.config(), &fx.device)?;
    let out = model
        .forward(fx.float("input.x")?, fx.timesteps("input.t")?, Some(fx.int("input.y")?))
        .map_err(err)?;
    fx.compare("output.sample", out)
}

/// A `DiTTransformer2DModel` of the diffusers constructor arguments `cfg` on `device` (the
/// fixture's, or an autodiff one for training), loaded from the fixture's weights.
pub fn diffusers_model(fx: &Fixture, cfg: &Value, device: &Device) -> Result<DiT, String> {
    let heads = cfg_usize(cfg, "num_attention_heads")?;
    let in_ch = cfg_usize(cfg, "in_channels")?;
    let out_ch = cfg.get("out_channels").and_then(Value::as_u64).map_or(in_ch, |v| v as usize);
    if out_ch != in_ch && out_ch != 2 * in_ch {
        return Err(format!("out_channels {out_ch} must be in_channels or twice it"));
    }
    let config = DiTConfig::new()
        .with_input_size(cfg_usize(cfg, "sample_size")?)
        .with_patch_size(cfg_usize(cfg, "patch_size")?)
        .with_in_channels(in_ch)
        .with_hidden_size(heads * cfg_usize(cfg, "attention_head_dim")?)
        .with_depth(cfg_usize(cfg, "num_layers")?)
        .with_num_heads(heads)
        .with_num_classes(cfg_usize(cfg, "num_embeds_ada_norm")?)
        .with_learn_sigma(out_ch == 2 * in_ch)
        .with_timestep_freq_shift(1.0)
        .with_per_block_embedders(true);
    build(fx, config, DiTCheckpointLayout::Diffusers, device)
}

pub fn sincos_pos_embed(fx: &Fixture) -> Outcome {
    let cases = fx.field("cases").and_then(Value::as_array).ok_or("sidecar lacks `cases`")?;
    all(cases.iter().map(|c| {
        let d = cfg_usize(c, "embed_dim")?;
        let g = cfg_usize(c, "grid_size")?;
        let table = sincos_2d(d, [g, g], &fx.device).map_err(err)?;
        fx.compare(&format!("output.pos_embed_{d}_{g}"), table)
    }))
}
