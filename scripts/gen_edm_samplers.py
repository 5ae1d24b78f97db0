"""Sampler trajectories from diffusers' EDM schedulers (PyPI `diffusers`), kind `sampler_diffusers`.

The same protocol as the shared `gen_samplers.py`: a tiny class-conditional DiTTransformer2DModel
(diffusers layout, no learned sigma, randomized weights) is sampled with `EDMEulerScheduler` or
`EDMDPMSolverMultistepScheduler` exactly as diffusers' pipelines do:

    scheduler.set_timesteps(num_inference_steps)
    x = input.noise * scheduler.init_noise_sigma                # sqrt(sigma_max^2 + 1) for these
    for i, t in enumerate(scheduler.timesteps):                 # t = c_noise = ln(sigma) / 4
        xin = scheduler.scale_model_input(x, t)                 # c_in x
        out = model(cat[xin, xin], t, cat[labels, null_class])  # guidance_scale > 1
        out = out_uncond + guidance_scale * (out_cond - out_uncond)
        x = scheduler.step(out, t, x).prev_sample               # x_0 = c_skip x + c_out out
        intermediate.x[i] = x

Every random draw inside `step` (the SDE solver) is recorded, in order, as `input.step_noise`.

usage: python scripts/gen_edm_samplers.py OUTDIR"""
import copy, importlib, inspect, json, os, sys
import torch
from safetensors.torch import save_file
import diffusers
from diffusers import DiTTransformer2DModel, EDMEulerScheduler, EDMDPMSolverMultistepScheduler

torch.set_num_threads(2)
CLASSES = {c.__name__: c for c in [EDMEulerScheduler, EDMDPMSolverMultistepScheduler]}
DRAWS, REPLAY = [], []


def recording_randn(shape, generator=None, device=None, dtype=None, layout=None, **kw):
    if REPLAY:
        return REPLAY.pop(0).to(dtype or torch.float32)
    t = torch.randn(shape, generator=generator, dtype=dtype or torch.float32)
    DRAWS.append(t.clone())
    return t


for mod in ["scheduling_edm_euler", "scheduling_edm_dpmsolver_multistep"]:
    m = importlib.import_module(f"diffusers.schedulers.{mod}")
    if hasattr(m, "randn_tensor"):
        m.randn_tensor = recording_randn


def randomize(model, seed, std=0.03):
    g = torch.Generator().manual_seed(seed)
    for _, p in model.named_parameters():
        p.data = torch.randn(p.shape, generator=g) * (std if p.dim() > 1 else std / 2)


def run(model, sch, noise, labels, null, steps, gscale, dtype):
    model = model.to(dtype)
    sch.set_timesteps(steps)
    x = (noise * sch.init_noise_sigma).to(dtype)
    xs, g = [], torch.Generator().manual_seed(12345)
    DRAWS.clear()
    for t in sch.timesteps:
        xin = sch.scale_model_input(x, t)
        b = xin.shape[0]
        xin2, y2 = (torch.cat([xin, xin]), torch.cat([labels, torch.full_like(labels, null)])) if gscale > 1 else (xin, labels)
        tt = torch.full((xin2.shape[0],), float(t), dtype=dtype)
        with torch.no_grad():
            out = model(hidden_states=xin2, timestep=tt, class_labels=y2).sample
        if gscale > 1:
            out = out[b:] + gscale * (out[:b] - out[b:])
        kw = {"generator": g} if "generator" in inspect.signature(sch.step).parameters else {}
        x = sch.step(out, t, x, **kw).prev_sample.to(dtype)
        xs.append(x.clone())
    return torch.stack(xs), sch.timesteps.clone(), list(DRAWS)


def fixture(outdir, name, sched_name, sched_cfg, steps, gscale, seed, B=2):
    mcfg = dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, num_layers=2,
                sample_size=8, patch_size=2, num_embeds_ada_norm=10)
    torch.manual_seed(seed)
    model = DiTTransformer2DModel(**mcfg).eval()
    randomize(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    noise = torch.randn(B, mcfg["in_channels"], mcfg["sample_size"], mcfg["sample_size"], generator=g)
    labels = torch.randint(0, mcfg["num_embeds_ada_norm"], (B,), generator=g)
    null = mcfg["num_embeds_ada_norm"]
    cls = CLASSES[sched_name]
    xs, ts, draws = run(model, cls(**sched_cfg), noise, labels, null, steps, gscale, torch.float32)
    # Precision check: the same trajectory in float64 (same draws).
    REPLAY[:] = [d.clone() for d in draws]
    xs64, _, _ = run(copy.deepcopy(model), cls(**sched_cfg), noise.double(), labels, null, steps, gscale, torch.float64)
    assert not REPLAY, "float64 run drew a different number of noises"
    drift = float((xs64.float() - xs).abs().max())
    scale = float(xs.abs().max())
    atol = float(f"{max(1e-4, 10 * drift):.1e}")
    assert torch.isfinite(xs).all() and xs[-1].abs().mean() > 1e-3
    T = dict(model.state_dict())
    T.update({"input.noise": noise, "input.class_labels": labels.long(), "schedule.timesteps": ts.float(),
              "intermediate.x": xs, "output.sample": xs[-1].clone()})
    if draws:
        T["input.step_noise"] = torch.stack(draws).float()
    side = {"kind": "sampler_diffusers", "config": {
                "model": mcfg, "scheduler": {"class": sched_name, "config": sched_cfg},
                "num_inference_steps": steps, "guidance_scale": gscale, "null_class": null,
                "step_kwargs": {}, "f64_drift": drift, "max_abs_value": scale},
            "seed": seed, "tolerance": {"atol": atol, "rtol": 1e-4},
            "source": {"package": "diffusers", "version": diffusers.__version__, "script": "scripts/gen_edm_samplers.py"},
            "tensors": {"<state-dict keys>": "DiTTransformer2DModel weights (diffusers layout, out_channels = in_channels), randomized",
                        "input.noise": "[B, C, H, W] x_T before multiplying by the scheduler's init_noise_sigma = sqrt(sigma_max^2 + 1)",
                        "input.class_labels": "[B] int64; the unconditional half uses null_class",
                        "input.step_noise": "[n_draws, B, C, H, W] (SDE solver only) every draw made inside step(), in order",
                        "schedule.timesteps": "[n] scheduler.timesteps = ln(sigma) / 4 (passed to the model as the timestep of every row)",
                        "intermediate.x": "[n, B, C, H, W] the sample after each scheduler step",
                        "output.sample": "[B, C, H, W] the final sample"}}
    save_file({k: v.detach().contiguous().clone() for k, v in T.items()}, f"{outdir}/{name}.safetensors")
    json.dump(side, open(f"{outdir}/{name}.json", "w"), indent=1)
    print(name, sched_name, steps, "draws", len(draws), "f64 drift", drift, "max |x|", scale, "atol", atol)


if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    EDM = dict(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5)
    fixture(out, "sampler_edm_euler", "EDMEulerScheduler", dict(EDM, sigma_schedule="karras", rho=7.0), 8, 3.0, 301)
    fixture(out, "sampler_edm_dpmpp2m", "EDMDPMSolverMultistepScheduler", dict(EDM, solver_order=2), 10, 4.0, 302)
    fixture(out, "sampler_edm_dpmpp_sde_exp", "EDMDPMSolverMultistepScheduler",
            dict(EDM, sigma_schedule="exponential", algorithm_type="sde-dpmsolver++", solver_order=2), 12, 2.0, 303)
