"""Prompt-to-image reference fixtures for diffusers' `StableDiffusion3Pipeline` (kind `sd3_pipeline_diffusers`).

The components are built as diffusers' own fast pipeline test builds them (`get_dummy_components` of
tests/pipelines/stable_diffusion_3/test_pipeline_stable_diffusion_3.py: a tiny `SD3Transformer2DModel`, two
`CLIPTextModelWithProjection` from one `CLIPTextConfig`, a `T5EncoderModel`, an `AutoencoderKL` with one block,
`FlowMatchEulerDiscreteScheduler`, each after `torch.manual_seed(0)`), except that nothing is downloaded: the
tokenizers are trained here with the `tokenizers` package (the CLIP BPE and T5 unigram trainers of
`gen_tokenizer.py`) and the T5 encoder is a tiny random `T5Config` in place of `hf-internal-testing/tiny-random-t5`.

The pipeline is called from stored initial latents; a `callback_on_step_end` records the latents after every step.

usage: python scripts/gen_sd3_pipeline.py OUTDIR [variant]     (variant: public (default) or any other word)
       python scripts/gen_sd3_pipeline.py --save-pipeline DIR  (the `public` components, saved by diffusers'
                                                                `save_pretrained`: a diffusers-layout folder)

Variants: `public` writes `sd3_pipeline_tiny` (as the fast test: CLIP widths 32 + 32 cropped to the T5 width 32 by
the pipeline's `F.pad` with a negative pad, guidance 5, shift 1, one prompt, empty negative prompt) and
`sd3_pipeline_no_t5_slg` (no `text_encoder_3`: zeros of `max_sequence_length` tokens; CLIP widths padded to
`joint_attention_dim` 80; two prompts with negative prompts, non-square 24x32, guidance 3, shift 3, skip-layer
guidance on layer 1 of two). Any other word writes the same two with other seeds and sizes (suffix `_h`).

Weights: each component's own state-dict keys behind a prefix `transformer.`, `vae.`, `text_encoder.`,
`text_encoder_2.`, `text_encoder_3.` (T5's tied embedding once, as `shared.weight`). The tokenizer files travel in
the sidecar (`tokenizers`: folder name -> file name -> text), as in `tokenizer_transformers` fixtures."""
import json, os, sys, tempfile
import torch
from safetensors.torch import save_file
import diffusers, tokenizers, transformers
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_tokenizer import read_files, train_clip_bpe, train_t5_unigram  # noqa: E402

torch.set_num_threads(2)


def tokenizers_files(clip_vocab, t5_vocab):
    """Train the three tokenizers and return the files `save_pretrained` writes, per folder."""
    bpe = train_clip_bpe(clip_vocab)
    uni = train_t5_unigram(t5_vocab)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        raw = os.path.join(d, "raw")
        os.makedirs(raw)
        bpe.model.save(raw)  # vocab.json, merges.txt
        tok = CLIPTokenizer.from_pretrained(raw, model_max_length=77)
        tok.save_pretrained(os.path.join(d, "tokenizer"))
        out["tokenizer"] = read_files(os.path.join(d, "tokenizer"), ["tokenizer.json", "tokenizer_config.json"])
        # tokenizer_2 as SD3's: vocab.json + merges.txt, padding with "!"
        tok2 = CLIPTokenizer.from_pretrained(raw, model_max_length=77, pad_token="!")
        tok2.save_pretrained(os.path.join(d, "tokenizer_2"))
        out["tokenizer_2"] = read_files(os.path.join(d, "tokenizer_2"), ["tokenizer.json", "tokenizer_config.json"])
        t5raw = os.path.join(d, "t5raw")
        os.makedirs(t5raw)
        uni.save(os.path.join(t5raw, "tokenizer.json"))
        T5Tokenizer.from_pretrained(t5raw, extra_ids=0, model_max_length=512).save_pretrained(os.path.join(d, "tokenizer_3"))
        out["tokenizer_3"] = read_files(os.path.join(d, "tokenizer_3"), ["tokenizer.json", "tokenizer_config.json"])
    return out


def load_tokenizers(files, d):
    toks = {}
    for folder, fs in files.items():
        os.makedirs(os.path.join(d, folder), exist_ok=True)
        for n, text in fs.items():
            with open(os.path.join(d, folder, n), "w", encoding="utf-8") as f:
                f.write(text)
    toks["tokenizer"] = CLIPTokenizer.from_pretrained(os.path.join(d, "tokenizer"))
    toks["tokenizer_2"] = CLIPTokenizer.from_pretrained(os.path.join(d, "tokenizer_2"))
    toks["tokenizer_3"] = T5Tokenizer.from_pretrained(os.path.join(d, "tokenizer_3"))
    return toks


