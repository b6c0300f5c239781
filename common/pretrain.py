"""The pretraining script every model folder runs, parameterized by a `PretrainSpec`.

A model folder's pretrain.py declares only its model, its dataset over the
token store, and its loss; options, device, held-out split, checkpoints,
resume and reporting are the same for GPT, BERT and SpanBERT.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from common.batches import random_batches
from common.checkpoint import load_compatible
from common.cli import UserError, make_parser, non_negative_int, probability, require_output_dir, run_main
from common.config import ModelConfig, load_config
from common.device import Runtime, seed_everything, setup_runtime
from common.evaluation import Dataset, evaluate
from common.io import exclusive_output, write_json
from common.layers import count_parameters
from common.paths import rel
from common.results import write_csv
from common.token_store import TokenStore
from common.tracking import check_tracker, open_tracker
from common.train_options import TrainSettings, add_common_training_args, resolve_resume, settings_from_args
from common.trainer import Trainer
from common.vocab import Vocab, load_vocab


class Subset:
    """A view of a dataset through an index array (the train / held-out split)."""

    def __init__(self, dataset: Dataset, indices: np.ndarray):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def collate(self, indices: np.ndarray):
        return self.dataset.collate(self.indices[indices])


def heldout_split(n: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices of n instances: the held-out slice is the corpus' tail, never trained on."""
    n_heldout = max(1, int(round(n * share)))
    return np.arange(n - n_heldout), np.arange(n - n_heldout, n)


@dataclass
class PretrainSpec:
    name: str  # "gpt", "bert", "spanbert"
    folder: Path  # the model folder (defaults are resolved against it)
    default_input: Path  # token store written by data.py
    build_model: Callable[[ModelConfig], nn.Module]  # a `.trunk`; forward(**batch) -> (loss, metrics)
    open_dataset: Callable[[TokenStore, ModelConfig], Dataset]
    format_metrics: Callable[[dict[str, float]], str] = lambda m: format_head_metrics(m)
    # optional: initialize from the training data (not the held-out slice) before step 1; skipped on --resume
    init_from_data: Callable[[nn.Module, Subset], None] | None = None
    default_lr: float = 1e-4
    default_batch: int = 64
    default_epoch: int = 20


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


def pretrain_main(spec: PretrainSpec) -> None:
    parser = make_parser(f"Pretrain {spec.name.upper()} on the token store written by data.py.")
    parser.add_argument("--input", default=rel(spec.default_input), help="token store folder from data.py")
    add_common_training_args(parser, spec.folder, "save_pretrain.pth", spec.default_batch, spec.default_epoch,
                             spec.default_lr)
    parser.add_argument("--save_every", type=non_negative_int, default=1000, help="also checkpoint every N steps (0: epoch ends only)")
    parser.add_argument("--heldout", type=float, default=0.01, help="share of instances held out for evaluation, never trained on")
    parser.add_argument("--eval_every", type=non_negative_int, default=100,
                        help=f"steps between held-out evaluations of the step log (the pretraining curve), on the "
                             f"first {CURVE_INSTANCES} held-out instances (0: epoch ends only)")
    parser.add_argument("--dropout", type=probability, default=None,
                        help="dropout during pretraining, instead of the config's (0 pays at a tiny budget; "
                             "fine-tuning keeps the config's own)")
    args = parser.parse_args()
    run_main(lambda: pretrain(spec, args))


