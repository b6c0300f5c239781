"""Fine-tune SpanBERT on NSMC (run pretrain.py first, or it trains from scratch and says so).

    python train.py --logit cls      # or mean / max

What is special to SpanBERT: [CLS] review [SEP] (one segment, as in pretraining), and which vector the
classifier reads (--logit: model.py's SpanBertForSequenceClassification). The loop is `main()` below; common/finetune.py reads
and splits NSMC, loads the pretrained weights and writes the report.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bert.train import wrap  # [CLS] review [SEP], as BERT
from common.checkpoint import load_compatible
from common.cli import make_parser, run_main
from common.config import ModelConfig
from common.device import seed_everything, setup_runtime
from common.evaluation import prefixed
from common.finetune import (add_finetuning_args, batch_plan, check_inputs, classifier_meta, encode_splits,
                             locked_outputs, report, save_best, score_best_epoch, scorer, start_weights)
from common.tracking import open_tracker
from common.trainer import Trainer
from spanbert.model import LOGIT_CHOICES, SpanBertForSequenceClassification

FOLDER = Path(__file__).resolve().parent


def classifier(cfg: ModelConfig, options: dict[str, Any]) -> SpanBertForSequenceClassification:
    """The classifier of train.py's options (stored in its checkpoints; one missing takes its default)."""
    return SpanBertForSequenceClassification(cfg, logit=options.get("logit", "cls"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser("Fine-tune SpanBERT on NSMC; pick the best epoch on a dev split, report test accuracy.")
    add_finetuning_args(parser, FOLDER, batch=128, epoch=5, lr=5e-5)
    parser.add_argument("--logit", choices=LOGIT_CHOICES, default="cls",
                        help="classifier input: the pooled [CLS] state, or the mean / max of the real tokens' states")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> dict[str, Any]:
    inputs = check_inputs(args)
    runtime = setup_runtime(args.gpu)
    with locked_outputs(args, inputs, runtime) as outputs:
        seed_everything(args.seed)
        train_set, dev_set, test_set = encode_splits(inputs, wrap, runtime)
        options = {"logit": args.logit}
        model = classifier(inputs.cfg, options)
        pretrained = start_weights(model, args, inputs, FOLDER, runtime)
        meta = classifier_meta("spanbert", inputs, options, pretrained)
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
        return report(args, "spanbert", inputs, trainer, args.logit, pretrained, test)


if __name__ == "__main__":
    arguments = parse_args()
    run_main(lambda: main(arguments))
