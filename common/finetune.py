"""The NSMC fine-tuning flow that GPT, BERT and SpanBERT share (train.py, predict.py).

A model folder declares a `FinetuneSpec`: how a review is wrapped in special
tokens, how its classifier is built, and its own options (GPT's --lm,
SpanBERT's --logit). Everything else is here: reading NSMC, the dev split
carved from the train file (the best epoch is picked on dev, never on test),
length-bucketed batches, loading the pretrained trunk strictly, the per-epoch
log, the results row, README table and plots, and prediction.
"""
from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from common.checkpoint import check_compatible, load_checkpoint, module_state, prev_path, save_checkpoint
from common.cli import (UserError, make_parser, non_negative_int, positive_int, require_file, require_output_dir,
                        run_main)
from common.config import ModelConfig, load_config
from common.nsmc import NSMC_DEV_SIZE, labelled_subset, nsmc_split, read_nsmc_json
from common.device import Runtime, seed_everything, setup_runtime
from common.io import exclusive_output
from common.paths import DEFAULT_VOCAB, NSMC_TEST_JSON, NSMC_TRAIN_JSON, rel
from common.tracking import check_tracker, open_tracker
from common.results import append_result, update_report, write_csv
from common.evaluation import evaluate
from common.train_options import TrainSettings, add_common_training_args, settings_from_args
from common.trainer import Trainer
from common.vocab import PAD_ID, Vocab, load_vocab


@dataclass
class FinetuneSpec:
    name: str  # "gpt", "bert", "spanbert"
    folder: Path
    # (content ids, n_seq) -> ids with the model's special tokens, at most n_seq long
    wrap: Callable[[list[int], int], list[int]]
    # (config, options) -> classifier with `.trunk`, forward(input_ids, attention_mask, labels) -> (loss, metrics)
    # and classify(input_ids, attention_mask) -> (logits, ...)
    build_model: Callable[[ModelConfig, dict[str, Any]], nn.Module]
    add_options: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    # options -> the run's variant as shown in the results table, e.g. "lm=0.5"
    variant: Callable[[dict[str, Any]], str] = lambda options: ""
    option_names: list[str] = field(default_factory=list)  # options stored with the model
    # optional: initialize a model trained from scratch from its training reviews (GPT's LM bias)
    init_from_data: Callable[[nn.Module, "ReviewDataset"], None] | None = None
    default_lr: float = 1e-4
    default_batch: int = 128
    default_epoch: int = 5


EVAL_BATCH = 256  # the smallest batch dev and test are scored in


class ReviewDataset:
    """Encoded reviews; `collate` pads a batch on the right to its longest review."""

    def __init__(self, ids: list[np.ndarray], labels: np.ndarray):
        self.ids, self.labels = ids, labels
        self.lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))

    def __len__(self) -> int:
        return len(self.ids)

    def collate(self, indices: np.ndarray) -> dict[str, Tensor]:
        T = int(self.lengths[indices].max())
        input_ids = np.full((len(indices), T), PAD_ID, dtype=np.int64)
        for row, i in enumerate(indices):
            input_ids[row, : self.lengths[i]] = self.ids[i]
        input_ids_t = torch.from_numpy(input_ids)
        return {"input_ids": input_ids_t, "attention_mask": (input_ids_t != PAD_ID).long(),
                "labels": torch.from_numpy(self.labels[indices].astype(np.int64))}


