"""Reference fixtures for the crate's Stable Diffusion VAE: diffusers `AutoencoderKL` with tiny
configs and random weights (kind `vae_diffusers`).

usage: /work/main/.venv/bin/python scripts/gen_vae_fixture.py OUTDIR [variant]
       (variant: public (default) or any other word for another set of configs)

Every parameter is overwritten with seeded random values (convolution/linear weights
N(0, 1/fan_in), GroupNorm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2)) so that activations stay
of order one through the network; one log-variance channel gets a large negative bias so the
posterior's clamp to [-30, 20] is exercised. Format and sidecar fields follow
/work/shared/fixtures/scripts/gen_diffusers.py."""
import json, os, sys
import torch
from safetensors.torch import save_file
import diffusers
from diffusers import AutoencoderKL

torch.set_num_threads(2)
VERSION = diffusers.__version__


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() > 1:
            fan_in = p[0].numel()
            p.data = torch.randn(p.shape, generator=g) / fan_in ** 0.5
        elif "norm" in name and name.endswith("weight"):
            p.data = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        else:
            p.data = 0.1 * torch.randn(p.shape, generator=g)


def save(outdir, name, tensors, side):
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, f"{outdir}/{name}.safetensors")
    side.setdefault("source", {"package": "diffusers", "version": VERSION})
    json.dump(side, open(f"{outdir}/{name}.json", "w"), indent=1)
    print(name, os.path.getsize(f"{outdir}/{name}.safetensors"))


def vae(outdir, name, cfg, B, H, W, tiled_hw, seed):
    torch.manual_seed(seed)
    m = AutoencoderKL(**cfg).eval()
    randomize(m, seed)
    lat = cfg["latent_channels"]
    # push the first log-variance channel below the clamp (-30)
    moments_conv = m.quant_conv if cfg.get("use_quant_conv", True) else m.encoder.conv_out
    with torch.no_grad():
        moments_conv.bias[lat] -= 60.0
    f = 2 ** (len(cfg["block_out_channels"]) - 1)
    g = torch.Generator().manual_seed(seed + 1)
    image = torch.rand(B, cfg.get("in_channels", 3), H, W, generator=g) * 2 - 1
    latents = torch.randn(B, lat, H // f, W // f, generator=g)
    tiled_latents = torch.randn(1, lat, tiled_hw[0], tiled_hw[1], generator=g)
    scaling = m.config.scaling_factor
    shift = m.config.shift_factor or 0.0
    with torch.no_grad():
        post = m.encode(image).latent_dist
        gen = torch.Generator().manual_seed(seed + 2)
        sample = post.sample(generator=gen)
        noise = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(seed + 2))
        assert torch.allclose(sample, post.mean + post.std * noise)
        decoded = m.decode(latents).sample
        recon = m(image).sample  # posterior mode, then decode
        # tiled decoding with diffusers' geometry (tiles of sample_size / f latent pixels, 1/4 overlap)
        m.enable_tiling()
        assert tiled_latents.shape[-1] > m.tile_latent_min_size or tiled_latents.shape[-2] > m.tile_latent_min_size
        stride = int(m.tile_latent_min_size * (1 - m.tile_overlap_factor))
        row_limit = m.tile_sample_min_size - int(m.tile_sample_min_size * m.tile_overlap_factor)
        assert row_limit == stride * f, "diffusers' tile geometry must be consistent for this config"
        tiled = m.tiled_decode(tiled_latents).sample
        m.disable_tiling()
    assert (post.logvar == -30.0).any(), "the log-variance clamp is not exercised"
    for t in (post.mean, post.logvar, decoded, recon, tiled):
        assert torch.isfinite(t).all() and t.abs().mean() > 1e-3
    T = dict(m.state_dict())
    T.update({
        "input.image": image,
        "input.latents": latents,
        "input.sample_noise": noise,
        "input.tiled_latents": tiled_latents,
        "output.posterior_mean": post.mean,
        "output.posterior_logvar": post.logvar,
        "output.posterior_sample": sample,
        "output.scaled_mode": (post.mode() - shift) * scaling,
        "output.decode": decoded,
        "output.reconstruction": recon,
        "output.tiled_decode": tiled,
    })
    save(outdir, name, T, {
        "kind": "vae_diffusers", "config": cfg, "seed": seed, "tolerance": {"atol": 1e-4, "rtol": 1e-4},
        "tile_overlap_factor": m.tile_overlap_factor,
        "tensors": {
            "<state-dict keys>": "AutoencoderKL weights under diffusers' key names, randomized",
            "input.image": "[B, in_channels, H, W] image in [-1, 1]",
            "input.latents": "[B, latent_channels, H/f, W/f] unscaled latents fed to decode",
            "input.sample_noise": "[B, latent_channels, H/f, W/f] the standard normal draw of posterior.sample",
            "input.tiled_latents": "[1, latent_channels, h, w] unscaled latents larger than one tile",
            "output.posterior_mean": "encode(input.image).latent_dist.mean",
            "output.posterior_logvar": "encode(input.image).latent_dist.logvar (clamped to [-30, 20])",
            "output.posterior_sample": "latent_dist.sample(): mean + std * input.sample_noise",
            "output.scaled_mode": "(latent_dist.mode() - shift_factor) * scaling_factor (shift 0 when null)",
            "output.decode": "decode(input.latents).sample",
            "output.reconstruction": "forward(input.image): decode(encode(image).latent_dist.mode())",
            "output.tiled_decode": "tiled_decode(input.tiled_latents) with enable_tiling() defaults: latent tiles of "
                                   "sample_size / f, tile_overlap_factor overlap, linear blending",
        }})


if __name__ == "__main__":
    out = sys.argv[1]
    variant = sys.argv[2] if len(sys.argv) > 2 else "public"
    os.makedirs(out, exist_ok=True)
    if variant == "public":
        # SD-1/2 layout in miniature: quant convs, mid-block attention, 4 latent channels.
        vae(out, "vae_diffusers_tiny", dict(
            in_channels=3, out_channels=3, block_out_channels=[8, 16], layers_per_block=1, latent_channels=4,
            norm_num_groups=4, sample_size=16,
            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2), 2, 16, 16, (12, 14), 11)
        # SD3 layout in miniature: no quant convs, scale and shift, 3 levels, rectangular input.
        vae(out, "vae_diffusers_sd3like", dict(
            in_channels=3, out_channels=3, block_out_channels=[8, 16, 16], layers_per_block=2, latent_channels=16,
            norm_num_groups=8, sample_size=16, scaling_factor=1.5305, shift_factor=0.0609,
            use_quant_conv=False, use_post_quant_conv=False,
            down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3), 1, 16, 24, (7, 10), 12)
    else:
        vae(out, "vae_diffusers_noattn", dict(
            in_channels=3, out_channels=3, block_out_channels=[4, 8], layers_per_block=2, latent_channels=2,
            norm_num_groups=2, sample_size=8, mid_block_add_attention=False, scaling_factor=0.5,
            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2), 3, 8, 12, (9, 5), 21)
        vae(out, "vae_diffusers_gray", dict(
            in_channels=1, out_channels=2, block_out_channels=[8, 8, 16], layers_per_block=1, latent_channels=4,
            norm_num_groups=4, sample_size=32,
            down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3), 2, 16, 8, (10, 11), 22)
