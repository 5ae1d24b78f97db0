//! The CLIP BPE and T5 unigram tokenizers, built as transformers' `CLIPTokenizer` and
//! `T5Tokenizer` build them, with the Hugging Face `tokenizers` crate (offline, from the
//! checkpoint's own files).
//!
//! transformers 5 takes only the vocabulary (and merges) from a tokenizer's files and builds
//! the rest of the pipeline itself; so does this module, so that the ids are transformers':
//!
//! - **CLIP** (`CLIPTokenizer`): NFC, whitespace runs to one space, lowercase; CLIP's split
//!   regex then byte-level mapping; BPE with the `</w>` end-of-word suffix; `<|startoftext|>`
//!   ... `<|endoftext|>` around the tokens. Files: `tokenizer.json`, or `vocab.json` +
//!   `merges.txt` (SD3's `tokenizer` and `tokenizer_2` folders).
//! - **T5** (`T5Tokenizer`): the SentencePiece normalizer (`Precompiled` charsmap) when
//!   `tokenizer.json` has one; whitespace split and `▁` metaspace; unigram with `<unk>` at id 2;
//!   `</s>` appended. File: `tokenizer.json` (SD3's `tokenizer_3` folder).
//!
//! Special tokens (`bos_token`, `eos_token`, `unk_token`, `pad_token`, additional ones) come from
//! `special_tokens_map.json` / `tokenizer_config.json` and are matched in the text before
//! normalization, as transformers' added tokens. Encoding pads to `max_length` with the pad
//! token and truncates to it (special tokens included), as diffusers' pipelines call the
//! tokenizers (`padding="max_length", truncation=True`).

use std::path::Path;

use burn::prelude::*;
use serde_json::{Value, json};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{Error, Result};
use crate::text::config::read_config_file;

/// Token ids and attention masks of a batch of prompts, each row `max_length` long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedBatch {
    /// Ids, one row per prompt.
    pub input_ids: Vec<Vec<i64>>,
    /// 1 on tokens, 0 on padding.
    pub attention_mask: Vec<Vec<i64>>,
}

impl TokenizedBatch {
    fn tensor(rows: &[Vec<i64>], device: &Device) -> Tensor<2, Int> {
        let l = rows.first().map_or(0, Vec::len);
        let flat: Vec<i64> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), l]), device)
    }

    /// The ids as a `[B, max_length]` tensor.
    pub fn ids(&self, device: &Device) -> Tensor<2, Int> {
        Self::tensor(&self.input_ids, device)
    }

    /// The attention mask as a `[B, max_length]` tensor.
    pub fn mask(&self, device: &Device) -> Tensor<2, Int> {
        Self::tensor(&self.attention_mask, device)
    }
}

fn io(path: &Path, reason: impl ToString) -> Error {
    Error::Io { path: path.to_path_buf(), reason: reason.to_string() }
}

/// The special tokens named in a tokenizer folder: `special_tokens_map.json` first, then
/// `tokenizer_config.json`, then the class defaults.
#[derive(Debug, Clone)]
struct SpecialTokens {
    bos: Option<String>,
    eos: String,
    unk: String,
    pad: String,
    additional: Vec<String>,
}

fn token_text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string).or_else(|| v.get("content").and_then(Value::as_str).map(str::to_string))
}

impl SpecialTokens {
    fn read(dir: &Path, defaults: [Option<&str>; 4]) -> Result<Self> {
        let mut sources = Vec::new();
        for name in ["special_tokens_map.json", "tokenizer_config.json"] {
            let p = dir.join(name);
            if p.is_file() {
                sources.push(read_config_file(&p)?);
            }
        }
        let find = |key: &str| sources.iter().find_map(|s| s.get(key).and_then(token_text));
        let pick = |key: &str, default: Option<&str>| find(key).or(default.map(str::to_string));
        let mut additional = Vec::new();
        for s in &sources {
            for key in ["additional_special_tokens", "extra_special_tokens"] {
                if let Some(list) = s.get(key).and_then(Value::as_array) {
                    additional.extend(list.iter().filter_map(token_text));
                }
            }
        }
        let [bos, eos, unk, pad] = defaults;
        let need = |key: &str, d: Option<&str>| {
            pick(key, d).ok_or_else(|| io(dir, format!("no `{key}` in special_tokens_map.json or tokenizer_config.json")))
        };
        Ok(Self { bos: pick("bos_token", bos), eos: need("eos_token", eos)?, unk: need("unk_token", unk)?, pad: need("pad_token", pad)?, additional })
    }