def pretrain(spec: PretrainSpec, args: argparse.Namespace) -> list[dict]:
    settings = settings_from_args(args, save_every=args.save_every)
    check_tracker(args.log)
    if not 0 < args.heldout < 0.5:
        raise UserError(f"--heldout must be in (0, 0.5), got {args.heldout}")
    vocab = load_vocab(args.vocab)
    cfg = load_config(args.config).with_vocab(len(vocab))
    if args.dropout is not None:
        cfg = dataclasses.replace(cfg, dropout=args.dropout)
    store = TokenStore(args.input, hint=f"run python data.py in {spec.name}/")
    store.check_vocab(vocab.fingerprint, args.vocab)
    save = require_output_dir(args.save)
    runtime = setup_runtime(args.gpu)
    log = save.with_suffix(".log.json")
    with contextlib.ExitStack() as outputs:
        if runtime.is_main:  # only rank 0 writes: it alone holds the lock
            removed = outputs.enter_context(exclusive_output(save, companions=(log, save.with_suffix(".steps.csv"))))
            for leftover in removed:
                print(f"removed {leftover} (left by a run killed while saving)")
        args.resume = resolve_resume(args.resume, save)
        return _pretrain(spec, args, settings, cfg, vocab, store, save, log, runtime, outputs)


def _pretrain(spec: PretrainSpec, args: argparse.Namespace, settings: TrainSettings, cfg: ModelConfig, vocab: Vocab,
              store: TokenStore, save: Path, log: Path, runtime: Runtime, outputs: contextlib.ExitStack) -> list[dict]:
    seed_everything(args.seed)

    dataset = spec.open_dataset(store, cfg)
    n = len(dataset)
    train_indices, heldout_indices = heldout_split(n, args.heldout)
    n_heldout = len(heldout_indices)
    if len(train_indices) < args.batch:
        raise UserError(f"{args.input} holds {n} instances: too few for --batch {args.batch} after holding out "
                        f"{n_heldout}; use a bigger corpus or a smaller --batch")
    train_set = Subset(dataset, train_indices)
    heldout_set = Subset(dataset, heldout_indices)

    model = spec.build_model(cfg)
    if spec.init_from_data is not None and not args.resume:
        spec.init_from_data(model, train_set)
    meta = {"kind": f"{spec.name}-pretrain", "config": cfg.to_dict(),
            "vocab": {"fingerprint": vocab.fingerprint, "size": len(vocab)}, "args": vars(args)}
    trainer = Trainer(model, train_set,
                      batch_plan=lambda epoch: random_batches(len(train_set), args.batch, args.seed, epoch),
                      settings=settings, runtime=runtime, checkpoint_path=save, checkpoint_meta=meta,
                      desc="pretrain")

    def on_epoch_end(epoch: int, train_metrics: dict[str, float]) -> dict[str, float]:
        heldout = evaluate(model, heldout_set, args.batch, runtime)
        if runtime.is_main:
            print(f"epoch {epoch + 1}: train {spec.format_metrics(train_metrics)} | held-out {spec.format_metrics(heldout)}")
        # what a results table needs beside the loss: the tokens per step and the corpus size
        return {**{f"heldout_{k}": v for k, v in heldout.items()}, "batch": args.batch,
                "n_seq": store.meta.get("n_seq", cfg.n_seq), "store_tokens": int(store.meta.get("n_tokens", 0))}

    trainer.on_epoch_end = on_epoch_end
    curve_set = Subset(dataset, heldout_indices[:CURVE_INSTANCES])
    trainer.log_every, trainer.evaluate_every = args.log_every, args.eval_every
    trainer.evaluate_now = lambda: {f"heldout_{k}": v for k, v in evaluate(model, curve_set, args.batch, runtime).items()}
    if args.resume:
        trainer.resume(load_compatible(save, cfg.to_dict(), vocab.fingerprint, args.vocab))
    if runtime.is_main:
        print(f"{spec.name}: {count_parameters(model) / 1e6:.1f}M parameters, {len(train_set):,} train / "
              f"{n_heldout:,} held-out instances, {trainer.total_steps:,} steps of {args.batch} on {runtime.device}")
        trainer.tracker = outputs.enter_context(open_tracker(args, save, meta))
    history = trainer.fit()
    if runtime.is_main:
        write_json(log, history)
        write_csv(save.with_suffix(".steps.csv"), trainer.step_log)
        print(f"saved {save} (per-epoch log: {log})")
    return history


