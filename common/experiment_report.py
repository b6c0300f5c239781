"""What the experiment is (its arms, budget, paths and ordered plan of runs), and its README section and
plots, rebuilt from its logs alone (results.csv, runs/, the
pretraining logs): the pretraining table, the label curve with seeds, the gains over scratch paired by
seed, and the tiny-budget recipe table."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.cli import rel
from common.io import atomic_path, read_csv
from common.nsmc import NSMC_DEV_SIZE
from common.results import update_readme

# --- what the experiment is: its arms, budget, paths, and the ordered plan of runs --------------------------

SCRATCH = "scratch"
TFIDF = "tfidf"
TAKEN_OVER = "(the same model)"  # the end of the note of a row taken over from the scratch twin's log


@dataclass
class Arm:
    """One pretraining: a name for the tables and the text its store holds."""
    name: str  # e.g. "kowiki+reviews"
    kowiki: bool  # the Wikipedia articles (kowiki.json)
    reviews: bool  # the NSMC train split's review text (data.py --extra; dev left out)

    @property
    def slug(self) -> str:
        return self.name.replace("+", "_")


@dataclass
class Experiment:
    folder: Path  # the model folder (data.py, pretrain.py, train.py live there)
    variants: dict[str, list[str]]  # fine-tuning variant -> train.py options; the first is the plain one
    # the pretrainings, in priority order (the first is run against scratch first): by default the task's own
    # text (task-adaptive pretraining, Gururangan et al. 2020), the Wikipedia slice (the papers' kind of text),
    # and the two together (the review text in front of the articles)
    arms: list[Arm] = field(default_factory=lambda: [Arm("reviews", kowiki=False, reviews=True),
                                                     Arm("kowiki", kowiki=True, reviews=False),
                                                     Arm("kowiki+reviews", kowiki=True, reviews=True)])
    # variants run only with the first arm (e.g. GPT's auxiliary LM loss), besides the plain one
    first_arm_only: list[str] = field(default_factory=list)
    recipe_arm: str | None = None  # the arm whose store the tiny-budget recipe table pretrains on (None: no table)
    # the held-out accuracy columns of the pretraining table: (heading, head) -> the log's heldout_<head>_acc
    # ("" for a model with one head: heldout_acc); a head that logs a share of positives `<head>_next` (BERT's
    # NSP) shows beside its accuracy the accuracy of a constant guess, max(next, 1 - next)
    heldout_columns: list[tuple[str, str]] = field(default_factory=lambda: [("Held-out acc", "")])
    loss_is_lm: bool = False  # the held-out loss is one language model's: shown with its perplexity
    defaults: dict[str, object] = field(default_factory=dict)  # experiment.py's option defaults for this model
    # other models' experiments whose pretrained arms the label curve draws beside this one's (label, experiment),
    # read from their default logs (<folder>/experiment/results.csv): e.g. the same encoder pretrained otherwise
    beside: list[tuple[str, Experiment]] = field(default_factory=list)
    # an experiment whose scratch runs are this one's, number for number: the same classifier, initialized from
    # the same seed, fine-tuned by the same flow (one encoder's classifier in two model folders). Its scratch rows
    # logged at the same budget and config are taken over instead of run again; the missing ones run here.
    scratch_twin: Experiment | None = None
    # the model config of every run, relative to the folder: the encoders' experiments use
    # experiment/config.json (config_half.json with rotary attention, see bert/README.md)
    config: str = "config_half.json"

    @property
    def twin_out(self) -> str:
        """Where the scratch twin logs, as this folder reaches it (`../bert/experiment`)."""
        return Path(os.path.relpath(self.scratch_twin.default_out, self.folder)).as_posix()

    def taken_over(self, row: dict[str, str]) -> bool:
        """Whether a results row is the scratch twin's run, taken over (its note says so)."""
        return self.scratch_twin is not None and row.get("note", "").endswith(TAKEN_OVER)

    @property
    def default_out(self) -> Path:
        """Where experiment.py writes its logs unless told otherwise (--out)."""
        return self.folder / "experiment"

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)


