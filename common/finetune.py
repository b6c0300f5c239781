"""The mechanics every train.py calls: its shared flags, NSMC read and split (the dev set that picks the
epoch, never test), the reviews encoded with the model's special tokens, the pretrained weights loaded
strictly, the best-dev checkpoint, test scored once, and the run's report. The loop itself is in each
model's train.py; what a model adds (GPT's --lm, SpanBERT's --logit) is declared there. At the end:
predict.py's classifier loading and classification."""
from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.checkpoint import (check_compatible, load_checkpoint, load_compatible, module_state, prev_path,
                               save_checkpoint)
from common.cli import (NSMC_TEST_JSON, NSMC_TRAIN_JSON, REPO_ROOT, UserError, add_gpu_option, add_vocab_option,
                        make_parser, non_negative_int, positive_int, rel, require_file, require_output_dir, run_main)
from common.config import ModelConfig, load_config
from common.device import Runtime, setup_runtime
from common.evaluation import evaluate
from common.io import exclusive_output
from common.nsmc import NSMC_DEV_SIZE, ReviewDataset, encode_reviews, labelled_subset, nsmc_split, read_nsmc_json
from common.results import record_run, result_row
from common.tracking import check_tracker
from common.trainer import (Trainer, TrainSettings, add_common_training_args, length_bucketed_batches,
                            settings_from_args, sorted_batches)
from common.vocab import Vocab, load_vocab

EVAL_BATCH = 256  # the smallest batch dev and test are scored in


def add_finetuning_args(parser: argparse.ArgumentParser, folder: Path, batch: int, epoch: int, lr: float) -> None:
    """The flags every train.py takes: the NSMC files, the pretrained checkpoint, the training options
    shared with pretrain.py (common/trainer.py), the label budget and the results table."""
    parser.add_argument("--train", default=rel(NSMC_TRAIN_JSON), help="NSMC train file (from data/nsmc.py)")
    parser.add_argument("--test", default=rel(NSMC_TEST_JSON), help="NSMC test file (from data/nsmc.py)")
    parser.add_argument("--pretrain", default=None,
                        help=f"pretrained checkpoint (default: {rel(folder / 'save_pretrain.pth')} if it exists, "
                             f"else training starts from scratch); 'none' forces from scratch")
    add_common_training_args(parser, folder, "save_best.pth", batch, epoch, lr)
    parser.add_argument("--dev_size", type=non_negative_int, default=0,
                        help=f"reviews of the train file held out as the dev set that picks the epoch, the same "
                             f"for every run (0: {NSMC_DEV_SIZE:,}, or 5%% of a smaller file)")
    parser.add_argument("--train_limit", type=non_negative_int, default=0,
                        help="labelled reviews to train on: a random N of the train file's non-dev reviews, drawn "
                             "with --seed (0: all of them)")
    parser.add_argument("--item", default=None, help="name of the run in the results table (default: derived)")
    parser.add_argument("--results", default=rel(folder / "results.csv"), help="results table to append to")
    parser.add_argument("--note", default="", help="free text for the results table (e.g. the budget)")
    parser.add_argument("--dev_per_epoch", type=positive_int, default=1,
                        help="times dev is scored per epoch, evenly spaced, for the curves of img/ (the best epoch "
                             "is still picked at epoch ends; 1: epoch ends only)")


@dataclass
class FinetuningInputs:
    """What a fine-tuning run reads, checked before anything runs."""
    settings: TrainSettings
    vocab: Vocab
    cfg: ModelConfig
    train_rows: list[dict]  # the labelled reviews trained on (--train_limit of the non-dev ones)
    dev_rows: list[dict]
    test_rows: list[dict]
    save: Path  # the best-dev model
    state_path: Path  # the resumable training state, beside it


def check_inputs(args: argparse.Namespace) -> FinetuningInputs:
    """The options, vocab, config and NSMC files of `python train.py`, and the train / dev split."""
    settings = settings_from_args(args)
    check_tracker(args.log)
    vocab = load_vocab(args.vocab)
    cfg = load_config(args.config).with_vocab(len(vocab))
    train_rows = read_nsmc_json(args.train)
    test_rows = read_nsmc_json(args.test)
    pool, dev_idx = nsmc_split(len(train_rows), args.dev_size or None)
    train_idx = labelled_subset(pool, args.train_limit, args.seed)
    save = require_output_dir(args.save)
    require_output_dir(args.results)  # checked now, not after hours of training
    return FinetuningInputs(settings, vocab, cfg, [train_rows[i] for i in train_idx], [train_rows[i] for i in dev_idx],
                            test_rows, save, save.with_suffix(".state.pth"))


