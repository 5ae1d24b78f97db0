//! Bad input to every model is a typed error, never a crash or silent garbage: an empty batch
//! (Burn's flex backend would crash with SIGSEGV), NaN/inf in any float input, timesteps outside
//! the documented range; a float64 input is cast to the model's dtype.

use burn::prelude::*;
use burn::tensor::{FloatDType, Tolerance};
use diffusion_transformers::models::{DiTConfig, MMDiTConfig, MicroDiTBackbone, MicroDiTCond, MicroDiTConfig, MicroDiTNull, UDiTConfig};
use diffusion_transformers::contracts::{Conditioning, randn};
use diffusion_transformers::vae::AutoencoderKlConfig;
use diffusion_transformers::{Error, Result};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn noise<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    randn(shape, &mut StdRng::seed_from_u64(seed), device)
}

/// Runs the checks shared by every denoiser on `forward(x, t)` for latents `[_, c, s, s]`.
fn check_denoiser(name: &str, c: usize, s: usize, forward: impl Fn(Tensor<4>, Tensor<1>) -> Result<Tensor<4>>) {
    let device = Device::flex();
    let x = noise([2, c, s, s], 1, &device);
    let t = Tensor::<1>::from_floats([10.0, 500.0], &device);

    let e = forward(Tensor::zeros([0, c, s, s], &device), Tensor::zeros([0], &device)).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("at least one sample"), "{name}: {e}");

    let nan_x = x.clone().slice_fill([1..2, 0..1, 0..1, 0..1], f32::NAN);
    let e = forward(nan_x, t.clone()).unwrap_err();
    assert!(matches!(e, Error::Numerical(_)) && e.to_string().contains("`x`"), "{name}: {e}");
    let inf_x = x.clone().slice_fill([0..1, 0..1, 0..1, 0..1], f32::INFINITY);
    assert!(matches!(forward(inf_x, t.clone()), Err(Error::Numerical(_))), "{name}");
    for bad in [f32::NAN, f32::NEG_INFINITY] {
        let e = forward(x.clone(), Tensor::from_floats([10.0, bad], &device)).unwrap_err();
        assert!(matches!(e, Error::Numerical(_)) && e.to_string().contains("`t`"), "{name}: {e}");
    }
    for bad in [-1e6, 1e9] {
        let e = forward(x.clone(), Tensor::from_floats([bad, 10.0], &device)).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{name} t = {bad}: {e}");
    }
    // Continuous time, including EDM's negative `ln(sigma) / 4`, is accepted.
    assert!(forward(x.clone(), Tensor::from_floats([-1.5, 999.25], &device)).is_ok(), "{name}");

    // float64 input: cast, same result as float32.
    let want = forward(x.clone(), t.clone()).unwrap();
    let got = forward(x.cast(FloatDType::F64), t.cast(FloatDType::F64)).unwrap();
    assert_eq!(got.dtype(), want.dtype(), "{name}");
    got.into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-6));
}

#[test]
fn dit() {
    let device = Device::flex();
    let model = DiTConfig::new()
        .with_input_size(8)
        .with_patch_size(4)
        .with_in_channels(3)
        .with_hidden_size(32)
        .with_depth(1)
        .with_num_heads(2)
        .with_num_classes(4)
        .init(&device)
        .unwrap();
    check_denoiser("DiT", 3, 8, |x, t| {
        let y = Tensor::<1, Int>::zeros([x.dims()[0]], &device);
        model.forward(x, t, Some(y))
    });
    let e = model.forward(noise([1, 3, 8, 8], 2, &device), Tensor::from_floats([1.0], &device), Some(Tensor::from_ints([1_000_000], &device)));
    assert!(matches!(e, Err(Error::InvalidArgument(_))));
}

#[test]
fn udit() {
    let device = Device::flex();
    let model = UDiTConfig::new()
        .with_input_size(8)
        .with_hidden_size(8)
        .with_num_heads(2)
        .with_depth(vec![1, 1, 1, 1, 1])
        .with_mlp_ratio(2.0)
        .with_num_classes(5)
        .init(&device)
        .unwrap();
    check_denoiser("U-DiT", 4, 8, |x, t| {
        let y = Tensor::<1, Int>::zeros([x.dims()[0]], &device);
        model.forward(x, t, Some(y))
    });
}

fn microdit(backbone: MicroDiTBackbone) -> MicroDiTConfig {
    MicroDiTConfig::new()
        .with_input_size(8)
        .with_dim(32)
        .with_depth(2)
        .with_head_dim(8)
        .with_caption_channels(12)
        .with_patch_mixer_depth(1)
        .with_patch_mixer_dim(16)
        .with_num_classes(5)
        .with_backbone(backbone)
}

