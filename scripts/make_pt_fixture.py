"""Write the official-DiT fixture weights as a plain `torch.save` state dict, the format of the
released DiT checkpoints (`DiT-XL-2-256x256.pt`), so the `.pt` loading path is tested.

    .venv/bin/python scripts/make_pt_fixture.py tests/fixtures/dit_official_tiny.safetensors tests/data/dit_official_tiny.pt
"""
import sys

import torch
from safetensors.torch import load_file


def main(src: str, dst: str) -> None:
    tensors = load_file(src)
    prefixes = ("input.", "output.", "intermediate.")
    state = {k: v.contiguous() for k, v in tensors.items() if not k.startswith(prefixes)}
    torch.save(state, dst)
    print(f"wrote {len(state)} tensors to {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
