//! Reduced precision: on a device configured to bf16 (its own test binary: the float dtype is
//! fixed before the first tensor), `Sd3Pipeline::from_pretrained` converts the f32 weights on
//! load and every model stays bf16; the pipeline's images stay close to diffusers' f32 images.

#[path = "common/sd3_folder.rs"]
mod sd3_folder;

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use diffusion_transformers::pipeline::Sd3Pipeline;
use diffusion_transformers::text::Sd3PromptOptions;
use diffusion_transformers::weights::LoadWeights;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Largest `|ours - reference|` over the images (values in `[0, 1]`).
/// (measured 0.021 on `sd3_pipeline_tiny`, 0.029 on `sd3_pipeline_no_t5_slg`: bf16 keeps 8
/// significant bits through the CLIP and T5 layers, 2 guided MM-DiT steps and the decoder).
const BF16_IMAGE_BOUND: f32 = 0.05;

/// Images of the fixture's call on the bf16 device: (ours, diffusers' f32), checking the dtypes
/// on the way.
fn bf16_images(device: &Device, name: &str) -> (Vec<f32>, Vec<f32>) {
    let folder = sd3_folder::write_folder(name, &format!("bf16_{name}"), false);
    let options = Sd3PromptOptions { max_sequence_length: folder.max_sequence_length(), ..Sd3PromptOptions::default() };
    let pipeline = Sd3Pipeline::from_pretrained(&folder.dir, true, options, device).unwrap();

    for (part, ck) in [("transformer", pipeline.model().to_checkpoint().unwrap()), ("vae", pipeline.vae().to_checkpoint().unwrap())] {
        for (key, t) in ck.tensors() {
            assert_eq!(t.dtype(), DType::BF16, "{part} {key}");
        }
    }
    let enc = &pipeline.encoder().encoders;
    let mut weights = vec![enc.clip_l.embeddings.token_embedding.weight.val(), enc.clip_g.final_layer_norm.gamma.val().unsqueeze()];
    if let Some((t5, _)) = enc.t5.as_ref() {
        weights.push(t5.shared.weight.val());
    }
    for w in weights {
        assert_eq!(w.dtype(), DType::BF16);
    }

    let (prompts, negative) = folder.prompts();
    let p: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let n: Option<Vec<&str>> = negative.as_ref().map(|v| v.iter().map(String::as_str).collect());
    let settings = folder.settings();
    let encoded = pipeline.encode(&p, n.as_deref(), &settings).unwrap();
    assert_eq!(encoded.0.0.dtype(), DType::BF16);
    let noise = Tensor::<4>::from_data(folder.tensor("input.latents"), device);
    let latents = pipeline.sample_latents_from(&encoded, &settings, noise, &mut StdRng::seed_from_u64(0), None).unwrap();
    assert_eq!(latents.dtype(), DType::BF16);
    let images = (pipeline.decode_latents(latents).unwrap() / 2.0 + 0.5).clamp(0.0, 1.0);
    let ours = images.into_data().convert_dtype(DType::F32).try_to_vec::<f32>().unwrap();
    (ours, folder.tensor("output.images").try_to_vec::<f32>().unwrap())
}

#[test]
fn bf16_weights_stay_bf16_and_images_stay_close() {
    let mut device = Device::flex();
    assert!(device.supports_dtype(FloatDType::BF16));
    device.configure(FloatDType::BF16).unwrap();
    // with T5; without T5 and with skip-layer guidance (its step window matches the f32
    // timesteps the sampler hands the model, e.g. 750, which bf16 cannot hold)
    for name in ["sd3_pipeline_tiny", "sd3_pipeline_no_t5_slg"] {
        let (ours, reference) = bf16_images(&device, name);
        let err = ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        println!("{name}: bf16 vs diffusers f32 images, max abs error {err:.4}");
        assert!(err <= BF16_IMAGE_BOUND, "{name}: bf16 images differ from f32 by {err} > {BF16_IMAGE_BOUND}");
    }
}
