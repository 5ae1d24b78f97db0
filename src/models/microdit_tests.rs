//! Tests of the MicroDiT model, compiled only under `#[cfg(test)]` (declared in `microdit.rs`);
//! the config and conditioning tests sit in their own files.

use super::*;
use crate::layers::patch_embed::patchify;
use crate::models::DiTConfig;
use crate::contracts::GuidedChannels;
use crate::sampling::ClassifierFreeGuidance;
use crate::weights::{Checkpoint, LoadWeights};
use burn::tensor::Tolerance;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn tiny(backbone: MicroDiTBackbone) -> MicroDiTConfig {
    MicroDiTConfig::new()
        .with_input_size(8)
        .with_dim(32)
        .with_depth(4)
        .with_head_dim(8)
        .with_multiple_of(16)
        .with_caption_channels(12)
        .with_patch_mixer_depth(2)
        .with_patch_mixer_dim(16)
        .with_patch_mixer_mlp_ratio(4.0)
        .with_num_experts(4)
        .with_expert_capacity(2.0)
        .with_num_classes(5)
        .with_backbone(backbone)
        .with_layerwise_scaling([0.5, 1.0], [0.5, 4.0])
}

fn randn<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// The model with every weight (adaLN and final layers included) set to deterministic
/// non-zero values, so that every path contributes to the output.
fn randomized(model: MicroDiT) -> MicroDiT {
    let ck = model.to_checkpoint().unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    let mut out = Checkpoint::new();
    for (k, v) in ck.tensors() {
        if k == "pos_embed" {
            out.insert(k.clone(), v.clone());
            continue;
        }
        let n: usize = v.shape().iter().product();
        let vals: Vec<f32> = (0..n).map(|_| (rng.random::<f32>() - 0.5) * 0.6).collect();
        out.insert(k.clone(), TensorData::new(vals, v.shape().to_vec()));
    }
    let mut model = model;
    model.load_checkpoint(&out).unwrap();
    model
}

fn captions(b: usize, device: &Device) -> MicroDiTCond {
    MicroDiTCond::Caption(randn([b, 3, 12], 5, device))
}

#[test]
fn analytic_params_match_module() {
    let device = Device::flex();
    for backbone in [MicroDiTBackbone::MicroDiT, MicroDiTBackbone::DiT] {
        for (mixer_dim, bias, mixer) in [(16, false, true), (32, true, true), (16, true, false)] {
            let cfg = tiny(backbone).with_patch_mixer_dim(mixer_dim).with_use_bias(bias).with_use_patch_mixer(mixer);
            let cfg = if backbone == MicroDiTBackbone::DiT { cfg.with_learn_sigma(bias) } else { cfg };
            let m = cfg.init(&device).unwrap();
            assert_eq!(m.num_params(), cfg.num_params() + cfg.num_buffer_elements(), "{backbone:?} {mixer_dim} {bias}");
            // active: each MoE layer counts `capacity` of its experts
            let moe_blocks: usize = m.stages[0].iter().chain(&m.patch_mixer).map(|b| match &b.mlp {
                crate::blocks::parts::FeedForwardPart::Moe(e) => e.w1.num_params() + e.w2.num_params(),
                _ => 0,
            }).sum();
            let expected = cfg.num_params() as f64 - moe_blocks as f64 * (1.0 - 2.0 / 4.0);
            assert_eq!(cfg.num_active_params(), expected.round() as usize);
        }
    }
}

