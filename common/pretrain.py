"""The mechanics every pretrain.py calls: its shared flags, the checks of its inputs, the lock on its
outputs, the held-out split, and the logs it leaves. The loop itself is in each model's pretrain.py."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from common.cli import UserError, non_negative_int, probability, rel, require_output_dir
from common.config import ModelConfig, load_config
from common.device import Runtime
from common.evaluation import Dataset
from common.io import exclusive_output, write_csv, write_json
from common.layers import count_parameters
from common.token_store import TokenStore
from common.tracking import check_tracker
from common.trainer import Trainer, TrainSettings, add_common_training_args, resolve_resume, settings_from_args
from common.vocab import Vocab, load_vocab


class Subset:
    """A view of a dataset through an index array (the train / held-out split)."""

    def __init__(self, dataset: Dataset, indices: np.ndarray):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def collate(self, indices: np.ndarray, rng: np.random.Generator | None = None):
        return self.dataset.collate(self.indices[indices], rng)


def heldout_split(n: int, share: float, store_heldout: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices of n instances: the held-out slice is the corpus' tail, never trained on:
    the `store_heldout` instances its store declares held out (articles its data.py paired apart), else `share` of n."""
    n_heldout = store_heldout or max(1, int(round(n * share)))
    return np.arange(n - n_heldout), np.arange(n - n_heldout, n)


def format_head_metrics(m: dict[str, float]) -> str:
    """`loss L | mlm loss L acc A | nsp loss L acc A next N`: the total loss, then each head's loss and
    accuracy, and any other metric of the head (`nsp_next` printed as `next`). A head that had no
    target in the set (BERT's NSP on a store of reviews) has no metrics and is not printed."""
    heads = sorted(k.removesuffix("_loss") for k in m if k.endswith("_loss"))

    def head(h: str) -> str:
        others = [f" {k.removeprefix(h + '_')} {v:.3f}" for k, v in m.items()
                  if k.startswith(h + "_") and k not in (f"{h}_loss", f"{h}_acc")]
        return f"{h} loss {m[f'{h}_loss']:.3f} acc {m[f'{h}_acc']:.3f}" + "".join(others)
    return " | ".join([f"loss {m['loss']:.3f}", *map(head, heads)])


CURVE_INSTANCES = 256  # held-out instances of each point of the curve: a few seconds, the same ones each time


def add_pretraining_args(parser: argparse.ArgumentParser, folder: Path, default_input: Path, batch: int, epoch: int,
                         lr: float) -> None:
    """The flags every pretrain.py takes: its token store, the training options shared with train.py
    (common/trainer.py), and the pretraining ones (checkpoints, the held-out split and curve, dropout)."""
    parser.add_argument("--input", default=rel(default_input), help="token store folder from data.py")
    add_common_training_args(parser, folder, "save_pretrain.pth", batch, epoch, lr)
    parser.add_argument("--save_every", type=non_negative_int, default=1000, help="also checkpoint every N steps (0: epoch ends only)")
    parser.add_argument("--heldout", type=float, default=0.01,
                        help="share of instances held out for evaluation, never trained on (a store that declares "
                             "its held-out instances keeps those)")
    parser.add_argument("--eval_every", type=non_negative_int, default=100,
                        help=f"steps between held-out evaluations of the step log (the pretraining curve), on the "
                             f"first {CURVE_INSTANCES} held-out instances (0: epoch ends only)")
    parser.add_argument("--dropout", type=probability, default=None,
                        help="dropout during pretraining, instead of the config's (0 pays at a tiny budget; "
                             "fine-tuning keeps the config's own)")


@dataclass
class PretrainingInputs:
    """What a pretraining run reads, checked before anything runs."""
    settings: TrainSettings
    vocab: Vocab
    cfg: ModelConfig
    store: TokenStore
    save: Path  # the checkpoint; beside it .log.json (per epoch) and .steps.csv (the step log)


