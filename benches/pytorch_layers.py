"""Pieces shared by the PyTorch re-implementations used as benchmark references
(`pytorch_udit.py`, `pytorch_microdit.py`)."""
import math

import torch


def timestep_embedding(t, dim, max_period=10000):
    """DiT's sinusoidal timestep features `[cos, sin]` of `dim` frequencies (zero-padded if odd)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb
