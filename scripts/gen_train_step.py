"""Reference fixture for the training loop (kind `train_step_diffusers`): a few optimizer steps
of diffusers' `DiTTransformer2DModel` under the rectified-flow objective, with PyTorch's
`torch.optim.AdamW`, per-parameter gradient-norm clipping and an EMA of the weights.

usage: python scripts/gen_train_step.py OUTDIR

Each step: `z_t = (1 - t) x0 + t noise`, the model sees `t * 1000`, loss = mean squared error
against the velocity `noise - x0` (SD3's training target, no weighting); backward; each
parameter's gradient clipped to norm `max_grad_norm` on its own
(`clip_grad_norm_([p], c)` per parameter: the crate's `grad_clip_norm`, as Burn's
`GradientClipping::Norm`); `AdamW.step()`; then `ema = d ema + (1 - d) p`. The model runs in eval
mode (no label dropout: the batch's labels, null label included, are used as given). Every
parameter starts from seeded random values so the gradients are non-trivial."""
import json, os, sys
import torch
import diffusers
from diffusers import DiTTransformer2DModel
from safetensors.torch import save_file

torch.set_num_threads(2)


def main(outdir):
    cfg = {"num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 4, "out_channels": 4, "num_layers": 2,
           "sample_size": 8, "patch_size": 2, "num_embeds_ada_norm": 10}
    train = {"steps": 3, "batch": 4, "lr": 2e-3, "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.01,
             "max_grad_norm": 0.05, "ema_decay": 0.9, "timestep_scale": 1000.0,
             # Adam moves a parameter by about lr per step whatever its gradient's size, so a gradient
             # component near zero (a sum that cancels) flips sign under another summation order:
             # the weights are compared to a tenth of a step, the losses to `tolerance`.
             "param_atol": 2e-4}
    seed = 7
    torch.manual_seed(seed)
    m = DiTTransformer2DModel(**cfg).eval()
    g = torch.Generator().manual_seed(seed)
    for _, p in m.named_parameters():
        p.data = torch.randn(p.shape, generator=g) * (0.1 if p.dim() > 1 else 0.05)
    T = {k: v.clone() for k, v in m.state_dict().items()}
    B, C, S = train["batch"], cfg["in_channels"], cfg["sample_size"]
    ema = {k: v.detach().clone() for k, v in m.named_parameters()}
    opt = torch.optim.AdamW(m.parameters(), lr=train["lr"], betas=tuple(train["betas"]), eps=train["eps"],
                            weight_decay=train["weight_decay"])
    losses = []
    for s in range(train["steps"]):
        x0 = torch.randn(B, C, S, S, generator=g)
        noise = torch.randn(B, C, S, S, generator=g)
        t = torch.rand(B, generator=g) * 0.9 + 0.05
        y = torch.randint(0, cfg["num_embeds_ada_norm"] + 1, (B,), generator=g)  # the null label may appear
        z = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * noise
        pred = m(hidden_states=z, timestep=t * train["timestep_scale"], class_labels=y).sample
        loss = torch.nn.functional.mse_loss(pred, noise - x0)
        opt.zero_grad()
        loss.backward()
        for p in m.parameters():
            torch.nn.utils.clip_grad_norm_([p], train["max_grad_norm"])
        opt.step()
        with torch.no_grad():
            for k, p in m.named_parameters():
                ema[k].mul_(train["ema_decay"]).add_(p, alpha=1 - train["ema_decay"])
        losses.append(loss.item())
        T.update({f"input.x0.{s}": x0, f"input.noise.{s}": noise, f"input.t.{s}": t, f"input.y.{s}": y.long()})
    T["output.loss"] = torch.tensor(losses)
    for k, v in m.state_dict().items():  # parameters and buffers (the fixed position table)
        T[f"output.params.{k}"] = v.detach()
        T[f"output.ema.{k}"] = ema.get(k, v).detach()
    name = "train_step_diffusers_dit_flow"
    save_file({k: v.detach().contiguous().clone() for k, v in T.items()}, f"{outdir}/{name}.safetensors")
    side = {
        "kind": "train_step_diffusers",
        "source": {"package": "diffusers", "version": diffusers.__version__, "torch": torch.__version__,
                   "class": "DiTTransformer2DModel", "optimizer": "torch.optim.AdamW"},
        "config": cfg, "training": train, "seed": seed,
        "tolerance": {"atol": 1e-5, "rtol": 1e-5},
        "tensors": {
            "<state-dict keys>": "the initial weights, DiTTransformer2DModel's layout (one timestep/label embedder per block), randomized",
            "input.x0.S / input.noise.S": "[B, C, H, W] clean data and noise of step S",
            "input.t.S": "[B] flow times in (0, 1) of step S (the model sees t * timestep_scale)",
            "input.y.S": "[B] int64 labels of step S; num_embeds_ada_norm is the null label",
            "output.loss": "[steps] the loss of each step (before its update)",
            "output.params.<key>": "the state dict after the last step, diffusers' layout",
            "output.ema.<key>": "the EMA of every parameter after the last step (decay ema_decay, no warm-up), buffers as they are",
        },
    }
    json.dump(side, open(f"{outdir}/{name}.json", "w"), indent=1)
    print(name, os.path.getsize(f"{outdir}/{name}.safetensors"), "losses", losses)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