#[test]
fn layerwise_widths_follow_the_formula() {
    let xl = MicroDiTConfig::preset(MicroDiTSize::XL);
    for i in 0..28 {
        let (q, f) = (0.5 + i as f64 * 0.5 / 27.0, 0.5 + i as f64 * 3.5 / 27.0);
        let b = xl.block_config(i).unwrap();
        let want_q = if i == 27 { 1024 } else { 128 * ((1024.0 * q) as usize).div_ceil(128) };
        assert_eq!(b.qkv_hidden(), want_q, "block {i}");
        assert_eq!(b.num_heads(), want_q / 64);
        let h = (1024.0 * if i == 27 { 4.0 } else { f }) as usize;
        let want_f = if b.moe { 256 * h.div_ceil(256) } else { 256 * ((2 * h) / 3).div_ceil(256) };
        assert_eq!(b.ffn_hidden(), want_f, "block {i}");
    }
    // module shapes follow the configs
    let device = Device::flex();
    let cfg = tiny(MicroDiTBackbone::MicroDiT);
    let m = cfg.init(&device).unwrap();
    let attn = |block: &crate::blocks::Block| match &block.attn {
        crate::blocks::parts::AttentionPart::MultiHead(a) => a.clone(),
        _ => panic!("multi-head attention"),
    };
    for (i, block) in m.stages[0].iter().enumerate() {
        let b = cfg.block_config(i).unwrap();
        assert_eq!(attn(block).qkv.weight.dims(), [32, 3 * b.qkv_hidden()]);
        assert_eq!(attn(block).n_heads, b.num_heads());
        assert_eq!(block.num_params(), b.block_config().num_params());
    }
    assert_eq!(attn(&m.stages[0][0]).qkv.weight.dims(), [32, 48]);
    assert_eq!(attn(&m.stages[0][3]).qkv.weight.dims(), [32, 96]);
}

#[test]
fn moe_placement() {
    let cfg = MicroDiTConfig::preset(MicroDiTSize::XL);
    let backbone = cfg.backbone_moe_blocks();
    assert_eq!(backbone.iter().filter(|m| **m).count(), 13); // blocks 1, 3, ..., 25; never 27
    assert!(backbone[1] && !backbone[0] && !backbone[27] && backbone[25]);
    assert_eq!(cfg.mixer_moe_blocks(), vec![false, true, false, true, false, true]);
    let none = cfg.clone().with_experts_every_n(0);
    assert!(none.backbone_moe_blocks().iter().chain(&none.mixer_moe_blocks()).all(|m| !m));
    let device = Device::flex();
    let m = tiny(MicroDiTBackbone::MicroDiT).init(&device).unwrap();
    let is_moe = |b: &crate::blocks::Block| matches!(b.mlp, crate::blocks::parts::FeedForwardPart::Moe(_));
    assert_eq!(m.stages[0].iter().map(is_moe).collect::<Vec<_>>(), vec![false, true, false, false]);
    assert_eq!(m.patch_mixer.iter().map(is_moe).collect::<Vec<_>>(), vec![false, true]);
}

#[test]
fn invalid_configs_are_errors() {
    let device = Device::flex();
    let base = || tiny(MicroDiTBackbone::MicroDiT);
    assert!(base().with_head_dim(12).init(&device).is_err()); // 32 % 12
    assert!(base().with_patch_mixer_dim(20).init(&device).is_err()); // 20 % 8
    assert!(base().with_input_size(9).init(&device).is_err());
    assert!(base().with_train_mask_ratio(1.0).init(&device).is_err());
    assert!(base().with_train_mask_ratio(-0.5).init(&device).is_err());
    // capacity 0.25 with 4 experts: int(0.25 * 16 / 4) = 1 token unmasked, 0 at ratio 0.75
    assert!(base().with_expert_capacity(0.25).init(&device).is_ok());
    assert!(base().with_expert_capacity(0.25).with_train_mask_ratio(0.75).init(&device).is_err());
    assert!(base().with_expert_capacity(5.0).init(&device).is_err());
    assert!(base().with_qkv_multipliers(vec![1.0, 1.0, 1.0]).with_ffn_multipliers(vec![4.0; 3]).init(&device).is_err());
    assert!(base().with_qkv_multipliers(vec![1.0, 0.5]).with_ffn_multipliers(vec![4.0]).init(&device).is_err());
    assert!(base().with_learn_sigma(true).init(&device).is_err());
    assert!(tiny(MicroDiTBackbone::DiT).with_num_classes(0).init(&device).is_err());
    // two multipliers over four blocks: each repeated twice
    let split = base().with_qkv_multipliers(vec![0.5, 1.0]).with_ffn_multipliers(vec![1.0, 2.0]);
    assert_eq!(split.block_ratios().unwrap(), vec![(0.5, 1.0), (0.5, 1.0), (1.0, 2.0), (1.0, 2.0)]);
}

