//! MicroDiT text to image through `MicroDiTPipeline` (the generic `TextToImagePipeline` with
//! EDM): a micro_diffusion-layout checkpoint (`dit.`, `vae.`, `text_encoder.` prefixes) holding
//! a tiny random MicroDiT, a tiny VAE and the tiny OpenCLIP text tower of the
//! `clip_text_open_clip_microdit` fixture is loaded and run from prompts; the sampling equals a
//! hand-written transcription of micro_diffusion's `edm_sampler_loop` with `forward_with_cfg`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::{DType, Tolerance};
use diffusion_transformers::contracts::PromptEncoder;
use diffusion_transformers::models::{MicroDiT, MicroDiTCond, MicroDiTConfig, MicroDiTNull};
use diffusion_transformers::pipeline::{MicroDiTCheckpoint, MicroDiTPipeline, TextToImageSettings};
use diffusion_transformers::text::ClipTextConfig;
use diffusion_transformers::vae::AutoencoderKlConfig;
use diffusion_transformers::weights::{Checkpoint, LoadWeights};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const FIXTURE: &str = "tests/fixtures/clip_text_open_clip_microdit";

fn dit_config() -> MicroDiTConfig {
    MicroDiTConfig::new()
        .with_input_size(8)
        .with_dim(32)
        .with_depth(2)
        .with_head_dim(8)
        .with_multiple_of(16)
        .with_caption_channels(32)
        .with_patch_mixer_depth(1)
        .with_patch_mixer_dim(16)
        .with_num_experts(2)
}