def components(v, toks):
    """The fast test's components, with `v`'s sizes (see the module docs)."""
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(**v["transformer"])
    clip_cfg = CLIPTextConfig(**v["clip"])
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(clip_cfg)
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(clip_cfg)
    text_encoder_3 = None
    if v["t5"] is not None:
        torch.manual_seed(0)
        text_encoder_3 = T5EncoderModel(T5Config(**v["t5"]))
    torch.manual_seed(0)
    vae = AutoencoderKL(**v["vae"])
    scheduler = FlowMatchEulerDiscreteScheduler(**v["scheduler"])
    for m in [transformer, text_encoder, text_encoder_2, text_encoder_3, vae]:
        if m is not None:
            m.eval()  # as `from_pretrained` leaves them (T5's dropout off)
    return dict(scheduler=scheduler, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                text_encoder_3=text_encoder_3, tokenizer=toks["tokenizer"], tokenizer_2=toks["tokenizer_2"],
                tokenizer_3=toks["tokenizer_3"] if text_encoder_3 is not None else None,
                transformer=transformer, vae=vae)


def variants(kind):
    h = kind != "public"
    clip = dict(bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
                num_attention_heads=4, num_hidden_layers=5, pad_token_id=1, vocab_size=1000, hidden_act="gelu",
                projection_dim=32)
    vae = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
               latent_channels=4, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
               shift_factor=0.0609, scaling_factor=1.5035)
    t5 = dict(vocab_size=200, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
              relative_attention_max_distance=16, feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    tiny = dict(
        name="sd3_pipeline_tiny" + ("_h" if h else ""),
        transformer=dict(sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
                         num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
                         pooled_projection_dim=64, out_channels=4),
        clip=clip, t5=t5, vae=vae, scheduler={},
        call=dict(prompt=["A painting of a squirrel eating a burger"], negative_prompt=None, num_inference_steps=2,
                  guidance_scale=5.0, height=32 if not h else 16, width=32 if not h else 24,
                  max_sequence_length=256 if not h else 40, seed=0 if not h else 11))
    slg = dict(
        name="sd3_pipeline_no_t5_slg" + ("_h" if h else ""),
        transformer=dict(sample_size=32, patch_size=2 if h else 1, in_channels=4, num_layers=2, attention_head_dim=8,
                         num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=80,
                         pooled_projection_dim=64, out_channels=4, qk_norm="rms_norm"),
        clip=dict(clip, hidden_act="quick_gelu", num_hidden_layers=3), t5=None, vae=vae,
        scheduler=dict(shift=3.0),
        call=dict(prompt=["a cat on a sofa", "Zürich at night, neon 🚀"], negative_prompt=["blurry", ""],
                  num_inference_steps=2, guidance_scale=3.0, height=24 if not h else 16, width=32,
                  max_sequence_length=16, skip_guidance_layers=[1], skip_layer_guidance_scale=2.8,
                  skip_layer_guidance_start=0.0, skip_layer_guidance_stop=1.0, seed=1 if not h else 12))
    return [tiny, slg]


def jsonable(cfg):
    return json.loads(json.dumps({k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(cfg).items()}, default=str))


def run(outdir, v, files):
    with tempfile.TemporaryDirectory() as d:
        toks = load_tokenizers(files, d)
        comps = components(v, toks)
    pipe = StableDiffusion3Pipeline(**comps)
    pipe.set_progress_bar_config(disable=True)
    call = dict(v["call"])
    seed = call.pop("seed")
    prompts, neg = call["prompt"], call["negative_prompt"]
    B = len(prompts)
    T = {}
    # the ids each tokenizer gives, called as the pipeline calls it
    for key, tok, n in [("text_input_ids", pipe.tokenizer, 77), ("text_input_ids_2", pipe.tokenizer_2, 77),
                        ("text_input_ids_3", pipe.tokenizer_3, call["max_sequence_length"])]:
        if tok is None:
            continue
        for side, texts in [("", prompts), ("negative_", neg if neg is not None else [""] * B)]:
            ids = tok(texts, padding="max_length", max_length=n, truncation=True, add_special_tokens=True,
                      return_tensors="pt").input_ids
            T[f"intermediate.{side}{key}"] = ids.long()
    with torch.no_grad():
        pe, npe, ppe, nppe = pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None, negative_prompt=neg,
                                                do_classifier_free_guidance=call["guidance_scale"] > 1,
                                                max_sequence_length=call["max_sequence_length"])
    T.update({"intermediate.prompt_embeds": pe, "intermediate.negative_prompt_embeds": npe,
              "intermediate.pooled_prompt_embeds": ppe, "intermediate.negative_pooled_prompt_embeds": nppe})
    vae_f = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn((B, pipe.transformer.config.in_channels, call["height"] // vae_f, call["width"] // vae_f),
                          generator=g)
    steps, timesteps = [], []

    def record(p, i, t, kw):
        steps.append(kw["latents"].clone())
        timesteps.append(float(t))
        return {}

    with torch.no_grad():
        images = pipe(**call, latents=latents.clone(), output_type="pt", callback_on_step_end=record).images
        final = steps[-1] / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
        decoded = pipe.vae.decode(final, return_dict=False)[0]
    T.update({"input.latents": latents, "output.timesteps": torch.tensor(timesteps, dtype=torch.float32),
              "intermediate.trajectory": torch.stack(steps), "output.decoded": decoded, "output.images": images})
    for prefix, m in [("transformer.", pipe.transformer), ("vae.", pipe.vae), ("text_encoder.", pipe.text_encoder),
                      ("text_encoder_2.", pipe.text_encoder_2), ("text_encoder_3.", pipe.text_encoder_3)]:
        if m is None:
            continue
        for k, t in m.state_dict().items():
            if k == "encoder.embed_tokens.weight" or k.endswith("position_ids"):
                continue  # T5's tied embedding is `shared.weight`; position ids are a buffer
            T[prefix + k] = t
    for k, t in T.items():
        if k.startswith(("output.", "intermediate.")) and t.is_floating_point():
            assert torch.isfinite(t).all(), k
    config = {"transformer": jsonable(pipe.transformer.config), "vae": jsonable(pipe.vae.config),
              "text_encoder": pipe.text_encoder.config.to_diff_dict() | {"hidden_act": v["clip"]["hidden_act"]},
              "text_encoder_2": pipe.text_encoder_2.config.to_diff_dict() | {"hidden_act": v["clip"]["hidden_act"]},
              "text_encoder_3": None if pipe.text_encoder_3 is None else pipe.text_encoder_3.config.to_diff_dict(),
              "scheduler": jsonable(pipe.scheduler.config)}
    for k in ["text_encoder", "text_encoder_2", "text_encoder_3"]:
        if config[k] is not None:
            config[k] = {a: b for a, b in config[k].items() if a not in ("transformers_version", "dtype", "torch_dtype")}
    call_side = {k: call[k] for k in call}
    call_side["seed"] = seed
    tensors = {
        "input.latents": "[B, C, H/f, W/f] initial latents (standard normal), passed as `latents=`",
        "intermediate.text_input_ids / _2 / _3": "[B, 77] / [B, 77] / [B, max_sequence_length] int64: ids of "
            "`prompt` by tokenizer, tokenizer_2, tokenizer_3 (absent without T5), as the pipeline calls them",
        "intermediate.negative_text_input_ids / _2 / _3": "the same for the negative prompts ('' when none)",
        "intermediate.prompt_embeds": "[B, 77 + T, joint_attention_dim] encode_prompt's prompt_embeds",
        "intermediate.negative_prompt_embeds": "[B, 77 + T, joint_attention_dim]",
        "intermediate.pooled_prompt_embeds": "[B, 2 * projection_dim]",
        "intermediate.negative_pooled_prompt_embeds": "[B, 2 * projection_dim]",
        "output.timesteps": "[N] float timesteps the transformer saw",
        "intermediate.trajectory": "[N, B, C, H/f, W/f] latents after each scheduler step",
        "output.decoded": "[B, 3, H, W] vae.decode(latents / scaling_factor + shift_factor) of the final latents",
        "output.images": "[B, 3, H, W] the pipeline's images (output_type 'pt': (decoded / 2 + 0.5) clamped to [0, 1])",
        "transformer.* / vae.* / text_encoder.* / text_encoder_2.* / text_encoder_3.*": "weights, own key names",
    }
    side = {"kind": "sd3_pipeline_diffusers", "config": config, "call": call_side, "seed": 0,
            "tokenizers": {k: f for k, f in files.items() if k != "tokenizer_3" or pipe.text_encoder_3 is not None},
            "source": {"package": "diffusers", "version": diffusers.__version__,
                       "transformers": transformers.__version__, "trained_with": {"tokenizers": tokenizers.__version__},
                       "test": "tests/pipelines/stable_diffusion_3/test_pipeline_stable_diffusion_3.py get_dummy_components"},
            "tolerance": {"atol": 1e-4, "rtol": 1e-4}, "tensors": tensors}
    name = v["name"]
    save_file({k: t.detach().contiguous().clone() for k, t in T.items()}, f"{outdir}/{name}.safetensors")
    json.dump(side, open(f"{outdir}/{name}.json", "w", encoding="utf-8"), indent=1, ensure_ascii=False)
    print(name, os.path.getsize(f"{outdir}/{name}.safetensors"), "images mean", round(float(images.mean()), 4),
          "latent std", round(float(steps[-1].std()), 4), "embeds", tuple(pe.shape))
    return pipe


if __name__ == "__main__":
    if sys.argv[1] == "--save-pipeline":
        v = variants("public")[0]
        files = tokenizers_files(400, 200)
        with tempfile.TemporaryDirectory() as d:
            pipe = StableDiffusion3Pipeline(**components(v, load_tokenizers(files, d)))
        pipe.save_pretrained(sys.argv[2], safe_serialization=True)
        print("saved", sys.argv[2])
    else:
        out = sys.argv[1]
        kind = sys.argv[2] if len(sys.argv) > 2 else "public"
        os.makedirs(out, exist_ok=True)
        files = tokenizers_files(400 if kind == "public" else 330, 200 if kind == "public" else 150)
        for v in variants(kind):
            run(out, v, files)
