"""The NSMC fine-tuning flow of every model folder's train.py (predict.py's is in common/predict.py).

A model folder's train.py declares a `FinetuneSpec` (how a review is wrapped, its classifier, its options
dataclass: GPT's --lm, SpanBERT's --logit) as its pretrain.py declares a `PretrainSpec`. The rest is here:
reading NSMC, the dev split carved from the train file (the best epoch is picked on dev, never on test),
loading the pretrained trunk strictly, and the run: prepare, fit, report (the results row, README table
and plots are common/results.py's; the reviews' encoding and batches, common/reviews.py's).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from common.batches import length_bucketed_batches, sorted_batches
from common.checkpoint import load_checkpoint, load_compatible, module_state, prev_path, save_checkpoint
from common.cli import (UserError, make_parser, non_negative_int, positive_int, require_file, require_output_dir,
                        run_main)
from common.config import ModelConfig, load_config
from common.device import Runtime, seed_everything, setup_runtime
from common.evaluation import evaluate
from common.io import exclusive_output
from common.nsmc import NSMC_DEV_SIZE, labelled_subset, nsmc_split, read_nsmc_json
from common.paths import NSMC_TEST_JSON, NSMC_TRAIN_JSON, rel
from common.results import record_run, result_row
from common.reviews import ReviewDataset, encode_reviews
from common.tracking import check_tracker, open_tracker
from common.train_options import TrainSettings, add_common_training_args, settings_from_args
from common.trainer import Trainer
from common.vocab import Vocab, load_vocab


def option(default: Any, help: str, **argparse_kwargs: Any) -> Any:
    """A field of a model's options dataclass, declared once: its default and train.py's --NAME flag."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclass
class FinetuneSpec:
    """What a model folder's train.py declares; the rest of fine-tuning and prediction is the same for every model."""
    name: str  # "gpt", "bert", "spanbert"
    folder: Path
    # (content ids, n_seq) -> ids with the model's special tokens, at most n_seq long
    wrap: Callable[[list[int], int], list[int]]
    # the model's options: a dataclass whose fields (see `option`) are train.py's flags, stored with the model
    options: type
    # (config, options) -> classifier with `.trunk`, forward(input_ids, attention_mask, labels) -> (loss, metrics)
    # and classify(input_ids, attention_mask) -> (logits, ...)
    build_model: Callable[[ModelConfig, Any], nn.Module]
    # options -> the run's variant as shown in the results table, e.g. "lm=0.5"
    variant: Callable[[Any], str] = lambda options: ""
    # optional: initialize a model trained from scratch from its training reviews (GPT's LM bias)
    init_from_data: Callable[[nn.Module, ReviewDataset], None] | None = None
    default_lr: float = 1e-4
    default_batch: int = 128
    default_epoch: int = 5

    def read_options(self, values: Mapping[str, Any]) -> Any:
        """The options from train.py's parsed flags, or from a classifier's checkpoint meta, where they are
        stored as a dict of the fields; a field missing there (a checkpoint older than it) takes its default."""
        return self.options(**{f.name: values[f.name] for f in dataclasses.fields(self.options) if f.name in values})


EVAL_BATCH = 256  # the smallest batch dev and test are scored in


def load_pretrained(model: nn.Module, path: Path, cfg: ModelConfig, vocab: Vocab, vocab_path: str) -> str:
    """Load what a pretraining checkpoint carries into the classifier, strictly; returns a label for the table.

    That is the trunk, and every other module the classifier lists in `pretrained_modules`
    (GPT's LM head with its output bias, when the auxiliary LM loss uses it)."""
    state = load_compatible(path, cfg.to_dict(), vocab.fingerprint, vocab_path)
    for name in getattr(model, "pretrained_modules", ("trunk",)):
        weights = module_state(state, name)
        if not weights:
            raise UserError(f"{path} holds no pretrained {name} weights (pass a save_pretrain.pth from pretrain.py)")
        try:
            getattr(model, name).load_state_dict(weights, strict=True)
        except RuntimeError as e:
            raise UserError(f"{path} does not fit this model ({str(e).splitlines()[0]}); pass the matching --config") from e
    progress = state.get("progress", {})
    return f"{path.name}@{progress.get('global_step', '?')}steps"