#[test]
fn masked_forward_fills_removed_patches() {
    let device = Device::flex();
    let mut m = randomized(tiny(MicroDiTBackbone::MicroDiT).init(&device).unwrap());
    m.shell.mask_token = Some(crate::layers::init::frozen_param(Tensor::full([1, 1, 16], 0.7, &device)));
    let x = randn([2, 4, 8, 8], 1, &device);
    let t = Tensor::<1>::from_floats([0.3, -1.2], &device);
    let cond = captions(2, &device);
    let mask = TokenMask::random(2, 16, 0.75, &mut StdRng::seed_from_u64(0), &device).unwrap();
    assert_eq!(mask.num_kept(), 4);
    let out = m.forward_masked(x.clone(), t.clone(), &cond, &mask).unwrap();
    let tokens = patchify(out, 2); // [B, N, p*p*C]
    let removed = mask.mask.clone().bool().unsqueeze_dim::<3>(2).expand([2, 16, 16]);
    let at_removed = tokens.clone().mask_fill(removed.clone().bool_not(), 0.7);
    assert!(at_removed.equal_elem(0.7).all().into_scalar::<bool>());
    // the kept patches carry real predictions
    let at_kept = tokens.mask_fill(removed, 0.7);
    assert!(!at_kept.equal_elem(0.7).all().into_scalar::<bool>());
    // a wrong-sized mask is an error
    let other = TokenMask::random(2, 9, 0.5, &mut StdRng::seed_from_u64(0), &device).unwrap();
    assert!(m.forward_masked(x, t, &cond, &other).is_err());
}

#[test]
fn deferred_masking_lets_kept_tokens_see_removed_ones() {
    let device = Device::flex();
    let x = randn([1, 4, 8, 8], 2, &device);
    // change only pixels of token 0, which the mask removes
    let bump = Tensor::<4>::zeros([1, 4, 8, 8], &device).slice_fill([0..1, 0..4, 0..2, 0..2], 3.0);
    let t = Tensor::<1>::from_floats([0.5], &device);
    let cond = captions(1, &device);
    let mut bits = vec![1.0f32; 16];
    for i in [3, 6, 9, 12] {
        bits[i] = 0.0;
    }
    let mask = TokenMask::from_binary(Tensor::from_data(TensorData::new(bits, [1, 16]), &device)).unwrap();
    for (mode, sees) in [(MaskingMode::Deferred, true), (MaskingMode::Naive, false)] {
        let m = randomized(tiny(MicroDiTBackbone::MicroDiT).with_masking(mode).init(&device).unwrap());
        let a = m.forward_masked(x.clone(), t.clone(), &cond, &mask).unwrap();
        let b = m.forward_masked(x.clone() + bump.clone(), t.clone(), &cond, &mask).unwrap();
        let diff = (a - b).abs().max().into_scalar::<f32>();
        // naive: the removed token never enters the network, so nothing changes at all
        assert!(if sees { diff > 1e-6 } else { diff == 0.0 }, "{mode:?}: {diff}");
    }
    // without a patch-mixer both modes are the same model
    let cfg = tiny(MicroDiTBackbone::MicroDiT).with_use_patch_mixer(false);
    let d = randomized(cfg.clone().init(&device).unwrap());
    let mut n = randomized(cfg.with_masking(MaskingMode::Naive).init(&device).unwrap());
    n.load_checkpoint(&d.to_checkpoint().unwrap()).unwrap();
    let a = d.forward_masked(x.clone(), t.clone(), &cond, &mask).unwrap();
    let b = n.forward_masked(x, t, &cond, &mask).unwrap();
    a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-6));
}

