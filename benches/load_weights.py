"""Checkpoint loading: peak resident memory and time, ours (`examples/load_weights.rs`) next to
diffusers' `from_pretrained` on the same files (every parameter then touched).

    python3 benches/load_weights.py make  [--root /tmp/loadbench] [CASE...]   # write the checkpoints
    python3 benches/load_weights.py run   [--root /tmp/loadbench] [--repeat 3] [--bin PATH] [CASE...]
    python3 benches/load_weights.py diffusers <dir> <dit|mmdit> <f32|bf16>   # one diffusers load

`make` builds each model on PyTorch's meta device (no memory) and streams random weights of the
right shapes into a safetensors file tensor by tensor, so the generator never holds a model:
DiT-XL/2 in diffusers' layout (per-block embedder copies equal to block 0's, as converted
checkpoints have them) in f32 and bf16, and SD3-medium's `SD3Transformer2DModel` (depth 24,
2.03B parameters) in f32 and bf16. `run` alternates ours reading the file (`load_weights`),
ours memory-mapping it (`LazyCheckpoint::open_mapped`), ours memory-mapping it with every
`Linear` weight a view of the file's pages (`LoadOptions::linear_layout` `Col`: no transpose, no
copy) and diffusers, `--repeat` times each under
`/usr/bin/time -v`, and prints the medians as a markdown table. Both sides touch (sum) every
parameter after loading, so mapped pages are really read. Build the Rust side first:
`cargo build --release --example load_weights`.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

CASES = [
    # name, model, file dtype, model dtype
    ("dit_xl_f32", "dit", "f32"),
    ("dit_xl_bf16", "dit", "bf16"),
    ("sd3m_f32", "mmdit", "f32"),
    ("sd3m_bf16", "mmdit", "bf16"),
]


def build(model, meta=True):
    import torch
    from diffusers import DiTTransformer2DModel, SD3Transformer2DModel

    with torch.device("meta" if meta else "cpu"):
        if model == "dit":
            return DiTTransformer2DModel(
                num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
                num_layers=28, sample_size=32, patch_size=2, num_embeds_ada_norm=1000,
            )
        return SD3Transformer2DModel(
            sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
            num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
            pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192,
        )


def make(root, cases):
    import torch

    for name, model, dtype in CASES:
        if cases and name not in cases:
            continue
        out = os.path.join(root, name)
        path = os.path.join(out, "diffusion_pytorch_model.safetensors")
        if os.path.exists(path):
            print(f"{path} exists")
            continue
        os.makedirs(out, exist_ok=True)
        m = build(model)
        m.save_config(out)
        tdtype = torch.float32 if dtype == "f32" else torch.bfloat16
        state = {k: v.shape for k, v in m.state_dict().items()}
        # per-block embedder copies of a converted DiT hold block 0's values
        source = {}
        for k in state:
            mm = re.match(r"transformer_blocks\.(\d+)\.norm1\.emb\.(.*)", k)
            source[k] = f"transformer_blocks.0.norm1.emb.{mm.group(2)}" if mm and mm.group(1) != "0" else k
        header, offset = {}, 0
        for k in sorted(state):
            n = 1
            for d in state[k]:
                n *= d
            size = n * (4 if dtype == "f32" else 2)
            header[k] = {"dtype": "F32" if dtype == "f32" else "BF16", "shape": list(state[k]),
                         "data_offsets": [offset, offset + size]}
            offset += size
        head = json.dumps(header).encode()
        head += b" " * (-len(head) % 8)
        with open(path + ".tmp", "wb") as f:
            f.write(len(head).to_bytes(8, "little"))
            f.write(head)
            for k in sorted(state):
                g = torch.Generator().manual_seed(sum(map(ord, source[k])))
                t = (torch.randn(state[k], generator=g) * 0.02).to(tdtype).contiguous()
                f.write(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        os.rename(path + ".tmp", path)
        params = sum(1 for _ in state)
        print(f"{path}: {params} tensors, {offset / 1e9:.2f} GB")


def diffusers_load(directory, model, dtype):
    import torch
    from diffusers import DiTTransformer2DModel, SD3Transformer2DModel

    torch.set_num_threads(2)
    cls = DiTTransformer2DModel if model == "dit" else SD3Transformer2DModel
    start, cpu = time.perf_counter(), time.process_time()
    m = cls.from_pretrained(directory, torch_dtype=torch.float32 if dtype == "f32" else torch.bfloat16)
    acc = 0.0
    with torch.no_grad():
        for p in m.parameters():
            acc += float(p.sum())
    print(f"loaded {sum(p.numel() for p in m.parameters())} parameters in "
          f"{time.perf_counter() - start:.2f} s (cpu {time.process_time() - cpu:.2f} s, checksum {acc:.3f})")


def measure(cmd):
    res = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1)) / 1e6
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", res.stderr).group(1)
    secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    load = float(re.search(r"parameters in ([\d.]+) s", res.stdout).group(1))
    cpu = sum(float(re.search(rf"{k} time \(seconds\): ([\d.]+)", res.stderr).group(1)) for k in ("User", "System"))
    # the in-process load's CPU time where the side reports it (diffusers), else the process's
    load_cpu = re.search(r"cpu ([\d.]+) s", res.stdout)
    return rss, secs, load, cpu, float(load_cpu.group(1)) if load_cpu else cpu


def run(root, repeat, binary, cases):
    rows = []
    for name, model, dtype in CASES:
        if cases and name not in cases:
            continue
        d = os.path.join(root, name)
        f = os.path.join(d, "diffusion_pytorch_model.safetensors")
        subprocess.run(["cat", f], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        # the model is built in the file's dtype on both sides
        read_cmd = [binary, model, f] + (["bf16"] if dtype == "bf16" else [])
        sides = {"read": read_cmd, "mapped": read_cmd + ["mapped"], "mapped col": read_cmd + ["mapped", "col"],
                 "diffusers": [sys.executable, __file__, "diffusers", d, model, dtype]}
        got = {k: [] for k in sides}
        for _ in range(repeat):
            for k, cmd in sides.items():
                got[k].append(measure(cmd))
        med = lambda xs, i: statistics.median(x[i] for x in xs)
        size = os.path.getsize(f) / 1e9
        rows.append((name, size, *[med(got[k], i) for k in sides for i in range(5)]))
        print(f"{name}: {got}", file=sys.stderr)
    # peak: resident high-water mark; process: whole process wall time (Python's imports
    # included) and its CPU time (user + system); load: in-process build + load + touch, wall
    # and CPU time (ours: the process's, which is all load)
    names = ["read", "mapped", "mapped col", "diffusers"]
    print("| checkpoint | file GB | " + " | ".join(
        f"{k}: peak GB | {k}: process s (CPU s) | {k}: load s (CPU s)" for k in names) + " |")
    print("|---|---|" + "---|---|---|" * len(names))
    for r in rows:
        print(f"| {r[0]} | {r[1]:.2f} | " + " | ".join(
            f"{r[i]:.2f} | {r[i + 1]:.1f} ({r[i + 3]:.1f}) | {r[i + 2]:.1f} ({r[i + 4]:.1f})"
            for i in range(2, 2 + 5 * len(names), 5)) + " |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["make", "run", "diffusers"])
    p.add_argument("args", nargs="*")
    p.add_argument("--root", default="/tmp/loadbench")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--bin", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "examples", "load_weights"))
    a = p.parse_args()
    if a.cmd == "make":
        make(a.root, a.args)
    elif a.cmd == "run":
        run(a.root, a.repeat, a.bin, a.args)
    else:
        diffusers_load(*a.args)


if __name__ == "__main__":
    main()