def finetune_main(spec: FinetuneSpec) -> None:
    parser = make_parser(f"Fine-tune {spec.name.upper()} on NSMC; pick the best epoch on a dev split, report test accuracy.")
    parser.add_argument("--train", default=rel(NSMC_TRAIN_JSON), help="NSMC train file (from data/nsmc.py)")
    parser.add_argument("--test", default=rel(NSMC_TEST_JSON), help="NSMC test file (from data/nsmc.py)")
    parser.add_argument("--pretrain", default=None,
                        help=f"pretrained checkpoint (default: {rel(spec.folder / 'save_pretrain.pth')} if it exists, "
                             f"else training starts from scratch); 'none' forces from scratch")
    add_common_training_args(parser, spec.folder, "save_best.pth", spec.default_batch, spec.default_epoch, spec.default_lr)
    parser.add_argument("--dev_size", type=non_negative_int, default=0,
                        help=f"reviews of the train file held out as the dev set that picks the epoch, the same "
                             f"for every run (0: {NSMC_DEV_SIZE:,}, or 5%% of a smaller file)")
    parser.add_argument("--train_limit", type=non_negative_int, default=0,
                        help="labelled reviews to train on: a random N of the train file's non-dev reviews, drawn "
                             "with --seed (0: all of them)")
    parser.add_argument("--item", default=None, help="name of the run in the results table (default: derived)")
    parser.add_argument("--results", default=rel(spec.folder / "results.csv"), help="results table to append to")
    parser.add_argument("--note", default="", help="free text for the results table (e.g. the budget)")
    parser.add_argument("--dev_per_epoch", type=positive_int, default=1,
                        help="times dev is scored per epoch, evenly spaced, for the curves of img/ (the best epoch "
                             "is still picked at epoch ends; 1: epoch ends only)")
    for f in dataclasses.fields(spec.options):  # the model's own flags: one per field of its options dataclass
        parser.add_argument(f"--{f.name}", default=f.default, **f.metadata)
    args = parser.parse_args()
    run_main(lambda: finetune(spec, args))


@dataclass
class FinetuneRun:
    """A prepared run: the encoded reviews, the classifier with its starting weights, and where it writes."""
    args: argparse.Namespace
    settings: TrainSettings
    runtime: Runtime
    model: nn.Module
    train_set: ReviewDataset
    dev_set: ReviewDataset
    test_set: ReviewDataset
    meta: dict[str, Any]  # kind, config, options, vocab, pretrained: stored with every checkpoint of the run
    item: str  # the run's name in the results table
    variant: str  # its options as the results table shows them ("" for none)
    save: Path  # the best-dev model
    state_path: Path  # the resumable training state, beside it


def finetune(spec: FinetuneSpec, args: argparse.Namespace) -> dict[str, Any]:
    """train.py: prepare the run, fit it (best epoch on dev, test scored once), report it; returns its results row."""
    with contextlib.ExitStack() as outputs:  # the lock on the outputs and the tracker, held until the report is written
        run = prepare(spec, args, outputs)
        history, step_log, test = fit(run, outputs)
        row = result_row(run.item, run.meta["pretrained"], run.variant, history, test, len(run.train_set), args.seed,
                         run.runtime.device.type, args.note)
        if run.runtime.is_main:
            record_run(args.results, row, history, step_log, run.save)
        return row


def prepare(spec: FinetuneSpec, args: argparse.Namespace, outputs: contextlib.ExitStack) -> FinetuneRun:
    """Check every input before anything runs, lock the outputs, encode the reviews, build the classifier and
    load its pretrained weights (or start from scratch)."""
    settings = settings_from_args(args)
    check_tracker(args.log)
    options = spec.read_options(vars(args))
    vocab = load_vocab(args.vocab)
    cfg = load_config(args.config).with_vocab(len(vocab))
    train_rows = read_nsmc_json(args.train)
    test_rows = read_nsmc_json(args.test)
    pool, dev_idx = nsmc_split(len(train_rows), args.dev_size or None)
    train_idx = labelled_subset(pool, args.train_limit, args.seed)
    save = require_output_dir(args.save)
    require_output_dir(args.results)  # checked now, not after hours of training
    state_path = save.with_suffix(".state.pth")  # resumable training state, beside the best model
    has_state = state_path.is_file() or prev_path(state_path).is_file()
    if args.resume == "yes" and not has_state:
        raise UserError(f"nothing to resume: {state_path} not found (run without --resume)")
    args.resume = args.resume == "yes" or (args.resume == "auto" and has_state)
    runtime = setup_runtime(args.gpu)
    if runtime.is_main:  # only rank 0 writes: it alone holds the lock
        for leftover in outputs.enter_context(exclusive_output(save, companions=(state_path,))):
            print(f"removed {leftover} (left by a run killed while saving)")
    seed_everything(args.seed)

    t0 = time.perf_counter()
    train_set = encode_reviews([train_rows[i] for i in train_idx], vocab, spec.wrap, cfg.n_seq)
    dev_set = encode_reviews([train_rows[i] for i in dev_idx], vocab, spec.wrap, cfg.n_seq)
    test_set = encode_reviews(test_rows, vocab, spec.wrap, cfg.n_seq)
    if runtime.is_main:
        print(f"encoded {len(train_set):,} train / {len(dev_set):,} dev / {len(test_set):,} test reviews "
              f"in {time.perf_counter() - t0:.1f}s")

    model = spec.build_model(cfg, options)
    pretrained = start_weights(spec, model, args, cfg, vocab, train_set, runtime)
    variant = spec.variant(options)
    item = args.item or f"{spec.name}-{'scratch' if pretrained == 'none' else 'pre'}" + (f"-{variant}" if variant else "")
    meta = {"kind": f"{spec.name}-classifier", "config": cfg.to_dict(), "options": dataclasses.asdict(options),
            "vocab": {"fingerprint": vocab.fingerprint, "size": len(vocab)}, "pretrained": pretrained}
    return FinetuneRun(args, settings, runtime, model, train_set, dev_set, test_set, meta, item, variant, save, state_path)


