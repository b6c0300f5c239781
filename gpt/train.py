"""Fine-tune GPT on NSMC (run pretrain.py first, or it trains from scratch and says so).

    python train.py               # the classifier on the last token, from save_pretrain.pth
    python train.py --lm 0.5      # + 0.5 x the auxiliary LM loss on the review's tokens

What is special to GPT: [BOS] review [EOS], the classifier on the [EOS] state, and the auxiliary LM loss
(--lm, GPT-1's L3 = L2 + lambda * L1: model.py's GPTForSequenceClassification). The loop is `main()` below;
common/finetune.py reads and splits NSMC, loads the pretrained weights and writes the report.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from common.checkpoint import load_compatible
from common.cli import make_parser, non_negative_float, run_main
from common.config import ModelConfig
from common.device import seed_everything, setup_runtime
from common.evaluation import prefixed
from common.finetune import (add_finetuning_args, batch_plan, check_inputs, classifier_meta, encode_splits,
                             locked_outputs, report, save_best, score_best_epoch, scorer, start_weights)
from common.nsmc import ReviewDataset
from common.token_store import token_counts
from common.tracking import open_tracker
from common.trainer import Trainer
from common.vocab import BOS_ID, EOS_ID
from gpt.model import GPTForSequenceClassification

FOLDER = Path(__file__).resolve().parent


def wrap(ids: list[int], n_seq: int) -> list[int]:
    """[BOS] review [EOS], the review cut so the whole fits n_seq; [EOS] is the token classified."""
    return [BOS_ID, *ids[: n_seq - 2], EOS_ID]


def classifier(cfg: ModelConfig, options: dict[str, Any]) -> GPTForSequenceClassification:
    """The classifier of train.py's options (stored in its checkpoints; one missing takes its default)."""
    return GPTForSequenceClassification(cfg, lm_coef=options.get("lm", 0.0))


def init_lm_bias(model: GPTForSequenceClassification, train_set: ReviewDataset) -> None:
    """From scratch with --lm > 0: start the LM bias at the log unigram distribution of what the auxiliary
    loss predicts (every token of the training reviews after [BOS]), as pretrain.py does for its corpus."""
    if model.lm_head is not None:
        targets = np.concatenate([ids[1:] for ids in train_set.ids])
        model.lm_head.init_bias_to_log_prior(token_counts(targets, model.cfg.n_vocab))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser("Fine-tune GPT on NSMC; pick the best epoch on a dev split, report test accuracy.")
    add_finetuning_args(parser, FOLDER, batch=128, epoch=5, lr=1e-4)
    parser.add_argument("--lm", type=non_negative_float, default=0.0,
                        help="weight of the auxiliary LM loss: loss = loss_cls + lm * loss_lm (0 skips the LM head)")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> dict[str, Any]:
    inputs = check_inputs(args)
    runtime = setup_runtime(args.gpu)
    with locked_outputs(args, inputs, runtime) as outputs:
        seed_everything(args.seed)
        train_set, dev_set, test_set = encode_splits(inputs, wrap, runtime)
        options = {"lm": args.lm}
        model = classifier(inputs.cfg, options)
        pretrained = start_weights(model, args, inputs, FOLDER, runtime)
        if pretrained == "none" and not args.resume:  # a resumed run restores these weights instead
            init_lm_bias(model, train_set)
        meta = classifier_meta("gpt", inputs, options, pretrained)
        plan = batch_plan(train_set, args, runtime)
        trainer = Trainer(model, inputs.settings, runtime, len(plan(0)), inputs.state_path, {**meta, "args": vars(args)})
        if args.resume:
            trainer.resume(load_compatible(inputs.state_path, meta["config"], inputs.vocab.fingerprint, args.vocab))
        if runtime.is_main:
            trainer.tracker = outputs.enter_context(open_tracker(args, inputs.save, meta))
        score_dev = scorer(model, dev_set, args, runtime)
        dev_every = trainer.steps_per_epoch // args.dev_per_epoch if args.dev_per_epoch > 1 else 0

        for epoch in trainer.epochs():
            for batch in trainer.batches(train_set, plan(epoch)):  # collated ahead by a thread
                trainer.step(batch)
                dev = {}
                if trainer.due(dev_every) and not trainer.epoch_finished:  # (an epoch end scores dev below)
                    dev = prefixed("dev_", score_dev())
                trainer.log_step(args.log_every, dev)
            train, dev = trainer.epoch_metrics(), score_dev()
            best = dev["acc"] > max((r["dev_acc"] for r in trainer.history), default=-1.0)
            if best:
                save_best(inputs.save, model, meta, epoch + 1, dev["acc"], runtime)
            if runtime.is_main:
                print(f"epoch {epoch + 1}: train loss {train['loss']:.4f} acc {train['acc']:.4f} | dev loss "
                      f"{dev['loss']:.4f} acc {dev['acc']:.4f}" + (" (best dev so far: saved)" if best else ""))
            trainer.end_epoch(train, {"dev_loss": dev["loss"], "dev_acc": dev["acc"]})

        test = score_best_epoch(trainer, inputs.save, scorer(model, test_set, args, runtime))  # test, once
        return report(args, "gpt", inputs, trainer, f"lm={args.lm:g}", pretrained, test)


if __name__ == "__main__":
    arguments = parse_args()
    run_main(lambda: main(arguments))
