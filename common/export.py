"""Hugging Face `transformers` export (and BERT import): `python export.py` in gpt/, bert/, spanbert/.

Export writes a `save_pretrained` folder that `from_pretrained` / `AutoTokenizer`
load, giving the same logits and the same token ids as this project:

| checkpoint kind        | transformers class                         | notes |
|---|---|---|
| gpt-pretrain           | OpenAIGPTLMHeadModel                       | GPT-1: learned positions, post-LN, tanh GELU; our LM bias in lm_head_bias.pt |
| gpt-classifier         | OpenAIGPTForSequenceClassification         | classifies the last non-pad token = our [EOS]; bias folded, see below |
| bert-pretrain          | BertForPreTraining                         | NSP rows swapped (HF index 0 = "B follows A", ours 1) |
| bert-classifier        | BertForSequenceClassification              | |
| spanbert-pretrain      | BertModel                                  | SBO and MLM heads dropped; the pooler was never trained |
| spanbert-classifier    | BertForSequenceClassification (--logit cls)| mean / max pooling has no HF class: BertModel + classifier.pt |

Weight layout: our attention has one fused `qkv` Linear (out = 3 x D, q | k | v,
heads contiguous inside each); OpenAIGPT's `c_attn` is a Conv1D holding the
same matrix transposed, BERT has separate query / key / value Linears.

The tokenizer is a `tokenizer.json` (Hugging Face `tokenizers`) rebuilt from the
SentencePiece model: our `normalize_text` (NFC, whitespace runs -> one space,
strip) as its normalizer, the BPE vocab and merges in SentencePiece's score
order, byte fallback, the 7 special pieces at ids 0-6, and the model's wrap
([BOS] text [EOS] / [CLS] text [SEP]) as its post-processor. The .model file is
copied beside it.

Import (`--import DIR`, BERT and SpanBERT) turns a Hugging Face BertModel folder
of our shape into a "<model>-pretrain" checkpoint that train.py fine-tunes.

transformers is an optional dependency (requirements-extra.txt): it is imported
inside the functions that need it.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from common.checkpoint import check_compatible, load_checkpoint, save_checkpoint
from common.cli import UserError, make_parser, require_file, require_output_dir, run_main
from common.config import ModelConfig
from common.paths import DEFAULT_VOCAB, rel
from common.vocab import BOS, CLS, EOS, MASK, PAD, SEP, SPECIAL_PIECES, UNK, WORD_MARKER, Vocab, load_vocab

INSTALL_HINT = "pip install -r requirements-extra.txt"
NSMC_LABELS = {0: "negative", 1: "positive"}
TOKENIZER_MODEL = "tokenizer.model"  # the SentencePiece model, copied as is
EXPORT_INFO = "export_info.json"  # what was exported from where, with which vocab
LM_BIAS_FILE = "lm_head_bias.pt"  # GPT's LM output bias, which OpenAIGPTLMHeadModel has no place for


def require_transformers():
    """Import transformers, or say how to install it."""
    try:
        import transformers
    except ImportError as e:
        raise UserError(f"the Hugging Face export/import needs transformers: {INSTALL_HINT}") from e
    return transformers


# --- configs -------------------------------------------------------------------------

def gpt_hf_config(cfg: ModelConfig, **extra: Any):
    """OpenAIGPTConfig of our GPT. HF's afn "gelu" is the tanh approximation (gelu_new), as in the
    GPT-1 code and in gpt/model.py (gelu_approximate="tanh")."""
    from transformers import OpenAIGPTConfig

    if cfg.d_ff != 4 * cfg.d_hidn:  # OpenAIGPT's MLP is hard-wired to 4 x n_embd
        raise UserError(f"OpenAIGPT requires d_ff = 4 x d_hidn, the checkpoint has d_ff={cfg.d_ff}, d_hidn={cfg.d_hidn}")
    if cfg.n_segment:
        raise UserError(f"OpenAIGPT has no segment embeddings, the checkpoint has n_segment={cfg.n_segment}")
    return OpenAIGPTConfig(
        vocab_size=cfg.n_vocab, n_positions=cfg.n_seq, n_embd=cfg.d_hidn, n_layer=cfg.n_layer, n_head=cfg.n_head,
        afn="gelu", resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        layer_norm_epsilon=cfg.layer_norm_epsilon, pad_token_id=0, bos_token_id=2, eos_token_id=3, **extra,
    )


def bert_hf_config(cfg: ModelConfig, **extra: Any):
    """BertConfig of our BERT / SpanBERT trunk. HF's hidden_act "gelu" is the exact (erf) GELU, as ours.
    n_segment 0 becomes one all-zero token type row (HF always adds token type embeddings)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=cfg.n_vocab, hidden_size=cfg.d_hidn, num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
        intermediate_size=cfg.d_ff, hidden_act="gelu", hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout, max_position_embeddings=cfg.n_seq,
        type_vocab_size=max(cfg.n_segment, 1), layer_norm_eps=cfg.layer_norm_epsilon, initializer_range=0.02,
        pad_token_id=0, **extra,
    )


