//! `Sd3Pipeline::from_pretrained` on diffusers folders written from the
//! `sd3_pipeline_diffusers` fixtures: prompts to images through the library pipeline (load,
//! tokenize, encode, sample with guidance, decode) match diffusers' images; sharded weights
//! load; a missing component is an error naming it.

#[path = "common/sd3_folder.rs"]
mod sd3_folder;

use burn::prelude::*;
use burn::tensor::Tolerance;
use diffusion_transformers::Error;
use diffusion_transformers::pipeline::Sd3Pipeline;
use diffusion_transformers::text::Sd3PromptOptions;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn images(name: &str) -> (TensorData, TensorData) {
    let folder = sd3_folder::write_folder(name, name, false);
    let device = Device::flex();
    let options = Sd3PromptOptions { max_sequence_length: folder.max_sequence_length(), ..Sd3PromptOptions::default() };
    let pipeline = Sd3Pipeline::from_pretrained(&folder.dir, true, options, &device).unwrap();
    let (prompts, negative) = folder.prompts();
    let p: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let n: Option<Vec<&str>> = negative.as_ref().map(|v| v.iter().map(String::as_str).collect());
    let settings = folder.settings();
    let encoded = pipeline.encode(&p, n.as_deref(), &settings).unwrap();
    let noise = Tensor::<4>::from_data(folder.tensor("input.latents"), &device);
    let latents = pipeline.sample_latents_from(&encoded, &settings, noise, &mut StdRng::seed_from_u64(0), None).unwrap();
    let decoded = pipeline.decode_latents(latents).unwrap();
    ((decoded / 2.0 + 0.5).clamp(0.0, 1.0).into_data(), folder.tensor("output.images"))
}

#[test]
fn from_pretrained_matches_diffusers_images() {
    for name in ["sd3_pipeline_tiny", "sd3_pipeline_no_t5_slg"] {
        let (ours, reference) = images(name);
        ours.assert_approx_eq::<f32>(&reference, Tolerance::absolute(1e-4));
    }
}

#[test]
fn generate_and_missing_components() {
    let folder = sd3_folder::write_folder("sd3_pipeline_tiny", "generate", true);
    let device = Device::flex();
    // sharded transformer and T5 (index JSON + two shards each)
    assert!(folder.dir.join("text_encoder_3/model.safetensors.index.json").is_file());
    let pipeline = Sd3Pipeline::from_pretrained(&folder.dir, true, Sd3PromptOptions::default(), &device).unwrap();
    assert!(pipeline.encoder().encoders.t5.is_some());
    let settings = folder.settings();
    let a = pipeline.generate(&["a cat", "a dog"], None, &settings, 3, None).unwrap();
    assert_eq!((a.len(), a[0].width(), a[0].height()), (2, 32, 32));
    assert_eq!(a, pipeline.generate(&["a cat", "a dog"], None, &settings, 3, None).unwrap());
    let bad = diffusion_transformers::pipeline::TextToImageSettings { size: Some([32, 0]), ..settings.clone() };
    assert!(pipeline.generate(&["a cat"], None, &bad, 3, None).is_err());
    assert!(pipeline.generate(&["a cat"], Some(&["x", "y"]), &settings, 3, None).is_err());

    std::fs::remove_dir_all(folder.dir.join("vae")).unwrap();
    let err = Sd3Pipeline::from_pretrained(&folder.dir, true, Sd3PromptOptions::default(), &device).unwrap_err();
    assert!(matches!(&err, Error::Io { path, .. } if path.ends_with("vae")), "{err}");
    let err = Sd3Pipeline::from_pretrained(folder.dir.join("nowhere"), true, Sd3PromptOptions::default(), &device).unwrap_err();
    assert!(err.to_string().contains("nowhere"), "{err}");
}
