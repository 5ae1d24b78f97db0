"""The quickstart's default recipe in PyTorch, independently of this crate (docs/quickstart.md,
fifth round): DiT's official block and initialisation (facebookresearch/DiT `models.py`,
re-typed here at width 128, depth 4, 4 heads, patch 4), the shapes dataset of
`src/data/shapes.rs` ported to NumPy (the same distribution, other random draws), rectified
flow with logit-normal(0, 1) times, label dropout 0.1, `torch.optim.AdamW` (5% warm-up, cosine to
lr/20), gradient clipping, EMA 0.999 with warm-up; then 50 samples per class with Euler and
classifier-free guidance. The samples go to a raw little-endian f32 file [500, 3, S, S] that
`cargo run --release --example quickstart -- --judge-samples FILE` judges.

usage: python3 scripts/quickstart_pytorch.py --out samples.f32 [--seed 0] [--steps 7500] ...
       python3 scripts/quickstart_pytorch.py --load ckpt.pt --out samples.f32 (sample only)
`--load` also takes a `.safetensors` in DiT's official layout (the crate's
`weights::export(&model, &DiTCheckpointLayout::Official)`), to sample the crate's weights here."""
import argparse, math, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument('--steps', type=int, default=7500); ap.add_argument('--batch', type=int, default=32)
ap.add_argument('--lr', type=float, default=2e-3); ap.add_argument('--beta2', type=float, default=0.999)
ap.add_argument('--clip', choices=['global', 'param', 'none'], default='global',
                help='global: clip_grad_norm_ over all parameters; param: each parameter alone (the crate)')
ap.add_argument('--width', type=int, default=128); ap.add_argument('--depth', type=int, default=4)
ap.add_argument('--patch', type=int, default=4); ap.add_argument('--size', type=int, default=16)
ap.add_argument('--pred', choices=['v', 'x'], default='v', help='the network predicts the velocity or x0')
ap.add_argument('--ema', type=float, default=0.999); ap.add_argument('--label-dropout', type=float, default=0.1)
ap.add_argument('--cfg', type=float, default=3.0); ap.add_argument('--sample-steps', type=int, default=25)
ap.add_argument('--cfg-interval', type=float, nargs=2, default=[0.0, 1.0], metavar=('LO', 'HI'),
                help='guidance only for t in [LO, HI] (conditional prediction elsewhere)')
ap.add_argument('--no-clamp', action='store_true', help='plain Euler steps, no x0 clamp to [-1, 1]')
ap.add_argument('--online', action='store_true', help='sample the online weights, not the EMA')
ap.add_argument('--save', help='write the trained weights (online and EMA) to this .pt')
ap.add_argument('--save-at', type=int, nargs='*', default=[], metavar='STEP',
                help='also write the weights after these steps (to SAVE with -STEP before .pt)')
ap.add_argument('--guide-with', metavar='PT', help='autoguidance: add W (v - v_bad) with this earlier .pt (its EMA)')
ap.add_argument('--guide-weight', type=float, default=1.0, metavar='W')
ap.add_argument('--load', help='sample these weights (.pt from --save, or official-layout .safetensors)')
ap.add_argument('--per-class', type=int, default=50); ap.add_argument('--seed', type=int, default=0)
ap.add_argument('--out', required=True)
a = ap.parse_args()
torch.manual_seed(a.seed); torch.set_num_threads(2)
rng = np.random.default_rng(a.seed)
S, NULL = a.size, 10
COLOURS = np.array([[0.95, 0.15, 0.15], [0.15, 0.85, 0.2], [0.2, 0.35, 0.95], [0.95, 0.9, 0.15], [0.9, 0.2, 0.85],
                    [0.15, 0.9, 0.9], [1.0, 0.55, 0.1], [0.95, 0.95, 0.95], [0.55, 0.25, 0.9], [0.6, 1.0, 0.3]], np.float32)


def inside(c, x, y):
    r = np.sqrt(x * x + y * y); ax, ay = np.abs(x), np.abs(y)
    if c == 0: return r <= 1
    if c == 1: return (ax <= 0.8) & (ay <= 0.8)
    if c == 2: return (y >= -0.7) & (y <= 0.9) & (ax <= (0.9 - y) * 0.6)
    if c == 3: return ((ax <= 0.3) & (ay <= 1)) | ((ay <= 0.3) & (ax <= 1))
    if c == 4: return (r >= 0.55) & (r <= 1)
    if c == 5: return ax / 0.55 + ay <= 1
    if c == 6: return (ax <= 1) & (ay <= 0.3)
    if c == 7:
        k = np.abs(np.mod(np.arctan2(y, x) * 5 / (2 * np.pi), 1.0) - 0.5) * 2
        return r <= 0.45 + 0.55 * k ** 2
    if c == 8: return (ay <= 0.85) & (ax * 0.866 + ay * 0.5 <= 0.85)
    return (r <= 1) & (np.sqrt((x - 0.45) ** 2 + y * y) > 0.75)


