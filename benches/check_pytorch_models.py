"""Check the PyTorch re-implementations used by `benches/pytorch_reference.py` against the
official-code fixtures: builds each model from the fixture sidecar's config, loads the weights
(official key names, `strict=True`), reruns every stored output it can and prints the max abs
error against the tolerance of the sidecar (`|ours - ref| <= atol + rtol * |ref|`).

    .venv/bin/python benches/check_pytorch_models.py [FIXTURE_DIR]

Exit status 1 when a reproduced output is out of tolerance or a fixture does not load.
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_microdit  # noqa: E402
import pytorch_udit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIXES = ("input.", "output.", "intermediate.", "schedule.", "eval_state.")


def load(fixture_dir, name):
    with open(os.path.join(fixture_dir, name + ".json")) as f:
        meta = json.load(f)
    return meta, load_file(os.path.join(fixture_dir, name + ".safetensors"))


def load_weights(model, tensors):
    """Load every non-prefixed tensor, plus prefixed ones the model owns (U-DiT has a module
    named `output`), with `strict=True`."""
    own = model.state_dict().keys()
    weights = {k: v for k, v in tensors.items() if k in own or not k.startswith(PREFIXES)}
    model.load_state_dict(weights, strict=True)


class Report:
    def __init__(self):
        self.failed = False

    def compare(self, fixture, key, ours, ref, tol, exact=False):
        ours, ref = ours.detach().to(ref.dtype), ref
        if exact:
            ok = torch.equal(ours, ref)
            err = (ours != ref).sum().item()
            print(f"  {fixture:28s} {key:26s} mismatches {err:<10d} {'ok' if ok else 'FAIL'}")
        else:
            diff = (ours - ref).abs()
            bound = tol["atol"] + tol["rtol"] * ref.abs()
            ok = bool((diff <= bound).all())
            print(f"  {fixture:28s} {key:26s} max abs err {diff.max().item():.3e} "
                  f"(atol {tol['atol']:g}, rtol {tol['rtol']:g}) {'ok' if ok else 'FAIL'}")
        self.failed |= not ok


def check_udit(fixture_dir, name, report):
    meta, tensors = load(fixture_dir, name)
    tol = meta["tolerance"]
    model = pytorch_udit.UDiT(**meta["config"])
    load_weights(model, tensors)
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: U-DiT {meta['config']} -> {n} parameters, state dict loaded (strict)")
    x, t, y = tensors["input.x"], tensors["input.t"], tensors["input.y"]
    with torch.no_grad():
        model.train()
        # train mode with the label dropout off (forced keep), as the fixture
        out = model(x, t, y, force_drop_ids=torch.zeros_like(y))
        report.compare(name, "forward_train", out, tensors["output.forward_train"], tol)
        model.eval()
        report.compare(name, "forward_eval", model(x, t, y), tensors["output.forward_eval"], tol)
        if "output.forward_with_cfg_eval" in tensors:
            out = model.forward_with_cfg(tensors["input.cfg_x"], tensors["input.cfg_t"], tensors["input.cfg_y"],
                                         meta["cfg_scale"], meta.get("cfg_channels", 3))
            report.compare(name, "forward_with_cfg_eval", out, tensors["output.forward_with_cfg_eval"], tol)
    for key in sorted(k for k in tensors if k.startswith("eval_state.")):
        print(f"  {name:28s} {key}: not compared (the eval-form weights are folded internally)")
    return model


def check_microdit(fixture_dir, name, report):
    meta, tensors = load(fixture_dir, name)
    tol = meta["tolerance"]
    cfg = dict(meta["config"])
    depth = cfg["depth"]
    # the sidecar gives the endpoints; the reference presets build the per-block multipliers
    qkv, mlp = cfg.pop("qkv_ratio"), cfg.pop("mlp_ratio")
    cfg["qkv_multipliers"] = np.linspace(qkv[0], qkv[1], num=depth, dtype=float)
    cfg["ffn_multipliers"] = np.linspace(mlp[0], mlp[1], num=depth, dtype=float)
    model = pytorch_microdit.MicroDiT(**cfg)
    load_weights(model, tensors)
    n = sum(p.numel() for p in model.parameters())
    print(f"{name}: MicroDiT {meta['config']} -> {n} parameters, state dict loaded (strict)")
    x, t, y = tensors["input.x"], tensors["input.t"], tensors["input.y"]
    model.eval()
    with torch.no_grad():
        report.compare(name, "forward", model(x, t, y)["sample"], tensors["output.forward"], tol)
        if "output.forward_masked" in tensors:
            noise = tensors["input.mask_ratio_noise"]
            ratio = meta["mask_ratio"]
            mask = pytorch_microdit.random_mask(x.shape[0], noise.shape[1], ratio, x.device, noise)
            for k in ("ids_keep", "ids_restore"):
                report.compare(name, k, mask[k], tensors[f"output.{k}"], tol, exact=True)
            report.compare(name, "mask", mask["mask"], tensors["output.mask"], tol, exact=True)
            out = model(x, t, y, mask_ratio=ratio, mask_noise=noise)
            report.compare(name, "forward_masked", out["sample"], tensors["output.forward_masked"], tol)
            report.compare(name, "forward_masked mask", out["mask"], tensors["output.mask"], tol, exact=True)
        if "output.forward_with_cfg" in tensors:
            out = model(x, t, y, cfg=meta["cfg_scale"])["sample"]
            report.compare(name, "forward_with_cfg", out, tensors["output.forward_with_cfg"], tol)
        # the gather-based MoE dispatch computes the same function
        saved = pytorch_microdit.MOE_DISPATCH
        pytorch_microdit.MOE_DISPATCH = "gather"
        try:
            report.compare(name, "forward (gather MoE)", model(x, t, y)["sample"], tensors["output.forward"], tol)
        finally:
            pytorch_microdit.MOE_DISPATCH = saved
    return model


def main():
    fixture_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fixtures")
    torch.set_grad_enabled(True)
    report = Report()
    found = False
    for fname in sorted(os.listdir(fixture_dir)):
        if not fname.endswith(".json"):
            continue
        name = fname[:-5]
        with open(os.path.join(fixture_dir, fname)) as f:
            kind = json.load(f).get("kind")
        check = {"udit_official": check_udit, "microdit_official": check_microdit}.get(kind)
        if check is None:
            continue
        found = True
        try:
            check(fixture_dir, name, report)
        except Exception as e:  # a fixture that does not load or run is a failure, not a crash
            print(f"{name}: FAIL ({type(e).__name__}: {e})")
            report.failed = True
    # the preset sizes the benchmark times
    udit = pytorch_udit.udit_s()
    micro = pytorch_microdit.microdit_tiny_2()
    print(f"U-DiT-S parameters: {sum(p.numel() for p in udit.parameters())} "
          f"(inference form {udit.num_params_inference()})")
    print(f"MicroDiT_Tiny_2 parameters: {sum(p.numel() for p in micro.parameters())} "
          f"(+ {sum(b.numel() for b in micro.buffers())} buffer elements: pos_embed, mask_token)")
    if not found:
        print("no udit_official / microdit_official fixture found")
        report.failed = True
    print("FAILED" if report.failed else "all reproduced outputs within tolerance")
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()