def check_inputs(args: argparse.Namespace, name: str) -> PretrainingInputs:
    """The options, vocab, config (with --dropout) and token store of `python pretrain.py` in `name`/."""
    settings = settings_from_args(args, save_every=args.save_every)
    check_tracker(args.log)
    if not 0 < args.heldout < 0.5:
        raise UserError(f"--heldout must be in (0, 0.5), got {args.heldout}")
    vocab = load_vocab(args.vocab)
    cfg = load_config(args.config).with_vocab(len(vocab))
    if args.dropout is not None:
        cfg = dataclasses.replace(cfg, dropout=args.dropout)
    store = TokenStore(args.input, hint=f"run python data.py in {name}/")
    store.check_vocab(vocab.fingerprint, args.vocab)
    return PretrainingInputs(settings, vocab, cfg, store, require_output_dir(args.save))


@contextlib.contextmanager
def locked_outputs(args: argparse.Namespace, inputs: PretrainingInputs, runtime: Runtime) -> Iterator[contextlib.ExitStack]:
    """Hold the checkpoint and its logs for this run (rank 0 alone writes), and settle --resume
    (`args.resume` becomes True or False); yields the stack the run's tracker joins."""
    save = inputs.save
    with contextlib.ExitStack() as outputs:
        if runtime.is_main:
            removed = outputs.enter_context(exclusive_output(save, companions=(save.with_suffix(".log.json"),
                                                                                save.with_suffix(".steps.csv"))))
            for leftover in removed:
                print(f"removed {leftover} (left by a run killed while saving)")
        args.resume = resolve_resume(args.resume, save)
        yield outputs


def split(dataset: Dataset, args: argparse.Namespace, store_heldout: int = 0) -> tuple[Subset, Subset, Subset]:
    """(train, held-out, curve) views of the dataset: the held-out tail (`store_heldout` instances where the
    store declares them, else --heldout) is never trained on; the curve is its first CURVE_INSTANCES
    instances, scored every --eval_every steps."""
    train_indices, heldout_indices = heldout_split(len(dataset), args.heldout, store_heldout)
    if len(train_indices) < args.batch:
        raise UserError(f"{args.input} holds {len(dataset)} instances: too few for --batch {args.batch} after holding "
                        f"out {len(heldout_indices)}; use a bigger corpus or a smaller --batch")
    return (Subset(dataset, train_indices), Subset(dataset, heldout_indices),
            Subset(dataset, heldout_indices[:CURVE_INSTANCES]))


def checkpoint_meta(kind: str, inputs: PretrainingInputs, args: argparse.Namespace) -> dict[str, Any]:
    """What every checkpoint of the run carries besides the weights: enough to check and rebuild it."""
    return {"kind": kind, "config": inputs.cfg.to_dict(),
            "vocab": {"fingerprint": inputs.vocab.fingerprint, "size": len(inputs.vocab)}, "args": vars(args)}


def store_columns(inputs: PretrainingInputs, args: argparse.Namespace) -> dict[str, int]:
    """What a results table needs beside the loss: the tokens per step and the corpus size."""
    return {"batch": args.batch, "n_seq": inputs.store.meta.get("n_seq", inputs.cfg.n_seq),
            "store_tokens": int(inputs.store.meta.get("n_tokens", 0))}


def announce(name: str, model: nn.Module, train_set: Subset, heldout_set: Subset, trainer: Trainer,
             args: argparse.Namespace) -> None:
    if trainer.runtime.is_main:
        print(f"{name}: {count_parameters(model) / 1e6:.1f}M parameters, {len(train_set):,} train / "
              f"{len(heldout_set):,} held-out instances, {trainer.total_steps:,} steps of {args.batch} on "
              f"{trainer.runtime.device}")


def write_logs(trainer: Trainer) -> None:
    """The run's per-epoch log (.log.json) and step log (.steps.csv) beside its checkpoint (rank 0)."""
    if trainer.runtime.is_main:
        save = trainer.checkpoint_path
        write_json(save.with_suffix(".log.json"), trainer.history)
        write_csv(save.with_suffix(".steps.csv"), trainer.step_log)
        print(f"saved {save} (per-epoch log: {save.with_suffix('.log.json')})")