def encode_reviews(rows: list[dict], vocab: Vocab, wrap: Callable[[list[int], int], list[int]], n_seq: int) -> ReviewDataset:
    ids = vocab.encode_batch([r["document"] for r in rows])
    return ReviewDataset([np.asarray(wrap(x, n_seq), dtype=np.int64) for x in ids],
                         np.asarray([r["label"] for r in rows], dtype=np.int64))


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                            pool_batches: int = 50, min_size: int = 1) -> list[np.ndarray]:
    """Batches of reviews of similar length, so little compute goes to padding.

    Shuffle, cut into pools of `pool_batches` batches, sort each pool by length,
    cut it into batches, then shuffle the batch order: randomness is kept at the
    pool level while the padding inside a batch is small.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    batches = [b for b in batches if len(b) >= min_size]
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches: all reviews, sorted by length (least padding)."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def load_pretrained(model: nn.Module, path: Path, cfg: ModelConfig, vocab: Vocab, vocab_path: str) -> str:
    """Load what a pretraining checkpoint carries into the classifier, strictly; returns a label for the table.

    That is the trunk, and every other module the classifier lists in `pretrained_modules`
    (GPT's LM head with its output bias, when the auxiliary LM loss uses it)."""
    state = load_checkpoint(path)
    check_compatible(state, path, cfg.to_dict(), vocab.fingerprint, vocab_path)
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
    spec.add_options(parser)
    args = parser.parse_args()
    run_main(lambda: finetune(spec, args))


def finetune(spec: FinetuneSpec, args: argparse.Namespace) -> dict[str, Any]:
    settings = settings_from_args(args)
    check_tracker(args.log)
    options = {k: getattr(args, k) for k in spec.option_names}
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
    with contextlib.ExitStack() as outputs:
        if runtime.is_main:  # only rank 0 writes: it alone holds the lock
            for leftover in outputs.enter_context(exclusive_output(save, companions=(state_path,))):
                print(f"removed {leftover} (left by a run killed while saving)")
        return _finetune(spec, args, settings, options, vocab, cfg, train_rows, test_rows, train_idx, dev_idx,
                         save, state_path, runtime, outputs)


def _finetune(spec: FinetuneSpec, args: argparse.Namespace, settings: TrainSettings, options: dict[str, Any],
              vocab: Vocab, cfg: ModelConfig, train_rows: list[dict], test_rows: list[dict], train_idx: np.ndarray,
              dev_idx: np.ndarray, save: Path, state_path: Path, runtime: Runtime,
              outputs: contextlib.ExitStack) -> dict[str, Any]:
    seed_everything(args.seed)

    t0 = time.perf_counter()
    train_set = encode_reviews([train_rows[i] for i in train_idx], vocab, spec.wrap, cfg.n_seq)
    dev_set = encode_reviews([train_rows[i] for i in dev_idx], vocab, spec.wrap, cfg.n_seq)
    test_set = encode_reviews(test_rows, vocab, spec.wrap, cfg.n_seq)
    if runtime.is_main:
        print(f"encoded {len(train_set):,} train / {len(dev_set):,} dev / {len(test_set):,} test reviews "
              f"in {time.perf_counter() - t0:.1f}s")

    model = spec.build_model(cfg, options)
    pretrain_path = Path(args.pretrain) if args.pretrain not in (None, "none") else None
    default_pretrain = spec.folder / "save_pretrain.pth"
    if args.pretrain is None and default_pretrain.is_file():
        pretrain_path = default_pretrain
    if pretrain_path is not None:
        require_file(pretrain_path, "pretrained checkpoint", "run pretrain.py first, or pass --pretrain none")
        pretrained = load_pretrained(model, pretrain_path, cfg, vocab, args.vocab)
        if runtime.is_main:
            print(f"loaded pretrained {' + '.join(getattr(model, 'pretrained_modules', ('trunk',)))} from {pretrain_path}")
    else:
        pretrained = "none"
        if spec.init_from_data is not None and not args.resume:
            spec.init_from_data(model, train_set)
        if runtime.is_main:
            print(f"no pretrained checkpoint ({rel(default_pretrain)} absent or --pretrain none): training from scratch")

    variant = spec.variant(options)
    item = args.item or f"{spec.name}-{'pre' if pretrain_path else 'scratch'}" + (f"-{variant}" if variant else "")
    meta = {"kind": f"{spec.name}-classifier", "config": cfg.to_dict(), "options": options,
            "vocab": {"fingerprint": vocab.fingerprint, "size": len(vocab)}, "pretrained": pretrained}
    world_min = runtime.world_size * settings.grad_accum
    trainer = Trainer(model, train_set,
                      batch_plan=lambda epoch: length_bucketed_batches(train_set.lengths, args.batch, args.seed, epoch,
                                                                       min_size=world_min),
                      settings=settings, runtime=runtime, checkpoint_path=state_path,
                      checkpoint_meta={**meta, "args": vars(args)}, desc="train")
    eval_batch = max(args.batch, EVAL_BATCH)  # no gradients: larger batches of sorted lengths run faster
    dev_batches = sorted_batches(dev_set.lengths, eval_batch)

    def on_epoch_end(epoch: int, train_metrics: dict[str, float]) -> dict[str, Any]:
        dev = evaluate(model, dev_set, eval_batch, runtime, dev_batches)
        best = max((r["dev_acc"] for r in trainer.history), default=-1.0)
        if dev["acc"] > best and runtime.is_main:
            save_checkpoint(save, {**meta, "model": model.state_dict(), "epoch": epoch + 1, "dev_acc": dev["acc"]},
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
        state = load_checkpoint(state_path)
        check_compatible(state, state_path, cfg.to_dict(), vocab.fingerprint, args.vocab)
        trainer.resume(state)
    tracker = outputs.enter_context(open_tracker(args, save, meta)) if runtime.is_main else None
    trainer.tracker = tracker
    history = trainer.fit()
    best = max(history, key=lambda r: r["dev_acc"])
    # The test set is scored once, with the epoch dev picked (rank 0 wrote it before fit's last collective).
    model.load_state_dict(load_checkpoint(save, fallback=False)["model"])
    test = evaluate(model, test_set, eval_batch, runtime, sorted_batches(test_set.lengths, eval_batch))
    if runtime.is_main:
        print(f"test (epoch {best['epoch']}): loss {test['loss']:.4f} acc {test['acc']:.4f}")
        if tracker is not None:
            tracker.log({"test/loss": test["loss"], "test/acc": test["acc"]}, trainer.progress.global_step)
    row = {"item": item, "pretrain": pretrained, "variant": variant or "-", "epochs": len(history),
           "best_epoch": best["epoch"], "train_reviews": len(train_set), "seed": args.seed,
           "dev_acc": round(best["dev_acc"], 4), "test_loss": round(test["loss"], 4), "test_acc": round(test["acc"], 4),
           "minutes": round(sum(r["time_s"] for r in history) / 60, 1),
           "device": runtime.device.type, "note": args.note}
    if runtime.is_main:
        runs = Path(args.results).parent / "runs"
        runs.mkdir(exist_ok=True)
        write_csv(runs / f"{item}.csv", history)
        write_csv(runs / f"{item}.steps.csv", trainer.step_log)
        append_result(args.results, row)
        print(f"best epoch {best['epoch']} (dev acc {best['dev_acc']:.4f}): test acc {test['acc']:.4f}; "
              f"model saved to {save}; results in {args.results}")
        print("command: " + " ".join(shlex.quote(a) for a in sys.argv))
        readme = Path(args.results).parent / "README.md"
        if readme.is_file():
            update_report(Path(args.results).parent)
    return row


# --- prediction ----------------------------------------------------------------------

def load_classifier(spec: FinetuneSpec, path: str, vocab: Vocab, vocab_path: str, runtime: Runtime) -> tuple[nn.Module, ModelConfig]:
    state = load_checkpoint(path, fallback=False)
    if state.get("kind") != f"{spec.name}-classifier":
        raise UserError(f"{path} is not a fine-tuned {spec.name} classifier (it is {state.get('kind')!r}); pass save_best.pth from train.py")
    cfg = ModelConfig(**state["config"])
    check_compatible(state, path, cfg.to_dict(), vocab.fingerprint, vocab_path)
    model = spec.build_model(cfg, state.get("options", {}))
    model.load_state_dict(state["model"])
    return model.to(runtime.device).eval(), cfg


@torch.no_grad()
def predict_texts(model: nn.Module, cfg: ModelConfig, vocab: Vocab, spec: FinetuneSpec, texts: list[str],
                  runtime: Runtime, batch_size: int = 64) -> list[tuple[int, float]]:
    """(label, probability of that label) for each text."""
    data = encode_reviews([{"document": t, "label": 0} for t in texts], vocab, spec.wrap, cfg.n_seq)
    out: list[tuple[int, float]] = [(0, 0.0)] * len(texts)
    for indices in sorted_batches(data.lengths, batch_size):
        batch = data.collate(indices)
        with runtime.autocast():
            logits = model.classify(batch["input_ids"].to(runtime.device), batch["attention_mask"].to(runtime.device))[0]
        probs = logits.float().softmax(-1).cpu()
        for i, p in zip(indices, probs):
            label = int(p.argmax())
            out[i] = (label, float(p[label]))
    return out


def predict_main(spec: FinetuneSpec) -> None:
    parser = make_parser(f"Classify movie reviews with a fine-tuned {spec.name.upper()} (1 = positive, 0 = negative).")
    parser.add_argument("texts", nargs="*", help="reviews to classify")
    parser.add_argument("--file", default=None, help="a text file with one review per line")
    parser.add_argument("--model", default=rel(spec.folder / "save_best.pth"), help="model from train.py")
    parser.add_argument("--vocab", default=rel(DEFAULT_VOCAB), help="SentencePiece model")
    parser.add_argument("--batch", type=positive_int, default=64, help="batch size")
    parser.add_argument("--gpu", type=int, default=None, help="GPU index (default: cuda:0 if present, else CPU)")
    args = parser.parse_args()

    def run() -> None:
        texts = list(args.texts)
        if args.file:
            texts += [line.rstrip("\n") for line in open(require_file(args.file, "review file", "check the path"), encoding="utf-8")]
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise UserError("no review given (pass reviews as arguments or --file FILE)")
        runtime = setup_runtime(args.gpu)
        vocab = load_vocab(args.vocab)
        model, cfg = load_classifier(spec, args.model, vocab, args.vocab, runtime)
        for text, (label, prob) in zip(texts, predict_texts(model, cfg, vocab, spec, texts, runtime, args.batch)):
            print(f"{label}\t{prob:.3f}\t{'positive' if label else 'negative'}\t{text}")

    run_main(run)
