"""Reference fixtures for OpenCLIP's text tower (kind `clip_text_open_clip`), from the real `open_clip`
package (version 2.24.0, the newest micro_diffusion allows: `open_clip_torch<=2.24.0`).

usage: python scripts/gen_open_clip.py OUTDIR

A tiny `open_clip.CLIP` (random weights, seeded; every text-tower tensor randomized, layer norms and
biases included) with its own tokenizer: open_clip's `SimpleTokenizer` on the first MERGES merges of the
BPE file open_clip ships (`bpe_simple_vocab_16e6.txt.gz`), so the vocabulary is open_clip's layout
(256 byte symbols, the same with `</w>`, the merges, `<start_of_text>`, `<end_of_text>`). The same
vocabulary and merges are written as transformers-style tokenizer files (`vocab.json`, `merges.txt`,
`special_tokens_map.json`) and as open_clip's own (gunzipped) `bpe_simple_vocab_16e6.txt`, which travel
in the sidecar's `files` as strings.

Per fixture (prompts encoded as micro_diffusion's `UniversalTokenizer` does for an `openclip:` encoder:
`tokenizer(prompts, context_length)`: start token, BPE tokens, end token, truncated to the context length
with the end token kept last, padded with id 0):
- `output.input_ids` `[B, L]` int64: open_clip's token ids;
- `output.hidden_states` `[N, B, L, D]`: the residual stream entering layer 1..N (index 0 = token plus
  position embeddings, index N-1 = transformers' `hidden_states[-2]`, the penultimate state), no norm;
- `output.last_hidden_state` `[B, L, D]`: after `ln_final`;
- `output.text_embeds` `[B, embed_dim]`: `CLIP.encode_text` (ln_final, pooled at the argmax token id,
  `@ text_projection`), not normalized;
- `output.microdit_caption` `[B, 1, L, D]`: micro_diffusion's `openclip_text_encoder.forward_fxn` (the
  caption conditioning MicroDiT's released checkpoints take), computed as that code does.

Two fixtures: `clip_text_open_clip_quickgelu` (QuickGELU, as Apple's DFN5B ViT-H-14-378-quickgelu that
MicroDiT uses; weights = the whole CLIP state dict, vision tower and logit_scale included) and
`clip_text_open_clip_microdit` (GELU, as ViT-H-14 / bigG-14; weights laid out as MicroDiT's released
checkpoints: the CLIP state dict under `text_encoder.encoder.clip_model.`, beside a `dit.` tensor)."""
import gzip, json, os, sys, tempfile
import torch
from safetensors.torch import save_file
import open_clip
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer, default_bpe
from open_clip.version import __version__ as OPEN_CLIP_VERSION

MERGES = 1500
CONTEXT = 16
PROMPTS = [
    "a photo of a cat",
    "",
    "An Astronaut riding a HORSE, in the style of Van Gogh!!",
    "  multiple   spaces\tand\nnewlines  ",
    "don't stop: it's 3.14159 (approx.) -- 100% sure?",
    "café naïve résumé Zürich",
    "a long prompt that keeps going and going well past the context length of this tiny model",
]


def bpe_files(tmp):
    """The first MERGES merges of open_clip's BPE file (as a gz open_clip can read) and the
    transformers-style files of the same vocabulary."""
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    header, merges = lines[0], lines[1:MERGES + 1]
    path = os.path.join(tmp, "bpe.txt.gz")
    with gzip.open(path, "wb") as f:
        f.write("\n".join([header] + merges).encode("utf-8"))
    tok = SimpleTokenizer(bpe_path=path, context_length=CONTEXT)
    assert len(tok.encoder) == 512 + MERGES + 2
    files = {
        "vocab.json": json.dumps(tok.encoder, ensure_ascii=False),
        "merges.txt": "\n".join(["#version: 0.2"] + merges) + "\n",
        # open_clip's own names for its special tokens; the padding is open_clip's id 0 whatever
        # the files say (here the end token, as transformers' CLIP-L folders).
        # open_clip's own vocabulary file (gunzipped), cut as above
        "bpe_simple_vocab_16e6.txt": "\n".join([header] + merges) + "\n",
        "special_tokens_map.json": json.dumps({"bos_token": "<start_of_text>", "eos_token": "<end_of_text>",
                                               "unk_token": "<end_of_text>", "pad_token": "<end_of_text>"}),
    }
    return tok, files


def model_cfg(quick_gelu, vocab_size):
    return {"embed_dim": 24, "quick_gelu": quick_gelu,
            "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
            "text_cfg": {"context_length": CONTEXT, "vocab_size": vocab_size, "width": 32, "heads": 4, "layers": 3,
                         "mlp_ratio": 2.5}}