@dataclass
class Paths:
    """Where the experiment reads and writes (the options of experiment.py; tests point them at the sample)."""
    out: Path  # results.csv, runs/, the pretraining checkpoints and logs
    stores: Path  # the token stores data.py writes
    kowiki: Path
    train: Path
    test: Path
    vocab: Path
    config: Path
    readme: Path  # the README whose experiment section is redrawn (img/label_curve.svg beside it)

    def checkpoint(self, arm: Arm) -> Path:
        return self.out / f"save_pretrain_{arm.slug}.pth"

    def log(self, arm: Arm) -> Path:
        return self.checkpoint(arm).with_suffix(".log.json")


@dataclass
class Budget:
    """The one budget every arm gets (the options of experiment.py)."""
    pretrain_steps: int
    pretrain_batch: int
    n_seq: int
    pretrain_lr: float
    pretrain_warmup: int
    dropout: float
    beta2: float
    sizes: list[int]  # labelled reviews along the curve (0: all)
    seeds: int  # seeds at sizes <= seeded_up_to
    seeded_up_to: int
    train_lr: float
    train_batch: int
    compile: bool
    gpu: int | None
    recipe_tokens: int = 1_638_400  # tokens of each row of the tiny-budget recipe table (400 x 32 x 128)

    @property
    def pretrain_tokens(self) -> int:
        return self.pretrain_steps * self.pretrain_batch * self.n_seq

    def epochs(self, size: int) -> int:
        """Small label sets need many epochs, the full set one (the best is picked on dev)."""
        if size == 0 or size > 50_000:
            return 1
        return 3 if size > 10_000 else 6 if size > 2_000 else 12

    def batch(self, size: int) -> int:
        return 32 if 0 < size <= 2_000 else self.train_batch

    def seeds_at(self, size: int) -> list[int]:
        return list(range(1, self.seeds + 1)) if 0 < size <= self.seeded_up_to else [1]


@dataclass
class Run:
    item: str  # its row's name in results.csv
    arm: str  # SCRATCH, TFIDF or an Arm's name
    variant: str
    size: int
    seed: int


def size_label(size: int) -> str:
    return "all" if size == 0 else f"{size // 1000}k" if size % 1000 == 0 else str(size)


def item_name(arm: str, variant: str, size: int, seed: int | None) -> str:
    """`scratch-lm0-n1k-s2`; without a seed, the prefix every seed of that cell shares."""
    return "-".join(p for p in (arm, variant, f"n{size_label(size)}") if p) + (f"-s{seed}" if seed is not None else "-s")


def plan(exp: Experiment, budget: Budget) -> list[tuple[str, object]]:
    """The ordered steps: ("pretrain", Arm) and ("finetune", Run) / ("tfidf", Run)."""
    plain = next(iter(exp.variants))
    small = [s for s in budget.sizes if 0 < s <= budget.seeded_up_to]
    rest = [s for s in budget.sizes if s not in small]

    def runs(arm: str, variant: str, sizes: list[int]) -> list[tuple[str, object]]:
        kind = "tfidf" if arm == TFIDF else "finetune"
        return [(kind, Run(item_name(arm, variant, n, seed), arm, variant, n, seed))
                for n in sizes for seed in budget.seeds_at(n)]

    first = exp.arms[0].name
    steps: list[tuple[str, object]] = [("pretrain", exp.arms[0])]
    steps += runs(TFIDF, "", budget.sizes)
    steps += runs(SCRATCH, plain, small) + runs(first, plain, small)
    for n in rest:  # in pairs: a partial experiment never holds a scratch row without its pretrained twin
        steps += runs(SCRATCH, plain, [n]) + runs(first, plain, [n])
    for arm in exp.arms[1:]:  # arm by arm: a checkout without the weights pretrains each arm at most once again
        steps += [("pretrain", arm)] + runs(arm.name, plain, small) + runs(arm.name, plain, rest)
    for variant in exp.first_arm_only:
        steps += runs(first, variant, budget.sizes)
    if exp.recipe_arm is not None:
        steps += [("recipe", r) for r in RECIPE]
    return steps


