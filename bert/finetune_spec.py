"""How BERT is fine-tuned on NSMC: [CLS] review [SEP], classified from the pooled [CLS] state."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from common.config import ModelConfig
from common.encoder import wrap_cls_sep
from common.finetune import FinetuneSpec
from bert.model import BertForSequenceClassification


def build(cfg: ModelConfig, options: dict[str, Any]) -> BertForSequenceClassification:
    return BertForSequenceClassification(cfg)


SPEC = FinetuneSpec(
    name="bert", folder=Path(__file__).resolve().parent, wrap=wrap_cls_sep, build_model=build,
    default_lr=5e-5, default_batch=128, default_epoch=5,
)
