"""PyTorch/diffusers counterpart of `examples/sd3_step_time.rs`: seconds per denoising step of
SD3-medium shapes on random weights (MM-DiT depth 24, one prompt with classifier-free guidance,
so batch 2 per model call; 333 text tokens of width 4096; flow Euler with shift 3), then the SD3
VAE's decode of one latent.

    python3 benches/pytorch_sd3_step.py --device cuda --dtype float16 --steps 5

Weights are initialised on the device (random, as diffusers' constructors do). Each step and the
decode are timed after a device sync; `--warmup` untimed calls of each come first.
"""

import argparse
import json
import statistics
import time

import torch
from diffusers import AutoencoderKL, SD3Transformer2DModel


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--depth", type=int, default=24)
    ap.add_argument("--text-tokens", type=int, default=333)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    with torch.device(device):
        model = SD3Transformer2DModel(
            sample_size=128, patch_size=2, in_channels=16, num_layers=args.depth, attention_head_dim=64,
            num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
            pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192,
        ).to(dtype).eval()
    side = args.size // 8
    text = torch.randn(1, args.text_tokens, 4096, device=device, dtype=dtype)
    pooled = torch.randn(1, 2048, device=device, dtype=dtype)
    ctx, pool = torch.cat([text * 0.5, text]), torch.cat([pooled * 0.5, pooled])
    x = torch.randn(1, 16, side, side, device=device, dtype=dtype)
    # flow Euler with shift 3 over `steps` steps, sigmas from 1 to 0 (SD3's scheduler)
    s = torch.linspace(1.0, 1.0 / args.steps, args.steps)
    sigmas = torch.cat([3.0 * s / (1 + 2.0 * s), torch.zeros(1)]).tolist()

    def denoise(x, sigma):
        t = torch.full((2,), sigma * 1000.0, device=device, dtype=dtype)
        v = model(torch.cat([x, x]), encoder_hidden_states=ctx, pooled_projections=pool, timestep=t).sample
        uncond, cond = v.chunk(2)
        return uncond + 7.0 * (cond - uncond)

    steps = []
    with torch.no_grad():
        for _ in range(args.warmup):
            denoise(x, sigmas[0])
        sync(device)
        for i in range(args.steps):
            start = time.perf_counter()
            x = x + (sigmas[i + 1] - sigmas[i]) * denoise(x, sigmas[i])
            sync(device)
            steps.append(time.perf_counter() - start)
            print(f"step {i + 1}/{args.steps}: {steps[-1]:.3f} s", flush=True)
        del model
        with torch.device(device):
            vae = AutoencoderKL(
                in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
                layers_per_block=2, latent_channels=16, norm_num_groups=32, use_quant_conv=False,
                use_post_quant_conv=False, scaling_factor=1.5305, shift_factor=0.0609,
            ).to(dtype).eval()
        z = x / 1.5305 + 0.0609
        for _ in range(args.warmup):
            vae.decode(z)
        sync(device)
        start = time.perf_counter()
        vae.decode(z).sample.float().cpu()
        decode = time.perf_counter() - start
    step = statistics.median(steps)
    print(f"denoising: {step:.3f} s per step (median of {args.steps}); VAE decode {decode:.3f} s "
          f"({args.device}, {args.dtype}, torch {torch.__version__})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"step_s": steps, "decode_s": decode, "device": args.device, "dtype": args.dtype,
                       "torch": torch.__version__, "size": args.size, "depth": args.depth}, f, indent=1)


if __name__ == "__main__":
    main()
