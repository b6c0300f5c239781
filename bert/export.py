"""Export BERT to a Hugging Face transformers folder: BertForPreTraining (pretrained) or
BertForSequenceClassification (fine-tuned), with its tokenizer; or import a Hugging
Face BERT folder as a pretrained checkpoint for train.py (--import).

  python export.py --model save_pretrain.pth --out hf/     # or save_best.pth from train.py
  python export.py --import hf/ --out save_pretrain.pth    # then: python train.py

| checkpoint kind | transformers class            | notes |
|---|---|---|
| bert-pretrain   | BertForPreTraining            | NSP rows swapped (HF index 0 = "B follows A", ours 1) |
| bert-classifier | BertForSequenceClassification | |

The encoder map is bert/export.py's, the folder, tokenizer and command line
common/export.py's; transformers comes from requirements-extra.txt.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from common.cli import UserError
from common.config import ModelConfig
from common.export import (EXPORT_INFO, Exported, ExportSpec, classifier_config_extra, export_main, load_into,
                           require_transformers)
from common.vocab import CLS, SEP, Vocab


# --- our encoder <-> Hugging Face's BertModel: the map BERT's and SpanBERT's export.py use ---------------

CLS_SEP = ([CLS], [SEP])  # the tokenizer template: [CLS] text [SEP], as the encoders see a review
TRUNK_ONLY_NOTE = "the checkpoint holds no pretraining heads: BertModel only"  # an imported checkpoint


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
# prefix of the trunk (our BertModel) in it, e.g. "trunk.".

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


# --- export --------------------------------------------------------------------------

def export_encoder(sd: dict[str, Tensor], cfg: ModelConfig, notes: list[str],
                   extra_files: dict[str, dict[str, Tensor]] | None = None) -> Exported:
    """BertModel of the trunk alone: for what has no Hugging Face head class (notes say what was left out)."""
    from transformers import BertModel

    model = BertModel(bert_hf_config(cfg))
    load_into(model, bert_trunk_to_hf(sd, "trunk.", cfg))
    return Exported(model, CLS_SEP, notes, extra_files or {})


def export_classifier(sd: dict[str, Tensor], cfg: ModelConfig, options: dict[str, Any]) -> Exported:
    """An encoder's NSMC classifier (train.py): BertForSequenceClassification when it classifies the
    [CLS] vector (BERT; SpanBERT --logit cls), else BertModel + classifier.pt (SpanBERT mean / max)."""
    from transformers import BertForSequenceClassification

    logit = options.get("logit", "cls")
    if logit != "cls":
        notes = [f"--logit {logit} pooling has no transformers class: only the encoder (BertModel) is exported; "
                 f"classify with the {logit} of last_hidden_state over real tokens and the classifier weights "
                 f"in classifier.pt"]
        return export_encoder(sd, cfg, notes, {"classifier.pt": {k: v for k, v in sd.items() if k.startswith("classifier.")}})
    model = BertForSequenceClassification(bert_hf_config(cfg, **classifier_config_extra(sd["classifier.weight"].size(0))))
    load_into(model, {**{f"bert.{k}": v for k, v in bert_trunk_to_hf(sd, "trunk.", cfg).items()},
                      "classifier.weight": sd["classifier.weight"], "classifier.bias": sd["classifier.bias"]})
    return Exported(model, CLS_SEP, [])


# --- import --------------------------------------------------------------------------

def import_bert(hf_dir: str | os.PathLike, vocab: Vocab, name: str) -> dict[str, Any]:
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
    from bert.model import BertModel as OurBertModel  # check: the weights fit our encoder exactly
    OurBertModel(cfg).load_state_dict(trunk, strict=True)
    return {"kind": f"{name}-pretrain", "config": cfg.to_dict(), "vocab": {"fingerprint": vocab.fingerprint, "size": len(vocab)},
            "model": {f"trunk.{k}": v.float().contiguous() for k, v in trunk.items()},
            "imported_from": str(hf_dir)}


def pretraining_heads_to_hf(sd: dict[str, Tensor]) -> dict[str, Tensor]:
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


def export_pretrained(sd: dict[str, Tensor], cfg: ModelConfig) -> Exported:
    """pretrain.py's save_pretrain.pth with its MLM + NSP heads; an imported one (trunk only) as BertModel."""
    from transformers import BertForPreTraining

    if "nsp_head.weight" not in sd:  # imported from a Hugging Face folder: trunk only
        return export_encoder(sd, cfg, [TRUNK_ONLY_NOTE])
    model = BertForPreTraining(bert_hf_config(cfg))
    load_into(model, {**{f"bert.{k}": v for k, v in bert_trunk_to_hf(sd, "trunk.", cfg).items()},
                      **pretraining_heads_to_hf(sd)})
    return Exported(model, CLS_SEP, ["NSP: our label 1 (B follows A) is HF's seq_relationship index 0: "
                                     "the head's two rows are swapped, so the logits mean the same thing"])


SPEC = ExportSpec(name="bert", folder=Path(__file__).resolve().parent, export_pretrained=export_pretrained,
                  export_classifier=export_classifier, hf_trunk="BertModel",
                  import_pretrained=import_bert)

if __name__ == "__main__":
    export_main(SPEC)
