"""Fine-tune GPT on NSMC (run pretrain.py first, or it trains from scratch and says so).

    python train.py --lm 0.5      # + 0.5 x the auxiliary LM loss on the review's tokens

What is special to GPT: [BOS] review [EOS], the classifier on the last real token,
and the auxiliary LM loss weight (--lm); the rest is common/finetune.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import non_negative_float
from common.config import ModelConfig
from common.finetune import FinetuneSpec, finetune_main, option
from common.reviews import ReviewDataset
from common.token_store import token_counts
from common.vocab import BOS_ID, EOS_ID
from gpt.model import GPTForSequenceClassification


@dataclass(frozen=True)
class FinetuneOptions:
    """GPT's fine-tuning options: train.py's flags, stored in the classifier's checkpoint."""
    lm: float = option(0.0, type=non_negative_float,
                       help="weight of the auxiliary LM loss: loss = loss_cls + lm * loss_lm (0 skips the LM head)")


def wrap(ids: list[int], n_seq: int) -> list[int]:
    """[BOS] review [EOS], the review cut so the whole fits n_seq; [EOS] is the token classified."""
    return [BOS_ID, *ids[: n_seq - 2], EOS_ID]


def build(cfg: ModelConfig, options: FinetuneOptions) -> GPTForSequenceClassification:
    return GPTForSequenceClassification(cfg, lm_coef=options.lm)


def init_lm_bias(model: GPTForSequenceClassification, train_set: ReviewDataset) -> None:
    """From scratch with --lm > 0: start the LM bias at the log unigram distribution of what the auxiliary
    loss predicts (every token of the training reviews after [BOS]), as pretrain.py does for its corpus."""
    if model.lm_head is not None:
        targets = np.concatenate([ids[1:] for ids in train_set.ids])
        model.lm_head.init_bias_to_log_prior(token_counts(targets, model.cfg.n_vocab))


SPEC = FinetuneSpec(
    name="gpt", folder=Path(__file__).resolve().parent, wrap=wrap, options=FinetuneOptions, build_model=build,
    variant=lambda o: f"lm={o.lm:g}", init_from_data=init_lm_bias,
    default_lr=1e-4, default_batch=128, default_epoch=5,
)

if __name__ == "__main__":
    finetune_main(SPEC)