def config_from_hf_bert(hf: Any, source: str) -> ModelConfig:
    """Our ModelConfig of a Hugging Face BertConfig; refuses what our encoder cannot represent."""
    if getattr(hf, "model_type", None) != "bert":
        raise UserError(f"{source}: a {getattr(hf, 'model_type', '?')!r} model, not BERT (only BertModel folders can be imported)")
    if hf.hidden_act != "gelu":
        raise UserError(f"{source}: hidden_act={hf.hidden_act!r}, our encoder uses the exact GELU ('gelu')")
    if getattr(hf, "position_embedding_type", "absolute") != "absolute":
        raise UserError(f"{source}: position_embedding_type={hf.position_embedding_type!r}, ours are absolute (learned)")
    if getattr(hf, "is_decoder", False) or getattr(hf, "add_cross_attention", False):
        raise UserError(f"{source}: a BERT decoder / cross-attention model; only encoders can be imported")
    # one dropout rate for both: hidden_dropout_prob (they are equal in exports of ours and in Google's BERTs)
    cfg = ModelConfig(n_layer=hf.num_hidden_layers, d_hidn=hf.hidden_size, n_head=hf.num_attention_heads,
                      d_ff=hf.intermediate_size, n_seq=hf.max_position_embeddings, n_segment=hf.type_vocab_size,
                      dropout=float(hf.hidden_dropout_prob), layer_norm_epsilon=float(hf.layer_norm_eps),
                      n_vocab=hf.vocab_size)
    cfg.validate(source)
    return cfg


# --- weights -------------------------------------------------------------------------
# Pure tensor renames, no transformers needed. `sd` is one of our state dicts, `p` the
# prefix of the trunk in it ("trunk.": GPT's Transformer, BERT's BertModel).

def gpt_trunk_to_hf(sd: dict[str, Tensor], p: str, n_layer: int) -> dict[str, Tensor]:
    """Our GPT trunk -> OpenAIGPTModel keys (without the "transformer." prefix).
    Conv1D computes x @ W + b with W (in, out): our Linear weights transposed."""
    out = {"tokens_embed.weight": sd[f"{p}embeddings.token.weight"],
           "positions_embed.weight": sd[f"{p}embeddings.position.weight"]}
    for i in range(n_layer):
        s, h = f"{p}layers.{i}.", f"h.{i}."
        for ours, theirs, conv in (("attention.qkv", "attn.c_attn", True), ("attention.out", "attn.c_proj", True),
                                   ("ffn.fc", "mlp.c_fc", True), ("ffn.proj", "mlp.c_proj", True),
                                   ("attention_norm", "ln_1", False), ("ffn_norm", "ln_2", False)):
            w = sd[f"{s}{ours}.weight"]
            out[f"{h}{theirs}.weight"] = w.t().contiguous() if conv else w
            out[f"{h}{theirs}.bias"] = sd[f"{s}{ours}.bias"]
    return out


