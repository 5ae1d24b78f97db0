use super::*;
use crate::Error;
use crate::blocks::parts::{AttentionPart, BlockCondition, ConditioningPart, FeedForwardPart, TwoStreamAttention};
use crate::layers::activation::gelu_tanh;
use crate::layers::adaln::AdaLnModulation;
use crate::layers::mlp::Mlp;
use burn::module::Param;
use burn::tensor::Tolerance;

/// Deterministic values in about [-1, 1] (no RNG needed).
fn wave<const D: usize>(dims: [usize; D], k: f32, device: &Device) -> Tensor<D> {
    let n: usize = dims.iter().product();
    Tensor::from_data(TensorData::new((0..n).map(|i| (i as f32 * k).sin()).collect::<Vec<_>>(), dims), device)
}

fn two_stream(block: &Block) -> &TwoStreamAttention {
    match &block.attn {
        AttentionPart::TwoStream(t) => t,
        _ => panic!("a two-stream block"),
    }
}

/// The image modulation and MLP of a block.
fn image_parts(block: &Block) -> (&AdaLnModulation, &Mlp) {
    let m = match &block.conditioning {
        ConditioningPart::AdaLnZero(m) => m,
        ConditioningPart::AdaLnZeroDual(d) => &d.ada_ln_modulation,
        _ => panic!("adaLN-Zero conditioning"),
    };
    let FeedForwardPart::Mlp(mlp) = &block.mlp else { panic!("an MLP") };
    (m, mlp)
}

/// adaLN-Zero makes a fresh block trivial: random modulation weights.
fn randomize(mut block: Block, device: &Device) -> Block {
    let rand = |ada: &mut AdaLnModulation, k: f32| {
        ada.linear.weight = Param::from_tensor(wave(ada.linear.weight.dims(), k, device) * 0.3);
    };
    match &mut block.conditioning {
        ConditioningPart::AdaLnZero(m) => rand(m, 0.37),
        ConditioningPart::AdaLnZeroDual(d) => rand(&mut d.ada_ln_modulation, 0.37),
        _ => unreachable!(),
    }
    if let AttentionPart::TwoStream(t) = &mut block.attn {
        rand(&mut t.context_modulation, 1.37);
    }
    block
}

fn cond(c: Tensor<2>, text: Tensor<3>) -> BlockCondition {
    BlockCondition { c, shared: None, context: Some(text) }
}

fn ln(v: Tensor<3>) -> Tensor<3> {
    let (var, mean) = v.clone().var_mean_bias(2);
    (v - mean) / (var + 1e-6).sqrt()
}

fn chunks(ada: &AdaLnModulation, c: Tensor<2>) -> Vec<Tensor<3>> {
    ada.forward(c).into_iter().map(|m| m.unsqueeze_dim(1)).collect()
}

/// `x + g_m * MLP(LN(x) (1 + s_m) + b_m)` with chunks 3, 4, 5 of `m`.
fn mlp_update(x: Tensor<3>, m: &[Tensor<3>], mlp: &Mlp) -> Tensor<3> {
    let hidden = gelu_tanh(mlp.fc1.forward(ln(x.clone()) * (m[4].clone() + 1.0) + m[3].clone()));
    x + m[5].clone() * mlp.fc2.forward(hidden)
}

#[test]
fn fresh_block_is_identity_on_both_streams() {
    let device = Device::flex();
    let block = JointBlockConfig::new(16, 2).init(&device).unwrap();
    let x = crate::test_util::randn([2, 5, 16], 102, &device);
    let t = crate::test_util::randn([2, 3, 16], 103, &device);
    let c = crate::test_util::randn([2, 16], 104, &device);
    let (y, u) = block.forward_joint(x.clone(), None, &cond(c, t.clone())).unwrap();
    assert!(y.equal(x).all().into_scalar::<bool>());
    assert!(u.unwrap().equal(t).all().into_scalar::<bool>());
}

#[test]
fn matches_the_written_out_equations() {
    let device = Device::flex();
    let block = randomize(JointBlockConfig::new(8, 2).init(&device).unwrap(), &device);
    let x = crate::test_util::randn([1, 4, 8], 105, &device);
    let t = crate::test_util::randn([1, 3, 8], 106, &device);
    let c = crate::test_util::randn([1, 8], 107, &device);
    let (y, u) = block.forward_joint(x.clone(), None, &cond(c.clone(), t.clone())).unwrap();
    // written out with the diffusers chunk order and LayerNorm(eps 1e-6, no affine)
    let (ada, mlp) = image_parts(&block);
    let ts = two_stream(&block);
    let (m, mt) = (chunks(ada, c.clone()), chunks(&ts.context_modulation, c));
    let h = ln(x.clone()) * (m[1].clone() + 1.0) + m[0].clone();
    let ht = ln(t.clone()) * (mt[1].clone() + 1.0) + mt[0].clone();
    let mut a = ts.joint.forward(vec![h, ht]).unwrap().into_iter();
    let tol = Tolerance::absolute(1e-5);
    let expected = mlp_update(x + m[2].clone() * a.next().flatten().unwrap(), &m, mlp);
    y.into_data().assert_approx_eq::<f32>(&expected.into_data(), tol);
    let expected = mlp_update(t + mt[2].clone() * a.next().flatten().unwrap(), &mt, ts.context_mlp.as_ref().unwrap());
    u.unwrap().into_data().assert_approx_eq::<f32>(&expected.into_data(), tol);
}

