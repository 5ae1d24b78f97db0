//! Kind `microdit_official`: SonyResearch/micro_diffusion `DiT` forward without masking, with
//! deferred masking from the stored noise / mask, and with classifier-free guidance.

use burn::prelude::*;
use diffusion_transformers::contracts::{Denoiser, TokenMask};
use diffusion_transformers::models::microdit::{MicroDiTNull, linspace};
use diffusion_transformers::models::{MicroDiT, MicroDiTCond, MicroDiTConfig};
use diffusion_transformers::sampling::ClassifierFreeGuidance;
use serde_json::Value;

use crate::common::{Fixture, Outcome, all, cfg_bool, cfg_f64, cfg_usize, compare_data, err};
use diffusion_transformers::weights::LoadWeights;

/// Per-block multipliers: an explicit list (`*_multipliers`), or the presets' `[start, end]`
/// linspace endpoints / a single number (`*_ratio`).
fn multipliers(cfg: &Value, list: &str, ratio: &str, depth: usize) -> Result<Vec<f64>, String> {
    let floats = |v: &Value| -> Result<Vec<f64>, String> {
        v.as_array()
            .ok_or_else(|| format!("`{list}`/`{ratio}` must be a list"))?
            .iter()
            .map(|x| x.as_f64().ok_or_else(|| format!("non-numeric entry in `{list}`/`{ratio}`")))
            .collect()
    };
    if let Some(v) = cfg.get(list) {
        return floats(v);
    }
    match cfg.get(ratio) {
        Some(Value::Number(n)) => Ok(vec![n.as_f64().ok_or("bad number")?]),
        Some(v) => match floats(v)?.as_slice() {
            [a, b] => Ok(linspace(*a, *b, depth)),
            other => Err(format!("`{ratio}` must hold [start, end], got {other:?}")),
        },
        None => Err(format!("config lacks `{list}` or `{ratio}`")),
    }
}

fn config(cfg: &Value) -> Result<MicroDiTConfig, String> {
    let depth = cfg_usize(cfg, "depth")?;
    Ok(MicroDiTConfig::new()
        .with_input_size(cfg_usize(cfg, "input_size")?)
        .with_patch_size(cfg_usize(cfg, "patch_size")?)
        .with_in_channels(cfg_usize(cfg, "in_channels")?)
        .with_dim(cfg_usize(cfg, "dim")?)
        .with_depth(depth)
        .with_head_dim(cfg_usize(cfg, "head_dim")?)
        .with_multiple_of(cfg_usize(cfg, "multiple_of")?)
        .with_caption_channels(cfg_usize(cfg, "caption_channels")?)
        .with_pos_interp_scale(cfg_f64(cfg, "pos_interp_scale")?)
        .with_norm_eps(cfg_f64(cfg, "norm_eps")?)
        .with_depth_init(cfg_bool(cfg, "depth_init")?)
        .with_qkv_multipliers(multipliers(cfg, "qkv_multipliers", "qkv_ratio", depth)?)
        .with_ffn_multipliers(multipliers(cfg, "ffn_multipliers", "mlp_ratio", depth)?)
        .with_use_patch_mixer(cfg_bool(cfg, "use_patch_mixer")?)
        .with_patch_mixer_depth(cfg_usize(cfg, "patch_mixer_depth")?)
        .with_patch_mixer_dim(cfg_usize(cfg, "patch_mixer_dim")?)
        .with_patch_mixer_qkv_ratio(cfg_f64(cfg, "patch_mixer_qkv_ratio")?)
        .with_patch_mixer_mlp_ratio(cfg_f64(cfg, "patch_mixer_mlp_ratio")?)
        .with_use_bias(cfg_bool(cfg, "use_bias")?)
        .with_num_experts(cfg_usize(cfg, "num_experts")?)
        .with_expert_capacity(cfg_f64(cfg, "expert_capacity")?)
        .with_experts_every_n(cfg_usize(cfg, "experts_every_n")?))
}

fn compare_ints(fx: &Fixture, key: &str, got: Tensor<2, Int>) -> Outcome {
    compare_data(key, got.into_data().convert::<i64>(), fx.raw(key)?.convert::<i64>(), 0.0, 0.0)
}

pub fn official(fx: &Fixture) -> Outcome {
    let mut model: MicroDiT = config(fx.config())?.init(&fx.device).map_err(err)?;
    // the fixed sin-cos table the crate computes equals the reference buffer
    let table = fx.weights.get("pos_embed").cloned().ok_or("fixture lacks pos_embed")?;
    let pos_embed = model.pos_embed.as_ref().ok_or("the model lacks pos_embed")?.val();
    let pos = compare_data("pos_embed", pos_embed.into_data(), table, fx.atol, fx.rtol);
    model.load_checkpoint(&fx.weights).map_err(err)?;
    let x = fx.float::<4>("input.x")?;
    let t = fx.timesteps("input.t")?;
    let y = fx.float::<4>("input.y")?;
    let [b, one, l, c] = y.dims();
    if one != 1 {
        return Err(format!("input.y must be [B, 1, L, C], got {:?}", y.dims()));
    }
    let cond = MicroDiTCond::Caption(y.reshape([b, l, c]));
    let mut results = vec![pos, fx.compare("output.forward", model.forward(x.clone(), t.clone(), &cond).map_err(err)?)];
    if fx.has("output.forward_masked") {
        let ratio = fx.field("mask_ratio").and_then(Value::as_f64).ok_or("sidecar lacks mask_ratio")?;
        let mask = TokenMask::from_noise(fx.float("input.mask_ratio_noise")?, ratio).map_err(err)?;
        for (key, got) in [("output.ids_keep", mask.ids_keep.clone()), ("output.ids_restore", mask.ids_restore.clone())] {
            if fx.has(key) {
                results.push(compare_ints(fx, key, got));
            }
        }
        if fx.has("output.mask") {
            results.push(fx.compare("output.mask", mask.mask.clone()));
        }
        let out = model.forward_masked(x.clone(), t.clone(), &cond, &mask).map_err(err)?;
        results.push(fx.compare("output.forward_masked", out));
        if fx.has("output.mask") {
            // the same tokens given as a binary mask (kept tokens in position order)
            let given = TokenMask::from_binary(fx.float("output.mask")?).map_err(err)?;
            let out = model.forward_masked(x.clone(), t.clone(), &cond, &given).map_err(err)?;
            results.push(fx.compare("output.forward_masked", out));
        }
    }
    if fx.has("output.forward_with_cfg") {
        let scale = fx.field("cfg_scale").and_then(Value::as_f64).ok_or("sidecar lacks cfg_scale")?;
        // The reference's guided forward (zero caption embeddings as the unconditional branch,
        // all channels guided) through the crate's one guidance wrapper.
        let guided = ClassifierFreeGuidance::for_model(&model, MicroDiTNull::ZeroCaption, scale).map_err(err)?;
        results.push(fx.compare("output.forward_with_cfg", guided.denoise(x, t, &cond).map_err(err)?));
    }
    all(results)
}