#[test]
fn seeded_masks_and_the_unmasked_switch() {
    let device = Device::flex();
    let m = randomized(tiny(MicroDiTBackbone::MicroDiT).init(&device).unwrap());
    let x = randn([2, 4, 8, 8], 3, &device);
    let t = Tensor::<1>::from_floats([0.1, 0.9], &device);
    let cond = captions(2, &device);
    let a = m.forward_with_mask_ratio(x.clone(), t.clone(), &cond, 0.5, &mut StdRng::seed_from_u64(9)).unwrap();
    let b = m.forward_with_mask_ratio(x.clone(), t.clone(), &cond, 0.5, &mut StdRng::seed_from_u64(9)).unwrap();
    assert_eq!(a.mask.as_ref().unwrap().num_kept(), 8);
    a.sample.into_data().assert_approx_eq::<f32>(&b.sample.into_data(), Tolerance::absolute(0.0));
    let unmasked = m.forward_with_mask_ratio(x.clone(), t.clone(), &cond, 0.0, &mut StdRng::seed_from_u64(9)).unwrap();
    assert!(unmasked.mask.is_none());
    let full = m.forward(x.clone(), t.clone(), &cond).unwrap();
    unmasked.sample.into_data().assert_approx_eq::<f32>(&full.into_data(), Tolerance::absolute(0.0));
    // training forward: masked at the train ratio, then the unmasked fine-tuning switch
    let m = m.with_train_mask_ratio(0.75).unwrap();
    let out = m.forward_train(x.clone(), t.clone(), &cond, &mut StdRng::seed_from_u64(1)).unwrap();
    assert_eq!(out.mask.unwrap().num_kept(), 4);
    let m = m.unmasked_finetuning();
    assert!(m.forward_train(x, t, &cond, &mut StdRng::seed_from_u64(1)).unwrap().mask.is_none());
    assert!(m.with_train_mask_ratio(1.0).is_err());
}

