"""Pretrain BERT with masked LM + next sentence prediction on kowiki (run `python data.py` first).

    python pretrain.py                          # config_half.json on data.py's token store
    python pretrain.py --gpu 0 --compile --config config.json

One step: a batch of [CLS] A [SEP] B [SEP] pairs whole-word masked anew (`PretrainingDataset.collate`), BERT's
forward and its MLM + NSP losses (model.py), then AdamW (common/trainer.py's `step`). The loop is `main()` below.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bert.data import DEFAULT_OUTPUT, NO_NSP, mask_whole_words, max_whole_word_masked
from bert.model import BertForPreTraining
from common.checkpoint import load_compatible
from common.cli import UserError, make_parser, run_main
from common.config import ModelConfig
from common.device import seed_everything, setup_runtime
from common.evaluation import evaluate, prefixed
from common.layers import LMHead
from common.losses import IGNORE
from common.pretrain import (add_pretraining_args, announce, check_inputs, checkpoint_meta, format_head_metrics,
                             locked_outputs, split, store_columns, write_logs)
from common.token_store import TokenStore, token_counts
from common.tracking import open_tracker
from common.trainer import Trainer, random_batches
from common.vocab import N_SPECIAL

# --- the encoders' pretraining data: variable-length instances of a token store, masked anew at every batch ---

def pack(rows: Sequence[np.ndarray], width: int | None = None, fill: int = 0, dtype: Any = np.int64) -> np.ndarray:
    """Rows of different lengths -> (len(rows), width) array padded with `fill` on the right.

    width defaults to the longest row (at least 1, so an empty batch of masks keeps a column).
    """
    longest = max((len(r) for r in rows), default=0)
    width = max(longest, 1) if width is None else width
    if longest > width:
        raise ValueError(f"a row of {longest} does not fit width {width}")
    out = np.full((len(rows), width), fill, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


class MaskedSegmentDataset:
    """Variable-length instances of a token store (`tokens` + `offsets`), masked anew
    at every `collate` (dynamic masking). BERT's and SpanBERT's pretraining data.

    The masks of a batch come from a generator seeded by one draw of torch's
    global RNG plus the batch's indices: the trainer checkpoints that RNG, so a
    resumed run draws exactly the masks the uninterrupted run would have, while
    each epoch sees new masks. Subclasses set `format` and `max_masked` (their
    masking's bound, bert/data.py and spanbert/data.py) and write `collate`.

    Every batch has the same shapes: (B, n_seq) tokens, padded, and (B, slots)
    masked slots, `slots` the most the masking can choose in n_seq tokens, the
    unused ones [PAD]. A compiled step is then one graph for the whole run, not one
    per masked count (padding costs little: a batch's longest instance is nearly
    always n_seq long, and the heads score B x slots rows, not B x n_seq).
    """

    format = ""
    max_masked: Callable[[int, float], int]

    def __init__(self, store: Any, cfg: Any):
        if store.meta.get("format") != self.format:
            raise UserError(f"{store.path} is not {self.format} pretraining data (format {store.meta.get('format')!r}); "
                            f"build it with python data.py in {self.format}/")
        self.n_seq = store.check_n_seq(cfg.n_seq)
        self.tokens, self.offsets = store["tokens"], store["offsets"]
        self.word_starts = np.asarray(store["word_starts"], dtype=bool)
        self.mask_prob = float(store.meta["mask_prob"])
        self.n_vocab = cfg.n_vocab
        self.slots = self.max_masked(self.n_seq, self.mask_prob)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def instance(self, i: int) -> np.ndarray:
        """Token ids of instance i, special tokens included."""
        return self.tokens[self.offsets[i] : self.offsets[i + 1]].astype(np.int64)

    @staticmethod
    def batch_rng(indices: np.ndarray) -> np.random.Generator:
        """The generator a batch's masks are drawn from (see the class docstring)."""
        draw = int(torch.randint(0, 2**62, (1,)))
        return np.random.default_rng([draw, *np.asarray(indices, dtype=np.int64).tolist()])

    def pad(self, rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask): the rows right-padded with [PAD] = 0 to n_seq, and True at the real tokens."""
        input_ids = pack(rows, width=self.n_seq)
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        return input_ids, np.arange(input_ids.shape[1]) < lengths[:, None]

    def pad_slots(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        """Per-instance masked-slot values (positions, labels, ...) -> (B, slots), [PAD] = 0 where unused."""
        return pack(rows, width=self.slots)


def init_vocab_heads(model: nn.Module, train_set: Any) -> None:
    """Start the bias of every vocab head of an encoder (BERT's MLM; SpanBERT's MLM and SBO) at the log
    unigram distribution of what they predict: the tokens of the training instances (`train_set`, a
    `common.pretrain.Subset` of a `MaskedSegmentDataset`; the held-out tail is not counted), special
    tokens left out (never masked, so never a target). At bias 0 the only way to predict the unigram
    distribution, the first thing a masked LM learns, is a hidden state pointing the same way at every
    position: the encoder drifts towards collapse (`common.diagnose`); see `common.layers.LMHead`."""
    data: MaskedSegmentDataset = train_set.dataset
    end = int(data.offsets[int(train_set.indices.max()) + 1])
    counts = token_counts(data.tokens[:end], data.n_vocab)
    counts[:N_SPECIAL] = 0
    for head in (m for m in model.modules() if isinstance(m, LMHead)):
        head.init_bias_to_log_prior(counts)


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
        # a kowiki store holds out its last articles, paired among themselves (data.py --heldout): that tail
        train_set, heldout_set, curve_set = split(PretrainingDataset(inputs.store, inputs.cfg), args,
                                                  inputs.store.meta.get("heldout_instances", 0))
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
