"""Reference fixtures for the crate's tokenizers (kind `tokenizer_transformers`): tiny tokenizers trained
here, in the style of the ones SD3 ships, and the ids transformers' own tokenizer classes give for tricky
prompts, with the padding and truncation of diffusers' `StableDiffusion3Pipeline`.

usage: python scripts/gen_tokenizer.py OUTDIR [variant]   (variant: public (default) or any other word)

- CLIP style: a byte-level BPE with the `</w>` end-of-word suffix, trained with the `tokenizers` package
  (`BpeTrainer`) under CLIP's normalizer and pre-tokenizer; loaded with transformers' `CLIPTokenizer`
  (the fast, tokenizers-backed class). Prompts are encoded as the SD3 pipeline does:
  `padding="max_length", max_length=77, truncation=True`. One fixture ships the files transformers'
  `save_pretrained` writes (`tokenizer.json`, `tokenizer_config.json`); another ships `vocab.json` +
  `merges.txt` + `special_tokens_map.json` with `pad_token="!"`, as SD3's `tokenizer_2` (OpenCLIP bigG).
- T5 style: a unigram model trained with `tokenizers` (`UnigramTrainer`, T5's Metaspace pre-tokenizer and
  NFKC normalization), loaded with transformers' `T5Tokenizer`; and (variant `public`) a SentencePiece
  unigram model (`spiece.model`, as T5's own) converted by transformers, whose `tokenizer.json` carries a
  precompiled SentencePiece normalizer. Encoded with `padding="max_length", max_length=L, truncation=True`
  (the pipeline's `max_sequence_length`, 256 by default).

The tokenizer files travel in the sidecar as strings: `files` maps each file name to its contents (a
sibling `.json` file would be taken for a sidecar). Tensors: `output.input_ids` and
`output.attention_mask`, `[N, max_length]` int64, one row per prompt of the sidecar's `prompts`."""
import json, os, sys, tempfile
import torch
from safetensors.torch import save_file
import tokenizers, transformers
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTokenizer, T5Tokenizer

CORPUS = [
    "a photo of a cat sitting on a red sofa",
    "an astronaut riding a horse on the moon, digital art",
    "a watercolor painting of a lighthouse at dawn",
    "the quick brown fox jumps over the lazy dog",
    "Portrait of an old man with a beard, 85mm, f/1.8, bokeh",
    "A cozy cabin in the snowy mountains, warm light in the windows",
    "cyberpunk city street at night, neon signs, rain, reflections",
    "a bowl of ramen with eggs and green onions, studio lighting",
    "don't panic! it's only 3.14159 and 42 apples...",
    "café, naïve, résumé, jalapeño, Zürich, São Paulo",
    "東京の夜景 and a 🚀 rocket with ✨ sparkles",
    "hyperrealistic macro shot of a dew drop on a leaf",
] * 4

PROMPTS = [
    "a photo of a cat",
    "",
    "A Photo Of A CAT, in the style of Van Gogh!!",
    "  multiple   spaces\tand\nnewlines  ",
    "don't stop: it's 3.14159 (approx.) -- 100% sure?",
    "café naïve résumé — Zürich",
    "東京の夜景 🚀✨ emoji and CJK",
    "unknownwordsqzxj and rare bytes \u00a0\u200b\u2028",
    "<|startoftext|> inline special tokens </s> <pad>",
    " ".join(["a long prompt that keeps going"] * 30),
]


def clip_normalizer():
    return normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])


def clip_pre_tokenizer():
    pattern = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False)])


def train_clip_bpe(vocab_size):
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>", continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tok.normalizer = clip_normalizer()
    tok.pre_tokenizer = clip_pre_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, end_of_word_suffix="</w>",
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|startoftext|>", "<|endoftext|>"])
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def train_t5_unigram(vocab_size):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, show_progress=False, unk_token="<unk>",
                                      special_tokens=["<pad>", "</s>", "<unk>"])
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def train_spm(dirname, vocab_size):
    import sentencepiece as spm
    corpus = os.path.join(dirname, "corpus.txt")
    with open(corpus, "w") as f:
        f.write("\n".join(CORPUS))
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=os.path.join(dirname, "spiece"), vocab_size=vocab_size,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, minloglevel=2)
    os.remove(corpus)


def read_files(dirname, names):
    out = {}
    for n in names:
        with open(os.path.join(dirname, n), encoding="utf-8") as f:
            out[n] = f.read()
    return out


