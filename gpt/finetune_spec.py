"""What is special to GPT in NSMC fine-tuning: [BOS] review [EOS], the classifier
on the last real token, and the auxiliary LM loss weight (--lm)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from common.cli import non_negative_float
from common.config import ModelConfig
from common.finetune import FinetuneSpec, ReviewDataset
from common.token_store import token_counts
from common.vocab import BOS_ID, EOS_ID
from gpt.model import GPTForSequenceClassification


def wrap(ids: list[int], n_seq: int) -> list[int]:
    """[BOS] review [EOS], the review cut so the whole fits n_seq; [EOS] is the token classified."""
    return [BOS_ID, *ids[: n_seq - 2], EOS_ID]


def build(cfg: ModelConfig, options: dict[str, Any]) -> GPTForSequenceClassification:
    return GPTForSequenceClassification(cfg, lm_coef=float(options.get("lm", 0.0)))


def init_lm_bias(model: GPTForSequenceClassification, train_set: ReviewDataset) -> None:
    """From scratch with --lm > 0: start the LM bias at the log unigram distribution of what the auxiliary
    loss predicts (every token of the training reviews after [BOS]), as pretrain.py does for its corpus."""
    if model.lm_head is not None:
        targets = np.concatenate([ids[1:] for ids in train_set.ids])
        model.lm_head.init_bias_to_log_prior(token_counts(targets, model.cfg.n_vocab))


def add_options(parser) -> None:
    parser.add_argument("--lm", type=non_negative_float, default=0.0,
                        help="weight of the auxiliary LM loss: loss = loss_cls + lm * loss_lm (0 skips the LM head)")


SPEC = FinetuneSpec(
    name="gpt", folder=Path(__file__).resolve().parent, wrap=wrap, build_model=build,
    add_options=add_options, variant=lambda o: f"lm={o['lm']:g}", option_names=["lm"], init_from_data=init_lm_bias,
    default_lr=1e-4, default_batch=128, default_epoch=5,
)