#[test]
fn microdit_captions_and_labels() {
    let device = Device::flex();
    let model = microdit(MicroDiTBackbone::MicroDiT).init(&device).unwrap();
    let caption = |b: usize| MicroDiTCond::Caption(noise([b, 3, 12], 3, &device));
    check_denoiser("MicroDiT", 4, 8, |x, t| {
        let c = caption(x.dims()[0]);
        model.forward(x, t, &c)
    });
    let x = noise([2, 4, 8, 8], 4, &device);
    let t = Tensor::<1>::from_floats([0.5, -0.25], &device);
    let nan = MicroDiTCond::Caption(noise([2, 3, 12], 3, &device).slice_fill([0..1, 0..1, 0..1], f32::NAN));
    let e = model.forward(x.clone(), t.clone(), &nan).unwrap_err();
    assert!(matches!(e, Error::Numerical(_)) && e.to_string().contains("`captions`"), "{e}");
    let f64_caption = MicroDiTCond::Caption(noise([2, 3, 12], 3, &device).cast(FloatDType::F64));
    let want = model.forward(x.clone(), t.clone(), &caption(2)).unwrap();
    let got = model.forward(x.clone(), t.clone(), &f64_caption).unwrap();
    got.into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-6));

    let labels = microdit(MicroDiTBackbone::DiT).init(&device).unwrap();
    check_denoiser("MicroDiT (DiT backbone)", 4, 8, |x, t| {
        let y = MicroDiTCond::Labels(Tensor::zeros([x.dims()[0]], &device));
        labels.forward(x, t, &y)
    });
    // A null label that does not fit a 32-bit integer tensor: an error, not a panic.
    let y = MicroDiTCond::Labels(Tensor::zeros([2], &device));
    assert!(matches!(y.null_like(&MicroDiTNull::Label(1 << 31)), Err(Error::InvalidArgument(_))));
    assert!(y.null_like(&MicroDiTNull::Label(5)).is_ok());
}

#[test]
fn mmdit_text_inputs() {
    let device = Device::flex();
    let model = MMDiTConfig::new()
        .with_sample_size(8)
        .with_in_channels(4)
        .with_out_channels(4)
        .with_num_layers(1)
        .with_attention_head_dim(8)
        .with_num_attention_heads(2)
        .with_joint_attention_dim(12)
        .with_pooled_projection_dim(10)
        .with_pos_embed_max_size(6)
        .init(&device)
        .unwrap();
    let text = |b: usize| noise([b, 3, 12], 5, &device);
    let pooled = |b: usize| noise([b, 10], 6, &device);
    check_denoiser("MM-DiT", 4, 8, |x, t| {
        let b = x.dims()[0];
        model.forward(x, t, text(b), pooled(b))
    });
    let (x, t) = (noise([2, 4, 8, 8], 7, &device), Tensor::<1>::from_floats([1.0, 2.0], &device));
    let bad_text = text(2).slice_fill([0..1, 0..1, 0..1], f32::NAN);
    let e = model.forward(x.clone(), t.clone(), bad_text, pooled(2)).unwrap_err();
    assert!(e.to_string().contains("`text`"), "{e}");
    let bad_pooled = pooled(2).slice_fill([1..2, 0..1], f32::INFINITY);
    let e = model.forward(x.clone(), t.clone(), text(2), bad_pooled).unwrap_err();
    assert!(e.to_string().contains("`pooled`"), "{e}");
    let want = model.forward(x.clone(), t.clone(), text(2), pooled(2)).unwrap();
    let got = model.forward(x, t, text(2).cast(FloatDType::F64), pooled(2).cast(FloatDType::F64)).unwrap();
    got.into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-6));
}

#[test]
fn vae() {
    let device = Device::flex();
    let vae = AutoencoderKlConfig::new()
        .with_block_out_channels(vec![8, 16])
        .with_norm_num_groups(4)
        .with_latent_channels(3)
        .with_sample_size(8)
        .init(&device)
        .unwrap();
    assert!(matches!(vae.forward(Tensor::zeros([0, 3, 8, 8], &device)), Err(Error::Shape { .. })));
    assert!(matches!(vae.decode(Tensor::zeros([0, 3, 4, 4], &device)), Err(Error::Shape { .. })));
    let x = noise([1, 3, 8, 8], 8, &device);
    let e = vae.forward(x.clone().slice_fill([0..1, 0..1, 0..1, 0..1], f32::NAN)).unwrap_err();
    assert!(matches!(e, Error::Numerical(_)) && e.to_string().contains("`images`"), "{e}");
    let z = noise([1, 3, 4, 4], 9, &device);
    let e = vae.decode(z.clone().slice_fill([0..1, 0..1, 0..1, 0..1], f32::INFINITY)).unwrap_err();
    assert!(matches!(e, Error::Numerical(_)) && e.to_string().contains("`latents`"), "{e}");
    let want = vae.forward(x.clone()).unwrap();
    vae.forward(x.cast(FloatDType::F64)).unwrap().into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-6));
    let want = vae.decode(z.clone()).unwrap();
    vae.decode(z.cast(FloatDType::F64)).unwrap().into_data().assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-6));
}