PY, PX = np.meshgrid(np.arange(S), np.arange(S), indexing='ij')


def image(c):
    """As ShapesDataset::get: random size, position, rotation, dark background, 2x2 supersampling."""
    rad = rng.uniform(0.22, 0.36) * S
    cx, cy = rng.uniform(rad * 0.9, S - rad * 0.9), rng.uniform(rad * 0.9, S - rad * 0.9)
    th = rng.uniform(0, 2 * np.pi); sn, cs = np.sin(th), np.cos(th); bg = rng.uniform(0, 0.15)
    cover = np.zeros((S, S), np.float32)
    for ox, oy in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)]:
        dx, dy = (PX + ox - cx) / rad, (PY + oy - cy) / rad
        cover += 0.25 * inside(c, cs * dx + sn * dy, -sn * dx + cs * dy)
    return (bg * (1 - cover)[None] + COLOURS[c][:, None, None] * cover[None]) * 2 - 1


def batch(n):
    ys = rng.integers(0, 10, n)
    return torch.tensor(np.stack([image(c) for c in ys]), dtype=torch.float32), torch.tensor(ys)


def sincos_2d(d, g):
    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        o = np.einsum('m,d->md', pos.reshape(-1), omega)
        return np.concatenate([np.sin(o), np.cos(o)], 1)
    gw, gh = np.meshgrid(np.arange(g, dtype=np.float32), np.arange(g, dtype=np.float32))
    return np.concatenate([one(d // 2, gw), one(d // 2, gh)], 1)


def t_freq(t, dim=256):
    f = torch.exp(-math.log(10000) * torch.arange(dim // 2, dtype=torch.float32) / (dim // 2))
    args = t[:, None].float() * f[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    def __init__(s, d, heads):
        super().__init__(); s.h = heads
        s.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6); s.qkv = nn.Linear(d, 3 * d); s.proj = nn.Linear(d, d)
        s.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6); s.fc1 = nn.Linear(d, 4 * d); s.fc2 = nn.Linear(4 * d, d)
        s.ada = nn.Linear(d, 6 * d)

    def forward(s, x, c):
        b, n, d = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = s.ada(F.silu(c)).chunk(6, -1)
        q, k, v = s.qkv(modulate(s.norm1(x), sh1, sc1)).reshape(b, n, 3, s.h, d // s.h).permute(2, 0, 3, 1, 4)
        x = x + g1[:, None] * s.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        return x + g2[:, None] * s.fc2(F.gelu(s.fc1(modulate(s.norm2(x), sh2, sc2)), approximate='tanh'))


class DiT(nn.Module):
    def __init__(s, d, depth, heads, p, c=3):
        super().__init__(); s.p, s.c = p, c
        s.x_embedder = nn.Conv2d(c, d, p, p)
        s.register_buffer('pos', torch.tensor(sincos_2d(d, S // p), dtype=torch.float32)[None])
        s.t1, s.t2, s.y_embedder = nn.Linear(256, d), nn.Linear(d, d), nn.Embedding(11, d)
        s.blocks = nn.ModuleList([Block(d, heads) for _ in range(depth)])
        s.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6); s.ada = nn.Linear(d, 2 * d); s.linear = nn.Linear(d, p * p * c)
        def xavier(m):  # DiT's initialize_weights (`apply`: children before parents)
            if isinstance(m, nn.Linear): nn.init.xavier_uniform_(m.weight); nn.init.zeros_(m.bias)
        s.apply(xavier)
        w = s.x_embedder.weight.data; nn.init.xavier_uniform_(w.view(w.shape[0], -1)); nn.init.zeros_(s.x_embedder.bias)
        nn.init.normal_(s.y_embedder.weight, std=0.02); nn.init.normal_(s.t1.weight, std=0.02); nn.init.normal_(s.t2.weight, std=0.02)
        for m in [b.ada for b in s.blocks] + [s.ada, s.linear]: nn.init.zeros_(m.weight); nn.init.zeros_(m.bias)

    def forward(s, x, t, y):
        b, g = x.shape[0], S // s.p
        h = s.x_embedder(x).flatten(2).transpose(1, 2) + s.pos
        c = s.t2(F.silu(s.t1(t_freq(t)))) + s.y_embedder(y)
        for blk in s.blocks: h = blk(h, c)
        shift, scale = s.ada(F.silu(c)).chunk(2, -1)
        h = s.linear(modulate(s.norm(h), shift, scale))
        return h.reshape(b, g, g, s.p, s.p, s.c).permute(0, 5, 1, 3, 2, 4).reshape(b, s.c, S, S)


def velocity(m, z, t, y):
    out = m(z, t * 1000, y)
    return (z - out) / t.clamp(min=0.05)[:, None, None, None] if a.pred == 'x' else out


def official(path):
    """A state dict of this script's DiT from a .safetensors in DiT's official layout."""
    from safetensors.torch import load_file
    names = {'x_embedder.proj.': 'x_embedder.', 't_embedder.mlp.0.': 't1.', 't_embedder.mlp.2.': 't2.',
             'y_embedder.embedding_table.': 'y_embedder.', 'final_layer.adaLN_modulation.1.': 'ada.',
             'final_layer.linear.': 'linear.', 'attn.qkv.': 'qkv.', 'attn.proj.': 'proj.', 'mlp.fc1.': 'fc1.',
             'mlp.fc2.': 'fc2.', 'adaLN_modulation.1.': 'ada.', 'pos_embed': 'pos'}
    out = {}
    for k, v in load_file(path).items():
        for old, new in names.items():
            k = k.replace(old, new)
        out[k] = v
    return out


heads = max(1, a.width // 32)
model, ema = DiT(a.width, a.depth, heads, a.patch), DiT(a.width, a.depth, heads, a.patch)
ema.load_state_dict(model.state_dict()); ema.requires_grad_(False)
if a.load:
    if a.load.endswith('.safetensors'):
        ema.load_state_dict(official(a.load)); model.load_state_dict(official(a.load))
    else:
        saved = torch.load(a.load); model.load_state_dict(saved['model']); ema.load_state_dict(saved['ema'])
else:
    print('parameters', sum(p.numel() for p in model.parameters()), flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, a.beta2), eps=1e-8, weight_decay=0.0)
    warm = max(1, a.steps // 20)
    start, smooth = time.time(), None
    for step in range(a.steps):
        q = min(1.0, (step - warm) / max(1, a.steps - warm))
        lr = a.lr * (step + 1) / warm if step < warm else a.lr / 20 + (a.lr - a.lr / 20) * 0.5 * (1 + math.cos(math.pi * q))
        for group in opt.param_groups: group['lr'] = lr
        x, y = batch(a.batch)
        y = torch.where(torch.rand(a.batch) < a.label_dropout, torch.full_like(y, NULL), y)
        t = torch.sigmoid(torch.randn(a.batch)); e = torch.randn_like(x)
        z = (1 - t)[:, None, None, None] * x + t[:, None, None, None] * e
        loss = F.mse_loss(velocity(model, z, t, y), e - x)
        opt.zero_grad(set_to_none=True); loss.backward()
        if a.clip == 'global':
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        elif a.clip == 'param':
            for p in model.parameters(): torch.nn.utils.clip_grad_norm_([p], 1.0)
        opt.step()
        decay = min(a.ema, (2 + step) / (11 + step))  # warm-up as the crate's, counted one update later
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()): pe.mul_(decay).add_(pm, alpha=1 - decay)
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        if a.save and step + 1 in a.save_at:
            torch.save({'model': model.state_dict(), 'ema': ema.state_dict()}, a.save.replace('.pt', f'-{step + 1}.pt'))
        if (step + 1) % 500 == 0: print(f'step {step + 1} loss {smooth:.4f} ({time.time() - start:.0f} s)', flush=True)
    if a.save: torch.save({'model': model.state_dict(), 'ema': ema.state_dict()}, a.save)

# Euler over t = 1 -> 0 with guidance (and the x0 clamp, as the quickstart's plan), 50 per class.
net = (model if a.online else ema).eval()
bad = None
if a.guide_with:
    bad = DiT(a.width, a.depth, heads, a.patch).eval(); bad.load_state_dict(torch.load(a.guide_with)['ema'])
torch.manual_seed(a.seed + 1)
labels = torch.arange(10).repeat_interleave(a.per_class)
n = len(labels)
with torch.no_grad():
    z = torch.randn(n, 3, S, S); ts = torch.linspace(1, 0, a.sample_steps + 1)
    for i in range(a.sample_steps):
        t, t_next = float(ts[i]), float(ts[i + 1]); tt = torch.full((n,), t)
        v = v_cond = velocity(net, z, tt, labels)
        scale = a.cfg if a.cfg_interval[0] <= t <= a.cfg_interval[1] else 1.0
        if scale != 1.0:
            v_null = velocity(net, z, tt, torch.full_like(labels, NULL)); v = v_null + scale * (v - v_null)
        if bad is not None:
            v = v + a.guide_weight * (v_cond - velocity(bad, z, tt, labels))
        if a.no_clamp:
            z = z + (t_next - t) * v
        else:
            x0 = (z - t * v).clamp(-1, 1); eps = (z - (1 - t) * x0) / t
            z = (1 - t_next) * x0 + t_next * eps
z.clamp(-1, 1).numpy().astype('<f4').tofile(a.out)
print('wrote', a.out, tuple(z.shape))