def save(outdir, name, cls, files, max_length, seed_note):
    with tempfile.TemporaryDirectory() as d:
        for n, text in files.items():
            with open(os.path.join(d, n), "w", encoding="utf-8") as f:
                f.write(text)
        tok = cls.from_pretrained(d)
    enc = tok(PROMPTS, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    ids, mask = enc.input_ids.long(), enc.attention_mask.long()
    save_file({"output.input_ids": ids.contiguous(), "output.attention_mask": mask.contiguous()},
              f"{outdir}/{name}.safetensors")
    side = {"kind": "tokenizer_transformers",
            "config": {"tokenizer_class": cls.__name__, "padding": "max_length", "max_length": max_length,
                       "truncation": True},
            "seed": None, "note": seed_note,
            "source": {"package": "transformers", "version": transformers.__version__,
                       "trained_with": {"tokenizers": tokenizers.__version__}},
            "tolerance": {"atol": 0, "rtol": 0},
            "prompts": PROMPTS, "files": files,
            "tensors": {"output.input_ids": "[N, max_length] int64: ids of each prompt (rows in `prompts` order)",
                        "output.attention_mask": "[N, max_length] int64: 1 on tokens, 0 on padding"}}
    json.dump(side, open(f"{outdir}/{name}.json", "w", encoding="utf-8"), indent=1, ensure_ascii=False)
    print(name, ids.shape, "pad id", tok.pad_token_id, "first row", ids[0, :12].tolist())


def clip_fixtures(outdir, vocab_size, suffix):
    bpe = train_clip_bpe(vocab_size)
    with tempfile.TemporaryDirectory() as d:
        raw = os.path.join(d, "raw")
        os.makedirs(raw)
        bpe.model.save(raw)  # vocab.json, merges.txt
        # 1. The files transformers writes (tokenizer.json, tokenizer_config.json), default pad token.
        json_dir = os.path.join(d, "json")
        tok = CLIPTokenizer.from_pretrained(raw)
        tok.save_pretrained(json_dir)
        json_files = read_files(json_dir, ["tokenizer.json", "tokenizer_config.json"])
        # 2. vocab.json + merges.txt + special_tokens_map.json with pad "!" (SD3's tokenizer_2).
        spec = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                "pad_token": "!"}
        with open(os.path.join(raw, "special_tokens_map.json"), "w") as f:
            json.dump(spec, f)
        raw_files = read_files(raw, ["vocab.json", "merges.txt", "special_tokens_map.json"])
    save(outdir, f"tokenizer_clip_bpe{suffix}", CLIPTokenizer, json_files, 77, "CLIP-style BPE, tokenizer.json")
    save(outdir, f"tokenizer_clip_bpe_pad_bang{suffix}", CLIPTokenizer, raw_files, 77,
         "CLIP-style BPE, vocab.json + merges.txt, pad_token '!'")


def t5_fixtures(outdir, vocab_size, max_length, suffix, with_spm):
    uni = train_t5_unigram(vocab_size)
    with tempfile.TemporaryDirectory() as d:
        raw = os.path.join(d, "raw")
        os.makedirs(raw)
        uni.save(os.path.join(raw, "tokenizer.json"))
        out = os.path.join(d, "out")
        T5Tokenizer.from_pretrained(raw, extra_ids=0).save_pretrained(out)
        files = read_files(out, ["tokenizer.json", "tokenizer_config.json"])
        if with_spm:
            spm_dir = os.path.join(d, "spm")
            os.makedirs(spm_dir)
            train_spm(spm_dir, 120)
            spm_out = os.path.join(d, "spm_out")
            T5Tokenizer.from_pretrained(spm_dir).save_pretrained(spm_out)
            spm_files = read_files(spm_out, ["tokenizer.json", "tokenizer_config.json"])
    save(outdir, f"tokenizer_t5_unigram{suffix}", T5Tokenizer, files, max_length, "T5-style unigram (tokenizers)")
    if with_spm:
        save(outdir, f"tokenizer_t5_spiece{suffix}", T5Tokenizer, spm_files, max_length,
             "T5-style SentencePiece unigram with 100 sentinels, converted by transformers (precompiled normalizer)")


if __name__ == "__main__":
    out = sys.argv[1]
    variant = sys.argv[2] if len(sys.argv) > 2 else "public"
    os.makedirs(out, exist_ok=True)
    if variant == "public":
        clip_fixtures(out, 400, "")
        t5_fixtures(out, 200, 256, "", True)
    else:
        clip_fixtures(out, 330, "_h")
        t5_fixtures(out, 150, 64, "_h", False)
