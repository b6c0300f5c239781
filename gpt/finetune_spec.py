"""What is special to GPT in NSMC fine-tuning: [BOS] review [EOS], the classifier
on the last real token, and the auxiliary LM loss weight (--lm)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from common.config import ModelConfig
from common.finetune import FinetuneSpec
from common.vocab import BOS_ID, EOS_ID
from gpt.model import GPTForSequenceClassification


def wrap(ids: list[int], n_seq: int) -> list[int]:
    """[BOS] review [EOS], the review cut so the whole fits n_seq; [EOS] is the token classified."""
    return [BOS_ID, *ids[: n_seq - 2], EOS_ID]


def build(cfg: ModelConfig, options: dict[str, Any]) -> GPTForSequenceClassification:
    return GPTForSequenceClassification(cfg, lm_coef=float(options.get("lm", 0.0)))


def add_options(parser) -> None:
    parser.add_argument("--lm", type=float, default=0.0,
                        help="weight of the auxiliary LM loss: loss = loss_cls + lm * loss_lm (0 skips the LM head)")


SPEC = FinetuneSpec(
    name="gpt", folder=Path(__file__).resolve().parent, wrap=wrap, build_model=build,
    add_options=add_options, variant=lambda o: f"lm={o['lm']:g}", option_names=["lm"],
    default_lr=1e-4, default_batch=128, default_epoch=5,
)
