"""Pretrain GPT as a causal language model on kowiki (run `python data.py` first).

    python pretrain.py                          # config_half.json on data.py's token store
    python pretrain.py --gpu 0 --compile --config config.json

One step: a batch of windows of n_seq + 1 consecutive tokens (`WindowDataset.collate`), GPT's forward and
its next-token loss (model.py), then AdamW (common/trainer.py's `step`). The loop is `main()` below.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import load_compatible
from common.cli import make_parser, run_main
from common.config import ModelConfig
from common.device import seed_everything, setup_runtime
from common.evaluation import evaluate, prefixed
from common.losses import perplexity
from common.pretrain import (Subset, add_pretraining_args, announce, check_inputs, checkpoint_meta, locked_outputs,
                             split, store_columns, write_logs)
from common.token_store import TokenStore, token_counts
from common.tracking import open_tracker
from common.trainer import Trainer, random_batches
from gpt.data import DEFAULT_OUTPUT
from gpt.model import GPTLMHeadModel


class WindowDataset:
    """Windows of n_seq + 1 consecutive tokens of the flat array: inputs and targets shifted by one."""

    def __init__(self, store: TokenStore, cfg: ModelConfig):
        self.tokens, self.n_seq = store["tokens"], store.check_n_seq(cfg.n_seq)

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.n_seq

    def collate(self, indices: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser("Pretrain GPT on the token store written by data.py.")
    add_pretraining_args(parser, Path(__file__).resolve().parent, DEFAULT_OUTPUT, batch=64, epoch=20, lr=2.5e-4)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> list[dict]:
    inputs = check_inputs(args, "gpt")
    runtime = setup_runtime(args.gpu)
    with locked_outputs(args, inputs, runtime) as outputs:
        seed_everything(args.seed)
        train_set, heldout_set, curve_set = split(WindowDataset(inputs.store, inputs.cfg), args)
        model = GPTLMHeadModel(inputs.cfg)
        if not args.resume:  # a resumed run restores the bias with the weights
            init_lm_bias(model, train_set)
        meta = checkpoint_meta("gpt-pretrain", inputs, args)
        plan = lambda epoch: random_batches(len(train_set), args.batch, args.seed, epoch)  # noqa: E731
        trainer = Trainer(model, inputs.settings, runtime, len(plan(0)), inputs.save, meta, desc="pretrain")
        if args.resume:
            trainer.resume(load_compatible(inputs.save, inputs.cfg.to_dict(), inputs.vocab.fingerprint, args.vocab))
        announce("gpt", model, train_set, heldout_set, trainer, args)
        if runtime.is_main:
            trainer.tracker = outputs.enter_context(open_tracker(args, inputs.save, meta))

        for epoch in trainer.epochs():
            for batch in trainer.batches(train_set, plan(epoch)):  # collated ahead by a thread
                trainer.step(batch)
                curve = {}
                if trainer.due(args.eval_every):  # a point of the held-out curve
                    curve = prefixed("heldout_", evaluate(model, curve_set, args.batch, runtime))
                trainer.log_step(args.log_every, curve)
                if trainer.due(args.save_every) and not trainer.epoch_finished:  # (end_epoch saves the epoch's end)
                    trainer.save()
            train = trainer.epoch_metrics()
            heldout = evaluate(model, heldout_set, args.batch, runtime)
            if runtime.is_main:
                print(f"epoch {epoch + 1}: train {format_metrics(train)} | held-out {format_metrics(heldout)}")
            trainer.end_epoch(train, {**prefixed("heldout_", heldout), **store_columns(inputs, args)})
        write_logs(trainer)
    return trainer.history


if __name__ == "__main__":
    arguments = parse_args()
    run_main(lambda: main(arguments))