#[test]
fn cfg_combines_zero_caption_branch_on_all_channels() {
    let device = Device::flex();
    let m = randomized(tiny(MicroDiTBackbone::MicroDiT).init(&device).unwrap());
    let x = randn([2, 4, 8, 8], 4, &device);
    let t = Tensor::<1>::from_floats([0.2, 0.6], &device);
    let cond = captions(2, &device);
    let MicroDiTCond::Caption(y) = &cond else { unreachable!() };
    let c = m.forward(x.clone(), t.clone(), &cond).unwrap();
    let u = m.forward(x.clone(), t.clone(), &MicroDiTCond::Caption(y.zeros_like())).unwrap();
    let want = u.clone() + (c - u) * 3.0;
    let guided = ClassifierFreeGuidance::for_model(&m, MicroDiTNull::ZeroCaption, 3.0).unwrap();
    let got = guided.denoise(x.clone(), t, &cond).unwrap();
    got.into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
    // class labels: the null class is the unconditional branch
    let d = randomized(tiny(MicroDiTBackbone::DiT).init(&device).unwrap());
    let y = Tensor::<1, Int>::from_ints([1, 4], &device);
    let tt = Tensor::<1>::from_floats([10.0, 10.0], &device);
    let c = d.forward(x.clone(), tt.clone(), &MicroDiTCond::Labels(y.clone())).unwrap();
    let u = d.forward(x.clone(), tt.clone(), &MicroDiTCond::Labels(Tensor::from_ints([5, 5], &device))).unwrap();
    let want = u.clone() + (c - u) * 1.5;
    let guided = ClassifierFreeGuidance::for_model(&d, MicroDiTNull::Label(5), 1.5).unwrap();
    let got = guided.denoise(x.clone(), tt.clone(), &MicroDiTCond::Labels(y.clone())).unwrap();
    got.into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
    // nulls the model does not have are rejected at construction
    assert!(ClassifierFreeGuidance::for_model(&d, MicroDiTNull::ZeroCaption, 1.5).is_err());
    assert!(ClassifierFreeGuidance::for_model(&d, MicroDiTNull::Label(4), 1.5).is_err());
    assert!(ClassifierFreeGuidance::for_model(&m, MicroDiTNull::Label(5), 1.5).is_err());
    assert!(ClassifierFreeGuidance::for_model(&m, MicroDiTNull::Caption(Tensor::zeros([1, 3, 11], &device)), 1.5).is_err());
    assert!(ClassifierFreeGuidance::for_model(&m, MicroDiTNull::Caption(Tensor::zeros([1, 3, 12], &device)), 1.5).is_ok());
    let no_null = tiny(MicroDiTBackbone::DiT).with_cond_dropout_prob(0.0).init(&device).unwrap();
    assert!(ClassifierFreeGuidance::for_model(&no_null, MicroDiTNull::Label(5), 1.5).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    let device = Device::flex();
    let m = tiny(MicroDiTBackbone::MicroDiT).init(&device).unwrap();
    let t = Tensor::<1>::zeros([2], &device);
    let cond = captions(2, &device);
    let x = Tensor::<4>::zeros([2, 4, 8, 8], &device);
    assert!(m.forward(Tensor::zeros([2, 3, 8, 8], &device), t.clone(), &cond).is_err());
    assert!(m.forward(Tensor::zeros([2, 4, 6, 6], &device), t.clone(), &cond).is_err());
    assert!(m.forward(x.clone(), Tensor::zeros([3], &device), &cond).is_err());
    assert!(m.forward(x.clone(), t.clone(), &MicroDiTCond::Caption(Tensor::zeros([2, 3, 11], &device))).is_err());
    assert!(m.forward(x.clone(), t.clone(), &MicroDiTCond::Caption(Tensor::zeros([1, 3, 12], &device))).is_err());
    assert!(m.forward(x.clone(), t.clone(), &MicroDiTCond::Labels(Tensor::from_ints([0, 1], &device))).is_err());
    assert!(m.forward_with_mask_ratio(x.clone(), t.clone(), &cond, 1.0, &mut StdRng::seed_from_u64(0)).is_err());
    let d = tiny(MicroDiTBackbone::DiT).init(&device).unwrap();
    assert!(d.forward(x.clone(), t.clone(), &cond).is_err());
    assert!(d.forward(x, t, &MicroDiTCond::Labels(Tensor::from_ints([0, 6], &device))).is_err());
}

#[test]
fn flops_table_and_dit_agreement() {
    // a DiT-backbone MicroDiT without extras costs exactly what DiT's own count says
    let dit = DiTConfig::from_name("DiT-XL/2").unwrap().with_learn_sigma(true);
    let cfg = MicroDiTConfig::new()
        .with_dim(1152)
        .with_depth(28)
        .with_head_dim(72)
        .with_multiple_of(1)
        .with_use_patch_mixer(false)
        .with_experts_every_n(0)
        .with_backbone(MicroDiTBackbone::DiT)
        .with_learn_sigma(true);
    let (a, b) = (cfg.flops(0.0, 0).unwrap(), dit.flops());
    assert!((a / b - 1.0).abs() < 1e-12, "{a} vs {b}");
    // DiT counts its fixed position table as a parameter and has no mask token
    assert_eq!(cfg.num_params() + 256 * 1152, dit.num_params());
    // masking cuts the cost; the patch-mixer always sees every token
    let xl = MicroDiTConfig::preset(MicroDiTSize::XL);
    let f: Vec<f64> = [0.0, 0.5, 0.75].iter().map(|r| xl.flops(*r, 77).unwrap()).collect();
    assert!(f[0] > f[1] && f[1] > f[2]);
    assert!(xl.clone().with_masking(MaskingMode::Naive).flops(0.75, 77).unwrap() < f[2]);
    assert!(xl.flops(1.0, 77).is_err());
    // the MicroDiT training-cost table in docs/architecture.md (GMACs per image, 256px, 77 caption tokens)
    for (name, want) in [("MicroDiT_Tiny_2", [21.31, 13.68, 10.03]), ("MicroDiT_XL_2", [119.07, 70.68, 47.05])] {
        let c = MicroDiTConfig::from_name(name).unwrap();
        for (r, w) in [0.0, 0.5, 0.75].iter().zip(want) {
            assert!((c.flops(*r, 77).unwrap() / 1e9 - w).abs() < 0.006, "{name} {r}");
        }
    }
    println!("MicroDiT_XL_2 GMACs/image at 256px, 77 caption tokens: {:?}", f.iter().map(|v| v / 1e9).collect::<Vec<_>>());
}

/// Composition: a class-conditional DiT backbone with a patch-mixer, deferred 50% masking,
/// expert-choice MoE and layer-wise scaling trains with the masked EDM loss (averaged over
/// kept patches), then switches to unmasked fine-tuning.
#[test]
fn masked_sparse_dit_trains_with_edm() {
    use crate::diffusion::EdmConfig;
    use burn::optim::{AdamWConfig, GradientsParams};
    let device = Device::flex().autodiff();
    let cfg = tiny(MicroDiTBackbone::DiT).with_train_mask_ratio(0.5).with_cond_dropout_prob(0.0);
    let mut model = cfg.init(&device).unwrap();
    assert!(model.patch_mixer.len() == 2 && model.stages[0].len() == 4);
    assert!(model.patch_mixer_map_xin.is_some()); // mixer width 16, backbone 32
    let edm = EdmConfig::new().init().unwrap();
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).with_epsilon(1e-8).init();
    let x0 = randn([4, 4, 8, 8], 11, &device);
    let noise = randn([4, 4, 8, 8], 12, &device);
    let sigma = Tensor::<1>::from_floats([0.4, 0.9, 1.5, 3.0], &device);
    let cond = MicroDiTCond::Labels(Tensor::from_ints([0, 1, 2, 3], &device));
    let mut rng = StdRng::seed_from_u64(5);
    let mut losses = Vec::new();
    for _ in 0..25 {
        let mask = model.draw_train_mask(4, &mut rng, &device).unwrap().expect("masked training");
        assert_eq!(mask.num_kept(), 8);
        let l = edm.masked_loss_at(&model, x0.clone(), &cond, sigma.clone(), noise.clone(), Some(&mask)).unwrap();
        losses.push(l.loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(l.loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let last: f32 = losses[22..].iter().sum::<f32>() / 3.0;
    assert!(last < 0.7 * losses[0], "{losses:?}");
    // the fine-tuning phase: no mask, the loss covers the whole image
    let model = model.unmasked_finetuning();
    assert!(model.draw_train_mask(4, &mut rng, &device).unwrap().is_none());
    let l = edm.masked_training_loss(&model, x0, &cond, &mut rng).unwrap();
    assert!(l.loss.into_scalar::<f32>().is_finite());
}

#[test]
fn edm_sampling_with_guidance() {
    use crate::diffusion::EdmConfig;
    use crate::diffusion::process::{EdmProcess, Process};
    use crate::diffusion::timesteps::{SigmaSpacing, TimestepSchedule};
    use crate::sampling::{Euler, Sampler};
    let device = Device::flex();
    let m = randomized(tiny(MicroDiTBackbone::MicroDiT).init(&device).unwrap());
    let edm = EdmConfig::new().init().unwrap();
    let cond = captions(2, &device);
    let guided = ClassifierFreeGuidance::new(&m, MicroDiTNull::ZeroCaption, 4.0).unwrap().with_channels(GuidedChannels::All);
    let noise = randn([2, 4, 8, 8], 8, &device);
    let plan = EdmProcess::new(0.002, 80.0, 7.0, edm.sigma_data())
        .unwrap()
        .plan(2, &TimestepSchedule::new().with_sigmas(SigmaSpacing::Karras))
        .unwrap();
    let out = Euler.sample_from(&plan, &guided, &cond, noise.clone(), &mut StdRng::seed_from_u64(0), None).unwrap();
    // by hand: one Euler step 80 -> sigma_1, then the last step lands on D(x_1, sigma_1)
    let s1 = plan.levels[1].sigma;
    let x = noise * 80.0;
    let full = |s: f64| Tensor::<1>::full([2], s as f32, &device);
    let d0 = edm.denoise(&guided, x.clone(), full(80.0), &cond).unwrap();
    let x1 = x.clone() + (x - d0) * ((s1 - 80.0) / 80.0);
    let want = edm.denoise(&guided, x1, full(s1), &cond).unwrap();
    out.into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::rel_abs(1e-4, 1e-4));
}
