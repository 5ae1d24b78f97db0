"""End-to-end reference for the crate's latent pipeline (kind `latent_pipeline_e2e`): a tiny
class-conditional DiT (diffusers `DiTTransformer2DModel`) and a tiny `AutoencoderKL`, both with
random weights, sampled with diffusers' `DDIMScheduler` and classifier-free guidance from fixed
initial noise, then decoded. The loop is diffusers' `DiTPipeline.__call__` with the null class
set to the model's own `num_embeds_ada_norm` (DiTPipeline hard-codes ImageNet's 1000).

usage: /work/main/.venv/bin/python scripts/gen_latent_pipeline_fixture.py OUTDIR [variant]"""
import os, sys
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_vae_fixture import randomize, save  # noqa: E402

torch.set_num_threads(2)


@torch.no_grad()
def e2e(outdir, name, dit_cfg, vae_cfg, sched_cfg, labels, steps, guidance_scale, seed):
    torch.manual_seed(seed)
    dit = DiTTransformer2DModel(**dit_cfg).eval()
    randomize(dit, seed)
    vae = AutoencoderKL(**vae_cfg).eval()
    randomize(vae, seed + 1)
    scheduler = DDIMScheduler(**sched_cfg)
    c, s = dit_cfg["in_channels"], dit_cfg["sample_size"]
    null_class = dit_cfg["num_embeds_ada_norm"]
    B = len(labels)
    g = torch.Generator().manual_seed(seed + 2)
    noise = torch.randn(B, c, s, s, generator=g)
    class_labels = torch.tensor(labels, dtype=torch.long)

    # --- diffusers DiTPipeline.__call__ (eta = 0) ---
    latents = noise
    latent_model_input = torch.cat([latents] * 2) if guidance_scale > 1 else latents
    class_null = torch.tensor([null_class] * B, dtype=torch.long)
    class_labels_input = torch.cat([class_labels, class_null], 0) if guidance_scale > 1 else class_labels
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        if guidance_scale > 1:
            half = latent_model_input[: len(latent_model_input) // 2]
            latent_model_input = torch.cat([half, half], dim=0)
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)
        timesteps = t.expand(latent_model_input.shape[0])
        noise_pred = dit(latent_model_input, timestep=timesteps, class_labels=class_labels_input).sample
        if guidance_scale > 1:
            eps, rest = noise_pred[:, :c], noise_pred[:, c:]
            cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
            half_eps = uncond_eps + guidance_scale * (cond_eps - uncond_eps)
            eps = torch.cat([half_eps, half_eps], dim=0)
            noise_pred = torch.cat([eps, rest], dim=1)
        if dit.config.out_channels // 2 == c:
            model_output, _ = torch.split(noise_pred, c, dim=1)
        else:
            model_output = noise_pred
        latent_model_input = scheduler.step(model_output, t, latent_model_input).prev_sample
    latents = latent_model_input.chunk(2)[0] if guidance_scale > 1 else latent_model_input
    decoded = vae.decode(latents / vae.config.scaling_factor).sample
    images = (decoded / 2 + 0.5).clamp(0, 1)

    assert torch.isfinite(decoded).all() and decoded.abs().mean() > 1e-3
    T = {f"transformer.{k}": v for k, v in dit.state_dict().items()}
    T.update({f"vae.{k}": v for k, v in vae.state_dict().items()})
    T.update({"input.noise": noise, "input.class_labels": class_labels, "output.timesteps": scheduler.timesteps.long(),
              "output.latents": latents, "output.decoded": decoded, "output.images": images})
    save(outdir, name, T, {
        "kind": "latent_pipeline_e2e", "seed": seed, "tolerance": {"atol": 1e-3, "rtol": 1e-3},
        "config": {"transformer": dit_cfg, "vae": vae_cfg, "scheduler": sched_cfg},
        "num_inference_steps": steps, "guidance_scale": guidance_scale, "eta": 0.0,
        "null_class": null_class, "guided_channels": c,
        "tensors": {
            "transformer.*": "DiTTransformer2DModel weights under diffusers' key names, randomized",
            "vae.*": "AutoencoderKL weights under diffusers' key names, randomized",
            "input.noise": "[B, C, s, s] initial latent noise",
            "input.class_labels": "[B] int64 class labels (the null class is config.transformer.num_embeds_ada_norm)",
            "output.timesteps": "DDIMScheduler timesteps after set_timesteps(num_inference_steps)",
            "output.latents": "[B, C, s, s] final (scaled) latents of the guided DDIM loop (eta 0); guidance on the "
                              "first C (all latent) channels, the learned-sigma channels dropped",
            "output.decoded": "vae.decode(latents / scaling_factor).sample, [B, 3, f s, f s]",
            "output.images": "clamp(decoded / 2 + 0.5, 0, 1) (DiTPipeline's output before uint8)",
        }})


if __name__ == "__main__":
    out = sys.argv[1]
    variant = sys.argv[2] if len(sys.argv) > 2 else "public"
    os.makedirs(out, exist_ok=True)
    if variant == "public":
        e2e(out, "latent_pipeline_e2e_tiny",
            dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
                 sample_size=4, patch_size=2, num_embeds_ada_norm=10),
            dict(in_channels=3, out_channels=3, block_out_channels=[8, 16], layers_per_block=1, latent_channels=4,
                 norm_num_groups=4, sample_size=8,
                 down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2),
            dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                 clip_sample=False, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading",
                 prediction_type="epsilon"),
            [3, 7], 5, 4.0, 41)
    else:
        e2e(out, "latent_pipeline_e2e_other",
            dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1,
                 sample_size=8, patch_size=4, num_embeds_ada_norm=5),
            dict(in_channels=3, out_channels=3, block_out_channels=[4, 8, 8], layers_per_block=1, latent_channels=4,
                 norm_num_groups=2, sample_size=32, scaling_factor=0.5,
                 down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3),
            dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                 clip_sample=False, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading",
                 prediction_type="epsilon"),
            [0, 4, 2], 4, 2.5, 42)