def start_weights(spec: FinetuneSpec, model: nn.Module, args: argparse.Namespace, cfg: ModelConfig, vocab: Vocab,
                  train_set: ReviewDataset, runtime: Runtime) -> str:
    """Load --pretrain (by default the folder's save_pretrain.pth when there is one), or start from scratch;
    returns the results table's Pretrain label ("none" from scratch)."""
    default_pretrain = spec.folder / "save_pretrain.pth"
    pretrain_path = Path(args.pretrain) if args.pretrain not in (None, "none") else None
    if args.pretrain is None and default_pretrain.is_file():
        pretrain_path = default_pretrain
    if pretrain_path is not None:
        require_file(pretrain_path, "pretrained checkpoint", "run pretrain.py first, or pass --pretrain none")
        pretrained = load_pretrained(model, pretrain_path, cfg, vocab, args.vocab)
        if runtime.is_main:
            print(f"loaded pretrained {' + '.join(getattr(model, 'pretrained_modules', ('trunk',)))} from {pretrain_path}")
        return pretrained
    if spec.init_from_data is not None and not args.resume:  # a resumed run restores these weights instead
        spec.init_from_data(model, train_set)
    if runtime.is_main:
        print(f"no pretrained checkpoint ({rel(default_pretrain)} absent or --pretrain none): training from scratch")
    return "none"


def fit(run: FinetuneRun, outputs: contextlib.ExitStack) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, float]]:
    """Train, scoring dev at each epoch end (and --dev_per_epoch times within) and saving the best-dev model, then
    score test once with that model. Returns (the per-epoch history, the step log, the test metrics)."""
    args, model, runtime, dev_set = run.args, run.model, run.runtime, run.dev_set
    world_min = runtime.world_size * run.settings.grad_accum
    trainer = Trainer(model, run.train_set,
                      batch_plan=lambda epoch: length_bucketed_batches(run.train_set.lengths, args.batch, args.seed,
                                                                       epoch, min_size=world_min),
                      settings=run.settings, runtime=runtime, checkpoint_path=run.state_path,
                      checkpoint_meta={**run.meta, "args": vars(args)}, desc="train")
    eval_batch = max(args.batch, EVAL_BATCH)  # no gradients: larger batches of sorted lengths run faster
    dev_batches = sorted_batches(dev_set.lengths, eval_batch)

    def on_epoch_end(epoch: int, train_metrics: dict[str, float]) -> dict[str, Any]:
        dev = evaluate(model, dev_set, eval_batch, runtime, dev_batches)
        best = max((r["dev_acc"] for r in trainer.history), default=-1.0)
        if dev["acc"] > best and runtime.is_main:
            save_checkpoint(run.save, {**run.meta, "model": model.state_dict(), "epoch": epoch + 1, "dev_acc": dev["acc"]},
                            keep_previous=False)
        if runtime.is_main:
            print(f"epoch {epoch + 1}: train loss {train_metrics['loss']:.4f} acc {train_metrics['acc']:.4f} | "
                  f"dev loss {dev['loss']:.4f} acc {dev['acc']:.4f}" + (" (best dev so far: saved)" if dev["acc"] > best else ""))
        return {"dev_loss": dev["loss"], "dev_acc": dev["acc"]}

    trainer.on_epoch_end = on_epoch_end
    trainer.log_every = args.log_every
    trainer.evaluate_every = trainer.steps_per_epoch // args.dev_per_epoch if args.dev_per_epoch > 1 else 0

    def dev_point() -> dict[str, float]:
        if trainer.progress.step_in_epoch >= trainer.steps_per_epoch:
            return {}  # an epoch end: on_epoch_end scores dev there
        return {f"dev_{k}": v for k, v in evaluate(model, dev_set, eval_batch, runtime, dev_batches).items()}

    trainer.evaluate_now = dev_point
    if args.resume:
        trainer.resume(load_compatible(run.state_path, run.meta["config"], run.meta["vocab"]["fingerprint"], args.vocab))
    tracker = outputs.enter_context(open_tracker(args, run.save, run.meta)) if runtime.is_main else None
    trainer.tracker = tracker
    history = trainer.fit()
    best = max(history, key=lambda r: r["dev_acc"])
    # The test set is scored once, with the epoch dev picked (rank 0 wrote it before fit's last collective).
    model.load_state_dict(load_checkpoint(run.save, fallback=False)["model"])
    test = evaluate(model, run.test_set, eval_batch, runtime, sorted_batches(run.test_set.lengths, eval_batch))
    if runtime.is_main:
        print(f"test (epoch {best['epoch']}): loss {test['loss']:.4f} acc {test['acc']:.4f}")
        if tracker is not None:
            tracker.log({"test/loss": test["loss"], "test/acc": test["acc"]}, trainer.progress.global_step)
    return history, trainer.step_log, test
