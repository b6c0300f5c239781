"""Fine-tune BERT on NSMC (run pretrain.py first, or it trains from scratch and says so).

What is special to BERT: [CLS] review [SEP], classified from the pooled [CLS]
state; it takes no options of its own. The rest is common/finetune.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.config import ModelConfig
from common.encoder import wrap_cls_sep
from common.finetune import FinetuneSpec, finetune_main
from bert.model import BertForSequenceClassification


@dataclass(frozen=True)
class FinetuneOptions:
    """BERT's fine-tuning options: none (GPT's --lm and SpanBERT's --logit have no BERT counterpart)."""


def build(cfg: ModelConfig, options: FinetuneOptions) -> BertForSequenceClassification:
    return BertForSequenceClassification(cfg)


SPEC = FinetuneSpec(
    name="bert", folder=Path(__file__).resolve().parent, wrap=wrap_cls_sep, options=FinetuneOptions,
    build_model=build, default_lr=5e-5, default_batch=128, default_epoch=5,
)

if __name__ == "__main__":
    finetune_main(SPEC)