# (ours, HF) names of a BERT layer's modules with the same layout; qkv is split apart
_BERT_LAYER = (("attention.out", "attention.output.dense"), ("attention_norm", "attention.output.LayerNorm"),
               ("ffn.fc", "intermediate.dense"), ("ffn.proj", "output.dense"), ("ffn_norm", "output.LayerNorm"))


def _bert_trunk_pairs(n_layer: int, n_segment: int) -> list[tuple[str, str]]:
    """(our BertModel key, HF BertModel key) of every tensor except q/k/v."""
    pairs = [("encoder.embeddings.token.weight", "embeddings.word_embeddings.weight"),
             ("encoder.embeddings.position.weight", "embeddings.position_embeddings.weight"),
             ("encoder.embeddings.norm.weight", "embeddings.LayerNorm.weight"),
             ("encoder.embeddings.norm.bias", "embeddings.LayerNorm.bias"),
             ("pooler.0.weight", "pooler.dense.weight"), ("pooler.0.bias", "pooler.dense.bias")]
    if n_segment:
        pairs.append(("encoder.embeddings.segment.weight", "embeddings.token_type_embeddings.weight"))
    for i in range(n_layer):
        for ours, theirs in _BERT_LAYER:
            for t in ("weight", "bias"):
                pairs.append((f"encoder.layers.{i}.{ours}.{t}", f"encoder.layer.{i}.{theirs}.{t}"))
    return pairs


def bert_trunk_to_hf(sd: dict[str, Tensor], p: str, cfg: ModelConfig) -> dict[str, Tensor]:
    """Our BertModel (keys under prefix `p`, e.g. "trunk.") -> HF BertModel keys."""
    out = {theirs: sd[p + ours] for ours, theirs in _bert_trunk_pairs(cfg.n_layer, cfg.n_segment)}
    if not cfg.n_segment:  # HF always adds token type embeddings: one zero row adds nothing
        out["embeddings.token_type_embeddings.weight"] = torch.zeros(1, cfg.d_hidn)
    for i in range(cfg.n_layer):
        qkv = f"{p}encoder.layers.{i}.attention.qkv."
        for t in ("weight", "bias"):
            for name, part in zip(("query", "key", "value"), sd[qkv + t].chunk(3, dim=0)):  # rows q | k | v
                out[f"encoder.layer.{i}.attention.self.{name}.{t}"] = part.clone()
    return out


