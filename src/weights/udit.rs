//! U-DiT checkpoints in the official layout (YuchuanTian/U-DiT state dicts, `.pt` or
//! `.safetensors`), in the training form and in the folded inference form.
//!
//! # Key map
//! The map serves every U-shaped model of the shell ([`ComposedDiT`]): stage `s` is the
//! official `{level}` (`encoder_level_1`, `encoder_level_2`, `latent`, `decoder_level_2`,
//! `decoder_level_1`), and its blocks `2j` and `2j + 1` are the two halves of official block
//! `j` (`attn1/mlp1/adaLN_modulation1`, then `attn2/mlp2/adaLN_modulation2`).
//!
//! | crate module path | official key |
//! |---|---|
//! | `x_embedder` | `x_embedder.proj` |
//! | `cond_embedders.{i-1}.t_embedder.linear_{1,2}` | `t_embedder_{i}.mlp.{0,2}` |
//! | `cond_embedders.{i-1}.y_embedder.embedding_table` | `y_embedder_{i}.embedding_table` |
//! | `stages.{s}.{2j+h}.conditioning.linear` | `{level}.{j}.adaLN_modulation{h+1}.1` |
//! | `stages.{s}.{2j+h}.attn.{downsampler.layer,to_qkv,to_out,logit_scale}` | `{level}.{j}.attn{h+1}.*` |
//! | `stages.{s}.{2j+h}.mlp.{project_in,dwconv,project_out}.{k}` | `{level}.{j}.mlp{h+1}.*` (training form, `rep=1`) |
//! | `resample.{0,1,2,3}.conv` | `down1_2.body.0`, `down2_3.body.0`, `up3_2.body.0`, `up2_1.body.0` |
//! | `reduce.{0,1}` | `reduce_chan_level2`, `reduce_chan_level1` |
//! | `output` | same |
//! | `final_layer.ada_ln_modulation.linear` | `final_layer.adaLN_modulation.1` |
//! | `final_layer.linear` | `final_layer.out_proj` |
//!
//! The other FFN forms map their single convs to: `project_in`, `dwconv`, `project_out`
//! ([`FfnForm::Plain`], `rep=0`); `fc1`, `fc2` ([`FfnForm::Pointwise`], `ffn_type='basic'`);
//! and, for the folded form ([`FfnForm::Fused`]), the attributes the official `eval()` fills:
//! `project_in_weight`, `project_in_bias`, `dwconv_weight`, `dwconv_bias`,
//! `project_out_weight`, `project_out_bias`.
//!
//! Released checkpoints are training-form state dicts: load them into a model built with
//! [`FfnForm::Reparam`] (the default) and call [`ComposedDiT::reparameterize`] for inference. Note
//! that the official `eval()` adds the small kernels into `dwconv.0.weight` in place, so a
//! state dict saved from an official model *after* `eval()` no longer holds the training
//! weights of that conv.

use crate::error::{Error, Result};
use crate::layers::dwconv_ffn::FfnForm;
use crate::models::ComposedDiT;
use crate::weights::format::CheckpointFormat;
use crate::weights::lazy::LazyCheckpoint;
use crate::weights::loader::KeyMap;

/// Official names of the U's stages, resamplings and skip fusions, in the shell's order.
const LEVELS: [&str; 5] = ["encoder_level_1", "encoder_level_2", "latent", "decoder_level_2", "decoder_level_1"];
const RESAMPLE: [&str; 4] = ["down1_2", "down2_3", "up3_2", "up2_1"];
const REDUCE: [&str; 2] = ["reduce_chan_level2", "reduce_chan_level1"];

