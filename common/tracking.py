"""Optional experiment logging to TensorBoard or Weights & Biases (`--log`).

The CSV / JSON logs stay the source of every README table and plot; a tracker
is a live view of the same numbers for those who use one: the training loss,
learning rate and tokens/s every `--log_every` steps, and each epoch's row
(train, dev or held-out metrics) at the step it ends on. Only rank 0 logs.
Both packages are optional: asking for one that is not installed is a one-line
error before any training starts. W&B runs offline (files under `--log_dir`,
`wandb sync` uploads them later) unless WANDB_MODE says otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.cli import UserError, positive_int

TRACKERS = ("none", "tensorboard", "wandb")


def add_tracking_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", choices=TRACKERS, default="none",
                        help="also log to TensorBoard or Weights & Biases (optional packages)")
    parser.add_argument("--log_dir", default=None,
                        help="where the tracker writes (default: logs/<name of --save> beside --save)")
    parser.add_argument("--log_every", type=positive_int, default=10, help="steps between logged training points")


class Tracker:
    """Scalars by name at a step; the two backends below implement it."""

    def log(self, scalars: dict[str, Any], step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def numeric(values: dict[str, Any]) -> dict[str, float]:
    """The finite numbers among `values` (a log row also holds strings and counts of nothing)."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoardTracker(Tracker):
    def __init__(self, log_dir: Path, config: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(str(log_dir))
        self.writer.add_text("command", " ".join(sys.argv))
        self.writer.add_text("options", "\n".join(f"    {k} = {v}" for k, v in sorted(config.items())))

    def log(self, scalars: dict[str, Any], step: int) -> None:
        for name, value in numeric(scalars).items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, log_dir: Path, config: dict[str, Any], name: str):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "kolm"), name=name, dir=str(log_dir),
                              config=config, mode=os.environ.get("WANDB_MODE", "offline"))

    def log(self, scalars: dict[str, Any], step: int) -> None:
        self.run.log(numeric(scalars), step=step)

    def close(self) -> None:
        self.run.finish()


def tracker_dir(args: argparse.Namespace, save: Path) -> Path:
    return Path(args.log_dir) if args.log_dir else save.parent / "logs" / save.stem


def check_tracker(kind: str) -> None:
    """Fail before training when the chosen tracker's package is missing."""
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(kind)
    if package is None:
        return
    try:
        __import__(package)
    except ImportError:
        raise UserError(f"--log {kind} needs the {package} package: pip install {package} "
                        f"(or drop --log)") from None


@contextlib.contextmanager
def open_tracker(args: argparse.Namespace, save: Path, meta: dict[str, Any]) -> Iterator[Tracker | None]:
    """The tracker `--log` asks for (None for 'none'), closed at the end of the block."""
    if args.log == "none":
        yield None
        return
    check_tracker(args.log)
    log_dir = tracker_dir(args, save)
    log_dir.mkdir(parents=True, exist_ok=True)
    config = {**{k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool)) or v is None},
              **{f"model.{k}": v for k, v in meta.get("config", {}).items()}}
    tracker: Tracker = (TensorBoardTracker(log_dir, config) if args.log == "tensorboard"
                        else WandbTracker(log_dir, config, name=save.stem))
    try:
        yield tracker
    finally:
        tracker.close()
