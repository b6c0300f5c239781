"""The training plots of a model folder's README, drawn from the logged CSV files.

- `plot_runs`: img/loss.svg and img/accuracy.svg, one colour per fine-tuning run,
  against training progress in epochs (fractional: the step log's points). Train
  is a solid line (the loss of every `--log_every` steps, else per epoch), dev a
  dashed line with dots (epoch ends, and every `--eval_every` steps when the run
  asked for it). The test set is scored once per run, on the best-dev epoch: it is
  in the results table, not in these curves.
- `plot_pretraining`: held-out loss against tokens seen, one line per pretraining
  run (the points `pretrain.py --eval_every` logs; a run logged before the step
  log existed shows its end-of-run held-out loss as a single point).

Legends sit outside the axes, and files carry no timestamp, so reruns diff cleanly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.io import atomic_path

STEPS_SUFFIX = ".steps.csv"  # runs/<item>.steps.csv beside runs/<item>.csv; <save>.steps.csv beside a checkpoint


def pyplot():
    """matplotlib's pyplot, headless, writing SVGs whose ids do not change from one run to the next
    (a redrawn plot of the same logs is the same file: no diff in git)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "kolm"
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    legends = [a for ax in fig.axes for a in ax.get_children() if type(a).__name__ == "Legend"]
    with atomic_path(target) as tmp:  # the legends right of the axes are inside the saved area
        fig.savefig(tmp, format="svg", metadata={"Date": None}, bbox_inches="tight", bbox_extra_artists=legends)
    return target


def _floats(rows: list[dict[str, str]], x: str, y: str) -> list[tuple[float, float]]:
    return [(float(r[x]), float(r[y])) for r in rows if r.get(x) not in (None, "") and r.get(y) not in (None, "")]


def _style_legend(ax: Any, styles: list[tuple[str, str, str]], runs: list[tuple[str, str]]) -> None:
    """Two legends right of the axes: what each colour is (runs), what each line style is (train / dev)."""
    from matplotlib.lines import Line2D

    run_legend = ax.legend([Line2D([], [], color=c, lw=2) for _, c in runs], [name for name, _ in runs],
                           title="run", fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                           frameon=False)
    ax.add_artist(run_legend)
    ax.legend([Line2D([], [], color="0.3", ls=ls, marker=m, ms=4) for _, ls, m in styles], [n for n, _, _ in styles],
              fontsize=7, loc="lower left", bbox_to_anchor=(1.02, 0.0), frameon=False)


def plot_runs(run_logs: list[Path], img_dir: Path) -> list[Path]:
    """img/loss.svg and img/accuracy.svg from runs/<item>.csv (per epoch) and runs/<item>.steps.csv."""
    from matplotlib.ticker import MaxNLocator

    from common.io import read_csv

    plt = pyplot()
    logs = sorted(p for p in run_logs if not p.name.endswith(STEPS_SUFFIX))
    runs = [(log.stem, f"C{i % 10}") for i, log in enumerate(logs)]
    written = []
    for name, ylabel in (("loss", "loss"), ("accuracy", "accuracy")):
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        longest = 1.0
        for log, (_, color) in zip(logs, runs):
            epochs = read_csv(log)
            steps = read_csv(log.with_name(log.stem + STEPS_SUFFIX))
            key = "loss" if name == "loss" else "acc"
            train = _floats(steps, "epoch", "train_loss") if key == "loss" and steps else _floats(epochs, "epoch", f"train_{key}")
            dev = sorted(set(_floats(steps, "epoch", f"dev_{key}")) | set(_floats(epochs, "epoch", f"dev_{key}")))
            if train:
                ax.plot(*zip(*train), "-", color=color, lw=1.2, marker="" if len(train) > 12 else "o", ms=3)
            if dev:
                ax.plot(*zip(*dev), "--", color=color, lw=1.2, marker="o", ms=4)
            longest = max([longest, *(x for x, _ in train + dev)])
        ax.set_xlim(0, longest * 1.03)
        if longest <= 30:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epochs of training (fractions: the step log's points)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if runs:
            _style_legend(ax, [("train", "-", ""), ("dev", "--", "o")], runs)
        else:
            ax.text(0.5, 0.5, "no runs logged yet", ha="center", va="center", transform=ax.transAxes, color="0.4")
        written.append(_save(fig, img_dir / f"{name}.svg"))
        plt.close(fig)
    return written


def pretraining_points(log: Path, tokens_per_step: int = 0) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(held-out points, train-loss points) against tokens seen, from `<save>.steps.csv`, or from the
    end-of-epoch rows of `<save>.log.json` (tokens = steps x batch x n_seq, or x `tokens_per_step` for a
    log older than those columns) for a run logged without a step log."""
    from common.io import read_csv

    steps = read_csv(log) if log.name.endswith(STEPS_SUFFIX) else []
    if steps:
        return _floats(steps, "tokens", "heldout_loss"), _floats(steps, "tokens", "train_loss")
    rows = json.loads(log.read_text(encoding="utf-8")) if log.suffix == ".json" else []
    points = []
    for r in rows:
        per_step = int(r["batch"]) * int(r["n_seq"]) if "batch" in r and "n_seq" in r else tokens_per_step
        if "heldout_loss" in r and per_step:
            points.append((float(r["step"]) * per_step, float(r["heldout_loss"])))
    return points, []


def plot_pretraining(logs: dict[str, Path], target: Path, title: str = "", tokens_per_step: int = 0) -> Path:
    """Held-out loss (dots, solid) and training loss (thin, faint) against tokens seen, one colour per run."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    runs = []
    for i, (label, log) in enumerate(logs.items()):
        color = f"C{i % 10}"
        heldout, train = pretraining_points(log, tokens_per_step)
        if train:
            ax.plot([x / 1e6 for x, _ in train], [y for _, y in train], "-", color=color, lw=0.8, alpha=0.35)
        if heldout:
            ax.plot([x / 1e6 for x, _ in heldout], [y for _, y in heldout], "-", color=color, lw=1.5, marker="o", ms=4)
        if train or heldout:
            runs.append((label, color))
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("loss (nats per token)")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    if runs:
        _style_legend(ax, [("held-out", "-", "o"), ("train (every --log_every steps)", "-", "")], runs)
    else:
        ax.text(0.5, 0.5, "no pretraining run logged yet", ha="center", va="center", transform=ax.transAxes, color="0.4")
    fig_path = _save(fig, target)
    plt.close(fig)
    return fig_path