def bert_trunk_from_hf(hf: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """HF BertModel keys -> our BertModel keys (the inverse of bert_trunk_to_hf)."""
    out = {ours: hf[theirs].clone() for ours, theirs in _bert_trunk_pairs(cfg.n_layer, cfg.n_segment)}
    for i in range(cfg.n_layer):
        a = f"encoder.layer.{i}.attention.self."
        for t in ("weight", "bias"):
            out[f"encoder.layers.{i}.attention.qkv.{t}"] = torch.cat([hf[f"{a}{n}.{t}"] for n in ("query", "key", "value")])
    return out


def fold_classifier_bias(weight: Tensor, bias: Tensor, norm_bias: Tensor) -> Tensor:
    """The last LayerNorm bias that makes a bias-free classifier give W h + b.

    OpenAIGPTForSequenceClassification's `score` is a Linear without bias. The last
    layer's post-LN output h = g * n + beta feeds only that classifier in the exported
    model, so beta' = beta + d with W d = b (minimum-norm d) gives W h' = W h + b exactly.
    The exported model's last hidden states are shifted by d; its class logits are ours.
    """
    w, b = weight.double(), bias.double()
    d = torch.linalg.pinv(w) @ b
    residual = float((w @ d - b).abs().max())
    if residual > 1e-6 * (1.0 + float(b.abs().max())):
        raise UserError(f"cannot fold the classifier bias into the last LayerNorm (rank-deficient classifier, "
                        f"residual {residual:.2e}); this classifier has no exact OpenAIGPTForSequenceClassification")
    return (norm_bias.double() + d).to(norm_bias.dtype)


def _load_into(model: torch.nn.Module, weights: dict[str, Tensor]) -> None:
    """Copy weights into a freshly built HF model; every tensor it has must be given."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:  # a mapping bug, not a user error
        raise RuntimeError(f"weight mapping mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in weights.items():
        if expected[k].shape != v.shape:
            raise RuntimeError(f"weight mapping: {k} has shape {tuple(v.shape)}, HF expects {tuple(expected[k].shape)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.items()}, strict=True)


# --- the export of each checkpoint kind ----------------------------------------------

@dataclass
class Exported:
    model: Any  # the transformers model, weights loaded
    template: tuple[list[str], list[str]]  # (pieces before, after) the text, for the tokenizer
    notes: list[str] = field(default_factory=list)
    extra_files: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # weights HF's class cannot hold: name -> torch.save'd dict


def _classifier_extra(n_labels: int) -> dict[str, Any]:
    labels = NSMC_LABELS if n_labels == 2 else {i: f"LABEL_{i}" for i in range(n_labels)}
    return {"num_labels": n_labels, "id2label": labels, "label2id": {v: k for k, v in labels.items()}}


def _export_gpt(sd: dict[str, Tensor], cfg: ModelConfig, classifier: bool) -> Exported:
    from transformers import OpenAIGPTForSequenceClassification, OpenAIGPTLMHeadModel

    trunk = {f"transformer.{k}": v for k, v in gpt_trunk_to_hf(sd, "trunk.", cfg.n_layer).items()}
    if not classifier:
        model = OpenAIGPTLMHeadModel(gpt_hf_config(cfg))
        _load_into(model, {**trunk, "lm_head.weight": trunk["transformer.tokens_embed.weight"]})  # tied
        notes = ["generation prompts start with [BOS] (the tokenizer adds it)"]
        extra = {}
        if "lm_head.bias" in sd:  # ours has an output bias (common.layers.LMHead), OpenAIGPT's lm_head none
            extra[LM_BIAS_FILE] = {"lm_head.bias": sd["lm_head.bias"]}
            notes.append(f"OpenAIGPTLMHeadModel's lm_head has no bias: add the one in {LM_BIAS_FILE} "
                         f"(torch.load(...)['lm_head.bias']) to its logits to get ours; hidden states are identical")
        return Exported(model, ([BOS], []), notes, extra)
    n_labels = sd["classifier.weight"].size(0)
    model = OpenAIGPTForSequenceClassification(gpt_hf_config(cfg, **_classifier_extra(n_labels)))
    last = f"transformer.h.{cfg.n_layer - 1}.ln_2.bias"
    trunk[last] = fold_classifier_bias(sd["classifier.weight"], sd["classifier.bias"], trunk[last])
    _load_into(model, {**trunk, "score.weight": sd["classifier.weight"]})
    notes = ["classifies the last non-pad token (pad_token_id 0), which is our [EOS]: input must be right-padded "
             "[BOS] review [EOS] (the tokenizer does this)",
             "HF's `score` has no bias: ours is folded into the last layer's ln_2 bias, so the class logits are ours "
             "but the exported last hidden states are shifted by a constant vector",
             "the auxiliary LM head is tied to the token embedding; it is not part of this class"]
    return Exported(model, ([BOS], [EOS]), notes)


def _bert_heads(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our MLM and NSP heads -> BertPreTrainingHeads keys. NSP: our label 1 = "B follows A",
    HF's seq_relationship index 0 = "is next", so the two rows are swapped."""
    return {"cls.predictions.transform.dense.weight": sd["mlm_head.transform.0.weight"],
            "cls.predictions.transform.dense.bias": sd["mlm_head.transform.0.bias"],
            "cls.predictions.transform.LayerNorm.weight": sd["mlm_head.transform.2.weight"],
            "cls.predictions.transform.LayerNorm.bias": sd["mlm_head.transform.2.bias"],
            "cls.predictions.bias": sd["mlm_head.bias"],
            "cls.predictions.decoder.bias": sd["mlm_head.bias"],  # tied to cls.predictions.bias
            "cls.predictions.decoder.weight": sd["trunk.encoder.embeddings.token.weight"],  # tied
            "cls.seq_relationship.weight": sd["nsp_head.weight"][[1, 0]],
            "cls.seq_relationship.bias": sd["nsp_head.bias"][[1, 0]]}


def _export_bert(sd: dict[str, Tensor], cfg: ModelConfig, kind: str, options: dict[str, Any]) -> Exported:
    from transformers import BertForPreTraining, BertForSequenceClassification, BertModel

    trunk = bert_trunk_to_hf(sd, "trunk.", cfg)
    template = ([CLS], [SEP])
    if kind == "bert-pretrain" and "nsp_head.weight" in sd:
        model = BertForPreTraining(bert_hf_config(cfg))
        _load_into(model, {**{f"bert.{k}": v for k, v in trunk.items()}, **_bert_heads(sd)})
        return Exported(model, template, ["NSP: our label 1 (B follows A) is HF's seq_relationship index 0: "
                                          "the head's two rows are swapped, so the logits mean the same thing"])
    if kind.endswith("-classifier") and options.get("logit", "cls") == "cls":
        n_labels = sd["classifier.weight"].size(0)
        model = BertForSequenceClassification(bert_hf_config(cfg, **_classifier_extra(n_labels)))
        _load_into(model, {**{f"bert.{k}": v for k, v in trunk.items()},
                           "classifier.weight": sd["classifier.weight"], "classifier.bias": sd["classifier.bias"]})
        return Exported(model, template, [])
    model = BertModel(bert_hf_config(cfg))
    _load_into(model, trunk)
    extra = {}
    if kind == "spanbert-pretrain" and "sbo_head.bias" in sd:
        notes = ["SpanBERT's span boundary (SBO) head and its MLM head are dropped: BertModel holds the encoder",
                 "the pooler was frozen at its initialization during SpanBERT pretraining (no NSP): "
                 "pooler_output is untrained"]
    elif kind.endswith("-classifier"):
        notes = [f"--logit {options.get('logit')} pooling has no transformers class: only the encoder (BertModel) "
                 f"is exported; classify with the {options.get('logit')} of last_hidden_state over real tokens and "
                 f"the classifier weights in classifier.pt"]
        extra["classifier.pt"] = {k: v for k, v in sd.items() if k.startswith("classifier.")}
    else:  # an imported checkpoint: trunk only
        notes = ["the checkpoint holds no pretraining heads: BertModel only"]
    return Exported(model, template, notes, extra)


def export_state(state: dict[str, Any]) -> Exported:
    """The transformers model of one of our checkpoints (already loaded and checked)."""
    require_transformers()
    kind, sd = state.get("kind"), state["model"]
    cfg = ModelConfig(**state["config"])
    if kind in ("gpt-pretrain", "gpt-classifier"):
        exported = _export_gpt(sd, cfg, classifier=kind == "gpt-classifier")
    elif kind in ("bert-pretrain", "bert-classifier", "spanbert-pretrain", "spanbert-classifier"):
        exported = _export_bert(sd, cfg, kind, state.get("options", {}))
    else:
        raise UserError(f"cannot export a checkpoint of kind {kind!r} (expected save_pretrain.pth from pretrain.py "
                        f"or save_best.pth from train.py)")
    exported.model.eval()
    return exported


# --- tokenizer -----------------------------------------------------------------------

def _python_whitespace_class() -> str:
    """A regex class of the characters Python's `\\s` matches (normalize_text's), for the
    tokenizer's normalizer, whose own `\\s` (Oniguruma) is a slightly different set."""
    chars = [c for c in map(chr, range(0x110000)) if c.isspace()]  # what `\s` matches in a str pattern
    return "[" + "".join(f"\\x{{{ord(c):X}}}" for c in chars) + "]+"


def bpe_merges(vocab: Vocab) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's encoding: every split of a learned piece into
    two learned pieces, ranked by the merged piece's score (SentencePiece merges the
    adjacent pair whose concatenation scores highest)."""
    sp = vocab.sp
    normal = {sp.IdToPiece(i): i for i in range(len(SPECIAL_PIECES), len(vocab)) if not (sp.IsByte(i) or sp.IsUnused(i))}
    ranked = sorted(normal.items(), key=lambda kv: (-sp.GetScore(kv[1]), kv[1]))
    merges = []
    for piece, _ in ranked:
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece))]
        splits = [s for s in splits if s[0] in normal and s[1] in normal]
        merges += sorted(splits, key=lambda s: (normal[s[0]], normal[s[1]]))
    return merges


def build_tokenizer(vocab: Vocab, template: tuple[list[str], list[str]], n_seq: int):
    """A transformers fast tokenizer giving the ids of `vocab.encode` (normalization included),
    wrapped in `template` (e.g. [CLS] ... [SEP]) as our models see a text."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    sp = vocab.sp
    pieces = {sp.IdToPiece(i): i for i in range(len(vocab))}
    tok = Tokenizer(models.BPE(vocab=pieces, merges=bpe_merges(vocab), unk_token=UNK, byte_fallback=True, fuse_unk=True))
    # normalize_text: NFC, whitespace runs -> one space, strip (SentencePiece's own normalizer is identity)
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(_python_whitespace_class()), " "),
                                           normalizers.Strip()])
    # SentencePiece's dummy prefix and whitespace escaping: "▁" before every word
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_MARKER, prepend_scheme="always", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace(WORD_MARKER, " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    # matched in the normalized text, so that spaces around a [SEP] / [CLS] / [MASK] written in the
    # text become pieces as in SentencePiece (where they are user-defined symbols)
    tok.add_special_tokens([AddedToken(p, special=True, normalized=True) for p in SPECIAL_PIECES])
    before, after = template
    single = " ".join([*before, "$A:0", *after])
    pair = " ".join([*before, "$A:0", *after, "$B:1", *[f"{p}:1" for p in after]]) if after else None
    used = sorted(set(before + after), key=SPECIAL_PIECES.index)
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                       special_tokens=[(p, pieces[p]) for p in used])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=n_seq, padding_side="right",
                                   pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS, sep_token=SEP,
                                   cls_token=CLS, mask_token=MASK, clean_up_tokenization_spaces=False)


