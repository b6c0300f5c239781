"""Export BERT to a Hugging Face transformers folder: BertForPreTraining (pretrained) or
BertForSequenceClassification (fine-tuned), with its tokenizer; or import a Hugging
Face BERT folder as a pretrained checkpoint for train.py (--import).

  python export.py --model save_pretrain.pth --out hf/     # or save_best.pth from train.py
  python export.py --import hf/ --out save_pretrain.pth    # then: python train.py

| checkpoint kind | transformers class            | notes |
|---|---|---|
| bert-pretrain   | BertForPreTraining            | NSP rows swapped (HF index 0 = "B follows A", ours 1) |
| bert-classifier | BertForSequenceClassification | |

The encoder map is common/hf_encoder.py's, the folder, tokenizer and command line
common/export.py's; transformers comes from requirements-extra.txt.
"""
from __future__ import annotations

from pathlib import Path

from torch import Tensor

from common.config import ModelConfig
from common.export import ExportSpec, Exported, export_main, load_into
from common.hf_encoder import (CLS_SEP, TRUNK_ONLY_NOTE, bert_hf_config, bert_trunk_to_hf, export_classifier,
                               export_encoder, import_bert)


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
                  export_classifier=export_classifier, import_pretrained=import_bert)

if __name__ == "__main__":
    export_main(SPEC)
