"""MicroDiT (Sehwag et al., "Stretching Each Dollar: Diffusion Training from Scratch on a
Micro-Budget", arXiv:2407.15811) in plain PyTorch, for the benchmark comparison of
`benches/pytorch_reference.py`.

An independent re-implementation written from the architecture description (the crate's
`src/models/microdit.rs`, `../shared/reference-notes.md`); it is not the official code, but it
keeps the official constructor arguments (`DiT(...)` of micro_diffusion) and state-dict key names,
so an official checkpoint (or the `tests/fixtures/microdit_official_*` fixtures) loads with
`load_state_dict(strict=True)` and gives the official outputs (`benches/check_pytorch_models.py`
measures that).

Structure:
- patch embedding (conv, kernel = stride = patch) + fixed 2-D sin-cos table (`pos_embed` buffer);
- timestep embedder (512 frequencies, tanh-GELU MLP);
- caption path: `y_embedder` MLP (fc1, tanh-GELU, LayerNorm, fc2) on `[B, 1, L, C_cap]` captions,
  one self-attention block over the caption tokens (`y_emb_preprocess`), and the mean caption
  token through another MLP (`pooled_y_emb_process`) added to the timestep embedding;
- patch-mixer: `patch_mixer_depth` blocks at `patch_mixer_dim` (with norm+linear maps in and out
  when that differs from `dim`); deferred masking (`mask_ratio`) drops tokens after the mixer;
- backbone: `depth` blocks with layer-wise scaling (per-block qkv and FFN multipliers), each
  adaLN-modulated self-attention (LayerNorm on the whole q and k), un-gated cross-attention to the
  caption tokens, and a SwiGLU FFN, replaced by an expert-choice MoE in every
  `experts_every_n`-th block (never the last);
- final adaLN layer; removed tokens are filled with `mask_token` before unpatchify.
LayerNorms carry a weight but no bias (`bias=False`); the q/k norms have no affine at all.
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pytorch_layers import timestep_embedding

# Token dispatch of the expert-choice MoE: "einsum" builds the one-hot dispatch tensor
# `[B, E, k, T]` and contracts it as the official `FeedForwardECMoe`; "gather" indexes the chosen
# tokens and scatter-adds the results (the same function, less work).
MOE_DISPATCH = "einsum"


def layer_norm(dim, eps):
    """The reference's 'layernorm': weight, no bias."""
    return nn.LayerNorm(dim, eps=eps, bias=False)


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def sincos_1d(dim, pos):
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim, grid_size, pos_interp_scale=1.0, base_size=16):
    """`[N, dim]` table; the first half of the channels encodes the column, the second the row,
    coordinates scaled by `base_size / grid_size / pos_interp_scale`."""
    coords = np.arange(grid_size, dtype=np.float32) / (grid_size / base_size) / pos_interp_scale
    cols, rows = np.meshgrid(coords, coords)  # cols varies along the row-major token index
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)


class Mlp(nn.Module):
    """fc1 -> act -> norm -> fc2."""

    def __init__(self, in_features, hidden_features, out_features, norm=None, bias=True):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = nn.GELU(approximate="tanh")
        self.norm = norm if norm is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)

    def forward(self, x):
        return self.fc2(self.norm(self.act(self.fc1(x))))


class CaptionProjection(nn.Module):
    def __init__(self, in_channels, hidden_size, eps):
        super().__init__()
        self.y_proj = Mlp(in_channels, hidden_size, hidden_size, norm=layer_norm(hidden_size, eps))

    def forward(self, y):
        return self.y_proj(y)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size, frequency_embedding_size=512):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden_size, hidden_size))
        self.frequency_embedding_size = frequency_embedding_size

    def forward(self, t):
        return self.mlp(timestep_embedding(t, self.frequency_embedding_size).to(self.mlp[0].weight.dtype))


def _qk_norm(z, eps):
    """Parameter-free LayerNorm over all heads together (`[B, N, hidden]`)."""
    return F.layer_norm(z, (z.shape[-1],), eps=eps)