# --- the folder ----------------------------------------------------------------------

def _readme(info: dict[str, Any]) -> str:
    notes = "".join(f"- {n}\n" for n in info["notes"])
    return (f"# {info['hf_class']} exported from `{info['source']}`\n\n"
            f"Checkpoint kind `{info['kind']}`, vocab fingerprint `{info['vocab']['fingerprint']}` "
            f"({info['vocab']['size']} pieces). Load with\n\n"
            f"```python\nfrom transformers import AutoTokenizer, {info['hf_class']}\n"
            f"tok = AutoTokenizer.from_pretrained(DIR)\nmodel = {info['hf_class']}.from_pretrained(DIR).eval()\n"
            f"batch = tok([\"이 영화 진짜 최고였다 ㅋㅋ\"], padding=True, truncation=True, return_tensors=\"pt\")\n"
            f"out = model(**batch)\n```\n\n"
            f"The tokenizer applies the project's normalization (NFC, whitespace runs collapsed, ends stripped) "
            f"and adds the special pieces the model was trained with; `{TOKENIZER_MODEL}` is the SentencePiece "
            f"model itself (ids 0-6: {', '.join(SPECIAL_PIECES)}).\n\n## Notes\n\n{notes}")


def _move_into(tmp: Path, out: Path) -> None:
    """Put the finished `tmp` folder at `out`: renamed when `out` is new (atomic), else its files
    moved into `out` one by one (--force), replacing files of the same name and nothing else."""
    if not out.exists():
        os.replace(tmp, out)
        return
    for f in tmp.iterdir():
        os.replace(f, out / f.name)


