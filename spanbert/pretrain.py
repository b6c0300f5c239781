"""Pretrain SpanBERT with span masking, MLM + SBO, on kowiki (run `python data.py` first).

    python pretrain.py                          # config_half.json on data.py's token store
    python pretrain.py --gpu 0 --compile --config config.json

One step: a batch of [CLS] tokens [SEP] segments span-masked anew (`PretrainingDataset.collate`), SpanBERT's
forward and its MLM + SBO losses (model.py), then AdamW (common/trainer.py's `step`). The loop is `main()` below.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bert.pretrain import MaskedSegmentDataset, init_vocab_heads
from common.checkpoint import load_compatible
from common.cli import make_parser, run_main
from common.device import seed_everything, setup_runtime
from common.evaluation import evaluate, prefixed
from common.pretrain import (add_pretraining_args, announce, check_inputs, checkpoint_meta, format_head_metrics,
                             locked_outputs, split, store_columns, write_logs)
from common.tracking import open_tracker
from common.trainer import Trainer, random_batches
from spanbert.data import DEFAULT_OUTPUT, mask_spans, max_span_masked
from spanbert.model import SpanBertForPreTraining


class PretrainingDataset(MaskedSegmentDataset):
    """Segments [CLS] tokens [SEP] of the store, span-masked anew at every `collate`."""

    format = "spanbert"
    max_masked = staticmethod(max_span_masked)

    def collate(self, indices: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        indices = np.asarray(indices, dtype=np.int64)
        rng = rng or self.batch_rng(indices)
        masks = [mask_spans(self.instance(i), self.word_starts, self.mask_prob, rng, self.n_vocab) for i in indices]
        input_ids, attention_mask = self.pad([m.input_ids for m in masks])
        batch = {"input_ids": input_ids, "attention_mask": attention_mask.astype(np.int64),
                 "mlm_positions": self.pad_slots([m.positions for m in masks]),
                 "mlm_labels": self.pad_slots([m.labels for m in masks])}  # 0 = [PAD]: unused, skipped by the losses
        for name in ("span_left", "span_right", "span_offset"):
            batch[name] = self.pad_slots([getattr(m, name) for m in masks])
        return {k: torch.from_numpy(v) for k, v in batch.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser("Pretrain SpanBERT on the token store written by data.py.")
    add_pretraining_args(parser, Path(__file__).resolve().parent, DEFAULT_OUTPUT, batch=64, epoch=20, lr=1e-4)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> list[dict]:
    inputs = check_inputs(args, "spanbert")
    runtime = setup_runtime(args.gpu)
    with locked_outputs(args, inputs, runtime) as outputs:
        seed_everything(args.seed)
        train_set, heldout_set, curve_set = split(PretrainingDataset(inputs.store, inputs.cfg), args)
        model = SpanBertForPreTraining(inputs.cfg)
        if not args.resume:  # a resumed run restores the biases with the weights
            init_vocab_heads(model, train_set)
        meta = checkpoint_meta("spanbert-pretrain", inputs, args)
        plan = lambda epoch: random_batches(len(train_set), args.batch, args.seed, epoch)  # noqa: E731
        trainer = Trainer(model, inputs.settings, runtime, len(plan(0)), inputs.save, meta, desc="pretrain")
        if args.resume:
            trainer.resume(load_compatible(inputs.save, inputs.cfg.to_dict(), inputs.vocab.fingerprint, args.vocab))
        announce("spanbert", model, train_set, heldout_set, trainer, args)
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
                print(f"epoch {epoch + 1}: train {format_head_metrics(train)} | held-out {format_head_metrics(heldout)}")
            trainer.end_epoch(train, {**prefixed("heldout_", heldout), **store_columns(inputs, args)})
        write_logs(trainer)
    return trainer.history


if __name__ == "__main__":
    arguments = parse_args()
    run_main(lambda: main(arguments))