/// Every float tensor replaced by seeded `U(-0.3, 0.3)` values (the zero-initialised output
/// layers would make the DiT output 0).
fn randomize(ck: &Checkpoint, seed: u64) -> BTreeMap<String, TensorData> {
    let mut rng = StdRng::seed_from_u64(seed);
    ck.tensors()
        .iter()
        .map(|(k, v)| {
            let v = if v.dtype().is_float() {
                let n = v.shape().iter().product();
                TensorData::new((0..n).map(|_| rng.random::<f32>() * 0.6 - 0.3).collect::<Vec<f32>>(), v.shape().to_vec())
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// A micro_diffusion-layout checkpoint and open_clip vocabulary in a fresh folder; the options
/// to load it.
fn write_checkpoint(name: &str) -> (PathBuf, MicroDiTCheckpoint, Value) {
    let dir = std::env::temp_dir().join(format!("dt_microdit_text_{name}_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sidecar: Value = serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURE}.json")).unwrap()).unwrap();
    std::fs::write(dir.join("bpe_simple_vocab_16e6.txt"), sidecar["files"]["bpe_simple_vocab_16e6.txt"].as_str().unwrap()).unwrap();
    let device = Device::flex();
    let mut ck = Checkpoint::new();
    for (k, v) in Checkpoint::from_file(format!("{FIXTURE}.safetensors")).unwrap().into_tensors() {
        if k.starts_with("text_encoder.") {
            ck.insert(k, v);
        }
    }
    let dit = dit_config().init(&device).unwrap();
    for (k, v) in randomize(&dit.to_checkpoint().unwrap(), 1) {
        ck.insert(format!("dit.{k}"), v);
    }
    let vae = AutoencoderKlConfig::new().with_block_out_channels(vec![32, 32]).with_layers_per_block(1).init(&device).unwrap();
    for (k, v) in randomize(&vae.to_checkpoint().unwrap(), 2) {
        ck.insert(format!("vae.{k}"), v);
    }
    ck.save_safetensors(dir.join("dit.safetensors")).unwrap();
    let text_config = ClipTextConfig::from_open_clip(&sidecar["config"]).unwrap();
    (dir, MicroDiTCheckpoint { text_config, ..MicroDiTCheckpoint::new(dit_config()) }, sidecar)
}

fn load(name: &str) -> (MicroDiTPipeline, Value, PathBuf) {
    let (dir, options, sidecar) = write_checkpoint(name);
    let pipeline = MicroDiTPipeline::from_checkpoint(dir.join("dit.safetensors"), dir.join("bpe_simple_vocab_16e6.txt"), &options, &Device::flex()).unwrap();
    (pipeline, sidecar, dir)
}

/// micro_diffusion's `model_forward_wrapper` around `forward_with_cfg`: `x` and `y` batched
/// with zero captions, `F = F_u + g (F_c - F_u)`, `D = c_skip x + c_out F`.
fn reference_denoise(dit: &MicroDiT, x: Tensor<4>, sigma: f64, y: &Tensor<3>, cfg: f64) -> Tensor<4> {
    let sd = 0.9f64;
    let c_skip = sd * sd / (sigma * sigma + sd * sd);
    let c_out = sigma * sd / (sigma * sigma + sd * sd).sqrt();
    let c_in = 1.0 / (sd * sd + sigma * sigma).sqrt();
    let c_noise = (sigma.ln() / 4.0) as f32;
    let b = x.dims()[0];
    let xx = Tensor::cat(vec![x.clone(), x.clone()], 0) * c_in;
    let yy = Tensor::cat(vec![y.clone(), y.zeros_like()], 0);
    let t = Tensor::<1>::from_floats([c_noise], &x.device());
    let eps = dit.forward(xx, t, &MicroDiTCond::Caption(yy)).unwrap();
    let (cond, uncond) = (eps.clone().slice(0..b), eps.slice(b..2 * b));
    let f = uncond.clone() + (cond - uncond) * cfg;
    x * c_skip + f * c_out
}

/// micro_diffusion's `edm_sampler_loop` (`S_churn = 0`): Karras sigmas then 0, Heun, the last
/// step Euler.
fn reference_sampler_loop(dit: &MicroDiT, noise: Tensor<4>, y: &Tensor<3>, steps: usize, cfg: f64) -> Tensor<4> {
    let (sigma_min, sigma_max, rho) = (0.002f64, 80.0f64, 7.0f64);
    let mut t_steps: Vec<f64> = (0..steps)
        .map(|i| {
            let r = if steps > 1 { i as f64 / (steps - 1) as f64 } else { 0.0 };
            (sigma_max.powf(1.0 / rho) + r * (sigma_min.powf(1.0 / rho) - sigma_max.powf(1.0 / rho))).powf(rho)
        })
        .collect();
    t_steps.push(0.0);
    let mut x_next = noise * t_steps[0];
    for i in 0..steps {
        let (t_cur, t_next) = (t_steps[i], t_steps[i + 1]);
        let x_hat = x_next.clone();
        let denoised = reference_denoise(dit, x_hat.clone(), t_cur, y, cfg);
        let d_cur = (x_hat.clone() - denoised) / t_cur;
        x_next = x_hat.clone() + d_cur.clone() * (t_next - t_cur);
        if i < steps - 1 {
            let denoised = reference_denoise(dit, x_next.clone(), t_next, y, cfg);
            let d_prime = (x_next.clone() - denoised) / t_next;
            x_next = x_hat + (d_cur * 0.5 + d_prime * 0.5) * (t_next - t_cur);
        }
    }
    x_next
}

/// Seeded `U(-1, 1)` initial latents `[2, 4, 8, 8]`.
fn seeded_noise(seed: u64) -> Tensor<4> {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..2 * 4 * 8 * 8).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
    Tensor::<4>::from_data(TensorData::new(v, [2, 4, 8, 8]), &Device::flex())
}

fn prompts(sidecar: &Value, n: usize) -> Vec<String> {
    sidecar["prompts"].as_array().unwrap().iter().take(n).map(|p| p.as_str().unwrap().to_string()).collect()
}

#[test]
fn checkpoint_to_images_seeded_and_deterministic() {
    let (pipeline, sidecar, dir) = load("images");
    let all = prompts(&sidecar, 7);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    // the text tower under `text_encoder.` encodes as open_clip (the fixture's captions)
    let caption = pipeline.encoder().encode(&all).unwrap().unsqueeze_dim::<4>(1); // the reference's [B, 1, L, D]
    let want = Checkpoint::from_file(format!("{FIXTURE}.safetensors")).unwrap().get("output.microdit_caption").unwrap().clone();
    caption.into_data().assert_approx_eq::<f32>(&want.convert_dtype(DType::F32), Tolerance::absolute(1e-4));

    let settings = TextToImageSettings { num_inference_steps: 2, ..TextToImageSettings::microdit() };
    assert_eq!(pipeline.latent_shape(2, &settings).unwrap(), [2, 4, 8, 8]);
    let p = &all[..2];
    let images = pipeline.generate(p, None, &settings, 7, None).unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!((images[0].width(), images[0].height()), (16, 16));
    assert_eq!(images, pipeline.generate(p, None, &settings, 7, None).unwrap());
    assert_ne!(images, pipeline.generate(p, None, &settings, 8, None).unwrap());
    let encoded = pipeline.encode(p, None, &settings).unwrap();
    let noise = seeded_noise(3);
    let latents = pipeline.sample_latents_from(&encoded, &settings, noise, &mut StdRng::seed_from_u64(0), None).unwrap();
    let v = latents.into_data().convert_dtype(DType::F32).try_to_vec::<f32>().unwrap();
    assert!(v.iter().all(|x| x.is_finite()) && v.iter().any(|x| *x != 0.0));
    // MicroDiT's size is fixed by its position table
    let other = TextToImageSettings { size: Some([32, 32]), ..settings };
    assert!(pipeline.generate(p, None, &other, 7, None).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sampling_equals_micro_diffusions_edm_loop() {
    let (pipeline, sidecar, dir) = load("loop");
    let p = prompts(&sidecar, 3);
    let p: Vec<&str> = [p[0].as_str(), p[2].as_str()].to_vec();
    let settings = TextToImageSettings { num_inference_steps: 2, ..TextToImageSettings::microdit() };
    // guidance's unconditional branch is micro_diffusion's zero caption, not an encoded ""
    let encoded = pipeline.encoder().encode_prompts(&p, None, true).unwrap();
    assert!(matches!(encoded.1, Some(MicroDiTNull::ZeroCaption)));
    let y = pipeline.encoder().encode(&p).unwrap();
    let noise = seeded_noise(11);
    for (steps, cfg) in [(2, 5.0), (3, 2.5), (1, 5.0)] {
        let s = TextToImageSettings { num_inference_steps: steps, guidance_scale: cfg, ..settings.clone() };
        let encoded = pipeline.encode(&p, None, &s).unwrap();
        let ours = pipeline.sample_latents_from(&encoded, &s, noise.clone(), &mut StdRng::seed_from_u64(0), None).unwrap();
        let reference = reference_sampler_loop(pipeline.model(), noise.clone(), &y, steps, cfg);
        let scale = reference.clone().abs().max().into_data().convert_dtype(DType::F32).try_to_vec::<f32>().unwrap()[0];
        assert!(scale > 0.1, "a trivial trajectory: {scale}");
        ours.into_data().assert_approx_eq::<f32>(&reference.into_data(), Tolerance::absolute(1e-4 * scale.max(1.0)));
    }
    std::fs::remove_dir_all(dir).unwrap();
}