class SelfAttention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=True, norm_eps=1e-6, hidden_dim=None):
        super().__init__()
        hidden_dim = hidden_dim or dim
        assert hidden_dim % num_heads == 0
        self.num_heads, self.head_dim, self.hidden_dim, self.eps = num_heads, hidden_dim // num_heads, hidden_dim, norm_eps
        self.qkv = nn.Linear(dim, 3 * hidden_dim, bias=qkv_bias)
        self.proj = nn.Linear(hidden_dim, dim, bias=qkv_bias)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k = _qk_norm(q, self.eps), _qk_norm(k, self.eps)
        q, k, v = (z.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2) for z in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, self.hidden_dim)
        return self.proj(out)


class CrossAttention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=True, norm_eps=1e-6, hidden_dim=None):
        super().__init__()
        hidden_dim = hidden_dim or dim
        assert hidden_dim % num_heads == 0
        self.num_heads, self.head_dim, self.hidden_dim, self.eps = num_heads, hidden_dim // num_heads, hidden_dim, norm_eps
        self.q_linear = nn.Linear(dim, hidden_dim, bias=qkv_bias)
        self.kv_linear = nn.Linear(dim, 2 * hidden_dim, bias=qkv_bias)
        self.proj = nn.Linear(hidden_dim, dim, bias=qkv_bias)

    def forward(self, x, cond):
        b, n, _ = x.shape
        cond = cond.reshape(b, -1, cond.shape[-1])  # [B, 1, L, D] or [B, L, D]
        q = _qk_norm(self.q_linear(x), self.eps)
        k, v = self.kv_linear(cond).chunk(2, dim=-1)
        k = _qk_norm(k, self.eps)
        q = q.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = (z.reshape(b, -1, self.num_heads, self.head_dim).transpose(1, 2) for z in (k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, self.hidden_dim)
        return self.proj(out)


def round_up(x, m):
    return m * ((x + m - 1) // m)


class FeedForward(nn.Module):
    """SwiGLU `w3(silu(w1 x) * w2 x)`, hidden `int(2 h / 3)` rounded up to `multiple_of`."""

    def __init__(self, dim, hidden_dim, multiple_of, use_bias):
        super().__init__()
        self.hidden_dim = round_up(int(2 * hidden_dim / 3), multiple_of)
        self.w1 = nn.Linear(dim, self.hidden_dim, bias=use_bias)
        self.w2 = nn.Linear(dim, self.hidden_dim, bias=use_bias)
        self.w3 = nn.Linear(self.hidden_dim, dim, bias=use_bias)

    def forward(self, x):
        return self.w3(F.silu(self.w1(x)) * self.w2(x))

    def custom_init(self, init_std):
        nn.init.trunc_normal_(self.w1.weight, std=0.02)
        for lin in (self.w2, self.w3):
            nn.init.trunc_normal_(lin.weight, std=init_std)


class FeedForwardECMoe(nn.Module):
    """Expert-choice MoE: the router's softmax over experts scores every token; each expert takes
    its `int(capacity * T / E)` best tokens, runs a GELU MLP (hidden = h rounded up to
    `multiple_of`) and adds the result back weighted by its score; tokens nobody picks get 0."""

    def __init__(self, num_experts, expert_capacity, dim, hidden_dim, multiple_of):
        super().__init__()
        self.num_experts, self.expert_capacity = num_experts, expert_capacity
        self.hidden_dim = round_up(hidden_dim, multiple_of)
        self.w1 = nn.Parameter(torch.ones(num_experts, dim, self.hidden_dim))
        self.w2 = nn.Parameter(torch.ones(num_experts, self.hidden_dim, dim))
        self.gate = nn.Linear(dim, num_experts, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        k = int(self.expert_capacity * t / self.num_experts)
        probs = F.softmax(self.gate(x), dim=-1)  # [b, t, e]
        g, idx = torch.topk(probs.transpose(1, 2), k, dim=-1)  # [b, e, k]
        if MOE_DISPATCH == "einsum":
            p = F.one_hot(idx, num_classes=t).to(x.dtype)  # [b, e, k, t]
            xin = torch.einsum("bekt,btd->bekd", p, x)
        else:
            xin = torch.gather(x.unsqueeze(1).expand(b, self.num_experts, t, d), 2,
                               idx.unsqueeze(-1).expand(b, self.num_experts, k, d))
        h = F.gelu(torch.einsum("bekd,edf->bekf", xin, self.w1))
        h = torch.einsum("bekf,efd->bekd", h, self.w2) * g.unsqueeze(-1)
        if MOE_DISPATCH == "einsum":
            return torch.einsum("bekt,bekd->btd", p, h)
        out = torch.zeros_like(x)
        return out.scatter_add(1, idx.reshape(b, -1, 1).expand(b, self.num_experts * k, d),
                               h.reshape(b, self.num_experts * k, d))

    def custom_init(self, init_std):
        nn.init.trunc_normal_(self.gate.weight, std=0.02)
        nn.init.trunc_normal_(self.w1, std=0.02)
        nn.init.trunc_normal_(self.w2, std=init_std)


class DiTBlock(nn.Module):
    """adaLN self-attention, un-gated cross-attention, adaLN FFN (dense SwiGLU or MoE)."""

    def __init__(self, dim, head_dim, mlp_ratio, qkv_ratio, multiple_of, pooled_emb_dim, norm_eps, depth_init,
                 layer_id, num_layers, compress_xattn, use_bias, moe_block, num_experts, expert_capacity):
        super().__init__()
        qkv_hidden = round_up(int(dim * qkv_ratio), 2 * head_dim) if qkv_ratio != 1 else dim
        mlp_hidden = int(dim * mlp_ratio)
        x_hidden = qkv_hidden if compress_xattn else dim
        self.norm1 = layer_norm(dim, norm_eps)
        self.attn = SelfAttention(dim, qkv_hidden // head_dim, use_bias, norm_eps, qkv_hidden)
        self.cross_attn = CrossAttention(dim, x_hidden // head_dim, use_bias, norm_eps, x_hidden)
        self.norm2 = layer_norm(dim, norm_eps)
        self.norm3 = layer_norm(dim, norm_eps)
        self.mlp = (FeedForwardECMoe(num_experts, expert_capacity, dim, mlp_hidden, multiple_of) if moe_block
                    else FeedForward(dim, mlp_hidden, multiple_of, use_bias))
        self.adaLN_modulation = nn.Sequential(nn.GELU(approximate="tanh"), nn.Linear(pooled_emb_dim, 6 * dim))
        self.weight_init_std = 0.02 / (2 * (layer_id + 1) if depth_init else 2 * num_layers) ** 0.5

    def forward(self, x, y, c):
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_a.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_a, scale_a))
        x = x + self.cross_attn(self.norm2(x), y)
        return x + gate_m.unsqueeze(1) * self.mlp(modulate(self.norm3(x), shift_m, scale_m))

    def custom_init(self):
        for norm in (self.norm1, self.norm2, self.norm3):
            norm.reset_parameters()
        std = self.weight_init_std
        nn.init.trunc_normal_(self.attn.qkv.weight, std=0.02)
        nn.init.trunc_normal_(self.attn.proj.weight, std=std)
        nn.init.trunc_normal_(self.cross_attn.q_linear.weight, std=0.02)
        nn.init.trunc_normal_(self.cross_attn.kv_linear.weight, std=0.02)
        nn.init.trunc_normal_(self.cross_attn.proj.weight, std=std)
        self.mlp.custom_init(std)


class CaptionBlock(nn.Module):
    """Pre-norm self-attention + SwiGLU block over the caption tokens (`y_emb_preprocess`)."""

    def __init__(self, dim, head_dim, mlp_ratio, multiple_of, norm_eps, use_bias):
        super().__init__()
        self.norm1 = layer_norm(dim, norm_eps)
        self.attn = SelfAttention(dim, dim // head_dim, use_bias, norm_eps)
        self.norm2 = layer_norm(dim, norm_eps)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio), multiple_of, use_bias)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, in_channels, dim):
        super().__init__()
        self.patch_size = (patch_size, patch_size)
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class T2IFinalLayer(nn.Module):
    def __init__(self, hidden_size, time_emb_dim, patch_size, out_channels, norm_eps):
        super().__init__()
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.GELU(approximate="tanh"), nn.Linear(time_emb_dim, 2 * hidden_size))
        self.norm_final = layer_norm(hidden_size, norm_eps)

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


