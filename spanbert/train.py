"""Fine-tune SpanBERT on NSMC (run pretrain.py first, or it trains from scratch and says so).

    python train.py --logit cls      # or mean / max

What is special to SpanBERT: [CLS] review [SEP] (one segment, as in pretraining),
and which vector the classifier reads (--logit); the rest is common/finetune.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.config import ModelConfig
from common.encoder import wrap_cls_sep
from common.finetune import FinetuneSpec, finetune_main, option
from spanbert.model import LOGIT_CHOICES, SpanBertForSequenceClassification


@dataclass(frozen=True)
class FinetuneOptions:
    """SpanBERT's fine-tuning options: train.py's flags, stored in the classifier's checkpoint."""
    logit: str = option("cls", choices=LOGIT_CHOICES,
                        help="classifier input: the pooled [CLS] state, or the mean / max of the real tokens' states")


def build(cfg: ModelConfig, options: FinetuneOptions) -> SpanBertForSequenceClassification:
    return SpanBertForSequenceClassification(cfg, logit=options.logit)


SPEC = FinetuneSpec(
    name="spanbert", folder=Path(__file__).resolve().parent, wrap=wrap_cls_sep, options=FinetuneOptions,
    build_model=build, variant=lambda o: o.logit, default_lr=5e-5, default_batch=128, default_epoch=5,
)

if __name__ == "__main__":
    finetune_main(SPEC)
