"""U-DiT (Tian et al., "U-DiTs: Downsample Tokens in U-Shaped Diffusion Transformers",
arXiv:2405.02730) in plain PyTorch, for the benchmark comparison of `benches/pytorch_reference.py`.

An independent re-implementation written from the architecture description (the crate's
`src/models/udit.rs` and `docs`, `../shared/reference-notes.md`); it is not the official code, but
it keeps the official constructor arguments and state-dict key names, so an official checkpoint
(or the `tests/fixtures/udit_official_*` fixtures) loads with `load_state_dict(strict=True)` and
gives the official outputs (`benches/check_pytorch_models.py` measures that).

Structure (all on NCHW feature maps):
- `x_embedder.proj`: 3x3 conv from the latent to width C (no patchify).
- three levels at widths C, 2C, 4C on grids H, H/2, H/4, each with its own timestep and label
  embedder (`t_embedder_{1,2,3}`, `y_embedder_{1,2,3}`) giving c1, c2, c3; the two decoder levels
  run at width 2C with c2, as does the final layer.
- down: 3x3 conv (no bias) to half the channels + pixel-unshuffle(2); up: 3x3 conv (no bias) to
  twice the channels + pixel-shuffle(2); skips concatenated on channels and fused by a 1x1 conv.
- every block is two adaLN-Zero sub-blocks (attention + FFN each) with parameter-free channel
  LayerNorms (eps 1e-6).
- attention on downsampled tokens: depthwise conv (+ identity shortcut), the map is split into
  `down_factor**2` interleaved sub-grids attended separately with shared weights, results put
  back at their offsets, then a 1x1 output conv. Optional cosine scores (`attn_type='v2'`, a
  per-head learnable temperature clamped at ln(100)) and 2-D RoPE (`posemb_type='rope2d'`).
- FFN (`ffn_type='rep'`): 1x1 convs around a depthwise conv; with `rep=1` the training form has
  two stacked 1x1 convs on each side and three parallel depthwise convs (5x5, 3x3, 1x1) plus an
  identity, which eval mode folds into single convs (same function).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from pytorch_layers import timestep_embedding

# Attention kernel: True uses `F.scaled_dot_product_attention` (the temperature is folded into the
# queries), False the explicit `softmax(q k^T) v`. Both compute the same function.
USE_SDPA = True


def channel_layer_norm(x, eps=1e-6):
    """LayerNorm over the channel axis of an NCHW map, no affine."""
    x = x.permute(0, 2, 3, 1)
    x = F.layer_norm(x, (x.shape[-1],), eps=eps)
    return x.permute(0, 3, 1, 2)


def modulate(x, shift, scale):
    return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]


def rope2d_tables(head_dim, num_tokens, device, theta=10000.0):
    """cos/sin `[N, head_dim/2]` of a square-grid 2-D RoPE: complex pair 2i rotates by the column
    times f_i, pair 2i+1 by the row times f_i, f_i = theta^(-4i/head_dim), i < head_dim/4."""
    side = int(num_tokens ** 0.5)
    pos = torch.arange(num_tokens)
    col, row = pos % side, pos // side
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim))
    ang_x = torch.outer(col.float(), freqs)
    ang_y = torch.outer(row.float(), freqs)
    ang = torch.stack([ang_x, ang_y], dim=-1).reshape(num_tokens, -1)  # interleave x, y
    return ang.cos().to(device), ang.sin().to(device)


def apply_rope(x, cos, sin):
    """Rotate adjacent channel pairs of `x` `[..., N, Dh]` by the angles of `cos`/`sin` `[N, Dh/2]`."""
    shape = x.shape
    x = x.float().reshape(*shape[:-1], -1, 2)
    a, b = x[..., 0], x[..., 1]
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return out.reshape(shape)


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding (`[cos, sin]`, 256 frequencies) + Linear-SiLU-Linear."""

    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))
        self.frequency_embedding_size = frequency_embedding_size

    def forward(self, t):
        freq = timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class embedding table with a null row (index `num_classes`) when dropout is used."""

    def __init__(self, num_classes, hidden_size, dropout_prob):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def forward(self, labels, train, force_drop_ids=None):
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            if force_drop_ids is None:
                drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            else:
                drop = force_drop_ids == 1
            labels = torch.where(drop, self.num_classes, labels)
        return self.embedding_table(labels)


class DownSampler(nn.Module):
    """Depthwise conv (+ identity) then the interleaved split into `f*f` sub-grids:
    `[B, C, H, W]` -> `[B, f*f, (H/f)*(W/f), C]`, sub-grid `dh*f + dw` holding pixels
    `(i*f + dh, j*f + dw)`."""

    def __init__(self, dim, kernel_size, down_factor, down_shortcut):
        super().__init__()
        self.down_factor = down_factor
        self.down_shortcut = down_shortcut
        self.layer = nn.Conv2d(dim, dim, kernel_size, stride=1, padding=(kernel_size - 1) // 2, groups=dim)

    def forward(self, x):
        y = self.layer(x)
        if self.down_shortcut:
            y = y + x
        b, c, h, w = y.shape
        f = self.down_factor
        y = y.reshape(b, c, h // f, f, w // f, f).permute(0, 3, 5, 2, 4, 1)
        return y.reshape(b, f * f, (h // f) * (w // f), c)


class DownsampledAttention(nn.Module):
    """Multi-head self-attention over each downsampled sub-grid (shared weights)."""

    def __init__(self, dim, num_heads, down_factor, bias=True, posemb_type=None, attn_type=None,
                 downsampler="dwconv5", down_shortcut=False):
        super().__init__()
        if attn_type not in (None, "v2"):
            raise ValueError(f"attn_type {attn_type!r}")
        if posemb_type not in (None, "rope2d"):
            raise ValueError(f"posemb_type {posemb_type!r}")
        self.dim, self.heads, self.down_factor = dim, num_heads, down_factor
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.attn_type, self.posemb_type = attn_type, posemb_type
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.to_out = nn.Conv2d(dim, dim, 1)
        if attn_type == "v2":
            self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))
        kernel = int("".join(ch for ch in downsampler if ch.isdigit()))  # 'dwconv5' -> 5
        self.downsampler = DownSampler(dim, kernel, down_factor, down_shortcut)
        self._rope = None  # (num_tokens, device, cos, sin)

    def rope(self, n, device):
        if self._rope is None or self._rope[0] != n or self._rope[1] != device:
            cos, sin = rope2d_tables(self.head_dim, n, device)
            self._rope = (n, device, cos, sin)
        return self._rope[2], self._rope[3]

    def forward(self, x):
        b, _, h, w = x.shape
        f, H, dh = self.down_factor, self.heads, self.head_dim
        t = self.downsampler(x)  # [b, p, n, c]
        p, n = t.shape[1], t.shape[2]
        q, k, v = (z.reshape(b, p, n, H, dh).transpose(2, 3) for z in self.to_qkv(t).chunk(3, dim=-1))
        if self.posemb_type == "rope2d":  # [b, p, H, n, dh]
            cos, sin = self.rope(n, x.device)
            q, k = apply_rope(q, cos, sin).type_as(v), apply_rope(k, cos, sin).type_as(v)
        if self.attn_type == "v2":
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            scale = torch.clamp(self.logit_scale, max=4.6052).exp()  # [H, 1, 1]
        else:
            scale = self.scale
        if USE_SDPA:
            if torch.is_tensor(scale):
                q = q * scale
                scale = 1.0
            out = F.scaled_dot_product_attention(q, k, v, scale=scale)
        else:
            out = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1) @ v
        # [b, (f f), H, (h' w'), dh] -> [b, (H dh), (h' f), (w' f)]
        out = out.reshape(b, f, f, H, h // f, w // f, dh).permute(0, 3, 6, 4, 1, 5, 2)
        return self.to_out(out.reshape(b, H * dh, h, w))


class FeedForward(nn.Module):
    """Conv FFN: 1x1 -> GELU -> depthwise 5x5 -> 1x1 (`rep=0`), or its re-parametrisable training
    form (`rep=1`): two stacked 1x1 convs in and out, identity + parallel 5x5/3x3/1x1 depthwise
    convs in the middle; eval mode runs the folded single convs."""

    def __init__(self, dim, ffn_expansion_factor, bias=True, rep=False):
        super().__init__()
        self.rep, self.bias = bool(rep), bias
        self.hidden_features = hid = int(dim * ffn_expansion_factor)
        if self.rep:
            self.project_in = nn.Sequential(nn.Conv2d(dim, hid // 2, 1, bias=bias), nn.Conv2d(hid // 2, hid, 1, bias=bias))
            self.dwconv = nn.ModuleList(
                [nn.Conv2d(hid, hid, k, padding=k // 2, groups=hid, bias=bias) for k in (5, 3, 1)])
            self.project_out = nn.Sequential(nn.Conv2d(hid, hid // 2, 1, bias=bias), nn.Conv2d(hid // 2, dim, 1, bias=bias))
        else:
            self.project_in = nn.Conv2d(dim, hid, 1, bias=bias)
            self.dwconv = nn.Conv2d(hid, hid, 5, padding=2, groups=hid, bias=bias)
            self.project_out = nn.Conv2d(hid, dim, 1, bias=bias)
        self._fused = None

    def train(self, mode=True):
        self._fused = None  # folded lazily at the first eval forward
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._fused = None
        return super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def fold(self):
        """The single-conv weights of the eval form (does not modify the training weights)."""

        def chain(seq):  # conv1x1 b after conv1x1 a
            wa, wb = seq[0].weight[:, :, 0, 0], seq[1].weight[:, :, 0, 0]
            w = (wb @ wa)[:, :, None, None]
            bias = wb @ seq[0].bias + seq[1].bias if self.bias else None
            return w, bias

        w_in, b_in = chain(self.project_in)
        w_dw = self.dwconv[0].weight.clone()
        w_dw[:, :, 1:4, 1:4] += self.dwconv[1].weight
        w_dw[:, :, 2:3, 2:3] += self.dwconv[2].weight + 1.0  # + identity
        b_dw = sum(c.bias for c in self.dwconv) if self.bias else None
        w_out, b_out = chain(self.project_out)
        return w_in, b_in, w_dw, b_dw, w_out, b_out

    def fused_num_params(self):
        hid, dim = self.hidden_features, self.project_in[0].in_channels
        return dim * hid + hid * 25 + hid * dim + (2 * hid + dim if self.bias else 0)

    def forward(self, x):
        if self.rep and not self.training:
            if self._fused is None:
                self._fused = self.fold()
            w_in, b_in, w_dw, b_dw, w_out, b_out = self._fused
            x = F.gelu(F.conv2d(x, w_in, b_in))
            x = F.conv2d(x, w_dw, b_dw, padding=2, groups=self.hidden_features)
            return F.conv2d(x, w_out, b_out)
        x = F.gelu(self.project_in(x))
        if self.rep:
            out = x
            for conv in self.dwconv:
                out = out + conv(x)
        else:
            out = self.dwconv(x)
        return self.project_out(out)


class Mlp(nn.Module):
    """`ffn_type='basic'`: 1x1 conv -> tanh-GELU -> 1x1 conv."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class UDiTBlock(nn.Module):
    """Two adaLN-Zero sub-blocks (`attn1/mlp1/adaLN_modulation1`, then the `2` set)."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, down_factor=2, rep=1, ffn_type="rep", **attn_kwargs):
        super().__init__()

        def ffn():
            if ffn_type == "rep":
                return FeedForward(hidden_size, mlp_ratio, rep=rep)
            if ffn_type == "basic":
                return Mlp(hidden_size, int(hidden_size * mlp_ratio))
            raise ValueError(f"ffn_type {ffn_type!r}")

        def ada():
            return nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

        self.attn1 = DownsampledAttention(hidden_size, num_heads, down_factor, bias=True, **attn_kwargs)
        self.mlp1 = ffn()
        self.adaLN_modulation1 = ada()
        self.attn2 = DownsampledAttention(hidden_size, num_heads, down_factor, bias=True, **attn_kwargs)
        self.mlp2 = ffn()
        self.adaLN_modulation2 = ada()

    @staticmethod
    def _sub(x, c, ada, attn, mlp):
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = ada(c).chunk(6, dim=1)
        x = x + gate_a[:, :, None, None] * attn(modulate(channel_layer_norm(x), shift_a, scale_a))
        return x + gate_m[:, :, None, None] * mlp(modulate(channel_layer_norm(x), shift_m, scale_m))

    def forward(self, x, c):
        x = self._sub(x, c, self.adaLN_modulation1, self.attn1, self.mlp1)
        return self._sub(x, c, self.adaLN_modulation2, self.attn2, self.mlp2)


class FinalLayer(nn.Module):
    def __init__(self, hidden_size, out_channels):
        super().__init__()
        self.out_proj = nn.Conv2d(hidden_size, out_channels, 3, padding=1)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.out_proj(modulate(channel_layer_norm(x), shift, scale))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 3, padding=1)

    def forward(self, x):
        return self.proj(x)


class Resample(nn.Module):
    """Down: conv to C/2 + pixel-unshuffle(2); up: conv to 2C + pixel-shuffle(2)."""

    def __init__(self, channels, up):
        super().__init__()
        out = channels * 2 if up else channels // 2
        self.body = nn.Sequential(nn.Conv2d(channels, out, 3, padding=1, bias=False),
                                  nn.PixelShuffle(2) if up else nn.PixelUnshuffle(2))

    def forward(self, x):
        return self.body(x)


class UDiT(nn.Module):
    """U-DiT; keyword arguments as the official `U_DiT` constructor (the attention options
    `attn_type`, `posemb_type`, `downsampler`, `down_shortcut` are forwarded to every block)."""

    def __init__(self, input_size=32, down_factor=2, in_channels=4, hidden_size=1152, depth=(2, 5, 8, 5, 2),
                 num_heads=16, mlp_ratio=4, class_dropout_prob=0.1, num_classes=1000, learn_sigma=True,
                 rep=1, ffn_type="rep", attn_type=None, posemb_type=None, downsampler="dwconv5",
                 down_shortcut=False):
        super().__init__()
        self.input_size, self.in_channels = input_size, in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.learn_sigma, self.num_heads = learn_sigma, num_heads
        df = list(down_factor) if isinstance(down_factor, (list, tuple)) else [down_factor] * 5
        c = hidden_size
        attn = dict(attn_type=attn_type, posemb_type=posemb_type, downsampler=downsampler,
                    down_shortcut=down_shortcut)

        def level(i, width):
            return nn.ModuleList([UDiTBlock(width, num_heads, mlp_ratio, df[i], rep, ffn_type, **attn)
                                  for _ in range(depth[i])])

        self.x_embedder = PatchEmbed(in_channels, c)
        for i, width in enumerate((c, 2 * c, 4 * c), start=1):
            setattr(self, f"t_embedder_{i}", TimestepEmbedder(width))
            setattr(self, f"y_embedder_{i}", LabelEmbedder(num_classes, width, class_dropout_prob))
        self.encoder_level_1 = level(0, c)
        self.down1_2 = Resample(c, up=False)
        self.encoder_level_2 = level(1, 2 * c)
        self.down2_3 = Resample(2 * c, up=False)
        self.latent = level(2, 4 * c)
        self.up3_2 = Resample(4 * c, up=True)
        self.reduce_chan_level2 = nn.Conv2d(4 * c, 2 * c, 1)
        self.decoder_level_2 = level(3, 2 * c)
        self.up2_1 = Resample(2 * c, up=True)
        self.reduce_chan_level1 = nn.Conv2d(2 * c, 2 * c, 1)
        self.decoder_level_1 = level(4, 2 * c)
        self.output = nn.Conv2d(2 * c, 2 * c, 3, padding=1)
        self.final_layer = FinalLayer(2 * c, self.out_channels)
        self.initialize_weights()

    def blocks(self):
        return [*self.encoder_level_1, *self.encoder_level_2, *self.latent, *self.decoder_level_2,
                *self.decoder_level_1]

    def initialize_weights(self):
        """Official init: Xavier-uniform linears/convs with zero bias, N(0, 0.02) label tables and
        timestep MLPs, zero adaLN modulations and final layer."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for i in (1, 2, 3):
            nn.init.normal_(getattr(self, f"y_embedder_{i}").embedding_table.weight, std=0.02)
            te = getattr(self, f"t_embedder_{i}")
            nn.init.normal_(te.mlp[0].weight, std=0.02)
            nn.init.normal_(te.mlp[2].weight, std=0.02)
        for block in self.blocks():
            for ada in (block.adaLN_modulation1, block.adaLN_modulation2):
                nn.init.zeros_(ada[-1].weight)
                nn.init.zeros_(ada[-1].bias)
        for p in (self.final_layer.adaLN_modulation[-1].weight, self.final_layer.adaLN_modulation[-1].bias,
                  self.final_layer.out_proj.weight, self.final_layer.out_proj.bias):
            nn.init.zeros_(p)

    def num_params_inference(self):
        """Parameters of the eval form (re-parametrised FFNs folded)."""
        n = sum(p.numel() for p in self.parameters())
        for m in self.modules():
            if isinstance(m, FeedForward) and m.rep:
                n += m.fused_num_params() - sum(p.numel() for p in m.parameters())
        return n

    def forward(self, x, t, y, force_drop_ids=None):
        """x `[B, C, H, W]`, t `[B]` timesteps, y `[B]` labels (`num_classes` = null). In training
        mode each level's label embedder drops labels independently (`force_drop_ids` overrides:
        1 = drop) as the official model."""
        c1, c2, c3 = (getattr(self, f"t_embedder_{i}")(t)
                      + getattr(self, f"y_embedder_{i}")(y, self.training, force_drop_ids) for i in (1, 2, 3))
        enc1 = self.x_embedder(x)
        for block in self.encoder_level_1:
            enc1 = block(enc1, c1)
        enc2 = self.down1_2(enc1)
        for block in self.encoder_level_2:
            enc2 = block(enc2, c2)
        lat = self.down2_3(enc2)
        for block in self.latent:
            lat = block(lat, c3)
        dec2 = self.reduce_chan_level2(torch.cat([self.up3_2(lat), enc2], dim=1))
        for block in self.decoder_level_2:
            dec2 = block(dec2, c2)
        dec1 = self.reduce_chan_level1(torch.cat([self.up2_1(dec2), enc1], dim=1))
        for block in self.decoder_level_1:
            dec1 = block(dec1, c2)
        return self.final_layer(self.output(dec1), c2)

    def forward_with_cfg(self, x, t, y, cfg_scale, guided_channels=3):
        """As the official (and DiT's): first half of the batch conditional, second half null
        labels, both run on the first half's latents; the first 3 channels are guided and copied
        into both halves, the rest passed through."""
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, y)
        eps, rest = out[:, :guided_channels], out[:, guided_channels:]
        cond, uncond = torch.split(eps, len(eps) // 2, dim=0)
        guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([guided, guided], dim=0), rest], dim=1)


