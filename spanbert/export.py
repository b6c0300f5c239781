"""Export SpanBERT to a Hugging Face transformers folder: BertModel (pretrained; the SBO
head has no HF class) or BertForSequenceClassification (fine-tuned with --logit cls;
mean / max: BertModel), with its tokenizer; or import a Hugging Face BERT folder as a
pretrained checkpoint for train.py (--import).

  python export.py --model save_pretrain.pth --out hf/     # or save_best.pth from train.py
  python export.py --import hf/ --out save_pretrain.pth    # then: python train.py

| checkpoint kind     | transformers class                          | notes |
|---|---|---|
| spanbert-pretrain   | BertModel                                   | SBO and MLM heads dropped; the pooler was never trained |
| spanbert-classifier | BertForSequenceClassification (--logit cls) | mean / max pooling has no HF class: BertModel + classifier.pt |

The encoder map is bert/export.py's, the folder, tokenizer and command line
common/export.py's; transformers comes from requirements-extra.txt.
"""
from __future__ import annotations

from pathlib import Path

from torch import Tensor

from bert.export import TRUNK_ONLY_NOTE, export_classifier, export_encoder, import_bert
from common.config import ModelConfig
from common.export import Exported, ExportSpec, export_main


def export_pretrained(sd: dict[str, Tensor], cfg: ModelConfig) -> Exported:
    """pretrain.py's save_pretrain.pth (or an imported one) as BertModel: no HF class has the SBO head."""
    if "sbo_head.bias" not in sd:  # imported from a Hugging Face folder: trunk only
        return export_encoder(sd, cfg, [TRUNK_ONLY_NOTE])
    return export_encoder(sd, cfg, ["SpanBERT's span boundary (SBO) head and its MLM head are dropped: "
                                    "BertModel holds the encoder",
                                    "the pooler was frozen at its initialization during SpanBERT pretraining "
                                    "(no NSP): pooler_output is untrained"])


SPEC = ExportSpec(name="spanbert", folder=Path(__file__).resolve().parent, export_pretrained=export_pretrained,
                  export_classifier=export_classifier, hf_trunk="BertModel",
                  import_pretrained=import_bert)

if __name__ == "__main__":
    export_main(SPEC)