/// The shell's module path in the official module tree: `stages.{s}.{i}` ->
/// `{level}.{i / 2}.sub.{i % 2}`, `cond_embedders.{k}` -> `cond_embedder_{k + 1}`,
/// `resample.{k}` / `reduce.{k}` -> their official names.
fn official_tree(path: &str) -> String {
    let seg: Vec<&str> = path.splitn(4, '.').collect();
    let index = |i: usize| seg.get(i).and_then(|s| s.parse::<usize>().ok());
    let tail = |from: usize| seg.get(from..).map(|s| s.join(".")).unwrap_or_default();
    let renamed = match (seg[0], index(1)) {
        ("stages", Some(s)) if s < LEVELS.len() => index(2).map(|i| format!("{}.{}.sub.{}.{}", LEVELS[s], i / 2, i % 2, tail(3))),
        ("cond_embedders", Some(k)) => Some(format!("cond_embedder_{}.{}", k + 1, tail(2))),
        ("resample", Some(k)) if k < RESAMPLE.len() => Some(format!("{}.{}", RESAMPLE[k], tail(2))),
        ("reduce", Some(k)) if k < REDUCE.len() => Some(format!("{}.{}", REDUCE[k], tail(2))),
        _ => None,
    };
    renamed.unwrap_or_else(|| path.to_string())
}

/// Renames shared by every FFN form (on the official module tree).
fn base_key_map() -> KeyMap {
    KeyMap::new([
        ("x_embedder", "x_embedder.proj"),
        ("cond_embedder_1.t_embedder", "t_embedder_1"),
        ("cond_embedder_1.y_embedder", "y_embedder_1"),
        ("cond_embedder_2.t_embedder", "t_embedder_2"),
        ("cond_embedder_2.y_embedder", "y_embedder_2"),
        ("cond_embedder_3.t_embedder", "t_embedder_3"),
        ("cond_embedder_3.y_embedder", "y_embedder_3"),
        ("linear_1", "mlp.0"),
        ("linear_2", "mlp.2"),
        ("sub.0.conditioning.linear", "adaLN_modulation1.1"),
        ("sub.1.conditioning.linear", "adaLN_modulation2.1"),
        ("sub.0.attn", "attn1"),
        ("sub.1.attn", "attn2"),
        ("sub.0.mlp", "mlp1"),
        ("sub.1.mlp", "mlp2"),
        ("ada_ln_modulation.linear", "adaLN_modulation.1"),
        ("conv", "body.0"),
        ("final_layer.linear", "final_layer.out_proj"),
    ])
}

const FFN_PARTS: [&str; 3] = ["project_in", "dwconv", "project_out"];

/// Position of an FFN conv in a dotted path: `(index of "mlp1"/"mlp2", part)` for
/// `...mlp{1,2}.{project_in,dwconv,project_out}.{k}...`.
fn ffn_conv(segments: &[&str]) -> Option<(usize, &'static str)> {
    segments.windows(3).enumerate().find_map(|(i, w)| {
        let part = FFN_PARTS.iter().find(|p| **p == w[1])?;
        let is_index = w[2].parse::<usize>().is_ok();
        (is_index && matches!(w[0], "mlp1" | "mlp2")).then_some((i, *part))
    })
}

/// The official key of a module path (PyTorch parameter names) for a model whose FFNs are
/// in `form`.
pub fn official_key(path: &str, form: FfnForm) -> String {
    let key = base_key_map().checkpoint_key(&official_tree(path));
    let segments: Vec<&str> = key.split('.').collect();
    let Some((i, part)) = ffn_conv(&segments) else { return key };
    let head = segments[..=i].join(".");
    let tail = &segments[i + 3..];
    match form {
        FfnForm::Reparam => key,
        FfnForm::Plain => format!("{head}.{part}.{}", tail.join(".")),
        FfnForm::Pointwise => {
            let fc = if part == "project_in" { "fc1" } else { "fc2" };
            format!("{head}.{fc}.{}", tail.join("."))
        }
        // single convs: the index is always 0
        FfnForm::Fused => format!("{head}.{part}_{}", tail.join("_")),
    }
}

/// Whether `key` is a training-form FFN tensor (`mlp{1,2}.{project_in,dwconv,project_out}.{k}`).
fn is_training_ffn_key(key: &str) -> bool {
    ffn_conv(&key.split('.').collect::<Vec<_>>()).is_some()
}

/// Whether `key` is a folded FFN tensor (`mlp{1,2}.{project_in,dwconv,project_out}_{weight,bias}`).
fn is_fused_ffn_key(key: &str) -> bool {
    key.split('.').collect::<Vec<_>>().windows(2).any(|w| {
        matches!(w[0], "mlp1" | "mlp2")
            && FFN_PARTS.iter().any(|p| w[1] == format!("{p}_weight") || w[1] == format!("{p}_bias"))
    })
}