@contextlib.contextmanager
def locked_outputs(args: argparse.Namespace, inputs: FinetuningInputs, runtime: Runtime) -> Iterator[contextlib.ExitStack]:
    """Hold the best model and its training state for this run (rank 0 alone writes), and settle --resume
    (`args.resume` becomes True or False); yields the stack the run's tracker joins."""
    state_path = inputs.state_path
    has_state = state_path.is_file() or prev_path(state_path).is_file()
    if args.resume == "yes" and not has_state:
        raise UserError(f"nothing to resume: {state_path} not found (run without --resume)")
    args.resume = args.resume == "yes" or (args.resume == "auto" and has_state)
    with contextlib.ExitStack() as outputs:
        if runtime.is_main:
            for leftover in outputs.enter_context(exclusive_output(inputs.save, companions=(state_path,))):
                print(f"removed {leftover} (left by a run killed while saving)")
        yield outputs


def encode_splits(inputs: FinetuningInputs, wrap: Callable[[list[int], int], list[int]],
                  runtime: Runtime) -> tuple[ReviewDataset, ReviewDataset, ReviewDataset]:
    """(train, dev, test) reviews as ids, each wrapped with the model's special tokens by `wrap`."""
    t0 = time.perf_counter()
    train_set, dev_set, test_set = (encode_reviews(rows, inputs.vocab, wrap, inputs.cfg.n_seq)
                                    for rows in (inputs.train_rows, inputs.dev_rows, inputs.test_rows))
    if runtime.is_main:
        print(f"encoded {len(train_set):,} train / {len(dev_set):,} dev / {len(test_set):,} test reviews "
              f"in {time.perf_counter() - t0:.1f}s")
    return train_set, dev_set, test_set


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


def start_weights(model: nn.Module, args: argparse.Namespace, inputs: FinetuningInputs, folder: Path,
                  runtime: Runtime) -> str:
    """Load --pretrain (by default the folder's save_pretrain.pth when there is one), or start from scratch;
    returns the results table's Pretrain label ("none" from scratch)."""
    default_pretrain = folder / "save_pretrain.pth"
    pretrain_path = Path(args.pretrain) if args.pretrain not in (None, "none") else None
    if args.pretrain is None and default_pretrain.is_file():
        pretrain_path = default_pretrain
    if pretrain_path is None:
        if runtime.is_main:
            print(f"no pretrained checkpoint ({rel(default_pretrain)} absent or --pretrain none): training from scratch")
        return "none"
    require_file(pretrain_path, "pretrained checkpoint", "run pretrain.py first, or pass --pretrain none")
    pretrained = load_pretrained(model, pretrain_path, inputs.cfg, inputs.vocab, args.vocab)
    if runtime.is_main:
        print(f"loaded pretrained {' + '.join(getattr(model, 'pretrained_modules', ('trunk',)))} from {pretrain_path}")
    return pretrained


def classifier_meta(name: str, inputs: FinetuningInputs, options: dict[str, Any], pretrained: str) -> dict[str, Any]:
    """What the best model's and the state's checkpoints carry besides the weights: enough to rebuild the
    classifier (its config and train.py's model options) and to check the vocab."""
    return {"kind": f"{name}-classifier", "config": inputs.cfg.to_dict(), "options": options,
            "vocab": {"fingerprint": inputs.vocab.fingerprint, "size": len(inputs.vocab)}, "pretrained": pretrained}


def batch_plan(train_set: ReviewDataset, args: argparse.Namespace, runtime: Runtime) -> Callable[[int], list[np.ndarray]]:
    """Epoch -> batches of reviews of similar length (little padding), seeded by --seed and the epoch."""
    world_min = runtime.world_size * args.grad_accum
    return lambda epoch: length_bucketed_batches(train_set.lengths, args.batch, args.seed, epoch, min_size=world_min)