def only_arms(steps: list[tuple[str, object]], exp: Experiment, arms: list[str]) -> list[tuple[str, object]]:
    """The plan's steps without the pretrained arms left out of `arms` (their pretraining, their runs and,
    for the recipe arm, the recipe rows); scratch and TF-IDF stay: the baselines every arm is read against."""
    unknown = sorted(set(arms) - {a.name for a in exp.arms})
    if unknown:
        raise ValueError(f"unknown arm(s) {', '.join(unknown)}; the arms are {', '.join(a.name for a in exp.arms)}")

    def kept(kind: str, step: object) -> bool:
        if kind == "pretrain":
            return step.name in arms
        if kind == "recipe":
            return exp.recipe_arm in arms
        return step.arm in (SCRATCH, TFIDF) or step.arm in arms

    return [(kind, step) for kind, step in steps if kept(kind, step)]


# The tiny-budget recipe: each row changes one setting of the experiment's pretraining budget and
# runs for the same number of tokens (--recipe_tokens) on the store of the experiment's recipe_arm.
RECIPE: list[tuple[str, dict]] = [
    ("as the experiment", {}),
    ("dropout 0.1", {"dropout": 0.1}),
    ("n_seq x2, batch / 2", {"n_seq": 2, "pretrain_batch": 0.5}),  # factors of the budget's values
    ("beta2 0.99", {"beta2": 0.99}),
    ("peak lr x2", {"pretrain_lr": 2}),
    ("peak lr / 2", {"pretrain_lr": 0.5}),
    ("no torch.compile", {"compile": False}),
]
_FACTORS = ("n_seq", "pretrain_batch", "pretrain_lr")  # RECIPE values that multiply the budget's