def build(cfg, seed):
    torch.manual_seed(seed)
    model = CLIP(cfg["embed_dim"], CLIPVisionCfg(**cfg["vision_cfg"]), CLIPTextCfg(**cfg["text_cfg"]),
                 quick_gelu=cfg["quick_gelu"]).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("visual.") or name == "logit_scale":
                continue
            noise = torch.randn(p.shape, generator=g)
            if ".ln_" in name or name.startswith("ln_final"):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * noise)
            elif name == "text_projection":
                p.copy_(noise * p.shape[0] ** -0.5)
            else:
                p.copy_(0.1 * noise)
    return model


def microdit_caption(clip_model, text):
    """micro_diffusion.models.utils.openclip_text_encoder.forward_fxn (open_clip <= 2.24: LND layout)."""
    cast_dtype = clip_model.transformer.get_cast_dtype()
    x = clip_model.token_embedding(text).to(cast_dtype)
    x = x + clip_model.positional_embedding.to(cast_dtype)
    x = x.permute(1, 0, 2)
    x = clip_model.transformer(x, attn_mask=clip_model.attn_mask)
    x = x.permute(1, 0, 2)
    x = clip_model.ln_final(x)
    return x.unsqueeze(dim=1)


def hidden_states(model, text):
    """The residual stream entering each layer, [N, B, L, D]."""
    x = model.token_embedding(text) + model.positional_embedding
    x = x.permute(1, 0, 2)
    out = []
    for block in model.transformer.resblocks:
        out.append(x.permute(1, 0, 2))
        x = block(x, attn_mask=model.attn_mask)
    return torch.stack(out)


def fixture(outdir, name, quick_gelu, prefix, seed, tok, files):
    cfg = model_cfg(quick_gelu, len(tok.encoder))
    model = build(cfg, seed)
    ids = tok(PROMPTS, context_length=CONTEXT)
    assert (ids[-1, -1] == tok.eot_token_id) and ids.shape == (len(PROMPTS), CONTEXT)
    with torch.no_grad():
        states = hidden_states(model, ids)
        cap = microdit_caption(model, ids)
        embeds = model.encode_text(ids)
    tensors = {f"{prefix}{k}": v.contiguous() for k, v in model.state_dict().items()}
    if prefix:
        tensors["dit.x_embedder.proj.weight"] = torch.zeros(8, 4, 2, 2)
    tensors.update({"output.input_ids": ids.long().contiguous(), "output.hidden_states": states.contiguous(),
                    "output.last_hidden_state": cap[:, 0].clone(), "output.text_embeds": embeds.contiguous(),
                    "output.microdit_caption": cap.contiguous()})
    save_file(tensors, f"{outdir}/{name}.safetensors")
    side = {"kind": "clip_text_open_clip", "config": cfg, "seed": seed,
            "source": {"package": "open_clip_torch", "version": OPEN_CLIP_VERSION, "torch": torch.__version__},
            "tolerance": {"atol": 1e-4, "rtol": 1e-4}, "prompts": PROMPTS, "files": files,
            "tensors": {
                "<state-dict keys>": f"open_clip CLIP state dict (vision tower, logit_scale included){' under ' + repr(prefix) + ' beside a dit. tensor (MicroDiT LatentDiffusion layout)' if prefix else ''}",
                "output.input_ids": "[B, L] int64: open_clip SimpleTokenizer ids of `prompts` (pad 0, end token kept on truncation)",
                "output.hidden_states": "[N, B, L, D] residual stream entering layers 1..N (0: embeddings; N-1: hidden_states[-2])",
                "output.last_hidden_state": "[B, L, D] after ln_final",
                "output.text_embeds": "[B, embed_dim] CLIP.encode_text: ln_final, argmax pooling, @ text_projection",
                "output.microdit_caption": "[B, 1, L, D] micro_diffusion openclip_text_encoder.forward_fxn (caption conditioning)"}}
    json.dump(side, open(f"{outdir}/{name}.json", "w", encoding="utf-8"), indent=1, ensure_ascii=False)
    print(name, "ids row 0", ids[0].tolist(), "embeds", embeds.shape)


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok, files = bpe_files(tmp)
        fixture(outdir, "clip_text_open_clip_quickgelu", True, "", 811, tok, files)
        fixture(outdir, "clip_text_open_clip_microdit", False, "text_encoder.encoder.clip_model.", 812, tok, files)


if __name__ == "__main__":
    main()