#[test]
fn dual_attention_matches_the_written_out_equations() {
    let device = Device::flex();
    let cfg = JointBlockConfig::new(8, 2).with_qk_norm(QkNorm::RmsNorm).with_dual_attention(true);
    let block = randomize(cfg.init(&device).unwrap(), &device);
    let ConditioningPart::AdaLnZeroDual(dual) = &block.conditioning else { panic!("dual attention") };
    let ts = two_stream(&block);
    assert_eq!((dual.ada_ln_modulation.n_chunks, ts.context_modulation.n_chunks), (9, 6));
    let x = wave([2, 4, 8], 0.71, &device);
    let t = wave([2, 3, 8], 1.13, &device);
    let c = wave([2, 8], 0.53, &device);
    let (y, _) = block.forward_joint(x.clone(), None, &cond(c.clone(), t.clone())).unwrap();
    let (m, mt) = (chunks(&dual.ada_ln_modulation, c.clone()), chunks(&ts.context_modulation, c));
    let h = ln(x.clone()) * (m[1].clone() + 1.0) + m[0].clone();
    let h2 = ln(x.clone()) * (m[7].clone() + 1.0) + m[6].clone();
    let ht = ln(t) * (mt[1].clone() + 1.0) + mt[0].clone();
    let a = ts.joint.forward(vec![h, ht]).unwrap().remove(0).unwrap();
    let v = x + m[2].clone() * a + m[8].clone() * dual.attn2.forward(h2);
    let expected = mlp_update(v, &m, image_parts(&block).1);
    y.into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
}

#[test]
fn pre_only_stream_is_modulated_keys_and_values() {
    let device = Device::flex();
    let block = JointBlockConfig::new(8, 2).with_context_pre_only(true).init(&device).unwrap();
    let ts = two_stream(&block);
    assert_eq!(ts.context_modulation.n_chunks, 2);
    assert!(ts.context_mlp.is_none() && ts.joint.streams[1].is_pre_only());
    assert_eq!(block.num_params(), JointBlockConfig::new(8, 2).with_context_pre_only(true).block_config().num_params());
    let block = randomize(block, &device);
    let x = crate::test_util::randn([2, 4, 8], 108, &device);
    let t = crate::test_util::randn([2, 3, 8], 109, &device);
    let c = crate::test_util::randn([2, 8], 110, &device);
    let (y, u) = block.forward_joint(x.clone(), None, &cond(c.clone(), t.clone())).unwrap();
    assert!(u.is_none());
    assert_eq!(y.dims(), [2, 4, 8]);
    // the text tokens matter: changing them changes the image output (not by a scale,
    // which the LayerNorm removes)
    let t2 = t + crate::test_util::randn([2, 3, 8], 111, &device);
    let (y2, _) = block.forward_joint(x, None, &cond(c, t2)).unwrap();
    let diff = (y - y2).abs().max().into_scalar::<f32>();
    assert!(diff > 1e-4, "{diff}");
}

#[test]
fn bad_inputs_are_errors() {
    let device = Device::flex();
    let block = JointBlockConfig::new(8, 2).init(&device).unwrap();
    let x = Tensor::<3>::zeros([2, 4, 8], &device);
    let c = Tensor::<2>::zeros([2, 8], &device);
    let no_text = BlockCondition { c: c.clone(), shared: None, context: None };
    assert!(matches!(block.forward_joint(x.clone(), None, &no_text), Err(Error::InvalidArgument(_))));
    let narrow = Tensor::<3>::zeros([2, 3, 6], &device);
    assert!(matches!(block.forward_joint(x.clone(), None, &cond(c.clone(), narrow)), Err(Error::Shape { .. })));
    let bad_c = Tensor::<2>::zeros([2, 7], &device);
    assert!(matches!(block.forward_joint(x.clone(), None, &cond(bad_c, x.clone())), Err(Error::Shape { .. })));
    let bad_b = Tensor::<2>::zeros([3, 8], &device);
    assert!(matches!(block.forward_joint(x.clone(), None, &cond(bad_b, x)), Err(Error::Shape { .. })));
    assert!(JointBlockConfig::new(8, 3).init(&device).is_err());
    assert!(JointBlockConfig::new(8, 2).with_mlp_ratio(0.0).init(&device).is_err());
    assert!(JointBlockConfig::new(8, 2).with_qk_norm(QkNorm::FullLayerNorm).init(&device).is_err());
}