    /// `added_tokens` entries for `tokens` (deduplicated), all special and not normalized.
    fn added(tokens: impl IntoIterator<Item = String>) -> Vec<Value> {
        let mut seen = std::collections::BTreeSet::new();
        tokens
            .into_iter()
            .filter(|t| seen.insert(t.clone()))
            .map(|t| json!({"id": 0, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
            .collect()
    }
}

/// The `model` section of a `tokenizer.json`, if the folder has one.
fn tokenizer_json(dir: &Path) -> Result<Option<Value>> {
    let p = dir.join("tokenizer.json");
    if p.is_file() { Ok(Some(read_config_file(&p)?)) } else { Ok(None) }
}

/// Ids of the tokens of `tokens` (vocabulary or added), in order, after checking all exist.
fn ids_of(tok: &Tokenizer, dir: &Path, tokens: &[&str]) -> Result<Vec<u32>> {
    tokens
        .iter()
        .map(|t| tok.token_to_id(t).ok_or_else(|| io(dir, format!("special token `{t}` is not in the vocabulary"))))
        .collect()
}

/// A tokenizer with the pipeline's padding and truncation.
#[derive(Debug, Clone)]
struct Padded {
    tokenizer: Tokenizer,
    pad_id: u32,
    pad: String,
}

impl Padded {
    fn build(dir: &Path, spec: Value, pad: &str) -> Result<Self> {
        let text = spec.to_string();
        let tokenizer: Tokenizer = text.parse().map_err(|e| io(dir, format!("cannot build the tokenizer: {e}")))?;
        let pad_id = ids_of(&tokenizer, dir, &[pad])?[0];
        Ok(Self { tokenizer, pad_id, pad: pad.to_string() })
    }

    fn encode(&self, prompts: &[&str], max_length: usize) -> Result<TokenizedBatch> {
        if max_length == 0 {
            return Err(Error::InvalidArgument("max_length must be positive".into()));
        }
        let mut tok = self.tokenizer.clone();
        tok.with_truncation(Some(TruncationParams { max_length, ..Default::default() }))
            .map_err(|e| Error::InvalidArgument(format!("cannot truncate to {max_length} tokens: {e}")))?;
        tok.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            pad_id: self.pad_id,
            pad_token: self.pad.clone(),
            ..Default::default()
        }));
        let mut input_ids = Vec::with_capacity(prompts.len());
        let mut attention_mask = Vec::with_capacity(prompts.len());
        for p in prompts {
            let enc = tok.encode(*p, true).map_err(|e| Error::InvalidArgument(format!("cannot tokenize {p:?}: {e}")))?;
            input_ids.push(enc.get_ids().iter().map(|&i| i64::from(i)).collect());
            attention_mask.push(enc.get_attention_mask().iter().map(|&i| i64::from(i)).collect());
        }
        Ok(TokenizedBatch { input_ids, attention_mask })
    }
}

/// CLIP's byte-level BPE tokenizer (transformers' `CLIPTokenizer`).
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    inner: Padded,
    /// `<|startoftext|>` id.
    pub bos_token_id: u32,
    /// `<|endoftext|>` id.
    pub eos_token_id: u32,
}

/// GPT-2's byte-to-unicode symbols in its own order (`bytes_to_unicode().values()`): the
/// printable bytes as themselves, then the others mapped to U+0100 onwards.
fn gpt2_byte_symbols() -> Vec<String> {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let shown = (0..=255u8).filter(|&b| printable(b)).map(|b| char::from(b).to_string());
    let moved = (0..=255u8).filter(|&b| !printable(b)).enumerate().map(|(i, _)| char::from_u32(256 + i as u32).expect("valid").to_string());
    shown.chain(moved).collect()
}

/// CLIP's pre-tokenizer split pattern (transformers' `CLIPTokenizer`).
const CLIP_PATTERN: &str = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