def random_mask(batch, length, mask_ratio, device, noise=None):
    """Keep the `int(length * (1 - mask_ratio))` tokens of smallest noise. `mask` is 1 where a
    token is removed; `ids_restore` maps `[kept, removed]` order back to the original one."""
    len_keep = int(length * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(batch, length, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, length, device=device)
    mask[:, :len_keep] = 0
    return {"mask": torch.gather(mask, 1, ids_restore), "ids_keep": ids_shuffle[:, :len_keep],
            "ids_restore": ids_restore}


class MicroDiT(nn.Module):
    """Keyword arguments as the official `DiT` constructor of micro_diffusion."""

    def __init__(self, input_size=32, patch_size=2, in_channels=4, dim=1152, depth=28, head_dim=64, multiple_of=256,
                 caption_channels=1024, pos_interp_scale=1.0, norm_eps=1e-6, depth_init=True, qkv_multipliers=(1.0,),
                 ffn_multipliers=(4.0,), use_patch_mixer=True, patch_mixer_depth=4, patch_mixer_dim=512,
                 patch_mixer_qkv_ratio=1.0, patch_mixer_mlp_ratio=1.0, use_bias=True, num_experts=8,
                 expert_capacity=1, experts_every_n=2):
        super().__init__()
        self.input_size, self.in_channels, self.out_channels = input_size, in_channels, in_channels
        self.patch_size, self.head_dim, self.use_patch_mixer = patch_size, head_dim, use_patch_mixer
        self.x_embedder = PatchEmbed(patch_size, in_channels, dim)
        self.t_embedder = TimestepEmbedder(dim)
        grid = input_size // patch_size
        self.register_buffer("pos_embed", torch.from_numpy(
            sincos_2d(dim, grid, pos_interp_scale, base_size=grid)).float().unsqueeze(0))
        self.y_embedder = CaptionProjection(caption_channels, dim, norm_eps)
        self.y_emb_preprocess = CaptionBlock(dim, head_dim, 4.0, multiple_of, norm_eps, use_bias)
        self.pooled_y_emb_process = Mlp(dim, dim, dim, norm=layer_norm(dim, norm_eps))

        def block(width, mlp_ratio, qkv_ratio, depth_init_, layer_id, moe):
            return DiTBlock(width, head_dim, mlp_ratio, qkv_ratio, multiple_of, dim, norm_eps, depth_init_, layer_id,
                            depth, False, use_bias, moe, num_experts, expert_capacity)

        if use_patch_mixer:
            mixer_moe = [i >= 1 and (i + 1) % experts_every_n == 0 for i in range(patch_mixer_depth)]
            self.patch_mixer = nn.ModuleList([
                block(patch_mixer_dim, patch_mixer_mlp_ratio, patch_mixer_qkv_ratio, False, 0, mixer_moe[i])
                for i in range(patch_mixer_depth)])
            if patch_mixer_dim != dim:
                def proj(a, b):
                    return nn.Sequential(layer_norm(a, norm_eps), nn.Linear(a, b, bias=use_bias))
                self.patch_mixer_map_xin = proj(dim, patch_mixer_dim)
                self.patch_mixer_map_xout = proj(patch_mixer_dim, dim)
                self.patch_mixer_map_y = proj(dim, patch_mixer_dim)
            else:
                self.patch_mixer_map_xin = self.patch_mixer_map_xout = self.patch_mixer_map_y = nn.Identity()
        else:
            self.patch_mixer = nn.ModuleList()

        qkv_multipliers, ffn_multipliers = list(qkv_multipliers), list(ffn_multipliers)
        assert len(qkv_multipliers) == len(ffn_multipliers)
        if len(ffn_multipliers) == depth:
            qkv_ratios, mlp_ratios = qkv_multipliers, ffn_multipliers
        else:  # each multiplier over an equal share of the blocks
            assert depth % len(ffn_multipliers) == 0
            per = depth // len(ffn_multipliers)
            qkv_ratios = [m for m in qkv_multipliers for _ in range(per)]
            mlp_ratios = [m for m in ffn_multipliers for _ in range(per)]
        backbone_moe = [i < depth - 1 and (i + 1) % experts_every_n == 0 for i in range(depth)]  # never the last
        self.blocks = nn.ModuleList([
            block(dim, mlp_ratios[i], qkv_ratios[i], depth_init, i, backbone_moe[i]) for i in range(depth)])
        self.register_buffer("mask_token", torch.zeros(1, 1, patch_size ** 2 * self.out_channels))
        self.final_layer = T2IFinalLayer(dim, dim, patch_size, self.out_channels, norm_eps)
        self.initialize_weights()

    def initialize_weights(self):
        """The official scheme: Xavier linears with zero bias, N(0, 0.02) embedder MLPs, truncated
        normal block weights (depth-scaled std on output maps), zero adaLN and output weights."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for lin in (self.t_embedder.mlp[0], self.t_embedder.mlp[2], self.pooled_y_emb_process.fc1,
                    self.pooled_y_emb_process.fc2, self.y_embedder.y_proj.fc1, self.y_embedder.y_proj.fc2):
            nn.init.normal_(lin.weight, std=0.02)
        for block in [*self.blocks, *self.patch_mixer]:
            block.custom_init()
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
        pre = self.y_emb_preprocess
        nn.init.trunc_normal_(pre.attn.qkv.weight, std=0.02)
        pre.mlp.custom_init(0.02)
        nn.init.zeros_(pre.attn.proj.weight)
        nn.init.zeros_(pre.mlp.w3.weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.linear.weight)

    def unpatchify(self, x):
        c, p = self.out_channels, self.patch_size
        h = w = int(x.shape[1] ** 0.5)
        assert h * w == x.shape[1]
        x = x.reshape(x.shape[0], h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward_without_cfg(self, x, t, y, mask_ratio=0, mask_noise=None):
        """x `[B, C, H, W]`, t `[B]` (or one value), y captions `[B, 1, L, C_cap]` (or `[B, L, C_cap]`).
        With `mask_ratio > 0`, tokens are dropped after the patch-mixer (chosen by `mask_noise`
        `[B, N]` when given, else fresh uniform noise). Returns `{'sample', 'mask'}`."""
        if y.dim() == 3:
            y = y.unsqueeze(1)
        x = self.x_embedder(x) + self.pos_embed
        t = self.t_embedder(t.expand(x.shape[0]))
        y = self.y_embedder(y)  # [B, 1, L, D]
        y = self.y_emb_preprocess(y.squeeze(1)).unsqueeze(1)
        t = t + self.pooled_y_emb_process(y.mean(dim=-2).squeeze(1))
        if self.use_patch_mixer:
            x = self.patch_mixer_map_xin(x)
            y_mixer = self.patch_mixer_map_y(y)
            for block in self.patch_mixer:
                x = block(x, y_mixer, t)
        mask = None
        if mask_ratio > 0:
            m = random_mask(x.shape[0], x.shape[1], mask_ratio, x.device, mask_noise)
            mask, ids_restore = m["mask"], m["ids_restore"]
            x = torch.gather(x, 1, m["ids_keep"].unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        if self.use_patch_mixer:
            x = self.patch_mixer_map_xout(x)
        for block in self.blocks:
            x = block(x, y, t)
        x = self.final_layer(x, t)
        if mask_ratio > 0:
            fill = self.mask_token.expand(x.shape[0], ids_restore.shape[1] - x.shape[1], -1)
            x = torch.cat([x, fill.to(x.dtype)], dim=1)
            x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return {"sample": self.unpatchify(x), "mask": mask}

    def forward_with_cfg(self, x, t, y, cfg=1.0, mask_ratio=0, mask_noise=None):
        """Batch doubled with all-zero caption embeddings as the unconditional half; guidance on
        all channels; returns the guided `B` rows."""
        x = torch.cat([x, x], 0)
        y = torch.cat([y, torch.zeros_like(y)], 0)
        if len(t) != 1:
            t = torch.cat([t, t], 0)
        eps = self.forward_without_cfg(x, t, y, mask_ratio, mask_noise)["sample"]
        cond, uncond = torch.split(eps, len(eps) // 2, dim=0)
        return {"sample": uncond + cfg * (cond - uncond)}

    def forward(self, x, t, y, cfg=1.0, mask_ratio=0, mask_noise=None):
        if cfg != 1.0:
            return self.forward_with_cfg(x, t, y, cfg, mask_ratio, mask_noise)
        return self.forward_without_cfg(x, t, y, mask_ratio, mask_noise)


def microdit_tiny_2(caption_channels=1024, qkv_ratio=(0.5, 1.0), mlp_ratio=(0.5, 4.0), pos_interp_scale=1.0,
                    input_size=32, num_experts=8, expert_capacity=2.0, experts_every_n=2, in_channels=4, **kwargs):
    """`MicroDiT_Tiny_2`: width 512, depth 16, head width 32, 4 mixer blocks at 512 (qkv 1, FFN 4),
    multiple_of 256, linspace qkv 0.5 -> 1.0 and FFN 0.5 -> 4.0 over depth, 8 experts of capacity
    2 every 2nd block, no biases."""
    depth = 16
    return MicroDiT(
        input_size=input_size, patch_size=2, in_channels=in_channels, dim=512, depth=depth, head_dim=32,
        multiple_of=256, caption_channels=caption_channels, pos_interp_scale=pos_interp_scale, norm_eps=1e-6,
        depth_init=True, qkv_multipliers=np.linspace(qkv_ratio[0], qkv_ratio[1], num=depth, dtype=float),
        ffn_multipliers=np.linspace(mlp_ratio[0], mlp_ratio[1], num=depth, dtype=float), use_patch_mixer=True,
        patch_mixer_depth=4, patch_mixer_dim=512, patch_mixer_qkv_ratio=1.0, patch_mixer_mlp_ratio=4.0,
        use_bias=False, num_experts=num_experts, expert_capacity=expert_capacity, experts_every_n=experts_every_n,
        **kwargs)


def time_workloads(device, dtype, repeat, timeit):
    """Median seconds of the MicroDiT workloads of `benches/models.rs` (batch 2, 32x32x4, t=500,
    77 caption tokens of width 1024)."""
    torch.manual_seed(0)
    batch = 2
    model = microdit_tiny_2().to(device=device, dtype=dtype)
    x = torch.randn(batch, 4, 32, 32, device=device, dtype=dtype)
    t = torch.full((batch,), 500.0, device=device, dtype=dtype)
    y = torch.randn(batch, 77, 1024, device=device, dtype=dtype).unsqueeze(1)  # [B, 1, L, C]
    results = {}
    model.eval()
    with torch.no_grad():
        results["microdit_forward/MicroDiT_Tiny_2/b2"] = timeit(lambda: model(x, t, y), device, repeat)
        results["microdit_forward/MicroDiT_Tiny_2/mask0.75/b2"] = timeit(
            lambda: model(x, t, y, mask_ratio=0.75), device, repeat)
    model.train()
    target = torch.randn(batch, 4, 32, 32, device=device, dtype=dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    for ratio, name in ((0.0, "mask0"), (0.75, "mask0.75")):
        def step(ratio=ratio):
            opt.zero_grad(set_to_none=True)
            F.mse_loss(model(x, t, y, mask_ratio=ratio)["sample"], target).backward()
            opt.step()

        results[f"microdit_train_step/MicroDiT_Tiny_2/{name}/b2"] = timeit(step, device, repeat)
    return results


if __name__ == "__main__":
    m = microdit_tiny_2()
    print("MicroDiT_Tiny_2 parameters:", sum(p.numel() for p in m.parameters()),
          "buffers:", sum(b.numel() for b in m.buffers()))
