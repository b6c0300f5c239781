"""Pretrain GPT as a causal language model on kowiki (run `python data.py` first)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.config import ModelConfig
from common.losses import perplexity
from common.pretrain import PretrainSpec, Subset, pretrain_main
from common.token_store import TokenStore, token_counts
from gpt.data import DEFAULT_OUTPUT
from gpt.model import GPTLMHeadModel


class WindowDataset:
    """Windows of n_seq + 1 consecutive tokens of the flat array: inputs and targets shifted by one."""

    def __init__(self, store: TokenStore, cfg: ModelConfig):
        self.tokens, self.n_seq = store["tokens"], store.check_n_seq(cfg.n_seq)

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.n_seq

    def collate(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        starts = np.asarray(indices, dtype=np.int64)[:, None] * self.n_seq
        windows = torch.from_numpy(self.tokens[starts + np.arange(self.n_seq + 1)].astype(np.int64))
        return {"input_ids": windows[:, :-1], "labels": windows[:, 1:]}


def init_lm_bias(model: GPTLMHeadModel, train_set: Subset) -> None:
    """Start the LM head's bias at the log unigram distribution of the training windows' tokens
    (the held-out tail is not counted): see `common.layers.LMHead` for why."""
    windows: WindowDataset = train_set.dataset
    end = (int(train_set.indices.max()) + 1) * windows.n_seq
    model.lm_head.init_bias_to_log_prior(token_counts(windows.tokens[:end], model.cfg.n_vocab))


def format_metrics(m: dict[str, float]) -> str:
    return f"loss {m['loss']:.3f} ppl {perplexity(m['loss']):.1f} acc {m['acc']:.3f}"


SPEC = PretrainSpec(
    name="gpt", folder=Path(__file__).resolve().parent, default_input=DEFAULT_OUTPUT,
    build_model=GPTLMHeadModel, open_dataset=WindowDataset, format_metrics=format_metrics,
    init_from_data=init_lm_bias,
    default_lr=2.5e-4, default_batch=64, default_epoch=20,
)

if __name__ == "__main__":
    pretrain_main(SPEC)