impl ClipTokenizer {
    /// Load from a tokenizer folder (`tokenizer.json`, or `vocab.json` + `merges.txt`; special
    /// tokens from `special_tokens_map.json` / `tokenizer_config.json`, defaulting to
    /// `<|startoftext|>`, `<|endoftext|>` for the others).
    ///
    /// # Errors
    /// [`Error::Io`] for missing or malformed files.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let (vocab, merges) = match tokenizer_json(dir)? {
            Some(t) => {
                let model = t.get("model").ok_or_else(|| io(dir, "tokenizer.json has no `model`"))?;
                let vocab = model.get("vocab").cloned().ok_or_else(|| io(dir, "tokenizer.json has no vocabulary"))?;
                (vocab, model.get("merges").cloned().unwrap_or(json!([])))
            }
            None => {
                let vocab = read_config_file(&dir.join("vocab.json"))?;
                let path = dir.join("merges.txt");
                let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
                // The first line of a merges file is a `#version` header.
                let merges: Vec<Value> = text
                    .lines()
                    .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
                    .map(|l| json!(l.split(' ').collect::<Vec<_>>()))
                    .collect();
                (vocab, Value::Array(merges))
            }
        };
        let eot = "<|endoftext|>";
        let st = SpecialTokens::read(dir, [Some("<|startoftext|>"), Some(eot), Some(eot), Some(eot)])?;
        Self::build(dir, vocab, merges, st)
    }

    /// Load OpenCLIP's own vocabulary file, `bpe_simple_vocab_16e6.txt` as the `open_clip`
    /// package ships it (gunzipped first: `gunzip -k bpe_simple_vocab_16e6.txt.gz`), building
    /// the vocabulary as its `SimpleTokenizer` does: the 256 byte symbols in GPT-2's order, the
    /// same with `</w>`, the first 48894 merges, then `<start_of_text>` and `<end_of_text>`.
    /// Use with [`encode_open_clip`](Self::encode_open_clip).
    ///
    /// # Errors
    /// [`Error::Io`] for a missing or malformed file.
    pub fn from_open_clip_bpe(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
        // open_clip: `merges = lines[1:49152-256-2+1]` (the first line is a version header).
        let lines = text.lines().skip(1).filter(|l| !l.trim().is_empty());
        let merges: Vec<Vec<&str>> = lines.take(49152 - 256 - 2).map(|l| l.split_whitespace().collect()).collect();
        if let Some(bad) = merges.iter().find(|m| m.len() != 2) {
            return Err(io(path, format!("not a BPE merges file: line {bad:?}")));
        }
        let symbols = gpt2_byte_symbols();
        let ends: Vec<String> = symbols.iter().map(|s| format!("{s}</w>")).collect();
        let joined = merges.iter().map(|m| m.concat());
        let specials = ["<start_of_text>", "<end_of_text>"].map(String::from);
        let vocab: serde_json::Map<String, Value> =
            symbols.into_iter().chain(ends).chain(joined).chain(specials).enumerate().map(|(i, t)| (t, i.into())).collect();
        let eot = "<end_of_text>".to_string();
        let st = SpecialTokens { bos: Some("<start_of_text>".into()), eos: eot.clone(), unk: eot.clone(), pad: eot, additional: Vec::new() };
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::build(dir, Value::Object(vocab), json!(merges), st)
    }

    /// The tokenizer of a vocabulary, its merges and special tokens.
    fn build(dir: &Path, vocab: Value, merges: Value, st: SpecialTokens) -> Result<Self> {
        let bos = st.bos.clone().unwrap_or_else(|| "<|startoftext|>".into());
        let mut special = vec![bos.clone(), st.eos.clone(), st.unk.clone(), st.pad.clone()];
        special.extend(st.additional.clone());
        let spec = |bos_id: u32, eos_id: u32| {
            json!({
                "version": "1.0", "truncation": null, "padding": null,
                "added_tokens": SpecialTokens::added(special.clone()),
                "normalizer": {"type": "Sequence", "normalizers": [
                    {"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}, {"type": "Lowercase"}]},
                "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": CLIP_PATTERN}, "behavior": "Removed", "invert": true},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
                "post_processor": {"type": "RobertaProcessing", "sep": [st.eos, eos_id], "cls": [bos, bos_id],
                    "trim_offsets": false, "add_prefix_space": false},
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {"type": "BPE", "dropout": null, "unk_token": st.unk, "continuing_subword_prefix": "",
                    "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                    "vocab": vocab, "merges": merges}
            })
        };
        // Build once to look the special tokens' ids up, then with them in the post-processor.
        let probe = Padded::build(dir, spec(0, 0), &st.pad)?;
        let ids = ids_of(&probe.tokenizer, dir, &[&bos, &st.eos])?;
        let inner = Padded::build(dir, spec(ids[0], ids[1]), &st.pad)?;
        Ok(Self { inner, bos_token_id: ids[0], eos_token_id: ids[1] })
    }

    /// The padding id (`pad_token`).
    pub fn pad_token_id(&self) -> u32 {
        self.inner.pad_id
    }

    /// Tokenize prompts as `tokenizer(prompts, padding="max_length", max_length=max_length,
    /// truncation=True)` (77 for SD3).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero `max_length` or text the tokenizer rejects.
    pub fn encode(&self, prompts: &[&str], max_length: usize) -> Result<TokenizedBatch> {
        self.inner.encode(prompts, max_length)
    }

    /// Tokenize prompts as OpenCLIP's `SimpleTokenizer` (`open_clip.get_tokenizer(...)(prompts,
    /// context_length)`): start token, BPE tokens, end token, truncated to `context_length`
    /// with the end token kept last, padded with id 0 whatever the files' `pad_token` (the
    /// attention mask is all ones on the tokens, as [`encode`](Self::encode)'s). The same
    /// vocabulary as CLIP's (any CLIP BPE tokenizer folder). open_clip's text cleaning is
    /// matched for ordinary text (whitespace runs, lowercase); its `ftfy.fix_text` repairs
    /// (curly quotes, ligatures, mojibake, full-width forms) and HTML-entity unescaping are not
    /// applied.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero `context_length` or text the tokenizer rejects.
    pub fn encode_open_clip(&self, prompts: &[&str], context_length: usize) -> Result<TokenizedBatch> {
        let mut batch = self.inner.encode(prompts, context_length)?;
        for (ids, mask) in batch.input_ids.iter_mut().zip(&batch.attention_mask) {
            for (id, m) in ids.iter_mut().zip(mask) {
                if *m == 0 {
                    *id = 0;
                }
            }
        }
        Ok(batch)
    }
}

/// T5's unigram (SentencePiece) tokenizer (transformers' `T5Tokenizer`).
#[derive(Debug, Clone)]
pub struct T5Tokenizer {
    inner: Padded,
    /// `</s>` id.
    pub eos_token_id: u32,
}

impl T5Tokenizer {
    /// Load from a tokenizer folder holding `tokenizer.json` (special tokens from
    /// `special_tokens_map.json` / `tokenizer_config.json`, defaulting to `</s>`, `<unk>`,
    /// `<pad>`).
    ///
    /// # Errors
    /// [`Error::Io`] for missing or malformed files (a folder with only `spiece.model` is not
    /// supported: it needs transformers' conversion to `tokenizer.json`).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let t = tokenizer_json(dir)?.ok_or_else(|| io(dir, "no tokenizer.json (convert spiece.model with transformers first)"))?;
        let vocab = t.pointer("/model/vocab").cloned().ok_or_else(|| io(dir, "tokenizer.json has no vocabulary"))?;
        let normalizer = precompiled_normalizer(t.get("normalizer"));
        let st = SpecialTokens::read(dir, [None, Some("</s>"), Some("<unk>"), Some("<pad>")])?;
        let from_file = t.get("added_tokens").and_then(Value::as_array).into_iter().flatten().filter_map(|a| token_text(a));
        let mut special: Vec<String> = vec![st.pad.clone(), st.eos.clone(), st.unk.clone()];
        special.extend(st.additional.clone());
        special.extend(from_file);
        let metaspace = json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": true});
        let spec = |eos_id: u32| {
            json!({
                "version": "1.0", "truncation": null, "padding": null,
                "added_tokens": SpecialTokens::added(special.clone()),
                "normalizer": normalizer,
                "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, metaspace]},
                "post_processor": {"type": "TemplateProcessing",
                    "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": st.eos, "type_id": 0}}],
                    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": st.eos, "type_id": 0}},
                             {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": st.eos, "type_id": 0}}],
                    "special_tokens": {st.eos.clone(): {"id": st.eos, "ids": [eos_id], "tokens": [st.eos]}}},
                "decoder": metaspace,
                "model": {"type": "Unigram", "unk_id": 2, "vocab": vocab, "byte_fallback": false}
            })
        };
        let probe = Padded::build(dir, spec(0), &st.pad)?;
        let eos_id = ids_of(&probe.tokenizer, dir, &[&st.eos])?[0];
        Ok(Self { inner: Padded::build(dir, spec(eos_id), &st.pad)?, eos_token_id: eos_id })
    }

    /// The padding id (`pad_token`).
    pub fn pad_token_id(&self) -> u32 {
        self.inner.pad_id
    }

    /// Tokenize prompts as `tokenizer(prompts, padding="max_length", max_length=max_length,
    /// truncation=True)` (SD3's `max_sequence_length`, 256 by default).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a zero `max_length` or text the tokenizer rejects.
    pub fn encode(&self, prompts: &[&str], max_length: usize) -> Result<TokenizedBatch> {
        self.inner.encode(prompts, max_length)
    }
}

/// The `Precompiled` SentencePiece normalizer of a `tokenizer.json` normalizer section (alone
/// or inside a `Sequence`), as transformers keeps it; `null` otherwise.
fn precompiled_normalizer(normalizer: Option<&Value>) -> Value {
    let Some(n) = normalizer else { return Value::Null };
    let list = match n.get("normalizers").and_then(Value::as_array) {
        Some(list) => list.clone(),
        None => vec![n.clone()],
    };
    list.into_iter()
        .find(|n| n.get("type").and_then(Value::as_str) == Some("Precompiled") && n.get("precompiled_charsmap").is_some())
        .unwrap_or(Value::Null)
}
