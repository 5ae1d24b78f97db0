//! U-DiT checkpoints in the official layout (YuchuanTian/U-DiT state dicts, `.pt` or
//! `.safetensors`), in the training form and in the folded inference form.
//!
//! # Key map
//! | crate module path | official key |
//! |---|---|
//! | `x_embedder` | `x_embedder.proj` |
//! | `cond_embedder_{i}.t_embedder.linear_{1,2}` | `t_embedder_{i}.mlp.{0,2}` |
//! | `cond_embedder_{i}.y_embedder.embedding_table` | `y_embedder_{i}.embedding_table` |
//! | `{level}.{j}.sub.{0,1}.conditioning.linear` | `{level}.{j}.adaLN_modulation{1,2}.1` |
//! | `{level}.{j}.sub.{0,1}.attn.{downsampler.layer,to_qkv,to_out,logit_scale}` | `{level}.{j}.attn{1,2}.*` |
//! | `{level}.{j}.sub.{0,1}.mlp.{project_in,dwconv,project_out}.{k}` | `{level}.{j}.mlp{1,2}.*` (training form, `rep=1`) |
//! | `down1_2.conv`, `up3_2.conv`, ... | `down1_2.body.0`, `up3_2.body.0`, ... |
//! | `reduce_chan_level{1,2}`, `output` | same |
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
//! [`FfnForm::Reparam`] (the default) and call [`UDiT::reparameterize`] for inference. Note
//! that the official `eval()` adds the small kernels into `dwconv.0.weight` in place, so a
//! state dict saved from an official model *after* `eval()` no longer holds the training
//! weights of that conv.

use crate::error::{Error, Result};
use crate::layers::dwconv_ffn::FfnForm;
use crate::models::UDiT;
use crate::weights::format::{CheckpointFormat, LoadWeights};
use crate::weights::lazy::LazyCheckpoint;
use crate::weights::loader::KeyMap;

/// Renames shared by every FFN form.
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
    let key = base_key_map().checkpoint_key(path);
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
/// A folded model ([`FfnForm::Fused`], e.g. after [`UDiT::reparameterize`]) expects the folded
/// FFN tensors (`...mlp1.project_in_weight`, ...); training-form FFN tensors next to them (an
/// eval-mode PyTorch state dict still holds them) are ignored, and a checkpoint with only the
/// training form is refused with a hint (load it into a [`FfnForm::Reparam`] model and
/// reparameterize instead).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UDiTOfficial {
    /// The FFN form of the model the checkpoint is for.
    pub form: FfnForm,
}

impl CheckpointFormat<UDiT> for UDiTOfficial {
    fn key(&self, module_path: &str) -> String {
        official_key(module_path, self.form)
    }

    fn prepare(&self, _model: &UDiT, ck: &mut LazyCheckpoint<'_>) -> Result<()> {
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

/// U-DiT loads and exports the official layout of the model's current FFN form.
impl LoadWeights for UDiT {
    type Format = UDiTOfficial;

    fn format_of(&self, _checkpoint: &LazyCheckpoint<'_>) -> UDiTOfficial {
        UDiTOfficial { form: self.ffn_form }
    }

    fn export_format(&self) -> UDiTOfficial {
        UDiTOfficial { form: self.ffn_form }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::dwconv_ffn::test_support::{Randomize, uniform};
    use crate::models::UDiTConfig;
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
        assert_eq!(official_key("cond_embedder_2.t_embedder.linear_1.bias", r), "t_embedder_2.mlp.0.bias");
        assert_eq!(official_key("latent.3.sub.1.conditioning.linear.weight", r), "latent.3.adaLN_modulation2.1.weight");
        assert_eq!(official_key("final_layer.ada_ln_modulation.linear.bias", r), "final_layer.adaLN_modulation.1.bias");
        assert_eq!(official_key("final_layer.linear.weight", r), "final_layer.out_proj.weight");
        assert_eq!(official_key("up3_2.conv.weight", r), "up3_2.body.0.weight");
        assert_eq!(
            official_key("encoder_level_1.0.sub.0.attn.downsampler.layer.weight", r),
            "encoder_level_1.0.attn1.downsampler.layer.weight"
        );
        assert_eq!(official_key("latent.1.sub.1.mlp.dwconv.2.bias", r), "latent.1.mlp2.dwconv.2.bias");
        assert_eq!(official_key("latent.1.sub.1.mlp.dwconv.0.bias", FfnForm::Plain), "latent.1.mlp2.dwconv.bias");
        assert_eq!(official_key("latent.1.sub.0.mlp.project_out.0.weight", FfnForm::Pointwise), "latent.1.mlp1.fc2.weight");
        assert_eq!(
            official_key("latent.1.sub.0.mlp.project_in.0.weight", FfnForm::Fused),
            "latent.1.mlp1.project_in_weight"
        );
        assert_eq!(official_key("latent.1.sub.0.mlp.dwconv.0.bias", FfnForm::Fused), "latent.1.mlp1.dwconv_bias");
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
        let before = b.output.bias.as_ref().unwrap().val().into_data();
        let e = b.load_checkpoint(&ck).unwrap_err().to_string();
        for k in ["latent.0.attn1.logit_scale", "up2_1.body.0.weight", "extra.weight", "output.bias"] {
            assert!(e.contains(k), "{e}");
        }
        b.output.bias.as_ref().unwrap().val().into_data().assert_approx_eq::<f32>(&before, Tolerance::absolute(0.0));
    }
}
