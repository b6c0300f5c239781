"""What is special to SpanBERT in NSMC fine-tuning: [CLS] review [SEP], and which
vector the classifier reads (--logit cls | mean | max)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common.config import ModelConfig
from common.encoder import wrap_cls_sep  # [CLS] review [SEP]: one segment, as in pretraining
from common.finetune import FinetuneSpec
from spanbert.model import LOGIT_CHOICES, SpanBertForSequenceClassification


def build(cfg: ModelConfig, options: dict[str, Any]) -> SpanBertForSequenceClassification:
    return SpanBertForSequenceClassification(cfg, logit=options.get("logit", "cls"))


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--logit", choices=LOGIT_CHOICES, default="cls",
                        help="classifier input: the pooled [CLS] state, or the mean / max of the real tokens' states")


SPEC = FinetuneSpec(
    name="spanbert", folder=Path(__file__).resolve().parent, wrap=wrap_cls_sep, build_model=build,
    add_options=add_options, variant=lambda o: o["logit"], option_names=["logit"],
    default_lr=5e-5, default_batch=128, default_epoch=5,
)
