"""Time the crate's benchmark workloads in PyTorch on the same machine.

The official DiT/SD3 model code is not a package, so the reference models are diffusers'
`DiTTransformer2DModel` and `SD3Transformer2DModel` (same architectures). Inference runs in
eval mode under `torch.no_grad()`; a training step is forward + MSE + backward + AdamW
(lr 1e-4, no weight decay), as the crate's benches. Results (median seconds per workload)
are written as JSON for `benches/report.py`.

    .venv/bin/python benches/pytorch_reference.py --threads 2 --out target/pytorch.json [--device cuda]
"""
import argparse
import json
import platform
import statistics
import time

import torch
from diffusers import DiTTransformer2DModel, SD3Transformer2DModel

DIT = {"DiT-S/2": (12, 384, 6), "DiT-B/2": (12, 768, 12)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def dit(name, device, dtype):
    depth, hidden, heads = DIT[name]
    return DiTTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=4, out_channels=8,
        num_layers=depth, sample_size=32, patch_size=2, num_embeds_ada_norm=1000,
    ).to(device=device, dtype=dtype)


def mmdit(depth, device, dtype):
    return SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=16, num_layers=depth, attention_head_dim=64,
        num_attention_heads=depth, joint_attention_dim=4096 // 8, caption_projection_dim=64 * depth,
        pooled_projection_dim=2048 // 8, out_channels=16, pos_embed_max_size=64,
    ).to(device=device, dtype=dtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    results = {}

    for name in DIT:
        model = dit(name, device, dtype)
        for batch in (1, 8):
            x = torch.randn(batch, 4, 32, 32, device=device, dtype=dtype)
            t = torch.full((batch,), 500, device=device)
            y = torch.ones(batch, dtype=torch.long, device=device)
            model.eval()
            with torch.no_grad():
                results[f"dit_forward/{name}/b{batch}"] = timeit(
                    lambda: model(x, timestep=t, class_labels=y), device, args.repeat)
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
            target = torch.randn(batch, 8, 32, 32, device=device, dtype=dtype)

            def step():
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.mse_loss(model(x, timestep=t, class_labels=y).sample, target)
                loss.backward()
                opt.step()

            results[f"dit_train_step/{name}/b{batch}"] = timeit(step, device, args.repeat)
        del model

    model = mmdit(8, device, dtype).eval()
    x = torch.randn(2, 16, 32, 32, device=device, dtype=dtype)
    ctx = torch.randn(2, 77, 512, device=device, dtype=dtype)
    pooled = torch.randn(2, 256, device=device, dtype=dtype)
    t = torch.full((2,), 500.0, device=device)
    with torch.no_grad():
        results["mmdit_forward/d8/b2"] = timeit(
            lambda: model(x, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=t), device, args.repeat)

    meta = {
        "torch": torch.__version__, "threads": args.threads, "device": args.device, "dtype": args.dtype,
        "machine": platform.processor() or platform.machine(),
    }
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "median_s": results}, f, indent=1)
    for k, v in results.items():
        print(f"{k}: {v * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
