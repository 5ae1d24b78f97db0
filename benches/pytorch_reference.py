"""Time the crate's benchmark workloads in PyTorch on the same machine.

The official DiT/SD3 model code is not a package, so the reference models are diffusers'
`DiTTransformer2DModel` and `SD3Transformer2DModel` (same architectures), and PyTorch
re-implementations of U-DiT and MicroDiT (`pytorch_udit.py`, `pytorch_microdit.py`); samplers are
diffusers' schedulers. Inference runs in
eval mode under `torch.no_grad()`; a training step is forward + MSE + backward + AdamW
(lr 1e-4, no weight decay), as the crate's benches. Results (median seconds per workload)
are written as JSON for `benches/report.py`.

    .venv/bin/python benches/pytorch_reference.py --threads 2 --out target/pytorch.json [--device cuda]
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from diffusers import DiTTransformer2DModel, SD3Transformer2DModel

DIT = {"DiT-S/2": (12, 384, 6), "DiT-B/2": (12, 768, 12)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


PEAKS = []  # peak resident memory of each `timeit` call, in call order


def peak_rss_bytes():
    """Linux VmHWM of this process (bytes), or None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def timeit(fn, device, repeat, warmup=2):
    """Median seconds of `repeat` calls after `warmup` calls; appends the peak resident memory
    of the process during them (reset first through /proc/self/clear_refs) to PEAKS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    PEAKS.append(peak_rss_bytes())
    return statistics.median(times)


def dit(name, device, dtype):
    depth, hidden, heads = DIT[name]
    return DiTTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=4, out_channels=8,
        num_layers=depth, sample_size=32, patch_size=2, num_embeds_ada_norm=1000,
    ).to(device=device, dtype=dtype)


def mmdit(depth, device, dtype):
    """SD3-medium's widths at `depth` (hidden 64 * depth, text 4096 -> hidden, pooled 2048),
    as the crate's `MMDiTConfig::from_depth(depth)` with 32x32 latents."""
    return SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=16, num_layers=depth, attention_head_dim=64,
        num_attention_heads=depth, joint_attention_dim=4096, caption_projection_dim=64 * depth,
        pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192,
    ).to(device=device, dtype=dtype)


def train_step(model, forward, target, lr=1e-4):
    """forward + MSE + backward + AdamW (no weight decay), as the crate's benches."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(forward(), target).backward()
        opt.step()

    return step


SAMPLER_STEPS = 4


def sampler_workloads(device, dtype, repeat):
    """One step of each sampler (a 4-step run / 4) with DiT-S/2 at batch 8, as benches/samplers.rs:
    DDPM / DDIM / DPM-Solver++(2M) with the learned-sigma model, flow Euler / Heun without."""
    from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                           FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler)
    depth, hidden, heads = DIT["DiT-S/2"]
    batch = 8
    x0 = torch.randn(batch, 4, 32, 32, device=device, dtype=dtype)
    y = torch.ones(batch, dtype=torch.long, device=device)
    results = {}
    gaussian = dit("DiT-S/2", device, dtype).eval()
    flow = DiTTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=4, out_channels=4,
        num_layers=depth, sample_size=32, patch_size=2, num_embeds_ada_norm=1000,
    ).to(device=device, dtype=dtype).eval()
    betas = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    schedulers = {
        "ddpm": (DDPMScheduler(**betas, variance_type="learned_range"), gaussian, True),
        "ddim": (DDIMScheduler(**betas), gaussian, False),
        # diffusers' DPM-Solver drops learned variances as `[:, :3]` (RGB only): pass the eps half.
        "dpm++2m": (DPMSolverMultistepScheduler(**betas, algorithm_type="dpmsolver++", solver_order=2),
                    gaussian, False),
        "flow_euler": (FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000), flow, True),
        "flow_heun": (FlowMatchHeunDiscreteScheduler(num_train_timesteps=1000), flow, True),
    }
    for name, (sched, model, all_channels) in schedulers.items():
        def run():
            sched.set_timesteps(SAMPLER_STEPS)
            x = x0.clone()
            for t in sched.timesteps:
                tt = t.expand(batch).to(device)
                xin = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
                out = model(xin, timestep=tt, class_labels=y).sample
                x = sched.step(out if all_channels else out[:, :4], t, x).prev_sample
            return x

        with torch.no_grad():
            results[f"sampler_step/{name}/DiT-S/2/b{batch}"] = timeit(run, device, repeat) / SAMPLER_STEPS
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-samplers", action="store_true", help="skip the sampler-step workloads")
    ap.add_argument("--only", help="time only the DiT workloads whose name/batch contains this, e.g. DiT-S/2/b8")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    results = {}

    for name in DIT:
        batches = [b for b in (1, 8) if not args.only or args.only in f"{name}/b{b}"]
        if not batches:
            continue
        model = dit(name, device, dtype)
        for batch in batches:
            x = torch.randn(batch, 4, 32, 32, device=device, dtype=dtype)
            t = torch.full((batch,), 500, device=device)
            y = torch.ones(batch, dtype=torch.long, device=device)
            model.eval()
            with torch.no_grad():
                results[f"dit_forward/{name}/b{batch}"] = timeit(
                    lambda: model(x, timestep=t, class_labels=y), device, args.repeat)
            model.train()
            target = torch.randn(batch, 8, 32, 32, device=device, dtype=dtype)
            forward = lambda: model(x, timestep=t, class_labels=y).sample
            results[f"dit_train_step/{name}/b{batch}"] = timeit(train_step(model, forward, target), device, args.repeat)
        del model

    if args.only:
        write(args, results)
        return

    model = mmdit(8, device, dtype).eval()
    x = torch.randn(2, 16, 32, 32, device=device, dtype=dtype)
    ctx = torch.randn(2, 77, 4096, device=device, dtype=dtype)
    pooled = torch.randn(2, 2048, device=device, dtype=dtype)
    t = torch.full((2,), 500.0, device=device)
    forward = lambda: model(x, encoder_hidden_states=ctx, pooled_projections=pooled, timestep=t).sample
    with torch.no_grad():
        results["mmdit_forward/d8/b2"] = timeit(forward, device, args.repeat)
    model.train()
    results["mmdit_train_step/d8/b2"] = timeit(
        train_step(model, forward, torch.randn(2, 16, 32, 32, device=device, dtype=dtype)), device, args.repeat)
    del model

    if not args.no_samplers:
        results.update(sampler_workloads(device, dtype, args.repeat))

    # U-DiT and MicroDiT: PyTorch re-implementations of the official models (no package exists),
    # checked against the official fixtures by benches/check_pytorch_models.py.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import pytorch_microdit
    import pytorch_udit
    for module in (pytorch_udit, pytorch_microdit):
        results.update(module.time_workloads(device, dtype, args.repeat, timeit))

    write(args, results)


def write(args, results):
    meta = {
        "torch": torch.__version__, "threads": args.threads, "device": args.device, "dtype": args.dtype,
        "machine": platform.processor() or platform.machine(),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    }
    # every workload is one `timeit` call, made in the order the keys were inserted
    peak = dict(zip(results, PEAKS)) if len(PEAKS) == len(results) else {}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "median_s": results, "peak_rss_bytes": peak}, f, indent=1)
    for k, v in results.items():
        print(f"{k}: {v * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