def recipe_budget(budget: Budget, changes: dict) -> Budget:
    """The budget of one recipe row: the changes applied, steps set for --recipe_tokens tokens."""
    values = {k: (type(getattr(budget, k))(getattr(budget, k) * v) if k in _FACTORS else v) for k, v in changes.items()}
    b = dataclasses.replace(budget, **values)
    return dataclasses.replace(b, pretrain_steps=max(1, budget.recipe_tokens // (b.pretrain_batch * b.n_seq)),
                               pretrain_warmup=max(1, budget.pretrain_warmup * budget.recipe_tokens // budget.pretrain_tokens))


def recipe_checkpoint(paths: Paths, name: str) -> Path:
    return paths.out / "recipe" / f"{''.join(c if c.isalnum() else '_' for c in name)}.pth"


def store_path(exp: Experiment, paths: Paths, arm: Arm, n_seq: int) -> Path:
    return paths.stores / f"{arm.slug}_{exp.folder.name}{n_seq}"


# --- the training plots, drawn from the logged CSV files ----------------------------------------------------

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


BEGIN, END = "<!-- experiment:begin -->", "<!-- experiment:end -->"


def _stats(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation (0 for one value), count)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std, n


def _cell(values: list[float]) -> str:
    if not values:
        return "not run"
    mean, std, n = _stats(values)
    return f"{mean:.4f} ± {std:.4f} ({n})" if n > 1 else f"{mean:.4f}"


def columns(exp: Experiment) -> list[tuple[str, str, str]]:
    """(heading, arm, variant) of the curve's lines."""
    plain = next(iter(exp.variants))
    cols = [("scratch", SCRATCH, plain)] + [(a.name, a.name, plain) for a in exp.arms]
    cols += [(f"{exp.arms[0].name}, {v}", exp.arms[0].name, v) for v in exp.first_arm_only]
    return cols + [("TF-IDF", TFIDF, "")]


def accuracies(rows: list[dict[str, str]], arm: str, variant: str, size: int) -> dict[int, float]:
    """seed -> test accuracy of the runs of one cell."""
    prefix = item_name(arm, variant, size, None)
    return {int(r["item"][len(prefix):]): float(r["test_acc"]) for r in rows if r["item"].startswith(prefix)}


def gain(rows: list[dict[str, str]], arm: str, variant: str, size: int) -> tuple[float, float, int] | None:
    """Mean, std and count of the test-accuracy gains over scratch, paired by seed (the same labelled reviews)."""
    pre, scratch = accuracies(rows, arm, variant, size), accuracies(rows, SCRATCH, variant, size)
    paired = [pre[s] - scratch[s] for s in sorted(set(pre) & set(scratch))]
    return _stats(paired) if paired else None


def heldout_cells(exp: Experiment, last: dict) -> str:
    """The held-out loss and accuracy cells of a pretraining log's last row (see Experiment.heldout_columns)."""
    loss = last["heldout_loss"]
    cells = [f"{loss:.3f} ({math.exp(loss):.0f})" if exp.loss_is_lm else f"{loss:.3f}"]
    for _, head in exp.heldout_columns:
        key = f"heldout_{head}_" if head else "heldout_"
        acc, positives = last.get(f"{key}acc", math.nan), last.get(f"{key}next")
        guess = f" ({max(positives, 1 - positives):.3f})" if positives is not None and not math.isnan(positives) else ""
        cells.append("none" if math.isnan(acc) else f"{acc:.3f}{guess}")
    return " | ".join(cells)


def pretraining_table(exp: Experiment, paths: Paths, budget: Budget) -> str:
    headings = ["Held-out loss (ppl)" if exp.loss_is_lm else "Held-out loss", *(h for h, _ in exp.heldout_columns)]
    lines = ["| Pretraining | Store tokens | Steps x batch x n_seq | Tokens seen | " + " | ".join(headings)
             + " | Tokens/s | Minutes |", "|---" * (6 + len(headings)) + "|"]
    for arm in exp.arms:
        log = paths.log(arm)
        if not log.is_file():
            lines.append(f"| {arm.name} | not run |" + " |" * (4 + len(headings)))
            continue
        history = json.loads(log.read_text())
        last = history[-1]
        batch, n_seq = last.get("batch", budget.pretrain_batch), last.get("n_seq", budget.n_seq)
        meta = store_path(exp, paths, arm, n_seq) / "meta.json"  # (logs written before store_tokens was logged)
        tokens = last.get("store_tokens") or (json.loads(meta.read_text())["n_tokens"] if meta.is_file() else None)
        lines.append(f"| {arm.name} | {f'{tokens / 1e6:.1f}M' if tokens else '?'} | {last['step']} x {batch} x "
                     f"{n_seq} | {last['step'] * batch * n_seq / 1e6:.2f}M | {heldout_cells(exp, last)} | "
                     f"{last['tokens_per_s']:,.0f} | {sum(r['time_s'] for r in history) / 60:.1f} |")
    return "\n".join(lines)


def recipe_table(paths: Paths, budget: Budget) -> str:
    lines = ["| Pretraining change | Steps x batch x n_seq | Held-out loss (ppl) | Held-out next-token acc | "
             "Tokens/s | Minutes |", "|---|---|---|---|---|---|"]
    for name, changes in RECIPE:
        b = recipe_budget(budget, changes)
        log = recipe_checkpoint(paths, name).with_suffix(".log.json")
        if not log.is_file():
            lines.append(f"| {name} | {b.pretrain_steps} x {b.pretrain_batch} x {b.n_seq} | not run | | | |")
            continue
        history = json.loads(log.read_text())
        last = history[-1]
        lines.append(f"| {name} | {last['step']} x {b.pretrain_batch} x {b.n_seq} | {last['heldout_loss']:.3f} "
                     f"({math.exp(last['heldout_loss']):.0f}) | {last['heldout_acc']:.3f} | {last['tokens_per_s']:,.0f} | "
                     f"{sum(r['time_s'] for r in history) / 60:.1f} |")
    return "\n".join(lines)


def labelled_count(rows: list[dict[str, str]], size: int) -> int:
    """The labelled reviews the runs of a size trained on (size 0: the whole pool); 0 when none ran."""
    return next((int(r["train_reviews"]) for r in rows if f"-n{size_label(size)}-" in r["item"]), 0)


def curve_table(exp: Experiment, rows: list[dict[str, str]], sizes: list[int]) -> str:
    cols = columns(exp)
    lines = ["| Labelled reviews | " + " | ".join(h for h, _, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for size in sizes:
        n = labelled_count(rows, size) or size
        cells = [_cell(list(accuracies(rows, arm, variant, size).values())) for _, arm, variant in cols]
        lines.append(f"| {int(n):,} | " + " | ".join(cells) + " |" if n else "| all | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curve_points(rows: list[dict[str, str]], arm: str, variant: str, sizes: list[int]) -> list[tuple[int, float, float]]:
    """(labelled reviews, mean, std of test accuracy over seeds) of one line of the curve, at the sizes that ran.

    A size that other lines ran but this one did not is a NaN point between this line's first and last, so the
    line breaks there instead of drawing a straight segment across a count it has no run at.
    """
    points = []
    for size in sizes:
        accs = list(accuracies(rows, arm, variant, size).values())
        n = labelled_count(rows, size)
        if accs and n:
            mean, std, _ = _stats(accs)
            points.append((n, mean, std))
        elif n:
            points.append((n, math.nan, math.nan))
    while points and math.isnan(points[-1][1]):
        points.pop()
    while points and math.isnan(points[0][1]):
        points.pop(0)
    return points


def plot_curve(exp: Experiment, rows: list[dict[str, str]], sizes: list[int], target: Path) -> None:
    """img/label_curve.svg: test accuracy against labelled reviews (log x), one line per column, error bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (heading, arm, variant) in enumerate(columns(exp)):
        if points := curve_points(rows, arm, variant, sizes):
            x, y, err = zip(*points)
            style = dict(ls="--", color="0.4") if arm == TFIDF else dict(ls="-", color=f"C{i}")
            ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, label=heading, **style)
    plotted = list(rows)  # every row drawn, for the ticks
    for label, other in exp.beside:  # the other model's arms, dotted, in the colour of the same arm here
        other_rows = read_csv(other.default_out / "results.csv")
        plotted += other_rows
        other_plain = next(iter(other.variants))
        for i, (heading, arm, variant) in enumerate(columns(exp)):
            if arm in (SCRATCH, TFIDF) or variant != next(iter(exp.variants)):
                continue
            if points := curve_points(other_rows, arm, other_plain, sizes):
                x, y, err = zip(*points)
                ax.errorbar(x, y, yerr=err, marker="s", ms=3, capsize=2, ls=":", color=f"C{i}", alpha=0.8,
                            label=f"{label}: {heading}")
    ax.set_xscale("log")
    counts = sorted({int(r["train_reviews"]) for r in plotted if str(r.get("train_reviews", "")).isdigit()})
    ax.set_xticks(counts, [f"{n:,}" for n in counts])  # the label counts themselves, not powers of ten
    ax.minorticks_off()
    ax.set_xlabel("labelled train reviews (log scale)")
    ax.set_ylabel("test accuracy (best-dev epoch)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title("NSMC test accuracy by labelled reviews (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    target.parent.mkdir(exist_ok=True)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="svg", metadata={"Date": None})
    plt.close(fig)


def beside_tables(exp: Experiment, paths: Paths, sizes: list[int]) -> list[str]:
    """Each `exp.beside` model's curve table from its own logs (dotted in the plot), or a line saying it has none."""
    parts = []
    for label, other in exp.beside:
        log = other.default_out / "results.csv"
        where = Path(os.path.relpath(log, paths.readme.parent)).as_posix()  # as the README links it
        other_rows = read_csv(log)
        parts.append(f"{label} at the same budget, from its own logs (`{where}`; dotted in the plot):"
                     if other_rows else f"{label}: no run logged in `{where}` yet.")
        if other_rows:
            parts.append(curve_table(other, other_rows, sizes))
    return parts


def report(exp: Experiment, paths: Paths, budget: Budget) -> None:
    rows = read_csv(paths.out / "results.csv")
    sizes = sorted(budget.sizes, key=lambda s: s or 10**9)
    plain = next(iter(exp.variants))
    recipe = {name: log for name, _ in RECIPE if (log := curve_log(recipe_checkpoint(paths, name))) is not None}
    gains = []
    for arm in exp.arms:
        for size in sizes:
            g = gain(rows, arm.name, plain, size)
            if g:
                mean, std, n = g
                gains.append(f"| {arm.name} | {size_label(size)} | {mean * 100:+.2f} | "
                             f"{f'{std * 100:.2f}' if n > 1 else '- (one seed)'} | {n} |")
    minutes = sum(float(r["minutes"]) for r in rows if r.get("minutes") and not exp.taken_over(r))
    minutes += sum(sum(r["time_s"] for r in json.loads(paths.log(a).read_text())) / 60
                   for a in exp.arms if paths.log(a).is_file())
    taken = [r for r in rows if exp.taken_over(r)]
    taken_note = (f" The {len(taken)} scratch rows are the runs of `{exp.twin_out}`, "
                  f"the same model, taken over (not counted)." if taken else "")
    section = "\n\n".join([
        f"Budget: pretraining {budget.pretrain_steps} steps x {budget.pretrain_batch} x {budget.n_seq} tokens "
        f"({budget.pretrain_tokens / 1e6:.2f}M tokens per arm), dropout {budget.dropout:g}, peak lr "
        f"{budget.pretrain_lr:g}, beta2 {budget.beta2:g}; fine-tuning lr {budget.train_lr:g}, "
        + ", ".join(f"{size_label(s)}: {budget.epochs(s)} ep x batch {budget.batch(s)}" for s in sizes)
        + f"; the epoch picked on the fixed dev set of {NSMC_DEV_SIZE:,} reviews, test scored once. "
        f"Training time of the runs logged so far: {minutes:.0f} min.{taken_note}",
        pretraining_table(exp, paths, budget),
        "![pretraining curves](img/pretrain_arms.svg)",
        "Test accuracy (mean ± standard deviation over seeds, the count in brackets; "
        "the seed draws the labelled reviews and the initialization):",
        curve_table(exp, rows, sizes),
        "Gain over scratch in points, paired by seed (same labelled reviews):",
        "| Pretraining | Labelled | Gain (points) | Std of gain | Seeds |\n|---|---|---|---|---|\n" + "\n".join(gains)
        if gains else "No pair run yet.",
        "![label curve](img/label_curve.svg)",
        *beside_tables(exp, paths, sizes),
        *([f"What helps at a tiny budget: each row changes one setting of the pretraining above and runs for "
           f"{budget.recipe_tokens / 1e6:.2f}M tokens on the {exp.recipe_arm} store (held-out loss at another "
           f"n_seq is over windows of that length: more context per token):",
           recipe_table(paths, budget)] if exp.recipe_arm is not None else []),
        *(["![recipe curves](img/pretrain_recipe.svg)"] if recipe else []),
    ])
    readme = paths.readme
    update_readme(readme, section, BEGIN, END)
    img = readme.parent / "img"
    plot_curve(exp, rows, sizes, img / "label_curve.svg")
    arms = {arm.name: log for arm in exp.arms if (log := curve_log(paths.checkpoint(arm))) is not None}
    end_only = any(log.suffix == ".json" for log in arms.values())  # a run logged before the step log
    plot_pretraining(arms, img / "pretrain_arms.svg", "each arm on its own store's held-out tail"
                     + (" (a run logged before the step log: its end only)" if end_only else ""),
                     tokens_per_step=budget.pretrain_batch * budget.n_seq)
    if recipe:
        plot_pretraining(recipe, img / "pretrain_recipe.svg",
                         f"the tiny-budget recipe rows ({budget.recipe_tokens / 1e6:.2f}M tokens each)")
    print(f"updated {rel(readme)} and img/label_curve.svg, pretrain_arms.svg"
          f"{', pretrain_recipe.svg' if recipe else ''} ({len(rows)} runs)")


def curve_log(checkpoint: Path) -> Path | None:
    """A pretraining run's step log, else its per-epoch log (older runs), else None (not run yet)."""
    for log in (checkpoint.with_suffix(STEPS_SUFFIX), checkpoint.with_suffix(".log.json")):
        if log.is_file():
            return log
    return None
