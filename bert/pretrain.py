"""Pretrain BERT with masked LM + next sentence prediction on kowiki (run `python data.py` first).

    python pretrain.py                          # config_half.json on data.py's token store
    python pretrain.py --gpu 0 --compile --config config.json

One step: a batch of [CLS] A [SEP] B [SEP] pairs whole-word masked anew (`PretrainingDataset.collate`), BERT's
forward and its MLM + NSP losses (model.py), then AdamW (common/trainer.py's `step`). The loop is `main()` below.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bert.data import DEFAULT_OUTPUT, NO_NSP
from bert.model import BertForPreTraining
from common.batches import random_batches
from common.checkpoint import load_compatible
from common.cli import make_parser, run_main
from common.config import ModelConfig
from common.device import seed_everything, setup_runtime
from common.encoder_data import MaskedSegmentDataset, init_vocab_heads
from common.evaluation import evaluate
from common.losses import IGNORE
from common.masking import mask_whole_words, max_whole_word_masked
from common.pretrain import (add_pretraining_args, announce, check_inputs, checkpoint_meta, format_head_metrics,
                             locked_outputs, prefixed, split, store_columns, write_logs)
from common.token_store import TokenStore
from common.tracking import open_tracker
from common.trainer import Trainer


class PretrainingDataset(MaskedSegmentDataset):
    """Sentence pairs [CLS] A [SEP] B [SEP] of the store, whole-word masked anew at every `collate`."""

    format = "bert"
    max_masked = staticmethod(max_whole_word_masked)

    def __init__(self, store: TokenStore, cfg: ModelConfig):
        super().__init__(store, cfg)
        self.len_a, self.is_next = store["len_a"], store["is_next"]

    def collate(self, indices: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        indices = np.asarray(indices, dtype=np.int64)
        rng = rng or self.batch_rng(indices)
        masked, positions, labels = zip(*(mask_whole_words(self.instance(i), self.word_starts, self.mask_prob, rng,
                                                           self.n_vocab) for i in indices))
        input_ids, attention_mask = self.pad(masked)
        is_next = self.is_next[indices].astype(np.int64)
        t = np.arange(input_ids.shape[1])
        token_type_ids = (t >= self.len_a[indices].astype(np.int64)[:, None]) & attention_mask
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask.astype(np.int64)),
            "token_type_ids": torch.from_numpy(token_type_ids.astype(np.int64)),
            "mlm_positions": torch.from_numpy(self.pad_slots(positions)),
            "mlm_labels": torch.from_numpy(self.pad_slots(labels)),  # 0 = [PAD]: an unused slot, skipped by the loss
            "nsp_labels": torch.from_numpy(np.where(is_next == NO_NSP, IGNORE, is_next)),  # packed reviews: no pair
        }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser("Pretrain BERT on the token store written by data.py.")
    add_pretraining_args(parser, Path(__file__).resolve().parent, DEFAULT_OUTPUT, batch=64, epoch=20, lr=1e-4)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> list[dict]:
    inputs = check_inputs(args, "bert")
    runtime = setup_runtime(args.gpu)
    with locked_outputs(args, inputs, runtime) as outputs:
        seed_everything(args.seed)
        train_set, heldout_set, curve_set = split(PretrainingDataset(inputs.store, inputs.cfg), args)
        model = BertForPreTraining(inputs.cfg)
        if not args.resume:  # a resumed run restores the biases with the weights
            init_vocab_heads(model, train_set)
        meta = checkpoint_meta("bert-pretrain", inputs, args)
        plan = lambda epoch: random_batches(len(train_set), args.batch, args.seed, epoch)  # noqa: E731
        trainer = Trainer(model, inputs.settings, runtime, len(plan(0)), inputs.save, meta, desc="pretrain")
        if args.resume:
            trainer.resume(load_compatible(inputs.save, inputs.cfg.to_dict(), inputs.vocab.fingerprint, args.vocab))
        announce("bert", model, train_set, heldout_set, trainer, args)
        if runtime.is_main:
            trainer.tracker = outputs.enter_context(open_tracker(args, inputs.save, meta))

        for epoch in trainer.epochs():
            for indices in trainer.batches(plan(epoch)):
                trainer.step(train_set, indices)
                curve = {}
                if trainer.due(args.eval_every):  # a point of the held-out curve
                    curve = prefixed("heldout_", evaluate(model, curve_set, args.batch, runtime))
                trainer.log_step(args.log_every, curve)
                if trainer.due(args.save_every):
                    trainer.save()
            train = trainer.epoch_metrics()
            heldout = evaluate(model, heldout_set, args.batch, runtime)
            if runtime.is_main:
                print(f"epoch {epoch + 1}: train {format_head_metrics(train)} | held-out {format_head_metrics(heldout)}")
            trainer.end_epoch(train, {**prefixed("heldout_", heldout), **store_columns(inputs, args)})
        write_logs(trainer)
    return trainer.history


if __name__ == "__main__":
    arguments = parse_args()
    run_main(lambda: main(arguments))