def scorer(model: nn.Module, dataset: ReviewDataset, args: argparse.Namespace,
           runtime: Runtime) -> Callable[[], dict[str, float]]:
    """A function that scores `dataset` (loss, acc, all ranks) in batches of sorted lengths, without gradients."""
    eval_batch = max(args.batch, EVAL_BATCH)  # no gradients: larger batches of sorted lengths run faster
    batches = sorted_batches(dataset.lengths, eval_batch)
    return lambda: evaluate(model, dataset, eval_batch, runtime, batches)


def save_best(path: Path, model: nn.Module, meta: dict[str, Any], epoch: int, dev_acc: float, runtime: Runtime) -> None:
    """The classifier as it is now, as the run's best model (rank 0)."""
    if runtime.is_main:
        save_checkpoint(path, {**meta, "model": model.state_dict(), "epoch": epoch, "dev_acc": dev_acc},
                        keep_previous=False)


def score_best_epoch(trainer: Trainer, best: Path, score: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Test, scored once by `score` with the weights of the epoch dev picked (`best`: rank 0 wrote it before
    the loop's last collective); printed and sent to the tracker."""
    trainer.model.load_state_dict(load_checkpoint(best, fallback=False)["model"])
    test = score()
    if trainer.runtime.is_main:
        print(f"test (epoch {max(trainer.history, key=lambda r: r['dev_acc'])['epoch']}): "
              f"loss {test['loss']:.4f} acc {test['acc']:.4f}")
        if trainer.tracker is not None:
            trainer.tracker.log({"test/loss": test["loss"], "test/acc": test["acc"]}, trainer.progress.global_step)
    return test


def report(args: argparse.Namespace, name: str, inputs: FinetuningInputs, trainer: Trainer, variant: str,
           pretrained: str, test: dict[str, float]) -> dict[str, Any]:
    """The run's results row, its logs in runs/ and the README redrawn (rank 0); returns the row."""
    item = args.item or f"{name}-{'scratch' if pretrained == 'none' else 'pre'}" + (f"-{variant}" if variant else "")
    row = result_row(item, pretrained, variant, trainer.history, test, len(inputs.train_rows), args.seed,
                     trainer.runtime.device.type, args.note)
    if trainer.runtime.is_main:
        record_run(args.results, row, trainer.history, trainer.step_log, inputs.save)
    return row


# --- prediction: a fine-tuned classifier loaded with its options, reviews classified (predict.py) -----------

@dataclass
class Classifier:
    """A model's classifier, as its train.py defines it."""
    name: str  # "gpt", "bert", "spanbert": its folder
    wrap: Callable[[list[int], int], list[int]]  # (content ids, n_seq) -> ids with the model's special tokens
    build: Callable[[ModelConfig, dict[str, Any]], nn.Module]  # (config, train.py's options) -> the classifier


def load_classifier(spec: Classifier, path: str, vocab: Vocab, vocab_path: str, runtime: Runtime) -> tuple[nn.Module, ModelConfig]:
    """The classifier train.py saved at `path`, rebuilt with the options it was trained with, ready to classify."""
    state = load_checkpoint(path, fallback=False)
    if state.get("kind") != f"{spec.name}-classifier":
        raise UserError(f"{path} is not a fine-tuned {spec.name} classifier (it is {state.get('kind')!r}); pass save_best.pth from train.py")
    cfg = ModelConfig(**state["config"])
    check_compatible(state, path, cfg.to_dict(), vocab.fingerprint, vocab_path)
    model = spec.build(cfg, state.get("options", {}))  # train.py's options, stored as a dict
    model.load_state_dict(state["model"])
    return model.to(runtime.device).eval(), cfg


@torch.no_grad()
def predict_texts(model: nn.Module, cfg: ModelConfig, vocab: Vocab, spec: Classifier, texts: list[str],
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


def predict_main(spec: Classifier) -> None:
    parser = make_parser(f"Classify movie reviews with a fine-tuned {spec.name.upper()} (1 = positive, 0 = negative).")
    parser.add_argument("texts", nargs="*", help="reviews to classify")
    parser.add_argument("--file", default=None, help="a text file with one review per line")
    parser.add_argument("--model", default=rel(REPO_ROOT / spec.name / "save_best.pth"), help="model from train.py")
    add_vocab_option(parser)
    parser.add_argument("--batch", type=positive_int, default=64, help="batch size")
    add_gpu_option(parser)
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