# The official preset constructors: depth [2, 5, 8, 5, 2], MLP ratio 2, down factor 2, cosine
# attention, RoPE, 5x5 depthwise downsampler with shortcut, re-parametrised FFN, input 32.
PRESETS = {"U-DiT-S": (96, 4), "U-DiT-B": (192, 8), "U-DiT-L": (384, 16)}


def udit_preset(name, **kwargs):
    hidden, heads = PRESETS[name]
    cfg = dict(input_size=32, down_factor=2, hidden_size=hidden, num_heads=heads, depth=[2, 5, 8, 5, 2],
               ffn_type="rep", rep=1, mlp_ratio=2, attn_type="v2", posemb_type="rope2d", downsampler="dwconv5",
               down_shortcut=1, num_classes=1000, learn_sigma=True, class_dropout_prob=0.1)
    cfg.update(kwargs)
    return UDiT(**cfg)


def udit_s(**kwargs):
    """U-DiT-S: width 96, 4 heads, 32x32x4 latents, 1000 classes, learned sigma (8 outputs)."""
    return udit_preset("U-DiT-S", **kwargs)


def time_workloads(device, dtype, repeat, timeit):
    """Median seconds of the U-DiT workloads of `benches/models.rs` (batch 2, 32x32x4, t=500)."""
    torch.manual_seed(0)
    batch = 2
    model = udit_s().to(device=device, dtype=dtype)
    x = torch.randn(batch, 4, 32, 32, device=device, dtype=dtype)
    t = torch.full((batch,), 500, device=device)
    y = torch.ones(batch, dtype=torch.long, device=device)
    results = {}
    model.eval()
    with torch.no_grad():
        results["udit_forward/U-DiT-S/b2"] = timeit(lambda: model(x, t, y), device, repeat)
    model.train()
    target = torch.randn(batch, model.out_channels, 32, 32, device=device, dtype=dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)

    def step():
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x, t, y), target).backward()
        opt.step()

    results["udit_train_step/U-DiT-S/b2"] = timeit(step, device, repeat)
    return results


if __name__ == "__main__":
    m = udit_s()
    print("U-DiT-S parameters:", sum(p.numel() for p in m.parameters()), "inference form:", m.num_params_inference())