def export_checkpoint(model_path: str | os.PathLike, vocab_path: str | os.PathLike, out: str | os.PathLike,
                      force: bool = False) -> dict[str, Any]:
    """Write `out` (save_pretrained model + tokenizer + notes); returns export_info."""
    require_transformers()
    model_path, out = Path(model_path), Path(out)
    require_file(model_path, "checkpoint", "pass --model save_pretrain.pth or save_best.pth")
    require_output_dir(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file: --out names the folder to write")
    if out.exists() and not force and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty (pass --force to overwrite its files, or choose another --out)")
    vocab = load_vocab(vocab_path)
    state = load_checkpoint(model_path, fallback=False)
    if "config" not in state:
        raise UserError(f"{model_path} holds no model config: not a checkpoint of this project")
    check_compatible(state, model_path, state["config"], vocab.fingerprint, vocab_path)
    exported = export_state(state)
    cfg = ModelConfig(**state["config"])
    info = {"source": model_path.name, "kind": state["kind"], "hf_class": type(exported.model).__name__,
            "config": state["config"], "options": state.get("options", {}),
            "vocab": {"fingerprint": vocab.fingerprint, "size": len(vocab)}, "notes": exported.notes}

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        exported.model.save_pretrained(tmp)
        build_tokenizer(vocab, exported.template, cfg.n_seq).save_pretrained(tmp)
        shutil.copyfile(vocab.path, tmp / TOKENIZER_MODEL)
        for name, tensors in exported.extra_files.items():
            torch.save(tensors, tmp / name)
        (tmp / EXPORT_INFO).write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(_readme(info), encoding="utf-8")
        _move_into(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


# --- import (BERT, SpanBERT) ---------------------------------------------------------

def import_bert(hf_dir: str | os.PathLike, vocab: Vocab, name: str = "bert") -> dict[str, Any]:
    """A Hugging Face BERT folder (BertModel, BertForPreTraining, ...) -> our "<name>-pretrain"
    checkpoint state: the encoder and pooler as `trunk.*`, which train.py loads. Heads are not imported."""
    require_transformers()
    from transformers import AutoConfig, BertModel

    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise UserError(f"{hf_dir} is not a Hugging Face model folder (no config.json); pass the folder save_pretrained wrote")
    source = str(hf_dir / "config.json")
    try:
        hf_config = AutoConfig.from_pretrained(hf_dir)
    except (OSError, ValueError) as e:
        raise UserError(f"{source}: not a config transformers can read ({str(e).splitlines()[0]})") from e
    cfg = config_from_hf_bert(hf_config, source)
    if cfg.n_vocab != len(vocab):
        raise UserError(f"{hf_dir} has vocab_size {cfg.n_vocab}, the vocab {vocab.path} has {len(vocab)} pieces "
                        f"(pass the --vocab the model was trained with)")
    info_path = hf_dir / EXPORT_INFO
    if info_path.is_file():  # exported by this project: its vocab is known
        saved = json.loads(info_path.read_text(encoding="utf-8")).get("vocab", {}).get("fingerprint")
        if saved and saved != vocab.fingerprint:
            raise UserError(f"{hf_dir} was exported with vocab {saved}, not {vocab.path} ({vocab.fingerprint}); "
                            f"pass the --vocab it was trained with")
    try:
        model, loading = BertModel.from_pretrained(hf_dir, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise UserError(f"{hf_dir}: cannot load its weights ({str(e).splitlines()[0]})") from e
    missing = [k for k in loading["missing_keys"] if not k.startswith("pooler.")]
    if missing or loading.get("mismatched_keys"):
        raise UserError(f"{hf_dir}: weights missing or of another shape ({(missing or loading['mismatched_keys'])[:3]}); "
                        f"it is not a BERT encoder of its config's shape")
    if loading["missing_keys"]:
        print(f"warning: {hf_dir} has no pooler: it keeps its random initialization (fine-tuning trains it)", file=sys.stderr)
    hf_sd = model.state_dict()
    if not cfg.n_segment or (cfg.n_segment == 1 and not hf_sd["embeddings.token_type_embeddings.weight"].any()):
        cfg = ModelConfig(**{**cfg.to_dict(), "n_segment": 0})  # one zero token type row adds nothing: ours has none
    trunk = bert_trunk_from_hf(hf_sd, cfg)
    from common.encoder import BertModel as OurBertModel  # check: the weights fit our encoder exactly
    OurBertModel(cfg).load_state_dict(trunk, strict=True)
    return {"kind": f"{name}-pretrain", "config": cfg.to_dict(), "vocab": {"fingerprint": vocab.fingerprint, "size": len(vocab)},
            "model": {f"trunk.{k}": v.float().contiguous() for k, v in trunk.items()},
            "imported_from": str(hf_dir)}


# --- command line --------------------------------------------------------------------

def export_main(name: str, folder: Path, can_import: bool = False) -> None:
    """`python export.py` of one model folder."""
    parser = make_parser(
        f"Export a {name.upper()} checkpoint to a Hugging Face transformers folder (save_pretrained: model, "
        f"tokenizer, notes)" + (", or import a Hugging Face BertModel folder as a pretrained checkpoint." if can_import else "."))
    parser.add_argument("--model", default=rel(folder / "save_pretrain.pth"),
                        help="checkpoint to export: save_pretrain.pth (pretrain.py) or save_best.pth (train.py)")
    parser.add_argument("--vocab", default=rel(DEFAULT_VOCAB), help="SentencePiece model the checkpoint was trained with")
    # the default depends on the mode; "%(default).0s" prints nothing and keeps argparse from adding "(default: None)"
    parser.add_argument("--out", default=None,
                        help=f"export: the folder to write (default: {rel(folder / 'hf')})"
                             + (f"; --import: the checkpoint to write (default: {rel(folder / 'save_pretrain.pth')})"
                                if can_import else "") + "%(default).0s")
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out folder / replace an --out checkpoint")
    if can_import:
        parser.add_argument("--import", dest="import_dir", default=None,
                            help="a Hugging Face BERT folder (config.json + weights) to convert into our checkpoint "
                                 "format for train.py; its heads are not imported")
    args = parser.parse_args()

    def run() -> None:
        if can_import and args.import_dir:
            out = Path(args.out or folder / "save_pretrain.pth")
            require_output_dir(out)
            if out.exists() and not args.force:
                raise UserError(f"{out} exists (pass --force to replace it, or choose another --out)")
            state = import_bert(args.import_dir, load_vocab(args.vocab), name)
            save_checkpoint(out, state, keep_previous=args.force)
            print(f"imported {args.import_dir} -> {out} (kind {state['kind']}); fine-tune with: python train.py --pretrain {out}")
            return
        out = Path(args.out or folder / "hf")
        info = export_checkpoint(args.model, args.vocab, out, force=args.force)
        print(f"exported {args.model} ({info['kind']}) -> {out} as {info['hf_class']}")
        for note in info["notes"]:
            print(f"  note: {note}")

    run_main(run)