/// The official layout for a model whose FFNs are in `form`: U-DiT's [`CheckpointFormat`].
///
/// A folded model ([`FfnForm::Fused`], e.g. after [`ComposedDiT::reparameterize`]) expects the folded
/// FFN tensors (`...mlp1.project_in_weight`, ...); training-form FFN tensors next to them (an
/// eval-mode PyTorch state dict still holds them) are ignored, and a checkpoint with only the
/// training form is refused with a hint (load it into a [`FfnForm::Reparam`] model and
/// reparameterize instead).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UDiTOfficial {
    /// The FFN form of the model the checkpoint is for.
    pub form: FfnForm,
}

impl CheckpointFormat<ComposedDiT> for UDiTOfficial {
    fn key(&self, module_path: &str) -> String {
        official_key(module_path, self.form)
    }

    fn prepare(&self, _model: &ComposedDiT, ck: &mut LazyCheckpoint<'_>) -> Result<()> {
        if self.form != FfnForm::Fused {
            return Ok(());
        }
        if !ck.keys().any(is_fused_ffn_key) && ck.keys().any(is_training_ffn_key) {
            return Err(Error::InvalidArgument(
                "this U-DiT checkpoint holds the training-form FFN (re-parametrisation branches); \
                 load it into a model built with FfnForm::Reparam and call reparameterize()"
                    .into(),
            ));
        }
        let drop: Vec<String> = ck.keys().filter(|k| is_training_ffn_key(k)).map(str::to_string).collect();
        for k in drop {
            ck.remove(&k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::dwconv_ffn::test_support::{Randomize, uniform};
    use crate::models::UDiTConfig;
    use crate::weights::LoadWeights;
    use burn::prelude::*;
    use burn::tensor::Tolerance;

    fn tiny(form: FfnForm) -> UDiTConfig {
        UDiTConfig::new()
            .with_input_size(8)
            .with_hidden_size(8)
            .with_num_heads(2)
            .with_depth(vec![1, 1, 1, 1, 1])
            .with_mlp_ratio(2.0)
            .with_num_classes(3)
            .with_ffn(form)
    }

    #[test]
    fn official_names() {
        let r = FfnForm::Reparam;
        assert_eq!(official_key("x_embedder.weight", r), "x_embedder.proj.weight");
        assert_eq!(official_key("cond_embedders.1.t_embedder.linear_1.bias", r), "t_embedder_2.mlp.0.bias");
        assert_eq!(official_key("stages.2.7.conditioning.linear.weight", r), "latent.3.adaLN_modulation2.1.weight");
        assert_eq!(official_key("final_layer.ada_ln_modulation.linear.bias", r), "final_layer.adaLN_modulation.1.bias");
        assert_eq!(official_key("final_layer.linear.weight", r), "final_layer.out_proj.weight");
        assert_eq!(official_key("resample.2.conv.weight", r), "up3_2.body.0.weight");
        assert_eq!(
            official_key("stages.0.0.attn.downsampler.layer.weight", r),
            "encoder_level_1.0.attn1.downsampler.layer.weight"
        );
        assert_eq!(official_key("stages.2.3.mlp.dwconv.2.bias", r), "latent.1.mlp2.dwconv.2.bias");
        assert_eq!(official_key("stages.2.3.mlp.dwconv.0.bias", FfnForm::Plain), "latent.1.mlp2.dwconv.bias");
        assert_eq!(official_key("stages.2.2.mlp.project_out.0.weight", FfnForm::Pointwise), "latent.1.mlp1.fc2.weight");
        assert_eq!(
            official_key("stages.2.2.mlp.project_in.0.weight", FfnForm::Fused),
            "latent.1.mlp1.project_in_weight"
        );
        assert_eq!(official_key("stages.2.2.mlp.dwconv.0.bias", FfnForm::Fused), "latent.1.mlp1.dwconv_bias");
        assert_eq!(official_key("reduce.0.weight", r), "reduce_chan_level2.weight");
        assert_eq!(official_key("output.bias", r), "output.bias");
        assert!(is_training_ffn_key("latent.1.mlp1.dwconv.0.bias"));
        assert!(!is_training_ffn_key("latent.1.mlp1.dwconv_bias"));
        assert!(is_fused_ffn_key("latent.1.mlp1.dwconv_bias"));
    }

    #[test]
    fn round_trips_in_every_form() {
        let device = Device::flex();
        let x = uniform([1, 4, 8, 8], 1, &device);
        let t = Tensor::<1>::from_floats([30.0], &device);
        let y = Some(Tensor::<1, Int>::from_ints([2], &device));
        for form in [FfnForm::Reparam, FfnForm::Plain, FfnForm::Pointwise, FfnForm::Fused] {
            let cfg = tiny(form);
            let a = cfg.init(&device).unwrap().map(&mut Randomize::seeded(1));
            let ck = a.to_checkpoint().unwrap();
            let elements: usize = ck.tensors().values().map(|d| d.num_elements()).sum();
            assert_eq!(elements, a.num_params());
            let mut b = cfg.init(&device).unwrap();
            b.load_checkpoint(&ck).unwrap();
            let (oa, ob) = (
                a.forward(x.clone(), t.clone(), y.clone()).unwrap(),
                b.forward(x.clone(), t.clone(), y.clone()).unwrap(),
            );
            ob.into_data().assert_approx_eq::<f32>(&oa.into_data(), Tolerance::absolute(0.0));
        }
    }

    #[test]
    fn fused_checkpoints_load_into_folded_models() {
        let device = Device::flex();
        let train = tiny(FfnForm::Reparam).init(&device).unwrap().map(&mut Randomize::seeded(2));
        let fused = train.reparameterize();
        // an eval-mode state dict: training tensors plus the folded ones
        let mut ck = train.to_checkpoint().unwrap();
        for (k, v) in fused.to_checkpoint().unwrap().into_tensors() {
            ck.insert(k, v);
        }
        let mut target = tiny(FfnForm::Fused).init(&device).unwrap();
        target.load_checkpoint(&ck).unwrap();
        let x = uniform([1, 4, 8, 8], 3, &device);
        let t = Tensor::<1>::from_floats([500.0], &device);
        let y = Some(Tensor::<1, Int>::from_ints([0], &device));
        let want = train.forward(x.clone(), t.clone(), y.clone()).unwrap();
        target
            .forward(x, t, y)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-4));
        // a training-only checkpoint is refused by a folded model, with a hint
        let mut folded = tiny(FfnForm::Fused).init(&device).unwrap();
        let e = folded.load_checkpoint(&train.to_checkpoint().unwrap()).unwrap_err().to_string();
        assert!(e.contains("reparameterize"), "{e}");
    }

    #[test]
    fn mismatches_list_every_key_and_leave_the_model_unchanged() {
        let device = Device::flex();
        let a = tiny(FfnForm::Reparam).init(&device).unwrap().map(&mut Randomize::seeded(3));
        let mut ck = a.to_checkpoint().unwrap();
        ck.remove("latent.0.attn1.logit_scale");
        ck.remove("up2_1.body.0.weight");
        ck.insert("extra.weight", TensorData::new(vec![0f32; 2], [2]));
        let wrong =
            tiny(FfnForm::Reparam).with_hidden_size(16).init(&device).unwrap().to_checkpoint().unwrap();
        ck.insert("output.bias", wrong.get("output.bias").unwrap().clone());
        let mut b = tiny(FfnForm::Reparam).init(&device).unwrap();
        let bias = |m: &ComposedDiT| m.output.as_ref().unwrap().bias.as_ref().unwrap().val().into_data();
        let before = bias(&b);
        let e = b.load_checkpoint(&ck).unwrap_err().to_string();
        for k in ["latent.0.attn1.logit_scale", "up2_1.body.0.weight", "extra.weight", "output.bias"] {
            assert!(e.contains(k), "{e}");
        }
        bias(&b).assert_approx_eq::<f32>(&before, Tolerance::absolute(0.0));
    }
}
