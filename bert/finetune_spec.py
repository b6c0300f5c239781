"""How BERT is fine-tuned on NSMC: [CLS] review [SEP], classified from the pooled [CLS] state."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from common.config import ModelConfig
from common.finetune import FinetuneSpec
from common.vocab import CLS_ID, SEP_ID
from bert.model import BertForSequenceClassification


def wrap(ids: list[int], n_seq: int) -> list[int]:
    """[CLS] review [SEP], the review cut so the whole fits n_seq (one segment: token_type_ids 0)."""
    return [CLS_ID, *ids[: n_seq - 2], SEP_ID]


def build(cfg: ModelConfig, options: dict[str, Any]) -> BertForSequenceClassification:
    return BertForSequenceClassification(cfg)


SPEC = FinetuneSpec(
    name="bert", folder=Path(__file__).resolve().parent, wrap=wrap, build_model=build,
    default_lr=5e-5, default_batch=128, default_epoch=5,
)
