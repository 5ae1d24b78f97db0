//! Kind `udit_official`: YuchuanTian/U-DiT `U_DiT_custom(**config)` in training mode
//! (re-parametrisation branches active), in eval mode (folded FFN) and `forward_with_cfg`.

use diffusion_transformers::layers::{AttentionScore, FfnForm};
use diffusion_transformers::models::{UDiT, UDiTConfig};
use diffusion_transformers::weights::Checkpoint;
use serde_json::Value;

use crate::common::{Fixture, Outcome, all, cfg_bool, cfg_f64, cfg_usize, compare_data, err};
use diffusion_transformers::weights::LoadWeights;

/// Parameters of the model's `output` conv, whose keys collide with the fixture's `output.*`
/// data prefix.
const OUTPUT_CONV_KEYS: [&str; 2] = ["output.weight", "output.bias"];

/// Names the reference gives the folded FFN tensors in eval mode.
const FUSED_ATTRS: [&str; 6] =
    ["project_in_weight", "project_in_bias", "dwconv_weight", "dwconv_bias", "project_out_weight", "project_out_bias"];

fn usize_list(cfg: &Value, key: &str) -> Result<Vec<usize>, String> {
    match cfg.get(key) {
        Some(Value::Array(a)) => {
            a.iter().map(|v| v.as_u64().map(|v| v as usize).ok_or(format!("`{key}` has a non-integer entry"))).collect()
        }
        Some(v) => v.as_u64().map(|v| vec![v as usize; 5]).ok_or(format!("`{key}` must be an integer or a list")),
        None => Err(format!("config lacks `{key}`")),
    }
}

fn flag(cfg: &Value, key: &str, default: bool) -> Result<bool, String> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => v.as_u64().map(|v| v != 0).ok_or(format!("`{key}` must be a bool or an integer")),
    }
}

fn config(cfg: &Value) -> Result<UDiTConfig, String> {
    let kernel = match cfg.get("downsampler").and_then(Value::as_str) {
        Some(s) if s.starts_with("dwconv") => s["dwconv".len()..].parse::<usize>().map_err(err)?,
        other => return Err(format!("unsupported downsampler {other:?}")),
    };
    let score = match cfg.get("attn_type") {
        None | Some(Value::Null) => AttentionScore::DotProduct,
        Some(v) if v.as_str() == Some("v2") => AttentionScore::Cosine,
        Some(v) => return Err(format!("unsupported attn_type {v}")),
    };
    let rope = match cfg.get("posemb_type") {
        None | Some(Value::Null) => false,
        Some(v) if v.as_str() == Some("rope2d") => true,
        Some(v) => return Err(format!("unsupported posemb_type {v}")),
    };
    let ffn = match cfg.get("ffn_type").and_then(Value::as_str).unwrap_or("rep") {
        "rep" if flag(cfg, "rep", true)? => FfnForm::Reparam,
        "rep" => FfnForm::Plain,
        "basic" => FfnForm::Pointwise,
        other => return Err(format!("unsupported ffn_type {other}")),
    };
    Ok(UDiTConfig::new()
        .with_input_size(cfg_usize(cfg, "input_size")?)
        .with_in_channels(cfg.get("in_channels").and_then(Value::as_u64).map_or(4, |v| v as usize))
        .with_hidden_size(cfg_usize(cfg, "hidden_size")?)
        .with_depth(usize_list(cfg, "depth")?)
        .with_num_heads(cfg_usize(cfg, "num_heads")?)
        .with_mlp_ratio(cfg_f64(cfg, "mlp_ratio")?)
        .with_class_dropout_prob(cfg_f64(cfg, "class_dropout_prob")?)
        .with_num_classes(cfg_usize(cfg, "num_classes")?)
        .with_learn_sigma(cfg_bool(cfg, "learn_sigma")?)
        .with_down_factor(usize_list(cfg, "down_factor")?)
        .with_downsampler_kernel(kernel)
        .with_down_shortcut(flag(cfg, "down_shortcut", false)?)
        .with_attention_score(score)
        .with_rope(rope)
        .with_ffn(ffn))
}

/// The training-mode state dict (with the `output` conv put back) and the eval-only tensors.
fn checkpoints(fx: &Fixture) -> (Checkpoint, Checkpoint) {
    let mut train = fx.weights.clone();
    for key in OUTPUT_CONV_KEYS {
        if let Ok(d) = fx.raw(key) {
            train.insert(key, d);
        }
    }
    let mut eval_only = Checkpoint::new();
    for (k, v) in &fx.data {
        if let Some(rest) = k.strip_prefix("eval_state.") {
            eval_only.insert(rest, v.clone());
        }
    }
    (train, eval_only)
}

pub fn official(fx: &Fixture) -> Outcome {
    let cfg = config(fx.config())?;
    let (train_ck, eval_only) = checkpoints(fx);
    let mut model: UDiT = cfg.init(&fx.device).map_err(err)?;
    model.load_checkpoint(&train_ck).map_err(err)?;
    let official_params: usize = train_ck.tensors().values().map(|d| d.num_elements()).sum();
    if cfg.num_params() != official_params {
        return Err(format!("num_params() {} != the official state dict's {official_params}", cfg.num_params()));
    }
    let x = fx.float::<4>("input.x")?;
    let t = fx.timesteps("input.t")?;
    let y = fx.int::<1>("input.y")?;
    let mut results =
        vec![fx.compare("output.forward_train", model.forward(x.clone(), t.clone(), Some(y.clone())).map_err(err)?)];

    let fused = model.reparameterize();
    if fx.has("output.forward_eval") {
        results.push(
            fx.compare("output.forward_eval", fused.forward(x.clone(), t.clone(), Some(y.clone())).map_err(err)?),
        );
    }
    if !eval_only.is_empty() && cfg.ffn == FfnForm::Reparam {
        // our folded weights against the reference's, then the folded checkpoint on its own
        let ours = fused.to_checkpoint().map_err(err)?;
        for (key, reference) in eval_only.tensors() {
            match ours.get(key) {
                Some(got) => results.push(compare_data(key, got.clone(), reference.clone(), fx.atol, fx.rtol)),
                None if FUSED_ATTRS.iter().any(|a| key.ends_with(a)) => {
                    results.push(Err(format!("folded tensor `{key}` has no counterpart in the model")))
                }
                None => {} // eval-time buffers that are not parameters
            }
        }
        let mut eval_ck = train_ck.clone();
        for (k, v) in eval_only.tensors() {
            if ours.contains(k) {
                eval_ck.insert(k.clone(), v.clone());
            }
        }
        let mut loaded = cfg.clone().with_ffn(FfnForm::Fused).init(&fx.device).map_err(err)?;
        loaded.load_checkpoint(&eval_ck).map_err(err)?;
        if fx.has("output.forward_eval") {
            results.push(fx.compare("output.forward_eval", loaded.forward(x, t, Some(y)).map_err(err)?));
        }
    }
    if fx.has("output.forward_with_cfg_eval") {
        let scale = fx.field("cfg_scale").and_then(Value::as_f64).ok_or("sidecar lacks cfg_scale")?;
        let channels = fx.field("cfg_channels").and_then(Value::as_u64).unwrap_or(3) as usize;
        let out = fused
            .forward_with_cfg(
                fx.float("input.cfg_x")?,
                fx.timesteps("input.cfg_t")?,
                fx.int("input.cfg_y")?,
                scale,
                channels,
            )
            .map_err(err)?;
        results.push(fx.compare("output.forward_with_cfg_eval", out));
    }
    all(results)
}
